"""The README's status table is what benchmarks/status.py writes from the committed results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status():
    spec = importlib.util.spec_from_file_location("status", ROOT / "benchmarks" / "status.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["status"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_readme_status_table_is_written_from_the_results():
    status = _status()
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(status.BEGIN), readme.index(status.END) + len(status.END)
    assert readme[start:end] == status.table(), "run: python benchmarks/status.py --write"


def test_the_status_rows_read_the_numbers_they_claim(tmp_path):
    status = _status()
    rows = status.runs("points/runs.json", "val")
    p10 = status.by_seed(rows, "P10-offline-crf")
    full = status.by_seed(rows, "full")
    line = status.row(next(m for m in status.methods() if m.arm == "P10-offline-crf"))
    ratio = sum(p10.values()) / sum(full[s] for s in p10)
    assert f"{100 * ratio:.1f}%" in line and "| 2 / 2000 |" in line and "| 0.1736 |" in line
    assert status.runs("points/runs.json", "test") == []  # no test rows yet: nothing is reported as test
