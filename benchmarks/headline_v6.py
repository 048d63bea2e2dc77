"""Headline v6: the planner over label methods against random plans and the best single method, on test.

Per label-cost budget (default 0.02, 0.05, 0.10, 0.25 of full labelling; annotator seconds charged by the scenes'
content, ``configs/costs_content.yaml``), every arm a ``cqbnet fit`` of the pilot config's network on the realistic
scenes, evaluated on the **test** split in both inference modes, paired over seeds (same labels drawn per seed,
same initialisation and data order):

* ``b<budget>_planned``: the planner's pick, fitted on the val pilot over methods
  (``benchmarks/results/planner_methods/pilot.csv``; the way methods combine chosen there by leave-one-out);
* ``b<budget>_random<i>``: ``--random`` plans over the same methods whose label cost is within 10% of the budget;
* ``b<budget>_single``: the single method within the budget that measured best on the val pilot (alone, rho_P 0);
* ``full``: full supervision at the config's schedule, and ``full<N>`` at the iterations of the most expensive
  planned arm (compute-matched).

The targets' inference mode is the pilot config's (``train.test_mode``: heuristic), chosen before the run; both
modes are reported. Statistics (``cqbnet/evaluation/statistics.py``): the planned pick over compute-matched full
(ratio of means, delta-method t), planned minus random (:func:`difference_to_group`: the unit is a random plan, its
paired difference averaged over seeds; per budget and pooled over the budgets), planned minus the best single
method (paired over seeds), and Spearman's rho of the model's predicted PQ against the measured PQ over every trained
plan (Fisher-z interval). Runs are saved (and committed with ``--commit``) as each one ends. Usage::

    python -m benchmarks.headline_v6 [--budgets 0.02 0.05 0.1 0.25] [--seeds 0 1 2] [--random 3] [--commit]
    python -m benchmarks.headline_v6 --plans-only     # the arms and their predictions; nothing trains

Results: ``benchmarks/results/headline_v6/{plans,runs,summary}.json`` and ``benchmarks/headline_v6.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.commit_results import commit
from benchmarks.fit import FitArm, run_one
from benchmarks.machine import machine_info
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.config import load_config
from cqbnet.engine.data import dataset_paths, shared_data_config
from cqbnet.evaluation.statistics import (
    difference_to_group,
    paired_difference,
    rank_correlation,
    ratio_of_means,
    t_interval,
)
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.labels.costs import CostModel
from cqbnet.labels.simulate import dataset_stats
from cqbnet.planner.methods import (
    FULL,
    fit_pilot,
    load_method_pilot,
    loo_mae,
    make_method_plan,
    random_method_plans,
    variable_cost,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic_pilot.yaml"
PILOT = ROOT / "benchmarks" / "results" / "planner_methods" / "pilot.csv"
COSTS = ROOT / "configs" / "costs_content.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "headline_v6"
REPORT = ROOT / "benchmarks" / "headline_v6.md"
BUDGETS = (0.02, 0.05, 0.10, 0.25)


def fit_arm(shares: dict[str, float]) -> FitArm:
    """A plan over methods as a label mix for ``cqbnet labels simulate`` and the methods of its kind sets."""
    ratio = ",".join(f"{v.split(':', 1)[0]}={s:g}" for v, s in shares.items())
    methods = tuple(f"{v.split(':', 1)[0]}={v.split(':', 1)[1]}" for v in shares if v != FULL)
    return FitArm(ratio, methods)


def make_plans(
    budgets: list[float], n_random: int, work: Path, overrides: list[str], pilot_path: Path = PILOT
) -> dict[str, Any]:
    """Every arm's plan (methods and shares), its predicted PQ, label cost and compute, from the val pilot."""
    pilot = load_method_pilot(pilot_path)
    fitted = fit_pilot(pilot, bootstrap=0)
    model, compute = fitted.model, fitted.compute
    loo = {c: loo_mae(cells) for c, cells in fitted.loo.items()}
    cfg = shared_data_config(load_config(CONFIG, overrides), work)
    costs = CostModel.from_yaml(COSTS)
    costs.stats = {**costs.stats, **dataset_stats(load_panoptic_json(*dataset_paths(cfg["data"], "train", work)))}
    alone = {r.variable for r in pilot.runs if r.rho_p == 0}  # each method alone on val
    alone_pq = {v: float(np.mean([r.pq for r in pilot.runs if r.variable == v and r.rho_p == 0])) for v in alone}
    arms: dict[str, dict[str, Any]] = {}

    def add(name: str, shares: dict[str, float], budget: float | None) -> None:
        its, mins = compute.of(list(shares))
        arms[name] = {
            "budget": budget,
            "methods": shares,
            "predicted_pq": float(model.predict({v: np.array([s]) for v, s in shares.items()})[0]),
            "label_cost": float(sum(s * variable_cost(costs, v) for v, s in shares.items())),
            "iterations": its,
            "minutes": mins,
        }

    for b in budgets:
        plan = make_method_plan(model, costs, compute, budget=b, seed=0)
        add(f"b{b:g}_planned", plan.recommended.shares, b)
        for i, shares in enumerate(random_method_plans(model.variables, costs, b, n_random, seed=int(1000 * b))):
            add(f"b{b:g}_random{i}", shares, b)
        fits = [v for v in alone_pq if variable_cost(costs, v) <= b]
        if fits:
            add(f"b{b:g}_single", {max(fits, key=alone_pq.get): 1.0}, b)
    add("full", {FULL: 1.0}, None)
    top = max(a["iterations"] for a in arms.values())
    if top > compute.base_iterations:  # full supervision trained as long as the dearest plan's networks together
        add(f"full{int(top)}", {FULL: 1.0}, None)
        arms[f"full{int(top)}"]["iterations"] = top
    full_path = pilot_path.resolve()
    where = str(full_path.relative_to(ROOT)) if full_path.is_relative_to(ROOT) else str(pilot_path)
    return {"combine": model.combine, "loo_mae_pq": loo, "pilot": where, "arms": arms}


def summarise(plans: dict[str, Any], rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The headline numbers from the runs (PQ in ``mode``)."""
    pq: dict[str, dict[int, float]] = {}
    for r in rows:
        pq.setdefault(r["arm"], {})[r["seed"]] = r["modes"][mode]["pq"]
    arms = plans["arms"]
    full_top = max((a for a in arms if a.startswith("full")), key=lambda a: arms[a]["iterations"])
    out: dict[str, Any] = {
        "machine": machine_info(),
        "split": "test",
        "mode": mode,
        "mode_chosen": "the pilot config's train.test_mode, before any run",
        "compute_matched_full": full_top,
        "combine": plans["combine"],
        "compute": {a: {"iterations": arms[a]["iterations"], "minutes_pilot": arms[a]["minutes"]} for a in arms},
        "planned_fraction_of_full": {},
        "planned_fraction_of_full_standard": {},
        "planned_minus_random_by_budget": {},
        "planned_minus_best_single": {},
    }
    budgets = sorted({a["budget"] for a in arms.values() if a["budget"] is not None})
    pooled = []
    for b in budgets:
        key = f"{b:g}"
        planned = pq.get(f"b{key}_planned")
        if not planned:
            continue
        for name, ref in (("planned_fraction_of_full", full_top), ("planned_fraction_of_full_standard", "full")):
            if pq.get(ref):
                out[name][key] = ratio_of_means(planned, pq[ref]).to_json()
        randoms = [pq[a] for a in arms if a.startswith(f"b{key}_random") and pq.get(a)]
        if randoms:
            out["planned_minus_random_by_budget"][key] = difference_to_group(planned, randoms).to_json()
            pooled += [(planned, r) for r in randoms]
        if pq.get(f"b{key}_single"):
            out["planned_minus_best_single"][key] = paired_difference(planned, pq[f"b{key}_single"]).to_json()
    if pooled:  # every random plan of every budget against its budget's planned pick
        diffs = [float(np.mean([p[s] - r[s] for s in set(p) & set(r)])) for p, r in pooled]
        est = t_interval(diffs, method="t over random plans of every budget (each averaged over paired seeds)")
        out["planned_minus_random"] = est.to_json()
    trained = [a for a in arms if not a.startswith("full") and pq.get(a)]
    if len(trained) >= 2:
        pred = [arms[a]["predicted_pq"] for a in trained]
        meas = [float(np.mean(list(pq[a].values()))) for a in trained]
        out["spearman_predicted_measured"] = rank_correlation(pred, meas).to_json()
    out["arms"] = {
        a: {
            **arms[a],
            "seeds": sorted(pq.get(a, {})),
            "pq": float(np.mean(list(pq[a].values()))) if pq.get(a) else None,
        }
        for a in arms
    }
    return out


def report(summary: dict[str, Any]) -> str:
    lines = [
        "# Headline v6: planned over label methods, against random plans and single methods (test)",
        "",
        f"Produced by `python -m benchmarks.headline_v6`. PQ in percent on the **test** split, inference mode "
        f"**{summary['mode']}** ({summary['mode_chosen']}); compute-matched full supervision: "
        f"`{summary['compute_matched_full']}`. Machine: `{summary['machine']}`.",
        "",
        "| arm | budget | methods | label cost | iterations | predicted PQ | measured PQ | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a, e in summary["arms"].items():
        methods = ", ".join(f"{v} {s:.3f}" for v, s in e["methods"].items())
        pq = "-" if e["pq"] is None else f"{e['pq']:.1f}"
        budget = "-" if e["budget"] is None else f"{e['budget']:g}"
        lines.append(
            f"| {a} | {budget} | {methods} | {e['label_cost']:.4f} | {e['iterations']:.0f} | "
            f"{e['predicted_pq']:.1f} | {pq} | {e['seeds']} |"
        )

    def text(d: dict[str, Any], scale: float = 1.0, sign: bool = True) -> str:
        f = f"{{:{'+' if sign else ''}.1f}}"
        iv = d.get("interval")
        tail = f" [{f.format(iv[0] * scale)}, {f.format(iv[1] * scale)}]" if iv else " (no interval)"
        return f.format(d["estimate"] * scale) + tail

    lines += ["", "Targets:", ""]
    for b, d in summary["planned_fraction_of_full"].items():
        verdict = "met" if d["estimate"] >= 0.95 else "MISSED"
        mark = f" ({verdict} for the target of 95% at cost <= 0.10)" if float(b) <= 0.10 else ""
        lines.append(f"- budget {b}: planned over compute-matched full {text(d, 100, False)}%{mark}")
    d = summary.get("planned_minus_random")
    if d:
        ok = d["estimate"] >= 2 and d["interval"] is not None and d["interval"][0] > 0
        lines.append(f"- planned minus random, pooled: {text(d)} PQ (target +2, interval above 0: "
                     f"{'met' if ok else 'MISSED'})")  # fmt: skip
    for b, d in summary["planned_minus_best_single"].items():
        ok = d["interval"] is not None and d["interval"][0] >= -1
        lines.append(f"- budget {b}: planned minus the best single method {text(d)} PQ (interval not below -1: "
                     f"{'met' if ok else 'MISSED'})")  # fmt: skip
    d = summary.get("spearman_predicted_measured")
    if d:
        lines.append(f"- Spearman(predicted, measured) over {d['n']} plans: {text(d, 1, False)} (target 0.8: "
                     f"{'met' if d['estimate'] >= 0.8 else 'MISSED'})")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--random", type=int, default=3, help="random plans per budget")
    ap.add_argument("--pilot", type=Path, default=PILOT, help="the val pilot over methods the planner is fitted on")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "headline_v6")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--plans-only", action="store_true", help="write the arms and their predictions; train nothing")
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides of every network")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    plans_path, runs_path = args.results / "plans.json", args.results / "runs.json"
    if plans_path.is_file():  # the plans are made once: a resumed run trains the same arms
        plans = read_json(plans_path)
    else:
        plans = make_plans(args.budgets, args.random, args.work, args.overrides, args.pilot)
        write_json(plans_path, plans, indent=2)
    rows = read_json(runs_path)["runs"] if runs_path.is_file() else []
    mode = load_config(CONFIG, args.overrides)["train"]["test_mode"]

    def save() -> None:
        write_json(runs_path, {"runs": rows}, indent=2)
        summary = summarise(plans, [r for r in rows if r["overrides"] == args.overrides], mode)
        write_json(args.results / "summary.json", summary, indent=2)
        with atomic_path(args.report) as tmp:
            tmp.write_text(report(summary))
        if args.commit:
            commit([plans_path, runs_path, args.results / "summary.json", args.report], "headline v6: results so far")

    if args.plans_only:
        save()
        return
    for seed in args.seeds:
        for name, arm in plans["arms"].items():
            if any(r["arm"] == name and r["seed"] == seed and r["overrides"] == args.overrides for r in rows):
                continue
            spec = None if name.startswith("full") else fit_arm(arm["methods"])
            row = run_one(name, seed, "test", args.overrides, args.work, CONFIG, spec)
            rows.append(row)
            print(f"{name} seed {seed}: PQ {row['modes'][mode]['pq']:.1f} ({row['iterations']} iterations)", flush=True)
            save()
    save()


if __name__ == "__main__":
    main()
