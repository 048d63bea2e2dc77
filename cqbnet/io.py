"""File input and output.

Output is atomic: a reader never sees a half-written file. Everything is
written to a temporary name in the destination folder and moved into place with
:func:`os.replace`, which is atomic on POSIX and Windows. Input of JSON and YAML
turns a missing or malformed file into an :class:`~cqbnet.errors.InputError`
naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
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
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=path.suffix or ".tmp", dir=path.parent)
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


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays as a compressed ``.npz`` atomically (workers and runs may share the folder)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of a ``.npz`` written by :func:`write_npz`; None when it is missing or damaged (a cache entry
    is then made again)."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None


def write_image(path: str | os.PathLike, rgb: np.ndarray, params: list[int] | None = None) -> None:
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image atomically (format from suffix)."""
    img = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    with atomic_path(path) as tmp:
        ok = cv2.imwrite(str(tmp), np.ascontiguousarray(img), params or [])
        if not ok:
            raise OSError(f"{path}: could not encode image")


# The output policy. Every folder cqbnet builds holds OUTPUT_MARK: a JSON list of the files cqbnet wrote there, each
# with its size and modification time. A file not on that list, or changed since, belongs to the user: it is never
# deleted. Without --overwrite a folder holding such a file is refused; with --overwrite cqbnet replaces only what it
# wrote and carries the user's files over into the new folder (one at a path the new output writes is replaced: that
# is the overwrite). An input of the command never lies inside an output it replaces, with or without --overwrite.
OUTPUT_MARK = ".cqbnet-output"
MARK_FORMAT = "cqbnet.output"
TEMP_PREFIX = ".cqbnet-tmp"  # every temporary name starts so, then the process id: only those are ever cleaned


def _temp_prefix(name: str) -> str:
    return f"{TEMP_PREFIX}.{os.getpid()}.{name}."


def _files(folder: Path) -> list[Path]:
    """Every file (and symlink) under ``folder``, relative, sorted; the mark itself left out."""
    out = []
    for root, dirs, names in os.walk(folder):
        for n in names + [d for d in dirs if (Path(root) / d).is_symlink()]:
            rel = (Path(root) / n).relative_to(folder)
            if rel != Path(OUTPUT_MARK):
                out.append(rel)
    return sorted(out)


def _stamp(path: Path) -> list[int]:
    st = path.lstat()
    return [st.st_size, st.st_mtime_ns]


def _record(folder: Path, exclude: set[Path] = frozenset(), in_progress: bool = False) -> None:
    """Write ``folder``'s mark: every file in it but ``exclude`` is cqbnet's (``in_progress``: a folder being
    filled, whose files are cqbnet's but those in ``exclude``)."""
    files = {} if in_progress else {str(r): _stamp(folder / r) for r in _files(folder) if r not in exclude}
    mark = {"format": MARK_FORMAT, "files": files}
    if in_progress:
        mark.update(in_progress=True, users=sorted(str(r) for r in exclude))
    (folder / OUTPUT_MARK).write_text(json.dumps(mark))


def add_to_record(folder: str | os.PathLike, paths: list[str | os.PathLike]) -> None:
    """Record ``paths`` (files cqbnet has just written into the output ``folder``, or folders of them) as
    cqbnet's in its mark, so that a later check does not take them for the user's."""
    folder = Path(folder)
    users = set(foreign_files(folder))
    written = set()
    for p in paths:
        p = Path(p)
        p = p.relative_to(folder) if p.is_absolute() else p
        if (folder / p).is_dir():
            written |= {p / r for r in _files(folder / p)}
        else:
            written.add(p)
    _record(folder, users - written)


def foreign_files(folder: str | os.PathLike) -> list[Path]:
    """The files under ``folder`` (relative) that cqbnet did not write, or that changed since it wrote them: all of
    them when the folder has no mark. A mark of an older cqbnet (plain text) counts the files not modified since."""
    folder = Path(folder)
    files = _files(folder) if folder.is_dir() else []
    mark = folder / OUTPUT_MARK
    if not mark.is_file():
        return files
    try:
        data = json.loads(mark.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("format") != MARK_FORMAT:  # the text mark of an older cqbnet
        since = mark.stat().st_mtime_ns
        return [r for r in files if (folder / r).lstat().st_mtime_ns > since]
    if data.get("in_progress"):
        return [r for r in files if str(r) in set(data.get("users", []))]
    written = data.get("files", {})
    return [r for r in files if written.get(str(r)) != _stamp(folder / r) and not r.name.startswith(TEMP_PREFIX)]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> None:
    """Refuse an output folder that is or holds one of ``inputs`` (always), that is a file, that cannot be written,
    or (unless ``overwrite``) that holds files cqbnet did not write: replacing it would lose them."""
    path = Path(path)
    out = path.resolve()
    for given in inputs:
        if given is None:
            continue
        if _inside(Path(given).resolve(), out):
            raise InputError(f"{path}: the output would replace the input {given}; choose another --out")
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder; choose another --out")
        if not os.access(path, os.W_OK | os.X_OK):  # replacing a folder moves it: it must be writable
            raise InputError(f"{path}: cannot replace it (not a writable folder); choose another --out")
        foreign = [] if overwrite else foreign_files(path)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise InputError(
                f"{path}: holds files cqbnet did not write ({foreign[0]}{more}); choose another --out, or give "
                "--overwrite to replace what cqbnet wrote there and keep the rest"
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


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def start_output_dir(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> Path:
    """An output folder that a long command fills as it goes (the demo): checked as :func:`check_output_dir`,
    emptied of what an earlier run of cqbnet wrote there (so nothing stale looks current; the user's files stay),
    and marked as being filled. :func:`finish_output_dir` records what it holds once complete."""
    path = Path(path)
    check_output_dir(path, inputs, overwrite)
    users: set[Path] = set()
    if path.is_dir():
        users = set(foreign_files(path))
        for rel in _files(path):
            if rel not in users:
                _remove(path / rel)
        _prune_empty(path)
    path.mkdir(parents=True, exist_ok=True)
    _record(path, users, in_progress=True)
    return path


def finish_output_dir(path: str | os.PathLike) -> None:
    """Record the files of a folder :func:`start_output_dir` began as cqbnet's (but the user's it kept)."""
    path = Path(path)
    _record(path, set(foreign_files(path)))


def _prune_empty(folder: Path) -> None:
    """Remove the empty folders under ``folder`` (deepest first), never ``folder`` itself."""
    for root, dirs, _ in os.walk(folder, topdown=False):
        for d in dirs:
            p = Path(root) / d
            if not p.is_symlink() and not any(p.iterdir()):
                p.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> None:
    """Remove what an interrupted :func:`atomic_path` or :func:`atomic_directory` of ``folder/name`` left: only
    cqbnet's temporary names (``.cqbnet-tmp.<pid>.<name>.*``) of processes that have ended."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for child in folder.glob(f"{TEMP_PREFIX}.*.{name}.*"):
        pid = child.name[len(TEMP_PREFIX) + 1 :].split(".", 1)[0]
        rest = child.name[len(TEMP_PREFIX) + 1 + len(pid) + 1 :]
        if not pid.isdigit() or not rest.startswith(f"{name}.") or _pid_alive(int(pid)):
            continue
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears at ``path`` only when complete.

    An existing directory at ``path`` is replaced only after the new one is finished, so a failure leaves either
    the old output or nothing, never a partial tree. It is checked first (:func:`check_output_dir`: never an input
    inside it; files cqbnet did not write refused unless ``overwrite``), and those files, if any, are carried over
    into the new folder: nothing the user put there is lost.
    """
    path = Path(path)
    check_output_dir(path, inputs, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), dir=path.parent))
    try:
        yield tmp
        _record(tmp)
        if path.exists():
            for rel in foreign_files(path):  # the user's files move into the new folder
                dest = tmp / rel
                if dest.exists() or dest.is_symlink():
                    if not overwrite:  # appeared while cqbnet worked, at a path the new output writes
                        raise InputError(
                            f"{path / rel}: a file cqbnet did not write appeared where the new output writes; "
                            "it was kept and nothing was replaced: move it and run again, or give --overwrite"
                        )
                    _remove(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path / rel, dest)
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name) + "old.", dir=path.parent))
            try:
                os.replace(path, old / "x")
                os.replace(tmp, path)
            finally:
                if (old / "x").exists() and not path.exists():  # put the old output back: never lose it
                    os.replace(old / "x", path)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


JOB_RECORD = ".cqbnet-job.json"  # in a resumable job's folder: what the job was made from


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts differ, e.g. ``['solver.base_lr: 0.02 -> 0.01']``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted({*a, *b}, key=str) for d in differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (a stage's input fingerprint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def start_job_dir(path: str | os.PathLike, inputs=(), made_from: dict[str, Any] | None = None) -> Path:
    """A resumable job's folder (``boxes-tags``, ``fit``): checked as an output (:func:`check_output_dir`'s input,
    file and writability checks), and bound to what it is made from. A new or empty folder records ``made_from``;
    a folder with a record continues only when it was made from the same (else a one-line error says what
    changed, so a rerun never reports results of other inputs); a folder of other files is refused."""
    path = Path(path)
    check_output_dir(path, inputs, overwrite=True)
    record = json.loads(json.dumps(made_from or {}))
    job = path / JOB_RECORD
    if job.is_file():
        diff = differences(read_json(job, "job record"), record)
        if diff:
            shown = "; ".join(diff[:2]) + (f"; and {len(diff) - 2} more" if len(diff) > 2 else "")
            raise InputError(
                f"{path}: was made from other inputs ({shown}); use another --out, or delete that folder to start again"
            )
        return path
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{path}: exists and holds files cqbnet did not write; choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    write_json(job, record, indent=2)
    return path
