"""Paper 001 (Li, Arnab and Torr) on the synthetic scenes: boxes for things and tags for stuff, approximate ground
truth, refinement rounds.

Per seed, every step resumable (a finished step's output is kept, an interrupted training resumes):

1. every training image labelled with boxes and tags (``B+I=1``, the seed's simulation);
2. paper 001's recipe (``cqbnet.engine.boxes_tags``, what ``cqbnet boxes-tags`` runs): a network trained on them
   with Cls2Pixel on (the pilot's schedule) for the CAMs, round 0 of the approximate labels, the recipe's network
   trained on round r and round r + 1 refined from it, for ``--rounds`` rounds; every round's labels scored
   against the hidden ground truth and every network evaluated on val;
3. full supervision at the same schedule and seed, for the fractions.

Ablations (round 0 only, one run each): ``--cues grabcut proposal box`` (``box``: every box pixel its class, no
ignore). Usage::

    python benchmarks/boxes_tags.py --seeds 0 1 --rounds 1 [--cues grabcut proposal box] [--commit]

Results: ``benchmarks/results/boxes_tags/runs.json``, ``summary.json`` and ``benchmarks/boxes_tags.md``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from commit_results import commit  # benchmarks/commit_results.py
from machine import machine_info  # benchmarks/machine.py

from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.boxes_tags import run_boxes_tags, trained
from cqbnet.engine.config import load_config
from cqbnet.engine.data import dataset_paths, load_split
from cqbnet.engine.inference import evaluate_model
from cqbnet.engine.trainer import load_model
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.sweep.protocol import MODULES
from cqbnet.sweep.runner import shared_data_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "boxes_tags"
REPORT = Path(__file__).parent / "boxes_tags.md"
RECIPE = ROOT / "configs" / "synthetic_full.yaml"
CAM_CONFIG = ROOT / "configs" / "synthetic_pilot.yaml"
TARGETS = {"fraction_of_full": 0.88, "stuff_fraction_of_full": 0.83}  # issue 20 (paper 001: 85.6%, 83.0%)


def evaluated(cfg: dict[str, Any], out: Path) -> dict[str, float]:
    """PQ (percent) on val of a trained run, argmax inference; cached in ``out/val.json``."""
    if (out / "val.json").is_file():
        return read_json(out / "val.json")
    model, _ = load_model(trained(cfg, out), torch.device("cpu"))
    val = load_split(cfg["data"], "val", out)
    r = evaluate_model(model, val, torch.device("cpu"), "argmax")
    res = {k: (100 * v if k != "images" else v) for k, v in r.summary().items()}
    write_json(out / "val.json", res, indent=2)
    return res


def run_seed(seed: int, rounds: int, cues: list[str], overrides: list[str], work: Path) -> list[dict[str, Any]]:
    recipe = shared_data_config(load_config(RECIPE, overrides), work)
    recipe["train"]["seed"] = seed
    recipe["model"]["weak"] = {**recipe["model"].get("weak", {}), **{m: False for m in MODULES}}
    cam_cfg = shared_data_config(load_config(CAM_CONFIG, overrides), work)
    cam_cfg["train"]["seed"] = seed
    gt = load_panoptic_json(*dataset_paths(recipe["data"], "train", work))
    base = work / f"s{seed}"
    manifest = base / "labels" / "manifest.json"
    if not manifest.is_file():
        simulate(gt, parse_ratio("B+I=1"), base / "labels", seed=seed)
    rows = [{"seed": seed, "arm": "full", **evaluated(copy.deepcopy(recipe), base / "full")}]
    for cue in ["both", *cues]:
        for entry in run_boxes_tags(recipe, cam_cfg, manifest, base, rounds if cue == "both" else 0, cue, "cpu", gt):
            cfg = copy.deepcopy(recipe)
            cfg["data"]["manifest"], cfg["data"]["approximate"] = str(manifest), str(entry["labels"])
            name = f"{cue}_round{entry['round']}"
            rows.append({"seed": seed, "arm": name, "labels": entry["score"], **evaluated(cfg, entry["run"])})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["arm"], []).append(r)
    mean = {a: {k: float(np.mean([r[k] for r in rs])) for k in ("pq", "pq_th", "pq_st")} for a, rs in by.items()}
    out: dict[str, Any] = {"machine": machine_info(), "mean": mean}
    refined = sorted((a for a in mean if a.startswith("both_round")), key=lambda a: int(a.rsplit("round", 1)[1]))
    if "full" in mean and refined and mean["full"]["pq"] > 0:
        last = refined[-1]
        out["refined_arm"] = last
        out["fraction_of_full"] = mean[last]["pq"] / mean["full"]["pq"]
        out["stuff_fraction_of_full"] = mean[last]["pq_st"] / max(mean["full"]["pq_st"], 1e-9)
        out["targets"] = TARGETS
    return out


def report(rows: list[dict[str, Any]], summ: dict[str, Any]) -> str:
    lines = [
        "# Paper 001: boxes for things, tags for stuff, on the synthetic scenes",
        "",
        "Produced by `python benchmarks/boxes_tags.py`; every row one trained network (`results/boxes_tags/`). PQ in "
        "percent on the 300 val scenes, argmax inference; *labels* columns score the approximate labels the network "
        "was trained on against the hidden ground truth (pixel precision and coverage of things and stuff, the "
        "share of pixels labelled, PQ with ignore as void).",
        f"Machine: `{summ['machine']}`.",
        "",
        "| arm | seed | PQ | PQ_th | PQ_st | SQ_th | labels: prec th / cov th | prec st / cov st | labelled "
        "| labels PQ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lab = r.get("labels")
        cols = (
            f"{lab['precision_th']:.1f} / {lab['coverage_th']:.1f} | {lab['precision_st']:.1f} / "
            f"{lab['coverage_st']:.1f} | {lab['labelled_share']:.1f}% | {lab['pq']:.1f}"
            if lab
            else "- | - | - | -"
        )
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['pq']:.1f} | {r['pq_th']:.1f} | {r['pq_st']:.1f} | {r['sq_th']:.1f} | "
            f"{cols} |"
        )
    lines.append("")
    for key, target in TARGETS.items():
        if key in summ:
            lines.append(
                f"- {key} ({summ['refined_arm']}): {100 * summ[key]:.1f}% (target {100 * target:.0f}%): "
                f"{'met' if summ[key] >= target else 'MISSED'}."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--rounds", type=int, default=1, help="refinement rounds after round 0")
    ap.add_argument("--cues", nargs="*", default=[], choices=["grabcut", "proposal", "box"], help="ablations")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "boxes_tags")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides for every network, e.g. solver.max_iter=320")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        rows += run_seed(seed, args.rounds, args.cues, args.overrides, args.work)
        args.results.mkdir(parents=True, exist_ok=True)
        summ = summary(rows)
        write_json(args.results / "runs.json", {"overrides": args.overrides, "runs": rows}, indent=2)
        write_json(args.results / "summary.json", summ, indent=2)
        with atomic_path(args.report) as tmp:
            tmp.write_text(report(rows, summ))
        if args.commit:
            commit(
                [args.results / "runs.json", args.results / "summary.json", args.report],
                "boxes and tags (paper 001): results so far",
            )


if __name__ == "__main__":
    main()
