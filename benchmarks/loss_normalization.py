"""How a mixed batch's losses are weighed, and what it does to the detector (``model.loss_normalization``).

    python -m benchmarks.loss_normalization [--iterations 300] [--rho 0.3] [--seed 0] [--commit]

Trains the CPU recipe (``configs/synthetic_full.yaml``) for ``--iterations`` on labels where a share ``rho`` of
the images carries panoptic labels and the rest carries image tags with every weak module off, so the rest
teaches nothing: the same run once with ``labelled`` (each loss a mean over the images that carry it) and once
with ``batch`` (that mean times their share of the batch). For each run, on the first 80 val scenes:

* the mean magnitude of the FPN levels (the features every head reads);
* per cascade stage, on the ground-truth thing boxes themselves: the mean foreground probability and the share
  classified right (chance 1/6).

The runs resume from their checkpoints. Results: ``benchmarks/results/loss_normalization.json`` and
``benchmarks/loss_normalization.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.commit_results import commit
from benchmarks.detector_diagnostics import detector_on_true_boxes
from benchmarks.machine import machine_info
from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.engine.config import load_config
from cqbnet.engine.trainer import load_model, train
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.modeling.supervision import LOSS_NORMALIZATIONS
from cqbnet.sweep.protocol import RunSpec
from cqbnet.sweep.runner import prepare_labels, run_config, shared_data_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "loss_normalization.json"
REPORT = Path(__file__).parent / "loss_normalization.md"


def run(cfg: dict[str, Any], work: Path, normalization: str, rho: float, seed: int) -> dict[str, Any]:
    spec = RunSpec((("P", rho), ("I", round(1 - rho, 10))), (), seed)
    out = work / "runs" / f"{spec.key}_{normalization}_{cfg['solver']['max_iter']}it"
    t0 = time.time()
    manifest = prepare_labels(spec, cfg, out)
    run_cfg = run_config(cfg, spec, manifest)
    run_cfg["model"]["loss_normalization"] = normalization
    train(run_cfg, out, resume=True, progress=False)
    model, _ = load_model(out / "model_final.pth", torch.device("cpu"))
    val = PanopticDataset(*split_paths(cfg["data"]["root"], "val"))
    return {
        "normalization": normalization,
        "run": out.name,
        **detector_on_true_boxes(model, val),
        "seconds": time.time() - t0,
    }


def report(doc: dict[str, Any]) -> str:
    lines = [
        "# Weighing a mixed batch's losses: `labelled` against `batch`",
        "",
        f"Produced by `python -m benchmarks.loss_normalization` ({doc['iterations']} iterations of "
        f"`configs/synthetic_full.yaml`, seed {doc['seed']}); labels: {100 * doc['rho']:g}% of the training scenes "
        f"panoptic, the rest tags with every weak module off (they teach nothing). Machine: "
        f"`{json.dumps(doc['machine'])}`.",
        "",
        "Measured on the first 80 val scenes: the FPN levels' mean magnitude, and per cascade stage (1/2/3) the "
        "foreground probability and the class accuracy (chance 16.7%) on the ground-truth thing boxes.",
        "",
        "| loss_normalization | FPN magnitude | P(foreground) on true boxes | class accuracy on true boxes | minutes |",
        "|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        fg = " / ".join(f"{p:.2f}" for p in r["foreground_probability"])
        acc = " / ".join(f"{100 * a:.0f}%" for a in r["class_accuracy"])
        lines.append(f"| {r['normalization']} | {r['fpn_magnitude']:.2f} | {fg} | {acc} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_full.yaml")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "loss_normalization", help="not committed")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--rho", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, default=REPORT)
    args = ap.parse_args()
    overrides = ["train.eval_period=0", f"solver.max_iter={args.iterations}"]
    cfg = shared_data_config(load_config(args.config, overrides), args.work)
    doc = read_json(args.results) if args.results.is_file() else {}
    setting = {"iterations": args.iterations, "rho": args.rho, "seed": args.seed}
    rows = doc["runs"] if all(doc.get(k) == v for k, v in setting.items()) else []
    for normalization in LOSS_NORMALIZATIONS:
        if any(r["normalization"] == normalization for r in rows):
            continue
        rows.append(run(cfg, args.work, normalization, args.rho, args.seed))
        doc = {"machine": machine_info(), **setting, "runs": rows}
        write_json(args.results, doc, indent=2)
        with atomic_path(args.report) as tmp:
            Path(tmp).write_text(report(doc))
        print(report(doc))
        if args.commit:
            commit([args.results, args.report], f"loss_normalization benchmark: {normalization}")


if __name__ == "__main__":
    main()
