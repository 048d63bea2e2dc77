"""The scene presets measured: how much appearance tells about a thing's class, and where colour priors fire.

For each preset asked for (``realistic`` and ``camouflage`` by default; ``dense`` with ``--presets dense``, the
others kept as measured) the script writes the 2000 / 300 scenes of seed 0
(timing the generation) and measures:

* ``colour_only_acc``: nearest class centroid of each thing's 4 x 4 x 4 RGB histogram
  (:func:`cqbnet.data.scene_probes.colour_only_accuracy`; train things -> val things, non-crowd, >= 20 px);
* ``mask_only_acc`` and ``crop_acc``: the small CNN of ``thing_class_probe.py`` trained on the visible masks alone
  and on the image crops of the training things (600 steps, mean over ``--seeds``), scored on the val things;
* LAB distances of pixel pairs 2 px apart inside one thing and across a thing's boundary;
* colour-prior pass rates: the share of neighbour pairs with ``exp(-||dLAB|| / theta) >= 0.3`` inside one
  segment and across segments, on the image average pooled by 1, 2, 4 and 8, for the theta of Box2Mask's pairwise
  term (2, dilation 2 on the RoI grid) and of Cls2Pixel's energy (8, dilation 1 on the semantic grid).

Usage: ``python -m benchmarks.scenes [--presets dense]`` writes ``benchmarks/results/scenes.json`` and the tables of
every preset measured into ``benchmarks/scenes.md`` (between its markers; ``--report-only`` rewrites them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.thing_class_probe import object_crops, train_probe
from cqbnet.data.scene_probes import colour_only_accuracy, lab_edge_statistics, neighbour_affinity_pass_rates
from cqbnet.data.synthetic import THING_SHAPES, SceneConfig, generate, make_scene, scene_rng
from cqbnet.io import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "scenes.json"


def measure(preset: str, work: Path, seeds: list[int], steps: int) -> dict:
    cfg = SceneConfig(preset=preset)
    data = work / preset
    shutil.rmtree(data, ignore_errors=True)  # always today's generator
    t0 = time.perf_counter()
    generate(data, 2000, 300, seed=0, cfg=cfg)
    seconds = time.perf_counter() - t0
    train = [make_scene(scene_rng(0, "train", i), cfg) for i in range(2000)]  # the same scenes as the files
    val = [make_scene(scene_rng(0, "val", i), cfg) for i in range(300)]
    nt = len(THING_SHAPES)
    colour = colour_only_accuracy(train, val, nt)
    x_rgb, x_mask, y = object_crops(data, "train", 2000)
    xv_rgb, xv_mask, yv = object_crops(data, "val", 300)
    crop = [train_probe(x_rgb, y, xv_rgb, yv, steps, s)["val_accuracy"] for s in seeds]
    mask = [train_probe(x_mask, y, xv_mask, yv, steps, s)["val_accuracy"] for s in seeds]
    priors = {}
    for name, theta, dilation in (("box2mask", 2.0, 2), ("cls2pixel", 8.0, 1)):
        for pool in (1, 2, 4, 8):
            priors[f"{name}_pool{pool}"] = neighbour_affinity_pass_rates(val[:150], nt, pool, theta, 0.3, dilation)
    return {
        "generation_seconds": seconds,
        "colour_only_acc": colour["accuracy"],
        "majority_class": colour["majority"],
        "val_things": colour["val_things"],
        "mask_only_acc": float(np.mean(mask)),
        "crop_acc": float(np.mean(crop)),
        "mask_only_runs": mask,
        "crop_runs": crop,
        "lab_pairs_2px": lab_edge_statistics(val, nt, gap=2),
        "colour_prior": priors,
    }


BEGIN, END = "<!-- tables: written by benchmarks/scenes.py from results/scenes.json -->", "<!-- /tables -->"
REPORT = Path(__file__).parent / "scenes.md"


def tables(res: dict) -> str:
    """Every preset's probes and colour-prior pass rates as markdown tables, between the report's markers."""
    lines = [
        BEGIN,
        "| preset | val things | colour only | mask only | image crop | majority | LAB inside p90 | across p50 "
        "| generation (2300 scenes) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    presets = {p: r for p, r in res.items() if isinstance(r, dict) and "colour_only_acc" in r}
    for p, r in presets.items():
        e = r["lab_pairs_2px"]
        lines.append(
            f"| {p} | {r['val_things']} | {100 * r['colour_only_acc']:.1f}% | {100 * r['mask_only_acc']:.1f}% | "
            f"{100 * r['crop_acc']:.1f}% | {100 * r['majority_class']:.1f}% | {e['inside_p90']:.1f} | "
            f"{e['across_p50']:.1f} | {r['generation_seconds']:.0f} s |"
        )
    lines += ["", "| preset | term | pool | within thing | within stuff | across |", "|---|---|---|---|---|---|"]
    for p, r in presets.items():
        for k, v in r["colour_prior"].items():
            term, pool = k.rsplit("_pool", 1)
            lines.append(
                f"| {p} | {term} | {pool} | {100 * v['within_thing']:.1f}% | {100 * v['within_stuff']:.1f}% | "
                f"{100 * v['across']:.1f}% |"
            )
    return "\n".join([*lines, END])


def write_tables(res: dict, report: Path = REPORT) -> None:
    """Put :func:`tables` between the report's markers."""
    text = report.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    with atomic_path(report) as tmp:
        tmp.write_text(text[:start] + tables(res) + text[stop:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "scenes")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--presets", nargs="+", default=["realistic", "camouflage"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true", help="rewrite the report's tables from --out")
    args = ap.parse_args()
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.report_only:
        write_tables(old)
        return
    keep = ("realistic", "camouflage", "dense")
    res = {p: old[p] for p in keep if p in old and p not in args.presets}  # kept as measured
    res.update({p: measure(p, args.work, args.seeds, args.steps) for p in args.presets})
    write_json(args.out, {"machine": machine_info(), "probe_steps": args.steps, "seeds": args.seeds, **res}, indent=2)
    write_tables(res)
    print(tables(res))


if __name__ == "__main__":
    main()
