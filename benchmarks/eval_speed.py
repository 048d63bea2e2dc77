"""Evaluator speed: cqbnet against panopticapi and hotcoco, side by side in one run.

Data: N images in turn from the two COCO val samples (640x427, 640x360) and from the realistic synthetic scenes
at 128 and 512 px, each with its own perturbed prediction (shift, erosion, merges, splits, wrong classes, missing,
extra, spills onto void and crowd). Measured:

* from files: panopticapi's single-process core (``pq_compute_single_core``),
  panopticapi's own ``pq_compute`` (one process per core), hotcoco's
  ``pq_compute`` (its threads, and one thread), and cqbnet's ``evaluate_panoptic_files`` with 1 and 2 worker
  processes;
* in memory, on decoded id maps as a trainer holds them: cqbnet's
  ``PanopticQuality.update`` against panopticapi's per-image time;
* memory: resident set size over repeated in-memory evaluations.

All three tools' PQ numbers are checked to agree. Usage:
``python -m benchmarks.eval_speed --shared ../shared --images 300 --out benchmarks/results``; the table of the run is
written into ``benchmarks/eval_speed.md`` between its ``eval-speed`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info
from cqbnet.data.panoptic_format import SegmentInfo, load_categories, load_panoptic_json, read_panoptic_png
from cqbnet.evaluation.panoptic_quality import PanopticQuality, evaluate_panoptic_files
from cqbnet.evaluation.perturb import perturb
from cqbnet.io import atomic_path, write_json

REPORT = Path(__file__).parent / "eval_speed.md"
MARKERS = ("<!-- eval-speed: written by benchmarks/eval_speed.py -->", "<!-- /eval-speed -->")
NAMES = {
    "panopticapi_single_process": "panopticapi `pq_compute_single_core` (one process)",
    "panopticapi_pq_compute_multiprocess": "panopticapi `pq_compute` (its own multiprocessing, one process a core)",
    "hotcoco_pq_compute": "hotcoco `pq_compute` (Rust, its threads: one a core)",
    "hotcoco_pq_compute_one_thread": "hotcoco `pq_compute`, one thread (`RAYON_NUM_THREADS=1`)",
    "cqbnet_files_1_process": "cqbnet `evaluate_panoptic_files`, 1 process",
    "cqbnet_files_2_processes": "cqbnet `evaluate_panoptic_files`, 2 processes (default on 2 cores)",
    "cqbnet_in_memory_coco_ids": "cqbnet `PanopticQuality.update`, in memory, COCO 24-bit ids",
    "cqbnet_in_memory_trainer_maps": "cqbnet `PanopticQuality.update`, in memory, int32 maps (ids 1..N)",
}


def write_table(path: Path, result: dict) -> None:
    """The run's table, between the report's markers (the rest of the report is left as it is)."""
    res = result["results"]
    hot1 = res["hotcoco_pq_compute_one_thread"]["ms_per_image"]
    lines = [
        MARKERS[0],
        f"{result['images']} images of sizes {', '.join(f'{h}x{w}' for h, w in result['image_sizes'])}; best of "
        f"{result['repeat']}; machine `{result['machine']}`; largest PQ disagreement "
        f"{result['pq_max_disagreement']:.1e}.",
        "",
        "| run | ms / image | vs panopticapi (1 process) | vs hotcoco, one thread |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, name in NAMES.items():
        ms = res[key]["ms_per_image"]
        ratio = result["speedup_vs_panopticapi_single_process"][key]
        lines.append(f"| {name} | {ms:.2f} | {ratio:.1f}x | {hot1 / ms:.2f}x |")
    lines.append(MARKERS[1])
    text = path.read_text() if path.is_file() else ""
    if MARKERS[0] in text:
        head, rest = text.split(MARKERS[0], 1)
        text = head + "\n".join(lines) + rest.split(MARKERS[1], 1)[1]
    else:
        text = "\n".join(lines) + "\n\n" + text
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


SCENE_SIZES = (128, 512)  # synthetic scenes beside the COCO pair: the realistic preset, objects scaled with the side
CATEGORY_OFFSET = 1000  # the scenes' category ids are moved past COCO's so that one category list holds both


def _moved(segments: list[SegmentInfo]) -> list[SegmentInfo]:
    return [replace(sg, category_id=sg.category_id + CATEGORY_OFFSET) for sg in segments]


def sources(shared: Path, work: Path, n: int, seed: int):
    """(categories, [(ground-truth ids, segments)] of ``n`` images): the two COCO val samples (640x427, 640x360)
    for a third of them, the realistic synthetic scenes at each of :data:`SCENE_SIZES` for the rest, in turn."""
    from cqbnet.data.panoptic_format import Category
    from cqbnet.data.synthetic import generate, scene_config

    sample = shared / "data" / "coco_panoptic_sample"
    cats = load_categories(sample / "panoptic_coco_categories.json")
    coco = load_panoptic_json(sample / "panoptic_examples.json", sample / "panoptic_examples", categories=cats)
    pools = [[(read_panoptic_png(coco.png_path(r)), r.segments) for r in coco.records]]
    per_pool = -(-n // (1 + len(SCENE_SIZES)))
    for size in SCENE_SIZES:
        f = size / 128
        cfg = scene_config("realistic", size=size, min_size=10 * f, max_size=56 * f, min_area=int(12 * f * f))
        data = generate(work / f"scenes{size}", per_pool, 0, seed=seed, cfg=cfg, num_test=0)
        gt = load_panoptic_json(data / "panoptic_train.json", data / "panoptic" / "train")
        for c in gt.categories.values():
            cats[c.id + CATEGORY_OFFSET] = Category(c.id + CATEGORY_OFFSET, f"{c.name}_{size}", c.isthing, c.color)
        pools.append([(gt.read_ids(r), _moved(r.segments)) for r in gt.records])
    order = [pools[i % len(pools)][(i // len(pools)) % len(pools[i % len(pools)])] for i in range(n)]
    return cats, order


def build(shared: Path, n: int, work: Path, seed: int = 0):
    """The ground truth and a perturbed prediction of each of ``n`` images (:func:`sources`), written as COCO
    panoptic folders under ``work``; the categories and the decoded arrays for the in-memory runs."""
    from cqbnet.data.panoptic_format import write_panoptic_png

    cats, order = sources(shared, work, n, seed)
    rng = np.random.default_rng(seed)
    (work / "gt").mkdir(parents=True)
    (work / "pred").mkdir()
    images, gt_anns, pred_anns, arrays = [], [], [], []
    for i, (ids, segs) in enumerate(order):
        name = f"{i:06d}.png"
        write_panoptic_png(work / "gt" / name, ids)
        p_ids, p_segs = perturb(ids, segs, cats, rng)
        write_panoptic_png(work / "pred" / name, p_ids)
        images.append(
            {"id": i, "file_name": name.replace(".png", ".jpg"), "height": ids.shape[0], "width": ids.shape[1]}
        )
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": [sg.to_json() for sg in segs]})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": [sg.to_json() for sg in p_segs]})
        arrays.append((ids, segs, p_ids, p_segs))
    cat_json = [c.to_json() for c in cats.values()]
    write_json(work / "gt.json", {"images": images, "annotations": gt_anns, "categories": cat_json})
    write_json(work / "pred.json", {"images": images, "annotations": pred_anns, "categories": cat_json})
    return cats, arrays


def hotcoco_one_thread(work: Path, repeat: int) -> tuple[float, float]:
    """hotcoco's ``pq_compute`` in a process of its own on one thread (``RAYON_NUM_THREADS=1``): (best seconds,
    PQ)."""
    code = (
        "import contextlib, io, sys, time\n"
        "import hotcoco.panoptic as hot\n"
        "w = sys.argv[1]\n"
        "best = float('inf')\n"
        f"for _ in range({repeat}):\n"
        "    t = time.perf_counter()\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        res = hot.pq_compute(w + '/gt.json', w + '/pred.json', w + '/gt', w + '/pred')\n"
        "    best = min(best, time.perf_counter() - t)\n"
        "print(best, res['All']['pq'])\n"
    )
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code, str(work)], env=env, capture_output=True, text=True, check=True)
    best, pq = out.stdout.split()[-2:]
    return float(best), float(pq)


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
        for name, fn in runs:
            t, out = timed(fn, args.repeat)
            res[name] = {"ms_per_image": 1000 * t / n, "pq": float(out["pq"])}
        t, pq = hotcoco_one_thread(work, args.repeat)  # its own process: rayon's thread count is fixed at first use
        res["hotcoco_pq_compute_one_thread"] = {"ms_per_image": 1000 * t / n, "pq": pq}
        for name, r in res.items():
            print(f"{name:40s} {r['ms_per_image']:8.3f} ms/image  PQ {r['pq']:.12f}")

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
            "repeat": args.repeat,
            "image_sizes": sorted({tuple(a[0].shape) for a in arrays}),
            "results": res,
            "speedup_vs_panopticapi_single_process": ratios,
            "pq_max_disagreement": agree,
            "rss_mb_over_20_in_memory_evaluations": rss,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "eval_speed.json", result, indent=2)
        write_table(REPORT, result)
        print("speed-up vs panopticapi single process: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
        print(f"PQ disagreement {agree:.2e}; RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB over 20 evaluations")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
