"""Checkpoints that resume exactly: model, optimiser, scheduler, AMP scaler, iteration and every RNG state.

The data order is a function of the seed and the iteration (see
:mod:`cqbnet.engine.data`), so these states are all a resumed run needs to
continue as if it had never stopped. Files are written atomically.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cqbnet.errors import InputError
from cqbnet.io import atomic_path, remove_stale_temporaries


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **state: Any) -> None:
    """Write ``state`` (tensors, state dicts, plain data) atomically; what a killed save left is removed first."""
    path = Path(path)
    remove_stale_temporaries(path.parent, path.name)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a bad file
        raise InputError(f"{path}: not a cqbnet checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
