"""``cqbnet fit`` on the synthetic scenes: a planned mix of label methods and each method alone, paired by seed.

Arms (each a label mix simulated with the run's seed, its images learnt with the methods the arm names or their
kinds' default method, the config's network for every stage; ``--config``, default the CPU recipe
``configs/synthetic_full.yaml``, ``configs/synthetic_dense.yaml`` for the dense scenes):

* ``mix``: P 0.1 / B+I 0.3 / PT 0.6 (full masks; paper 001's boxes and tags, the toolkit's rule over
  ``fit.rounds``; one click per segment through the offline CRF recipe);
* ``boxes-tags`` (the toolkit's rule), ``boxes-tags-released`` (paper 001's released rule): B+I for every image;
* ``points`` / ``points10``: one / ten clicks per segment for every image, the offline CRF recipe;
  ``points-online`` / ``points10-online``: the same clicks through paper 003's online rule;
* ``tags``: tags for every image through paper 002; ``full``: masks;
* ``full<N>``: full supervision trained for N iterations (the solver's steps scaled), N the total training
  iterations of another arm's networks: the like-for-like reference.

Each run is a ``cqbnet fit`` into ``<work>/<arm>_s<seed>`` (resumable; the scenes are made once), evaluated on
the split asked for in both inference modes. The summary gives each arm's compute (iterations and minutes of every
stage) and its fraction of full supervision's PQ and PQ_th (``benchmarks/recipe_arms.py``'s :func:`methods`:
against full supervision at 1000 iterations, ``--reference`` (default ``results/full_test.json``, the realistic
recipe) or this benchmark's own ``full`` arm (``--reference own``), and against full at the same total
iterations, in the same inference mode, a paired delta-method t interval over seeds). ``--name KEY=ARM`` adds a
summary key for an arm chosen on val. The per-image preparation's seconds and speed-up on 2 cores are
``benchmarks/preparation.py``'s. Usage::

    python -m benchmarks.fit --arms mix full4320 --seeds 0 1 2 --split test [--commit]
    python -m benchmarks.fit --config configs/synthetic_dense.yaml --reference own --results \
        benchmarks/results/dense --report benchmarks/dense.md --work runs/dense --arms full boxes-tags points \
        points10 points-online points10-online tags --seeds 0 1 2 --split val

Results: ``benchmarks/results/fit/{runs,summary}.json`` and ``benchmarks/fit.md``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from benchmarks.recipe_arms import methods, ratio_text, reference_rows, seed_ratio
from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.config import load_config
from cqbnet.engine.data import dataset_paths, shared_data_config
from cqbnet.engine.inference import evaluate_model
from cqbnet.engine.trainer import load_model
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.labels.simulate import parse_methods, parse_ratio, simulate
from cqbnet.network.panoptic_net import INFERENCE_MODES
from cqbnet.recipes.fit import FINAL, run_fit
from cqbnet.recipes.stages import scaled_solver

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic_full.yaml"
FULL_TEST = ROOT / "benchmarks" / "results" / "full_test.json"  # the full recipe at 1000 and 2000 iterations, test
RESULTS = ROOT / "benchmarks" / "results" / "fit"
REPORT = ROOT / "benchmarks" / "fit.md"


@dataclass(frozen=True)
class FitArm:
    """A label mix, the methods its kind sets are learnt with (the catalogue's defaults otherwise) and the clicks
    per segment of its point images."""

    ratio: str
    methods: tuple[str, ...] = ()  # KINDS=METHOD, as `cqbnet labels simulate --method` takes them
    clicks: int = 1


ARMS = {
    "mix": FitArm("P=0.1,B+I=0.3,PT=0.6"),
    "boxes-tags": FitArm("B+I=1"),  # paper 001 through the toolkit's rule (boxes-tags-001)
    "boxes-tags-released": FitArm("B+I=1", ("B+I=boxes-tags-001-released",)),
    "points": FitArm("PT=1"),  # one click per segment, the offline CRF recipe (points-crf)
    "points10": FitArm("PT=1", clicks=10),
    "points-online": FitArm("PT=1", ("PT=points-003",)),  # paper 003's online rule
    "points10-online": FitArm("PT=1", ("PT=points-003",), clicks=10),
    "tags": FitArm("I=1", ("I=tags-002",)),  # paper 002
    "full": FitArm("P=1"),
}


def arm_config(arm: str, overrides: list[str], work: Path, config: Path = CONFIG) -> tuple[dict[str, Any], FitArm]:
    """An arm's config (the scenes shared by every run) and its label mix; ``full<N>`` trains N iterations."""
    cfg = shared_data_config(load_config(config, overrides), work)
    cfg["data"]["labels"] = None
    if arm.startswith("full") and arm[4:].isdigit():
        cfg["solver"] = scaled_solver(cfg["solver"], int(arm[4:]))
        return cfg, ARMS["full"]
    return cfg, ARMS[arm]


def run_one(
    arm: str,
    seed: int,
    split: str,
    overrides: list[str],
    work: Path,
    config: Path = CONFIG,
    spec: FitArm | None = None,
) -> dict[str, Any]:
    """One fit and its evaluation in both inference modes (a row of runs.json); ``spec`` names a label mix that
    is not one of :data:`ARMS` (e.g. a plan), ``arm`` then only names its run."""
    cfg, known = arm_config(arm if spec is None else "full", overrides, work, config)
    spec = spec or known
    ratio = spec.ratio
    cfg["train"]["seed"] = seed
    cfg["train"]["eval_period"] = 0
    cfg["train"]["test_at_end"] = False  # evaluated below, in both modes
    out = work / f"{arm}_s{seed}"
    labels = out / "labels" / "manifest.json"
    if not labels.is_file():
        gt = load_panoptic_json(*dataset_paths(cfg["data"], "train", work))
        methods = parse_methods(list(spec.methods)) or None
        simulate(gt, parse_ratio(ratio), out / "labels", seed=seed, points_per_segment=spec.clicks, methods=methods)
    t = time.time()
    summary = run_fit(cfg, labels, out, "cpu", workers=2, cache=work / "cache")
    model, _ = load_model(out / FINAL / "model_final.pth", torch.device("cpu"))
    data = PanopticDataset(*dataset_paths(cfg["data"], split, work))
    modes = {m: evaluate_model(model, data, torch.device("cpu"), m).summary() for m in INFERENCE_MODES}
    modes = {m: {k: 100 * v if k != "images" else v for k, v in r.items()} for m, r in modes.items()}
    return {
        "arm": arm,
        "seed": seed,
        "split": split,
        "overrides": overrides,
        "ratio": ratio,
        "config": str(config.resolve().relative_to(ROOT)) if config.resolve().is_relative_to(ROOT) else str(config),
        "clicks": spec.clicks,
        "methods": summary["methods"],
        "stages": summary["stages"],
        "networks": summary["networks"],
        "iterations": summary["iterations"],
        "seconds": sum(s["seconds"] for s in summary["stages"]),
        "wall_seconds": time.time() - t,
        "test_mode": "argmax",
        "pq": modes["argmax"]["pq"],
        "pq_th": modes["argmax"]["pq_th"],
        "pq_st": modes["argmax"]["pq_st"],
        "modes": modes,
    }


def pq_th_fractions(by: dict[str, list[dict]], reference: dict[int, list[dict]], entries: dict[str, Any]) -> None:
    """Each arm's PQ_th over full supervision's (1000 iterations), in each inference mode, with its paired t
    interval: where things are the hard part (small, crowded objects), the number that says whether they were learnt."""
    full = reference.get(1000) or []
    for arm, rs in by.items():
        for mode, m in entries[arm]["modes"].items():
            mine = {r["seed"]: r["modes"][mode]["pq_th"] for r in rs}
            refs = {r["seed"]: r["modes"][mode]["pq_th"] for r in full if mode in r.get("modes", {})}
            m["pq_th"] = float(np.mean(list(mine.values())))
            m["pq_th_fraction_of_full"], m["pq_th_fraction_of_full_interval"] = seed_ratio(mine, refs)
        own = entries[arm]["modes"].get(entries[arm]["mode"], {})
        entries[arm]["pq_th_fraction_of_full"] = own.get("pq_th_fraction_of_full")
        entries[arm]["pq_th_fraction_of_full_interval"] = own.get("pq_th_fraction_of_full_interval")


def summarise(
    rows: list[dict[str, Any]], split: str, reference_file: Path | None = FULL_TEST, named: dict[str, str] | None = None
) -> dict[str, Any]:
    """The summary in the layout of the paper recipes' (split, compute per stage, methods). ``reference_file``: full
    supervision at its own recipe (a paired-arms result), else this benchmark's ``full`` and ``full<N>`` arms;
    ``named``: summary keys for arms (e.g. ``clicks10`` -> the click method chosen on val)."""
    these = [r for r in rows if r["split"] == split]
    by: dict[str, list[dict]] = {}
    for r in these:
        by.setdefault(r["arm"], []).append(r)
    reference = reference_rows(reference_file) if reference_file else {}
    if not reference and "full" in by:
        reference[1000] = by["full"]
    for arm, rs in by.items():  # full supervision at another arm's total iterations, measured here
        if arm.startswith("full") and arm[4:].isdigit():
            reference.setdefault(int(arm[4:]), rs)
    entries = methods(by, {}, reference)
    pq_th_fractions(by, reference, entries)
    for arm, rs in by.items():
        entries[arm]["networks"] = rs[0]["networks"]
        entries[arm]["ratio"] = rs[0]["ratio"]
    compute = {
        arm: {
            "iterations": entries[arm]["iterations"],
            "networks": entries[arm]["networks"],
            "minutes": entries[arm]["minutes"],
            "stages": {
                s["stage"]: {
                    "iterations": s["iterations"],
                    "images": s["images"],
                    "minutes": sum(x["seconds"] for r in rs for x in r["stages"] if x["stage"] == s["stage"])
                    / len(rs)
                    / 60,
                }
                for s in rs[0]["stages"]
            },
        }
        for arm, rs in by.items()
    }
    out = {
        "machine": machine_info(),
        "split": split,
        "reference": {
            "file": str(reference_file.relative_to(ROOT)) if reference_file else "this benchmark's full arms",
            "iterations": sorted(reference),
        },
        "methods": entries,
        "compute": compute,
    }
    for key, arm in (named or {}).items():
        if arm in entries:
            out[key] = {"arm": arm, **{k: v for k, v in entries[arm].items() if k != "modes"}}
    return out


def report(summary: dict[str, Any]) -> str:
    lines = ["# `cqbnet fit`: a planned mix of label methods and each method alone", ""]
    for key in ("clicks10", "clicks1", "boxes_tags"):
        if summary and key in summary:
            e = summary[key]
            lines.append(
                f"- `{key}` ({e['arm']}): {ratio_text(e['fraction_of_full'], e['fraction_of_full_interval'])} of full "
                f"supervision's PQ, {ratio_text(e['pq_th_fraction_of_full'], e['pq_th_fraction_of_full_interval'])} "
                "of its PQ_th."
            )
    lines += [
        "Produced by `python -m benchmarks.fit` (`results/fit/`). PQ in percent on the scenes' "
        f"**{summary['split']}** split; fractions of full supervision against the full recipe (lr 0.02) at 1000 "
        "iterations and at the arm's total iterations, in the same inference mode, with a paired delta-method 95% t "
        f"interval over seeds. Machine: `{summary['machine']}`.",
        "",
        "| arm | labels | seeds | networks | iterations | minutes | mode | PQ | of full [95% t] | same iterations "
        "| PQ_th | PQ_th of full |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, m in summary["methods"].items():
        for mode, mm in m["modes"].items():
            lines.append(
                f"| {arm} | `{m['ratio']}` | {m['seeds']} | {m['networks']} | {m['iterations']} | {m['minutes']:.1f} "
                f"| {mode} | {mm['pq']:.1f} | {ratio_text(mm['fraction_of_full'], mm['fraction_of_full_interval'])} | "
                f"{ratio_text(mm['fraction_of_full_same_iterations'], mm['fraction_of_full_same_iterations_interval'])}"
                f" | {mm.get('pq_th', float('nan')):.1f} | "
                f"{ratio_text(mm.get('pq_th_fraction_of_full'), mm.get('pq_th_fraction_of_full_interval'))} |"
            )
    lines += ["", "Compute per stage (mean minutes over seeds):", ""]
    for arm, c in summary["compute"].items():
        parts = [f"{k} {v['minutes']:.1f} min ({v['iterations']} it)" for k, v in c["stages"].items()]
        lines.append(f"- {arm}: " + ", ".join(parts))
    lines += [
        "",
        "Per-image preparation (seconds per image and object, speed-up on 2 cores): `benchmarks/preparation.md`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", nargs="+", default=["mix"], help=f"{', '.join(ARMS)} or full<iterations>")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--split", choices=("val", "test"), default="test")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "fit")
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of runs.json and summary.json")
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--config", type=Path, default=CONFIG, help="every network's config (e.g. the dense preset's)")
    ap.add_argument(
        "--reference",
        default=str(FULL_TEST),
        help="full supervision at its own recipe (a paired-arms result), or 'own': this benchmark's full arms",
    )
    ap.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="KEY=ARM",
        help="a summary key for an arm, e.g. clicks10=points10 (the method chosen on val); repeatable",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides of every network")
    args = ap.parse_args()
    for arm in args.arms:
        if arm not in ARMS and not (arm.startswith("full") and arm[4:].isdigit()):
            ap.error(f"unknown arm {arm!r}")
    reference = None if args.reference == "own" else Path(args.reference)
    named = dict(n.split("=", 1) for n in args.name)
    results, report_path = args.results, args.report
    results.mkdir(parents=True, exist_ok=True)
    runs_path = results / "runs.json"
    rows = read_json(runs_path)["runs"] if runs_path.is_file() else []

    def save() -> None:
        write_json(runs_path, {"runs": rows}, indent=2)
        has = any(r["split"] == args.split for r in rows)
        summary = summarise(rows, args.split, reference, named) if has else None
        if summary is not None:
            write_json(results / "summary.json", summary, indent=2)
            with atomic_path(report_path) as tmp:
                tmp.write_text(report(summary))
            if args.commit:
                commit([runs_path, results / "summary.json", report_path], "fit: results so far")

    for seed in [] if args.report_only else args.seeds:
        for arm in args.arms:
            done = [
                r
                for r in rows
                if (r["arm"], r["seed"], r["split"], r["overrides"]) == (arm, seed, args.split, args.overrides)
            ]
            if done:
                continue
            rows.append(run_one(arm, seed, args.split, args.overrides, args.work, args.config))
            print(f"{arm} seed {seed}: PQ {rows[-1]['pq']:.1f} ({rows[-1]['iterations']} iterations)", flush=True)
            save()
    save()


if __name__ == "__main__":
    main()
