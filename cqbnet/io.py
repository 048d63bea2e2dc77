"""File input and output.

Output is atomic: a reader never sees a half-written file. Everything is
written to a temporary name in the destination folder and moved into place with
:func:`os.replace`, which is atomic on POSIX and Windows. Input of JSON and YAML
turns a missing or malformed file into an :class:`~cqbnet.errors.InputError`
naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from cqbnet.errors import InputError


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file; a missing, malformed or non-UTF-8 file is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None


def read_yaml(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a YAML file; a missing or malformed file is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InputError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)


def write_image(path: str | os.PathLike, rgb: np.ndarray, params: list[int] | None = None) -> None:
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image atomically (format from suffix)."""
    img = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    with atomic_path(path) as tmp:
        ok = cv2.imwrite(str(tmp), np.ascontiguousarray(img), params or [])
        if not ok:
            raise OSError(f"{path}: could not encode image")


OUTPUT_MARK = ".cqbnet-output"  # in every folder cqbnet builds: such a folder, and only such, it may replace


def _mark(folder: Path) -> None:
    """Mark a folder as written by cqbnet (see ``OUTPUT_MARK``)."""
    (folder / OUTPUT_MARK).write_text("written by cqbnet\n")


def check_output_dir(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> None:
    """Refuse an output folder that is or holds one of ``inputs``, that is a file, that cannot be written, or
    that holds files cqbnet did not write (unless ``overwrite``): replacing it would lose them."""
    path = Path(path)
    out = path.resolve()
    for given in inputs:
        if given is None:
            continue
        q = Path(given).resolve()
        if q == out or out in q.parents:
            raise InputError(f"{path}: the output would replace the input {given}; choose another --out")
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder; choose another --out")
        if not overwrite and not (path / OUTPUT_MARK).is_file() and any(path.iterdir()):
            raise InputError(
                f"{path}: exists and holds files cqbnet did not write; choose another --out, or give --overwrite "
                "to replace it"
            )
    _check_parent(path, out.parent)  # the new folder is built beside the old one


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a file where a folder is wanted (``folder``) or
    a folder where a file is, a file among its parents, or a nearest existing parent that is not writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise InputError(f"{path}: exists and is {'not ' if folder else ''}a folder; choose another output")
    _check_parent(path, path.resolve() if folder and path.exists() else path.resolve().parent)


def _check_parent(path: Path, parent: Path) -> None:
    """``path`` can be written when the nearest existing one of ``parent`` and its ancestors is a writable folder."""
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write there ({parent} is not a writable folder)")


def start_output_dir(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> Path:
    """An output folder that a long command fills as it goes (the demo): checked as :func:`check_output_dir`,
    emptied of what an earlier run of cqbnet left there (so nothing stale looks current), and marked."""
    path = Path(path)
    check_output_dir(path, inputs, overwrite)
    if path.exists():
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    _mark(path)
    return path


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> None:
    """Remove what an interrupted :func:`atomic_path` or :func:`atomic_directory` left beside ``folder/name``."""
    folder = Path(folder)
    if folder.is_dir():
        for child in folder.glob(f".{name}.*"):
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears at ``path`` only when complete.

    An existing directory at ``path`` is replaced only after the new one is finished,
    so a failure leaves either the old output or nothing, never a partial tree; and only when cqbnet wrote it
    or ``overwrite`` is given (:func:`check_output_dir`, which also refuses an output that holds an input).
    """
    path = Path(path)
    check_output_dir(path, inputs, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        _mark(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
