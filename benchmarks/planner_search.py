"""Planner benchmark: time of paper 000's 7500-sample front, and NSGA-II against random sampling.

Usage: ``python -m benchmarks.planner_search [--seeds 5] [--repeat 5]``; writes
``benchmarks/results/planner_search.json``. Both searches get the same number of
evaluations of f1 and f2 and are scored by the hypervolume of their fronts
against one reference point per case (lowest f1 either search saw, cost 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info
from cqbnet.labels.costs import CostModel
from cqbnet.planner.pareto import hypervolume, non_dominated
from cqbnet.planner.plan import make_plan
from cqbnet.planner.presets import preset
from cqbnet.planner.search import Constraints, nsga2_ratios, sample_ratios

OUT = Path(__file__).parent / "results" / "planner_search.json"


def time_front(repeat: int) -> dict:
    """Wall time of sampling 7500 ratios, evaluating f1 and f2 and extracting the front (best of ``repeat``)."""
    model = preset("paper-coco")
    costs = CostModel()
    c = Constraints(model.kinds)
    unit = np.array([costs.expected_per_image(k) for k in c.kinds])
    times, sizes = [], []
    for r in range(repeat):
        t = time.perf_counter()
        rho = sample_ratios(7500, c, seed=r)
        f1, f2 = model.f1(rho, c.kinds), rho @ unit
        idx = non_dominated(f1, f2)
        times.append(time.perf_counter() - t)
        sizes.append(len(idx))
    t = time.perf_counter()
    make_plan(model, costs, c, budget=0.45, samples=7500, seed=0)
    full = time.perf_counter() - t
    return {
        "front_seconds_best": min(times),
        "front_seconds_all": times,
        "front_sizes": sizes,
        "make_plan_seconds": full,
    }


CASES = {
    "paper-coco, no constraints": ("paper-coco", {}, {}),
    "paper-coco, rho_P >= 0.1, B <= 0.3": ("paper-coco", {"P": 0.1}, {"B": 0.3}),
    "paper-coco-literal, no constraints": ("paper-coco-literal", {}, {}),
}


def compare(seeds: int, evaluations: int, population: int) -> dict:
    out = {}
    costs = CostModel()
    for case, (name, lower, upper) in CASES.items():
        model = preset(name)
        c = Constraints(model.kinds, lower, upper)
        unit = np.array([costs.expected_per_image(k) for k in c.kinds])

        def objectives(rho, model=model, c=c, unit=unit):
            return model.f1(rho, c.kinds), rho @ unit

        rows = []
        for s in range(seeds):
            fronts = {}
            t = time.perf_counter()
            rnd = sample_ratios(evaluations, c, seed=s)
            t_rnd = time.perf_counter() - t
            t = time.perf_counter()
            nsga = nsga2_ratios(
                objectives, c, seed=s, population=population, generations=int(np.ceil(evaluations / population))
            )
            t_nsga = time.perf_counter() - t
            for key, rho in (("random", rnd), ("nsga2", nsga)):
                f1, f2 = objectives(rho)
                idx = non_dominated(f1, f2)
                fronts[key] = (f1[idx], f2[idx], len(rho), f1.min())
            ref_f1 = min(v[3] for v in fronts.values())
            row = {"seed": s, "seconds": {"random": t_rnd, "nsga2": t_nsga}}
            for key, (f1, f2, n, _) in fronts.items():
                row[key] = {"evaluations": n, "front_size": len(f1), "hypervolume": hypervolume(f1, f2, ref_f1, 1.0)}
            rows.append(row)
        hv_r = [r["random"]["hypervolume"] for r in rows]
        hv_n = [r["nsga2"]["hypervolume"] for r in rows]
        out[case] = {
            "runs": rows,
            "hypervolume_mean": {"random": float(np.mean(hv_r)), "nsga2": float(np.mean(hv_n))},
            "nsga2_wins": int(sum(n >= r for n, r in zip(hv_n, hv_r))),
            "seeds": seeds,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--evaluations", type=int, default=7500)
    ap.add_argument("--population", type=int, default=100)
    args = ap.parse_args()
    result = {
        "machine": machine_info(),
        "front_timing": time_front(args.repeat),
        "search_comparison": compare(args.seeds, args.evaluations, args.population),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                "front_timing": result["front_timing"],
                **{
                    k: {kk: v[kk] for kk in ("hypervolume_mean", "nsga2_wins")}
                    for k, v in result["search_comparison"].items()
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
