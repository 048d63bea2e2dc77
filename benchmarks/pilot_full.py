"""Full supervision at the pilot's schedule (``configs/synthetic_pilot.yaml``): what every pilot run can reach.

Trains the pilot's network on the plain panoptic split (every image fully labelled) for the pilot's schedule, or
resumes it, then evaluates the final checkpoint on the whole val split with both inference modes and runs
``detector_diagnostics.diagnose`` (proposal recall, detector class accuracy) on all val images.

Usage: ``python -m benchmarks.pilot_full [--run runs/pilot_full] [overrides ...]``; writes
``benchmarks/results/pilot_full.json`` with ``pq_th`` (argmax) and ``class_accuracy`` at the top level.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.detector_diagnostics import diagnose
from benchmarks.machine import machine_info
from benchmarks.synthetic_recipe import final_pq
from cqbnet.engine.config import load_config
from cqbnet.engine.trainer import train
from cqbnet.io import write_json

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "pilot_full.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "pilot_full")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_pilot.yaml")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    cfg.pop("pilot", None)
    t = time.time()
    train(cfg, args.run, device="cpu", resume=True, progress=False)
    train_seconds = time.time() - t
    final = final_pq(args.run)
    diag = diagnose(args.run / "model_final.pth", args.run / "data", images=300)
    print(diag)
    result = {
        "machine": machine_info(),
        "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
        "overrides": args.overrides,
        "iterations": cfg["solver"]["max_iter"],
        "train_seconds_this_call": train_seconds,
        "pq": final["argmax"]["pq"],
        "pq_th": final["argmax"]["pq_th"],
        "pq_st": final["argmax"]["pq_st"],
        "class_accuracy": diag["class_accuracy"],
        "proposal_recall_iou50": diag["proposal_recall_iou50"],
        "val_things": diag["things"],
        "final": final,
    }
    write_json(args.out, result, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
