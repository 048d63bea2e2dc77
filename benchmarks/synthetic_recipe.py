"""The CPU recipe (configs/synthetic_full.yaml): train (or resume), then evaluate the final checkpoint on the whole
synthetic val split with both inference modes, and collect the learning curve.

Usage: ``python -m benchmarks.synthetic_recipe --run runs/synthetic_full [--out JSON] [overrides ...]``; writes
``benchmarks/results/synthetic_recipe.json`` unless ``--out`` says otherwise. Training resumes from the run folder's
last checkpoint, so the script can be stopped and started again. Training time is the sum of the logged seconds
per iteration (wall time of the steps, data loading included) plus the periodic evaluations' time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.machine import machine_info
from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.engine.config import load_config
from cqbnet.engine.inference import evaluate_model
from cqbnet.engine.trainer import load_model, train

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "synthetic_recipe.json"


def final_pq(run: Path, split: str = "val") -> dict[str, dict]:
    """PQ of a run's final checkpoint on its whole ``split``, argmax and heuristic, with each evaluation's time."""
    model, cfg_used = load_model(run / "model_final.pth", torch.device("cpu"))
    data = run / "data" if cfg_used["data"].get("root") is None else Path(cfg_used["data"]["root"])
    val = PanopticDataset(*split_paths(data, split))
    final = {}
    for mode in ("argmax", "heuristic"):
        t = time.time()
        r = evaluate_model(model, val, torch.device("cpu"), mode)
        final[mode] = {**r.summary(), "seconds": time.time() - t}
        print(mode, {k: round(v, 4) if isinstance(v, float) else v for k, v in final[mode].items()}, flush=True)
    return final


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "synthetic_full")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_full.yaml")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    t = time.time()
    train(cfg, args.run, device="cpu", resume=True, progress=False)
    this_call = time.time() - t

    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "sec_per_iter" in r]
    evals = [r for r in rows if "pq" in r]
    train_seconds = 0.0
    prev = 0
    for r in steps:
        train_seconds += r["sec_per_iter"] * (r["iter"] - prev)
        prev = r["iter"]

    final = final_pq(args.run)
    result = {
        "machine": machine_info(),
        "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
        "overrides": args.overrides,
        "iterations": cfg["solver"]["max_iter"],
        "train_step_seconds": train_seconds,
        "this_call_seconds": this_call,
        "learning_curve": [{k: e[k] for k in ("iter", "pq", "pq_th", "pq_st", "miou")} for e in evals],
        "loss_curve": [{"iter": r["iter"], "loss": r["loss"]} for r in steps],
        "final": final,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
