"""Per-image label preparation: seconds per image and per object, on one worker and on every core.

The work a recipe does per training image before any network trains, timed on the scenes where it is cheapest
and where it is dearest (the realistic preset, about 5 boxes a scene; the dense preset's crowded scenes; and the
two real COCO images of ``../shared/data``, at their own size, from which a COCO-sized estimate scales):

* paper 001's thing cues, GrabCut and the best selective-search proposal per box
  (:func:`cqbnet.recipes.prepare.thing_cue_table`, what round 0 and ``cqbnet labels approximate`` run);
* paper 002's segment proposals (:func:`cqbnet.recipes.prepare.segment_proposal_files`);
* the click recipe's dense CRF on a perfect point branch's maps (:func:`cqbnet.cues.dense_crf.dense_crf`, torch:
  it parallelises through torch's intra-op threads, so it is timed at 1 thread and at every core).

Each is run once on one image untimed (first calls load libraries), then with 1 worker and with every core, no
cache, and the outputs of the two are compared (they must be
identical: preparation does not depend on the number of workers). Seconds per object divide by the boxes of the
images (for the CRF: the segments); the speed-up is one worker's time over every core's. Usage::

    python -m benchmarks.preparation [--images 24] [--presets realistic dense] [--commit]

Results: ``benchmarks/results/preparation.json`` and ``benchmarks/preparation.md``. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import filecmp
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.commit_results import commit
from benchmarks.crf_small_objects import stride_maps
from benchmarks.machine import machine_info
from cqbnet.cues.dense_crf import dense_crf
from cqbnet.data.dataset import read_image_of
from cqbnet.data.panoptic_format import PanopticSet, load_panoptic_json
from cqbnet.data.synthetic import generate, scene_config
from cqbnet.engine.data import dataset_paths
from cqbnet.io import atomic_path, write_json
from cqbnet.labels.simulate import simulate
from cqbnet.recipes.prepare import default_workers, segment_proposal_files, thing_cue_table

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "data" / "coco_panoptic_sample"  # real COCO images, when ../shared is there
RESULTS = ROOT / "benchmarks" / "results" / "preparation.json"
REPORT = ROOT / "benchmarks" / "preparation.md"


def timed(fn) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def same_cues(a: dict, b: dict) -> bool:
    """Whether two thing-cue tables hold the same arrays for the same images."""
    return a.keys() == b.keys() and all(all(np.array_equal(x, y) for x, y in zip(a[k], b[k], strict=True)) for k in a)


def same_files(a: Path, b: Path) -> bool:
    """Whether two folders hold the same file names with the same bytes."""
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def row(task: str, seconds: dict[int, float], images: int, objects: int, identical: bool) -> dict[str, Any]:
    """One task's timings: per image and per object at each worker count, the speed-up and the check (both None
    when one worker count was run)."""
    one, every = seconds[1], seconds[max(seconds)]
    several = len(seconds) > 1
    return {
        "task": task,
        "images": images,
        "objects": objects,
        "seconds": {str(k): v for k, v in seconds.items()},
        "seconds_per_image": {str(k): v / images for k, v in seconds.items()},
        "seconds_per_object": {str(k): v / max(1, objects) for k, v in seconds.items()},
        "speed_up": one / every if several and every > 0 else None,
        "identical": identical if several else None,
    }


def measure(gt: PanopticSet, out: Path, images: int, workers: int) -> list[dict[str, Any]]:
    """The three tasks on the first ``images`` images of ``gt``, at 1 and ``workers`` workers (1 alone when there
    are fewer than two images a worker). With ``workers``, the toolkit's own rule decides whether a pool pays
    (:data:`~cqbnet.recipes.prepare.POOL_AFTER_SECONDS`): quick work on few images stays in one process."""
    manifest = simulate(gt, {frozenset({"B", "I"}): 1.0}, out / "labels", seed=0, overwrite=True)
    ids = [lab.image_id for lab in manifest.images[:images]]
    boxes = sum(len(lab.boxes or []) for lab in manifest.images[:images])
    counts = sorted({1, workers}) if len(ids) >= 2 * workers else [1]
    rows = []
    # one image of each task first, untimed: first calls load libraries and warm caches that later calls reuse
    thing_cue_table(manifest, ids[:1], "both", 1, cache=None, progress=False)
    segment_proposal_files(manifest, ids[:1], out / "warm_up", False, 1, progress=False)

    cues, seconds = {}, {}
    for n in counts:
        seconds[n], cues[n] = timed(lambda n=n: thing_cue_table(manifest, ids, "both", n, cache=None, progress=False))
    same = same_cues(cues[1], cues[max(counts)])
    rows.append(row("thing cues (GrabCut + proposal per box)", seconds, len(ids), boxes, same))

    seconds = {}
    for n in counts:
        folder = out / f"proposals_{n}"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        seconds[n], _ = timed(lambda n=n, f=folder: segment_proposal_files(manifest, ids, f, False, n, progress=False))
    same = same_files(out / "proposals_1", out / f"proposals_{max(counts)}")
    rows.append(row("segment proposals (paper 002)", seconds, len(ids), boxes, same))

    maps, segments = [], 0
    for rec in gt.records[:images]:
        truth = gt.read_ids(rec).astype(np.int64)
        present = [s.id for s in rec.segments if (truth == s.id).any()]
        segments += len(present)
        image = read_image_of(gt.image_path(rec), rec.image_id, rec.height, rec.width, "images")
        maps.append((stride_maps(truth, present), image))
    threads, refined, seconds = torch.get_num_threads(), {}, {}
    dense_crf(*maps[0])  # untimed, as above
    try:
        for n in counts:
            torch.set_num_threads(n)
            seconds[n], refined[n] = timed(lambda: [dense_crf(p, img) for p, img in maps])
    finally:
        torch.set_num_threads(threads)
    pairs = list(zip(refined[1], refined[max(counts)], strict=True))
    same = all(torch.equal(a, b) for a, b in pairs)
    crf = row("dense CRF (click recipe; torch threads)", seconds, len(maps), segments, same)
    # torch may sum in another order on more threads: the largest difference, and whether the labels differ
    crf["max_abs_difference"] = max(float((a - b).abs().max()) for a, b in pairs)
    crf["same_labels"] = all(torch.equal(a.argmax(0), b.argmax(0)) for a, b in pairs)
    rows.append(crf)
    return rows


COCO_TRAIN = {"images": 118287, "boxes": 7.3}  # COCO train2017: images and thing boxes an image


def coco_estimate(results: dict[str, Any]) -> list[str]:
    """Hours for a COCO-sized training set on one core, scaled from the real COCO images' seconds (per box for the
    thing cues, GrabCut's work; per image for the proposals and the CRF); a pool divides them by its speed-up."""
    coco = results["presets"].get("coco-sample")
    if coco is None:
        return []
    lines = [
        f"A COCO-sized set ({COCO_TRAIN['images']} images, {COCO_TRAIN['boxes']} boxes an image), from the two COCO "
        "images' seconds, one core (the thing cues by box, the proposals and the CRF by image):"
    ]
    for r in coco["rows"]:
        by_box = r["task"].startswith("thing cues")
        per = COCO_TRAIN["boxes"] * r["seconds_per_object"]["1"] if by_box else r["seconds_per_image"]["1"]
        lines.append(f"- {r['task']}: {COCO_TRAIN['images'] * per / 3600:.0f} hours")
    return [*lines, ""]


def report(results: dict[str, Any]) -> str:
    """The markdown tables of every preset measured."""
    lines = [
        "# Label preparation: seconds per image and per object",
        "",
        "Produced by `python -m benchmarks.preparation`; results in `benchmarks/results/preparation.json`. Each "
        "task on the first training scenes of a preset, with 1 worker and with every core (processes for the "
        "thing cues and the proposals, as the toolkit runs them: a pool only once the work left outweighs starting "
        "one, `cqbnet.recipes.prepare.POOL_AFTER_SECONDS`; torch threads for the CRF), no cache; *identical*: the "
        "outputs of both "
        "runs compared byte for byte (one worker alone where the images are too few for a pool; for the CRF, "
        "whose sums torch may order differently on more threads, the "
        "largest difference and whether any pixel's label changed are in the JSON). Objects: boxes (thing cues, "
        "proposals) or segments (CRF).",
        "",
        f"Machine: `{results['machine']}`.",
        "",
    ]
    for preset, res in results["presets"].items():
        w, first = str(results["workers"]), res["rows"][0]
        lines += [
            f"## {preset} ({res['size']}, {first['objects'] / first['images']:.1f} boxes an image)",
            "",
            f"| task | images | objects | s / image, 1 worker | s / image, {w} | s / object, 1 | s / object, {w} "
            "| speed-up | identical |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            spi, spo = r["seconds_per_image"], r["seconds_per_object"]
            lines.append(
                f"| {r['task']} | {r['images']} | {r['objects']} | {spi['1']:.3f} | {spi.get(w, spi['1']):.3f} | "
                f"{spo['1']:.4f} | {spo.get(w, spo['1']):.4f} | "
                + ("- | - |" if r["speed_up"] is None else f"{r['speed_up']:.2f}x | {r['identical']} |")
            )
        lines.append("")
    return "\n".join([*lines, *coco_estimate(results)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["realistic", "dense"])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "preparation")
    ap.add_argument("--commit", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {"machine": machine_info(), "workers": args.workers, "presets": {}}
    sets: dict[str, tuple[PanopticSet, str]] = {}
    for preset in args.presets:
        cfg = scene_config(preset)
        data = args.work / preset / "data"
        if not (data / "panoptic_train.json").is_file():
            generate(data, args.images, 0, seed=0, cfg=cfg, num_test=0, overwrite=True)
        sets[preset] = (load_panoptic_json(*dataset_paths({"root": str(data)}, "train", data)), f"{cfg.size} px")
    if COCO.is_dir():  # what an estimate for a COCO-sized set scales from
        paths = (COCO / "panoptic_examples.json", COCO / "panoptic_examples", COCO / "input_images")
        gt = load_panoptic_json(*paths, categories=COCO / "panoptic_coco_categories.json")
        sets["coco-sample"] = (gt, "COCO val2017, " + ", ".join(f"{r.width}x{r.height}" for r in gt.records))
    for name, (gt, size) in sets.items():
        rows = measure(gt, args.work / name, args.images, args.workers)
        results["presets"][name] = {"size": size, "rows": rows}
        print(report({**results, "presets": {name: results["presets"][name]}}), flush=True)
    write_json(RESULTS, results, indent=2)
    with atomic_path(REPORT) as tmp:
        tmp.write_text(report(results))
    if args.commit:
        commit([RESULTS, REPORT], "preparation: seconds per image and per object, 1 worker and every core")


if __name__ == "__main__":
    main()
