"""Is a training step on paper 001's approximate labels slower than on full labels? Measured alone, side by side.

The same images (the first ``--images`` training scenes of a preset, by default the dense one: 256 px, 20-80
small objects, the stand-in for crowded real tiles), the same network (``--config``), seed, batch and schedule:
``cqbnet fit`` of boxes and tags on every image with ``fit.rounds=0`` (its final network learns from round 0's
approximate labels) against ``cqbnet fit`` of full masks on every image. Compared: the final networks' own logged
seconds per iteration (data loading included; median of the logged windows after the first), and the data
loading alone (seconds per batch of each label set's training stream, no network). Usage::

    python -m benchmarks.approx_step [--preset dense] [--images 100] [--iterations 100] [--commit]

Results: ``benchmarks/results/approx_step.json`` and ``benchmarks/approx_step.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.config import load_config
from cqbnet.engine.data import dataset_paths, shared_data_config
from cqbnet.io import atomic_path, write_json
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.recipes.fit import FINAL, run_fit

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "approx_step.json"
REPORT = ROOT / "benchmarks" / "approx_step.md"
CONFIGS = {"dense": ROOT / "configs" / "synthetic_dense.yaml", "realistic": ROOT / "configs" / "synthetic_full.yaml"}
ARMS = {"full masks": "P=1", "boxes and tags, round 0": "B+I=1"}


def seconds_per_iteration(run: Path) -> list[float]:
    """The logged seconds per iteration of a training run (one value per logged window), the first window left out
    (it holds the warm-up of the data workers and of the allocator)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["sec_per_iter"] for r in rows if "sec_per_iter" in r][1:]


def loading_seconds(cfg: dict[str, Any], out: Path, batches: int) -> float:
    """Seconds per batch of a run's training stream alone (the trainer's loader and workers, no network), over
    ``batches`` batches after the first."""
    from cqbnet.engine.data import prepare_data
    from cqbnet.engine.trainer import training_loader, training_set

    dcfg = prepare_data(cfg["data"], out, write=False)
    it = iter(training_loader(training_set(dcfg, out), {**cfg, "data": dcfg}, 0, batches + 1))
    next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - t) / batches


def measure(preset: str, images: int, iterations: int, work: Path, batches: int) -> dict[str, Any]:
    """Both fits on the same scenes and their step and loading times."""
    overrides = [
        f"data.synthetic.num_train={images}",
        "data.synthetic.num_val=8",
        "data.synthetic.num_test=0",
        f"solver.max_iter={iterations}",
        "solver.warmup_iters=10",
        f"solver.steps=[{iterations}]",
        "train.eval_period=0",
        "train.test_at_end=False",
        "train.log_period=10",
        "fit.rounds=0",
        "fit.classifier_iter=20",
    ]
    cfg = shared_data_config(load_config(CONFIGS[preset], overrides), work)
    cfg["data"]["labels"] = None
    gt = load_panoptic_json(*dataset_paths(cfg["data"], "train", work))
    out: dict[str, Any] = {}
    for name, ratio in ARMS.items():
        run = work / ratio.split("=")[0].replace("+", "")
        labels = run / "labels" / "manifest.json"
        if not labels.is_file():
            simulate(gt, parse_ratio(ratio), run / "labels", seed=0)
        summary = run_fit(cfg, labels, run, "cpu", workers=2, cache=work / "cache", progress=False)
        final_cfg = load_config(run / FINAL / "config.yaml")
        steps = seconds_per_iteration(run / FINAL)
        out[name] = {
            "ratio": ratio,
            "sec_per_iter_median": statistics.median(steps),
            "sec_per_iter_windows": steps,
            "loading_sec_per_batch": loading_seconds(final_cfg, run / FINAL, batches),
            "stages": summary["stages"],
        }
    base, approx = (out[n]["sec_per_iter_median"] for n in ARMS)
    return {
        "preset": preset,
        "images": images,
        "iterations": iterations,
        "batch_size": cfg["solver"]["batch_size"],
        "arms": out,
        "approximate_over_full": approx / base,
    }


def report(res: dict[str, Any]) -> list[str]:
    lines = [
        "# A training step on paper 001's approximate labels against full labels",
        "",
        f"Produced by `python -m benchmarks.approx_step` (`results/approx_step.json`): the {res['preset']} scenes' "
        f"first {res['images']} training images, `{CONFIGS[res['preset']].relative_to(ROOT)}`'s network, batch "
        f"{res['batch_size']}, {res['iterations']} iterations per final network, one process at a time. Machine: "
        f"`{res['machine']}`.",
        "",
        "| labels | s / iteration (median of logged windows) | data loading alone, s / batch |",
        "|---|---:|---:|",
    ]
    for name, r in res["arms"].items():
        lines.append(f"| {name} | {r['sec_per_iter_median']:.3f} | {r['loading_sec_per_batch']:.3f} |")
    lines += ["", f"Approximate over full: **{res['approximate_over_full']:.2f}x** (target: at most 1.10x).", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="dense", choices=sorted(CONFIGS))
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--batches", type=int, default=20, help="batches timed for the loading alone")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "approx_step")
    ap.add_argument("--commit", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    res = measure(args.preset, args.images, args.iterations, args.work / args.preset, args.batches)
    res["machine"] = machine_info()
    write_json(OUT, res, indent=2)
    with atomic_path(REPORT) as tmp:
        tmp.write_text("\n".join(report(res)) + "\n")
    print("\n".join(report(res)))
    if args.commit:
        commit([OUT, REPORT], f"approx_step: approximate over full labels {res['approximate_over_full']:.2f}x")


if __name__ == "__main__":
    main()
