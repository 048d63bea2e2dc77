"""Per-image label preparation in worker processes, cached by the image's and its labels' content.

Work that costs seconds per image and needs nothing but the image and its labels runs in ``workers`` processes
(each result is deterministic, so the result does not depend on the number of workers or their order) and is
cached, so that a second fit over the same images (another plan, another seed) reuses it:

* paper 001's thing cues (GrabCut and the best selective-search proposal per box,
  :func:`~cqbnet.weak.approx_ground_truth.thing_cues`), under ``cache/thing_cues/<key>.npz``, the key a digest of
  the image file's bytes, the boxes and the cue;
* paper 002's segment proposals of the tags images (:func:`~cqbnet.weak.jtsm.proposal_cache`), for the image and
  its mirror image (the training flips), in the file names the mining branch reads (image id and a digest of the
  pixels), under ``cache/segment_proposals/``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cqbnet.io import file_digest, read_npz, write_npz

CUES_VERSION = 1  # bumped when thing_cues' output changes, so that no cache entry of older code is read
Cues = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # masks (M, H, W), classes (M,), ignore, background


def default_workers() -> int:
    """The machine's cores (those this process may use)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cue_key(image_path: Path, boxes: list, cue: str) -> str:
    """The cache key of one image's thing cues: its file's bytes, its boxes and the cue."""
    spec = {
        "image": file_digest(image_path),
        "boxes": [[b.category_id, list(b.bbox), bool(b.iscrowd)] for b in boxes],
        "cue": cue,
        "version": CUES_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def _one_image(job: tuple) -> tuple[int, Cues]:
    """Worker: the thing cues of one image (top level, so that a spawned process can import it)."""
    from cqbnet.data.dataset import read_image_of
    from cqbnet.weak.approx_ground_truth import image_thing_cues

    image_id, path, height, width, boxes, cue = job
    image = read_image_of(Path(path), image_id, height, width, "manifest")
    return image_id, image_thing_cues(image, boxes, cue)


def _one_thread() -> None:
    """Worker initialiser: one OpenCV and torch thread per worker, so that the workers share the cores."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


CUE_FIELDS = ("masks", "classes", "ignore", "background")


def _load(path: Path) -> Cues | None:
    """A cached entry (None when it is damaged: it is computed again)."""
    z = read_npz(path)
    return None if z is None or not set(CUE_FIELDS) <= set(z) else tuple(z[k] for k in CUE_FIELDS)


def thing_cue_table(
    manifest,
    image_ids: list[int],
    cue: str = "both",
    workers: int = 1,
    cache: Path | None = None,
    progress=True,
    ray_address: str | None = None,
) -> dict[int, Cues]:
    """Image id -> thing cues for the manifest's images ``image_ids``: read from ``cache`` where present, the rest
    computed in ``workers`` processes (1: in this one; or on the Ray cluster at ``ray_address``) and added to the
    cache."""
    labs = {lab.image_id: lab for lab in manifest.images}
    out: dict[int, Cues] = {}
    todo, keys = [], {}
    for iid in image_ids:
        lab = labs[iid]
        path = manifest.image_root / lab.file_name
        if cache is not None:
            keys[iid] = Path(cache) / "thing_cues" / f"{cue_key(path, lab.boxes or [], cue)}.npz"
            hit = _load(keys[iid]) if keys[iid].is_file() else None
            if hit is not None:
                out[iid] = hit
                continue
        todo.append((iid, str(path), lab.height, lab.width, list(lab.boxes or []), cue))

    def done(result: tuple[int, Cues]) -> None:
        iid, cues = result
        out[iid] = cues
        if cache is not None:
            write_npz(keys[iid], **dict(zip(CUE_FIELDS, cues)))

    _run_jobs(_one_image, todo, workers, "thing cues", progress, done, ray_address)
    return out


def _proposal_job(job: tuple) -> int:
    """Worker: paper 002's segment proposals of one image (and its mirror image), written where JTSM reads them."""
    from cqbnet.data.dataset import read_image_of
    from cqbnet.weak.jtsm import proposal_cache, proposal_file

    image_id, path, height, width, flip, folder = job
    image = read_image_of(Path(path), image_id, height, width, "manifest")
    for img in (image, image[:, ::-1]) if flip else (image,):
        img = np.ascontiguousarray(img)
        file = Path(folder) / proposal_file(image_id, img)
        if not file.is_file():  # made by an earlier fit
            proposal_cache(img, file)
    return image_id


def segment_proposal_files(
    manifest,
    image_ids: list[int],
    folder: Path,
    flip: bool = True,
    workers: int = 1,
    progress=True,
    ray_address: str | None = None,
) -> None:
    """Write paper 002's segment proposals of the manifest's images ``image_ids`` into ``folder`` (the mining
    branch's ``model.weak.jtsm_cache``), in ``workers`` processes; files that are there already are kept (each
    worker reads its image to name them, so this process reads none)."""
    labs = {lab.image_id: lab for lab in manifest.images}
    todo = [
        (iid, str(manifest.image_root / labs[iid].file_name), labs[iid].height, labs[iid].width, flip, str(folder))
        for iid in image_ids
    ]
    _run_jobs(_proposal_job, todo, workers, "segment proposals", progress, lambda _: None, ray_address)


# a spawned worker costs seconds to start (it imports cqbnet and torch; 2-4 s measured, benchmarks/preparation.md):
# jobs run in this process until what is left would take longer than this on one core, and only then go to the pool
POOL_AFTER_SECONDS = 10.0


def _run_jobs(fn, jobs: list[tuple], workers: int, desc: str, progress: bool, done, ray_address=None) -> None:
    """``done(fn(job))`` for every job, with a progress bar: as Ray tasks on the cluster at ``ray_address`` (its
    nodes must see the image files: a shared file system), else in this process until the jobs left would take
    longer than :data:`POOL_AFTER_SECONDS` here (judged by the mean time of those done), the rest then in
    ``workers`` spawned processes. Each job's result is deterministic, so where it runs changes nothing."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress or not jobs, dynamic_ncols=True)
    if ray_address and jobs:
        import ray

        ray.init(address=ray_address, log_to_driver=False)
        try:
            task = ray.remote(fn).options(num_cpus=1)
            pending = [task.remote(job) for job in jobs]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done(ray.get(ready[0]))
                bar.update(1)
        finally:
            ray.shutdown()
        bar.close()
        return
    start, n = time.perf_counter(), 0
    while n < len(jobs) and not _pool_pays(workers, n, len(jobs) - n, time.perf_counter() - start):
        done(fn(jobs[n]))
        bar.update(1)
        n += 1
    if n < len(jobs):
        ctx = multiprocessing.get_context("spawn")  # no state of this process (torch threads) is forked
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread) as pool:
            for fut in as_completed([pool.submit(fn, job) for job in jobs[n:]]):
                done(fut.result())
                bar.update(1)
    bar.close()


def _pool_pays(workers: int, done: int, left: int, seconds: float) -> bool:
    """Whether the ``left`` jobs should go to a pool of ``workers``: at least one job each, and, at the mean time of
    the ``done`` jobs so far, more than :data:`POOL_AFTER_SECONDS` of work left (0: always)."""
    if workers <= 1 or left < workers:
        return False
    if POOL_AFTER_SECONDS <= 0:
        return True
    return done > 0 and seconds / done * left > POOL_AFTER_SECONDS
