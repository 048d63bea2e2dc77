"""Committing a benchmark's result files as it goes, so a session that ends mid-way keeps what finished."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit(paths: list[Path], message: str, attempts: int = 5) -> None:
    """Commit only these files (nothing else that is staged or changed); retried, never fatal (the results stay
    on disk and the next commit takes them)."""
    files = [str(p.absolute().relative_to(ROOT)) for p in paths if p.exists()]
    git = ["git", "-C", str(ROOT)]
    for attempt in range(attempts):
        added = subprocess.run([*git, "add", *files], capture_output=True, text=True)
        if added.returncode == 0:
            if subprocess.run([*git, "diff", "--cached", "--quiet", "--", *files]).returncode == 0:
                return
            done = subprocess.run([*git, "commit", "-q", "-m", message, "--", *files], capture_output=True, text=True)
            if done.returncode == 0:
                return
            added = done
        time.sleep(2 + 3 * attempt)  # e.g. another git process holds the index lock
    print(f"warning: could not commit the results ({added.stderr.strip()}); they are on disk", flush=True)
