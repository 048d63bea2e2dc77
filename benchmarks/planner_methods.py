"""The pilot over label methods on the realistic scenes (val), the quality model fitted from it, and its plans.

Every catalogue method on its kind set (``KINDS:METHOD``, :mod:`cqbnet.planner.methods`) is trained through
``cqbnet fit`` with full labels on rho_P of the images and the method on the rest, at every ``--rhos``; full labels
alone at every ``--full-rhos`` and at 1; paired seeds (a seed draws the same images and initialisation in every
run). Each run is the pilot config's network (``configs/synthetic_pilot.yaml``, 320 iterations a network),
evaluated on val. Runs go one at a time and each finished run is saved (and, with ``--commit``, committed) at
once, so a session that ends keeps what finished; the next one trains only what is missing.

From the runs: the pilot table (``pilot.csv``, what ``cqbnet plan --pilot`` reads), each way methods combine
judged by leave-one-out over the pilot's cells (the one with the smaller error is used: a choice made on val), the
plans for budgets 0.02, 0.05, 0.10 and 0.25 (label costs in annotator seconds charged by the scenes' content,
``configs/costs_content.yaml``) with their predicted PQ, label cost and compute, the pilot's own cost in runs and
minutes, and the quick pilot (seed 0, rho_P 0 and 0.3, full labels at 0.3 and 1) judged against the cells it
left out. Usage::

    python -m benchmarks.planner_methods [--seeds 0 1 2] [--variables PT:points-crf ...] [--max-runs N] [--commit]
    python -m benchmarks.planner_methods --report-only

Results: ``benchmarks/results/planner_methods/{runs.json,pilot.csv,summary.json}`` and
``benchmarks/planner_methods.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.config import load_config
from cqbnet.engine.data import dataset_paths, shared_data_config
from cqbnet.errors import InputError
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.labels.costs import CostModel
from cqbnet.labels.simulate import dataset_stats
from cqbnet.planner.methods import (
    COMBINE,
    FULL,
    MethodPilot,
    PilotRun,
    fit_method_model,
    fit_pilot,
    loo_mae,
    make_method_plan,
    variable_cost,
    write_method_pilot,
)
from cqbnet.sweep.protocol import QUICK as PILOT_QUICK
from cqbnet.sweep.protocol import method_runs
from cqbnet.sweep.runner import execute

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic_pilot.yaml"
COSTS = ROOT / "configs" / "costs_content.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "planner_methods"
REPORT = ROOT / "benchmarks" / "planner_methods.md"
# the catalogue's methods, the toolkit's measured recipes first (a pilot cut short still plans over them)
VARIABLES = (
    "PT:points-crf",
    "B+I:boxes-tags-001",
    "I:tags-002",
    "B:modules-000",
    "I:modules-000",
    "S:modules-000",
    "PT:points-003",
    "B+I:boxes-tags-001-released",
    "B+I:modules-000",
)
BUDGETS = (0.02, 0.05, 0.10, 0.25)
# `cqbnet pilot --quick`'s protocol, read off the pilot's own runs
QUICK = {"seeds": ("0",), "rhos": tuple(PILOT_QUICK["method_rho_P"]), "full_rhos": (*PILOT_QUICK["rho_P"], 1.0)}


def pilot_of(rows: list[dict[str, Any]], keep=lambda r: True) -> MethodPilot:
    """The finished runs as a pilot over methods (PQ of the config's inference mode)."""
    runs = [
        PilotRun(0, r["variable"], str(r["seed"]), r["rho_P"], r["pq"], r["iterations"], r["seconds_train"] / 60)
        for r in rows
        if keep(r)
    ]
    return MethodPilot(str(RESULTS / "pilot.csv"), runs)


def cell_means(pilot: MethodPilot) -> dict[tuple[str, float], float]:
    return {k: float(np.mean([r.pq for r in runs])) for k, runs in pilot.cells().items()}


def quick_check(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The quick pilot's model against the full pilot's cells it did not run (their seeds' mean PQ)."""

    def quick(r: dict[str, Any]) -> bool:
        rhos = QUICK["full_rhos"] if r["variable"] == FULL else QUICK["rhos"]
        return str(r["seed"]) in QUICK["seeds"] and any(abs(r["rho_P"] - x) < 1e-9 for x in rhos)

    part, whole = pilot_of(rows, quick), pilot_of(rows)
    if not any(r.variable == FULL and r.rho_p >= 1 for r in part.runs):
        return None
    out = {}
    for combine in COMBINE:
        model = fit_method_model(part, combine, bootstrap=0)
        errors = []
        for (v, rho), pq in cell_means(whole).items():
            if (v, rho) in part.cells() or (v != FULL and v not in model.cells) or (v == FULL and rho >= 1):
                continue
            shares = {FULL: rho} if v == FULL else {FULL: rho, v: 1 - rho}
            errors.append(abs(float(model.predict(shares)[0]) - pq))
        out[combine] = {"cells": len(errors), "mae_pq": float(np.mean(errors)) if errors else None}
    return {
        "runs": len(part.runs),
        "minutes": sum(r.minutes for r in part.runs),
        "protocol": {k: list(v) for k, v in QUICK.items()},
        "prediction_error": out,
    }


def summarise(rows: list[dict[str, Any]], costs: CostModel) -> dict[str, Any]:
    pilot = pilot_of(rows)
    summary: dict[str, Any] = {
        "machine": machine_info(),
        "split": "val",
        "config": str(CONFIG.relative_to(ROOT)),
        "pilot_cost": {
            "runs": len(rows),
            "minutes": sum(r["seconds"] for r in rows) / 60,
            "training_minutes": sum(r["seconds_train"] for r in rows) / 60,
            "networks": sum(len([s for s in r.get("stages", []) if s["iterations"]]) or 1 for r in rows),
        },
        "cells": {f"{v} @ {rho:g}": pq for (v, rho), pq in sorted(cell_means(pilot).items())},
        "costs": {"file": str(COSTS.relative_to(ROOT)), "stats": costs.stats},
    }
    if not any(r.variable == FULL and r.rho_p >= 1 for r in pilot.runs):
        return summary
    fitted = fit_pilot(pilot, bootstrap=200)  # the way methods combine: the smaller leave-one-out error (val)
    model, compute, combine = fitted.model, fitted.compute, fitted.model.combine
    loo = {
        c: {
            "mae_pq": loo_mae(cells),
            "cells": [
                {"variable": x.variable, "rho_P": x.rho_p, "measured": x.measured, "predicted": x.predicted}
                for x in cells
            ],
        }
        for c, cells in fitted.loo.items()
    }
    mae = fitted.loo_mae if math.isfinite(fitted.loo_mae) else None
    recs = []
    for b in BUDGETS:
        try:
            plan = make_method_plan(model, costs, compute, budget=b, loo=mae)
        except InputError as e:
            recs.append({"budget": b, "error": str(e)})
            continue
        rec = plan.recommended.to_json()
        recs.append({"budget": b, **rec})
    summary.update(
        {
            "combine": combine,
            "combine_chosen_by": "the smaller leave-one-out error over the pilot's cells (val)",
            "loo_mae_pq": mae,
            "loo": loo,
            "quality_model": model.to_json(),
            "compute_model": {
                "base_iterations": compute.base_iterations,
                "base_minutes": compute.base_minutes,
                "extra_iterations": compute.extra_iterations,
                "extra_minutes": compute.extra_minutes,
            },
            "unit_costs": {v: variable_cost(costs, v) for v in model.variables},
            "recommendations": recs,
            "quick_pilot": quick_check(rows),
        }
    )
    return summary


def report(summary: dict[str, Any]) -> str:
    pc = summary["pilot_cost"]
    lines = [
        "# The planner over label methods: pilot (val), quality model and plans",
        "",
        "Produced by `python -m benchmarks.planner_methods` (`results/planner_methods/`). PQ in percent on the "
        f"scenes' **val** split, the pilot config `{summary['config']}`. Machine: `{summary['machine']}`.",
        "",
        f"Pilot so far: {pc['runs']} runs, {pc['minutes']:.0f} minutes ({pc['training_minutes']:.0f} training).",
        "",
        "| variable @ rho_P | PQ (mean over seeds) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in summary["cells"].items()]
    if "loo" not in summary:
        return "\n".join([*lines, "", "No full-supervision run yet: no model."]) + "\n"
    lines += ["", "Leave-one-out over the pilot's cells (mean absolute error, PQ points; target at most 3):", ""]
    for c, v in summary["loo"].items():
        mark = " (used)" if c == summary["combine"] else ""
        lines.append(f"- {c}{mark}: {v['mae_pq']:.2f} over {len(v['cells'])} cells")
    lines += ["", "| budget | methods | predicted PQ [90%] | label cost | iterations | minutes |"]
    lines.append("|---|---|---|---|---|---|")
    for r in summary["recommendations"]:
        if "error" in r:
            lines.append(f"| {r['budget']:g} | {r['error']} | | | | |")
            continue
        iv = r.get("predicted_pq_interval")
        ivs = f" [{iv[0]:.1f}, {iv[1]:.1f}]" if iv else ""
        methods = ", ".join(f"{v} {s:.3f}" for v, s in r["methods"].items())
        lines.append(
            f"| {r['budget']:g} | {methods} | {r['predicted_pq']:.1f}{ivs} | {r['label_cost']:.4f} | "
            f"{r['compute']['iterations']:.0f} | {r['compute']['minutes']:.1f} |"
        )
        for c in r.get("close_calls", []):
            lines.append(f"| | not told apart: {c['text']} | {c['predicted_pq']:.1f} | {c['label_cost']:.4f} | | |")
    q = summary.get("quick_pilot")
    if q:
        errs = ", ".join(
            f"{c} {v['mae_pq']:.2f} over {v['cells']} cells" if v["mae_pq"] is not None else f"{c} -"
            for c, v in q["prediction_error"].items()
        )
        lines += [
            "",
            f"Quick pilot ({q['runs']} runs, {q['minutes']:.0f} training minutes; seed 0, rho_P 0 and 0.3, full at "
            f"0.3 and 1): mean absolute error on the full pilot's other cells: {errs}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variables", nargs="+", default=list(VARIABLES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rhos", nargs="+", type=float, default=[0.0, 0.1, 0.3])
    ap.add_argument("--full-rhos", nargs="+", type=float, default=[0.1, 0.3, 0.5])
    ap.add_argument("--max-runs", type=int, help="stop after this many new runs (a session's time box)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "planner_methods")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. solver.max_iter=40")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    saved = args.results / "runs.json"
    rows: list[dict[str, Any]] = read_json(saved)["runs"] if saved.is_file() else []
    cfg = shared_data_config(load_config(CONFIG, args.overrides), args.work)
    gt = load_panoptic_json(*dataset_paths(cfg["data"], "train", args.work))
    costs = CostModel.from_yaml(COSTS)
    costs.stats = {**costs.stats, **dataset_stats(gt, int(cfg["pilot"]["points_per_segment"]))}
    runs = method_runs(args.variables, args.rhos, args.full_rhos, args.seeds)
    mine = [r for r in rows if r["overrides"] == args.overrides]

    def save() -> None:
        write_json(saved, {"runs": rows}, indent=2)
        these = [r for r in rows if r["overrides"] == args.overrides]
        write_method_pilot(args.results / "pilot.csv", these)
        summary = summarise(these, costs)
        summary["overrides"] = args.overrides
        write_json(args.results / "summary.json", summary, indent=2)
        with atomic_path(args.report) as tmp:
            tmp.write_text(report(summary))
        if args.commit:
            files = [saved, args.results / "pilot.csv", args.results / "summary.json", args.report]
            commit(files, "planner_methods: pilot results so far")

    new = 0
    for run in [] if args.report_only else runs:
        if any(r["key"] == run.spec.key for r in mine):
            continue
        if args.max_runs is not None and new >= args.max_runs:
            break
        res = execute(run.spec, cfg, args.work, "cpu", "val")
        row = {
            "key": run.spec.key,
            "variable": run.study,
            "seed": run.seed,
            "rho_P": run.rho.get("P", 0.0),
            "overrides": args.overrides,
            **{k: res[k] for k in ("pq", "pq_th", "pq_st", "iterations", "seconds", "test_mode")},
            "seconds_train": res.get("seconds_train") or res["seconds"],
            "minutes": (res.get("seconds_train") or res["seconds"]) / 60,
            "run": run.spec.key,
            "modes": res["modes"],
            "stages": res.get("stages", []),
        }
        rows.append(row)
        mine.append(row)
        new += 1
        took = row["seconds"] / 60
        print(f"{run.study} rho_P {row['rho_P']:g} seed {run.seed}: PQ {row['pq']:.1f} in {took:.1f} min", flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
