"""Evaluator speed: cqbnet against panopticapi and hotcoco, side by side in one run.

Data: the two COCO val samples (640x427, 640x360) replicated to N images, each with
its own perturbed prediction (shift, erosion, merges, splits, wrong classes, missing,
extra, spills onto void and crowd). Measured:

* from files: panopticapi's single-process core (``pq_compute_single_core``),
  panopticapi's own ``pq_compute`` (one process per core), hotcoco's
  ``pq_compute``, and cqbnet's ``evaluate_panoptic_files`` with 1 and 2 worker processes;
* in memory, on decoded id maps as a trainer holds them: cqbnet's
  ``PanopticQuality.update`` against panopticapi's per-image time;
* memory: resident set size over repeated in-memory evaluations.

All three tools' PQ numbers are checked to agree. Usage:
``python -m benchmarks.eval_speed --shared ../shared --images 300 --out benchmarks/results``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info
from cqbnet.data.panoptic_format import SegmentInfo, load_categories, load_panoptic_json, read_panoptic_png
from cqbnet.evaluation.panoptic_quality import PanopticQuality, evaluate_panoptic_files
from cqbnet.evaluation.perturb import perturb
from cqbnet.io import write_json


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(shared: Path, n: int, work: Path, seed: int = 0):
    sample = shared / "data" / "coco_panoptic_sample"
    cats = load_categories(sample / "panoptic_coco_categories.json")
    src = load_panoptic_json(sample / "panoptic_examples.json", sample / "panoptic_examples", categories=cats)
    rng = np.random.default_rng(seed)
    (work / "gt").mkdir(parents=True)
    (work / "pred").mkdir()
    images, gt_anns, pred_anns, arrays = [], [], [], []
    recs = src.records
    decoded = {r.image_id: read_panoptic_png(src.png_path(r)) for r in recs}
    for i in range(n):
        r = recs[i % len(recs)]
        ids = decoded[r.image_id]
        name = f"{i:06d}.png"
        shutil.copyfile(src.png_path(r), work / "gt" / name)
        p_ids, p_segs = perturb(ids, r.segments, cats, rng)
        from cqbnet.data.panoptic_format import write_panoptic_png

        write_panoptic_png(work / "pred" / name, p_ids)
        images.append(
            {"id": i, "file_name": name.replace(".png", ".jpg"), "height": ids.shape[0], "width": ids.shape[1]}
        )
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": [s.to_json() for s in r.segments]})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": [s.to_json() for s in p_segs]})
        arrays.append((ids, r.segments, p_ids, p_segs))
    cat_json = [c.to_json() for c in cats.values()]
    write_json(work / "gt.json", {"images": images, "annotations": gt_anns, "categories": cat_json})
    write_json(work / "pred.json", {"images": images, "annotations": pred_anns, "categories": cat_json})
    return cats, arrays


def relabel(g, gs, p, ps):
    """A trainer's view of one image: int32 maps with segment ids 1..N (as a model's output is)."""
    out = []
    for ids, segs in ((g, gs), (p, ps)):
        new = np.zeros(ids.shape, np.int32)
        renamed = []
        for k, s in enumerate(segs, start=1):
            new[ids == s.id] = k
            renamed.append(SegmentInfo(k, s.category_id, s.iscrowd, None, None, s.score))
        out += [new, renamed]
    return tuple(out)


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()

    import hotcoco.panoptic as hot
    from panopticapi import evaluation as papi

    work = Path(tempfile.mkdtemp(prefix="evalbench"))
    try:
        cats, arrays = build(args.shared, args.images, work)
        n = args.images
        gt_json, pred_json = work / "gt.json", work / "pred.json"
        gt_doc = json.loads(gt_json.read_text())
        pred_doc = json.loads(pred_json.read_text())
        pairs = list(zip(gt_doc["annotations"], pred_doc["annotations"]))
        cat_dict = {c["id"]: c for c in gt_doc["categories"]}
        quiet = contextlib.redirect_stdout(io.StringIO())
        res: dict[str, dict] = {}

        def papi_single():
            with contextlib.redirect_stdout(io.StringIO()):
                stat = papi.pq_compute_single_core(0, pairs, str(work / "gt"), str(work / "pred"), cat_dict)
                return stat.pq_average(cat_dict, None)[0]

        def papi_multi():
            with contextlib.redirect_stdout(io.StringIO()):
                return papi.pq_compute(str(gt_json), str(pred_json), str(work / "gt"), str(work / "pred"))["All"]

        def hot_files():
            with contextlib.redirect_stdout(io.StringIO()):
                return hot.pq_compute(str(gt_json), str(pred_json), str(work / "gt"), str(work / "pred"))["All"]

        def ours(workers):
            return lambda: evaluate_panoptic_files(gt_json, pred_json, work / "gt", work / "pred", workers=workers).all

        def ours_memory(data=arrays):
            m = PanopticQuality(cats)
            for g, gs, p, ps in data:
                m.update(g, gs, p, ps)
            return m.compute().all

        small = [relabel(*a) for a in arrays]

        runs = [
            ("panopticapi_single_process", papi_single),
            ("panopticapi_pq_compute_multiprocess", papi_multi),
            ("hotcoco_pq_compute", hot_files),
            ("cqbnet_files_1_process", ours(1)),
            ("cqbnet_files_2_processes", ours(2)),
            ("cqbnet_in_memory_coco_ids", ours_memory),
            ("cqbnet_in_memory_trainer_maps", lambda: ours_memory(small)),
        ]
        with quiet:
            pass
        for name, fn in runs:
            t, out = timed(fn, args.repeat)
            res[name] = {"ms_per_image": 1000 * t / n, "pq": float(out["pq"])}
            print(f"{name:40s} {1000 * t / n:8.3f} ms/image  PQ {out['pq']:.12f}")

        pqs = [v["pq"] for v in res.values()]
        agree = max(pqs) - min(pqs)
        base = res["panopticapi_single_process"]["ms_per_image"]
        ratios = {k: base / v["ms_per_image"] for k, v in res.items()}

        rss = []
        for _ in range(20):
            ours_memory()
            rss.append(rss_mb())
        result = {
            "machine": machine_info(),
            "images": n,
            "image_sizes": sorted({tuple(a[0].shape) for a in arrays}),
            "results": res,
            "speedup_vs_panopticapi_single_process": ratios,
            "pq_max_disagreement": agree,
            "rss_mb_over_20_in_memory_evaluations": rss,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "eval_speed.json", result, indent=2)
        print("speed-up vs panopticapi single process: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
        print(f"PQ disagreement {agree:.2e}; RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB over 20 evaluations")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
