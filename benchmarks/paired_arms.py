"""Two or more arms of one recipe, paired by seed: the same data, initialisation and data order per seed.

Each arm is a name and config overrides; each (arm, seed) run trains with ``train.seed=<seed>`` on data
generated once for all of them, resumes from its checkpoint when stopped, and is never trained again once it
has finished. The report gives each arm's mean over seeds and, against the first arm, the paired difference
with a 95% interval (Student's t over the per-seed differences; with n seeds it has n - 1 degrees of freedom).

Usage::

    python -m benchmarks.paired_arms --name mask_train_stage --config configs/synthetic_pilot.yaml \\
        --arm last= --arm first=model.mask_train_stage=0 --seeds 0 1 2 [--commit]

``--arm NAME=OVERRIDE[,OVERRIDE...]``. Results: ``benchmarks/results/<name>.json`` and
``benchmarks/<name>.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.commit_results import commit
from benchmarks.detector_diagnostics import diagnose
from benchmarks.machine import machine_info
from benchmarks.synthetic_recipe import final_pq
from cqbnet.engine.config import load_config
from cqbnet.engine.data import shared_data_config
from cqbnet.engine.trainer import train
from cqbnet.evaluation.statistics import paired_difference
from cqbnet.io import atomic_path, read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("pq", "pq_th", "pq_st")


def parse_arm(text: str) -> tuple[str, list[str]]:
    """``"first=model.mask_train_stage=0,solver.base_lr=0.01"`` -> ("first", [overrides])."""
    name, _, rest = text.partition("=")
    if not name:
        raise SystemExit(f"--arm {text!r}: give NAME=OVERRIDES")
    parts, depth, cur = [], 0, ""
    for ch in rest:  # commas inside [...] or {...} belong to a value (solver.steps=[1500,1840])
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return name, [o for o in [*parts, cur] if o]


def report(name: str, cfg_path: Path, arms: list[str], rows: list[dict[str, Any]], split: str = "val") -> str:
    """Markdown: every run, each arm's means, and each arm minus the first, paired by seed."""
    lines = [
        f"# Paired arms: {name}",
        "",
        f"Produced by `python -m benchmarks.paired_arms --name {name}` from `{cfg_path.name}`; runs in "
        f"`results/{name}.json`. Argmax inference on the whole {split} split, PQ in percent; class accuracy from "
        "`benchmarks/detector_diagnostics.py` (first 300 val scenes).",
        f"Machine: `{json.dumps(machine_info())}`.",
        "",
        "| arm | overrides | seed | PQ | PQ_th | PQ_st | class accuracy | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {' '.join(r['overrides']) or '-'} | {r['seed']} | {r['pq']:.1f} | {r['pq_th']:.1f} | "
            f"{r['pq_st']:.1f} | {100 * r['class_accuracy']:.1f}% | {r['seconds'] / 60:.1f} |"
        )
    lines += ["", "| arm | seeds | PQ | PQ_th | PQ_st | class accuracy |", "|---|---|---|---|---|---|"]
    by_arm = {a: {r["seed"]: r for r in rows if r["arm"] == a} for a in arms}
    for a in arms:
        runs = list(by_arm[a].values())
        if runs:
            means = [np.mean([r[m] for r in runs]) for m in (*METRICS, "class_accuracy")]
            lines.append(
                f"| {a} | {len(runs)} | {means[0]:.1f} | {means[1]:.1f} | {means[2]:.1f} | {100 * means[3]:.1f}% |"
            )
    lines.append("")
    base = arms[0]
    for a in arms[1:]:
        seeds = sorted(set(by_arm[a]) & set(by_arm[base]))
        if not seeds:
            continue
        parts = []
        for m in METRICS:
            d = paired_difference({s: by_arm[a][s][m] for s in seeds}, {s: by_arm[base][s][m] for s in seeds})
            parts.append(f"{m} {d.text()}")
        lines.append(f"- {a} minus {base}, paired over seeds {seeds} (95% t interval): " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True, help="names the results JSON and report")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_pilot.yaml")
    ap.add_argument(
        "--arm", action="append", required=True, help="NAME=OVERRIDE[,OVERRIDE...]; the first is the reference"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=None, help="runs and data (default runs/<name>, not committed)")
    ap.add_argument("--commit", action="store_true", help="commit the JSON and report after every run")
    ap.add_argument("--split", choices=("val", "test"), default="val", help="val to choose, test to report")
    args = ap.parse_args()
    arms = [parse_arm(a) for a in args.arm]
    work = args.work or ROOT / "runs" / args.name
    results = Path(__file__).parent / "results" / f"{args.name}.json"
    md = Path(__file__).parent / f"{args.name}.md"
    saved = read_json(results) if results.is_file() else {}
    if saved and saved.get("split", "val") != args.split:
        raise SystemExit(f"{results}: holds runs on {saved.get('split', 'val')}; give another --name for {args.split}")
    rows = saved.get("runs", [])
    names = [a for a, _ in arms]

    def save() -> None:
        write_json(
            results,
            {"machine": machine_info(), "config": args.config.name, "split": args.split, "runs": rows},
            indent=2,
        )
        with atomic_path(md) as tmp:
            Path(tmp).write_text(report(args.name, args.config, names, rows, args.split))

    for seed in args.seeds:
        for arm, overrides in arms:
            if any(r["arm"] == arm and r["seed"] == seed and r["overrides"] == overrides for r in rows):
                continue
            cfg = load_config(
                args.config, [*overrides, f"train.seed={seed}", "train.eval_period=0", "train.test_at_end=false"]
            )
            cfg.pop("pilot", None)
            cfg = shared_data_config(cfg, work)
            run = work / f"{arm}_s{seed}"
            t = time.time()
            train(cfg, run, device="cpu", resume=True, progress=False)
            final_modes = final_pq(run, args.split)
            final = final_modes["argmax"]
            diag = diagnose(run / "model_final.pth", Path(cfg["data"]["root"]), images=300)
            rows.append(
                {
                    "arm": arm,
                    "overrides": overrides,
                    "seed": seed,
                    **{m: 100 * final[m] for m in METRICS},
                    "class_accuracy": diag["class_accuracy"],
                    "heuristic": {m: 100 * final_modes["heuristic"][m] for m in METRICS},
                    "seconds": time.time() - t,
                    "iterations": cfg["solver"]["max_iter"],
                    "base_lr": cfg["solver"]["base_lr"],
                }
            )
            print(f"{arm} seed {seed}: PQ {rows[-1]['pq']:.1f} PQ_th {rows[-1]['pq_th']:.1f}", flush=True)
            save()
            if args.commit:
                commit([results, md], f"paired arms {args.name}: {arm} seed {seed}")
    save()


if __name__ == "__main__":
    main()
