"""What every benchmark result records about the machine it ran on."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
