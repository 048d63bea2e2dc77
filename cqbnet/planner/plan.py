"""A labelling plan for a budget: paper 000's multi-objective problem solved end to end.

:func:`make_plan` evaluates f1 (quality model) and f2 (Eq. 2, the cost model) on
the searched ratios, keeps the Pareto front and picks a plan by one of three
rules: the best quality within a budget, the cheapest plan that reaches a
quality target, or the knee of the front. The result is written as JSON
(``format: cqbnet.plan``), which ``cqbnet labels simulate --plan`` reads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cqbnet.errors import InputError
from cqbnet.io import read_json
from cqbnet.labels.costs import CostModel
from cqbnet.labels.kinds import parse_kind_set
from cqbnet.planner.pareto import dominated_by, knee, non_dominated
from cqbnet.planner.quality_model import QualityModel
from cqbnet.planner.search import Constraints, nsga2_ratios, sample_ratios

PLAN_FORMAT = "cqbnet.plan"
PLAN_VERSION = 1
SEARCH_METHODS = ("random", "nsga2", "both")


@dataclass
class PlanPoint:
    ratio: dict[str, float]
    f1: float
    f2: float
    interval: tuple[float, float] | None = None  # bootstrap interval of f1
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ratio": self.ratio, "f1": self.f1, "f2": self.f2}
        if self.name:
            out["name"] = self.name
        if self.interval is not None:
            out["f1_interval"] = list(self.interval)
        out.update(self.extra)
        return out


@dataclass
class PlanResult:
    kinds: tuple[str, ...]
    unit_costs: dict[str, float]  # expected cost per image of each kind (full-label units)
    model: QualityModel
    constraints: Constraints
    method: str
    seed: int
    rho: np.ndarray  # (N, K) every evaluated ratio
    f1: np.ndarray  # (N,)
    f2: np.ndarray  # (N,)
    front: list[PlanPoint]
    picks: dict[str, PlanPoint]  # rule -> plan
    rule: str  # which pick is recommended
    named: list[PlanPoint]

    @property
    def recommended(self) -> PlanPoint:
        return self.picks[self.rule]

    def table(self, max_rows: int = 12) -> str:
        """The front (thinned to ``max_rows`` rows evenly in cost), named plans and the picks."""
        head = " ".join(f"{'rho_' + k:>7s}" for k in self.kinds)
        lines = [
            f"Pareto front: {len(self.front)} of {len(self.f1)} ratios ({self.method} search, seed {self.seed})",
            f"{'':4s} {head} {'f1':>7s} {'f2':>7s}",
            "-" * (22 + 8 * len(self.kinds)),
        ]
        rows = self.front
        if len(rows) > max_rows:
            rows = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, max_rows).round().astype(int))]
        lines += [self._row("", p) for p in rows]
        if self.named:
            lines += ["", "named plans (paper values in brackets)", f"{'':4s} {head} {'f1':>7s} {'f2':>7s}"]
            for p in self.named:
                paper = p.extra.get("paper", {})
                note = "on the front" if p.extra["on_front"] else "dominated"
                pf1 = paper.get("f1")
                lines.append(
                    self._row(p.name, p) + f"  [f1 {pf1 if pf1 is not None else '-'}, f2 {paper.get('f2')}, "
                    f"PQ {paper.get('pq_all')}] {note}"
                )
        lines += ["", "plans picked from the front"]
        for rule, p in self.picks.items():
            mark = "  <- recommended" if rule == self.rule else ""
            ci = f"  f1 90% interval [{p.interval[0]:.3f}, {p.interval[1]:.3f}]" if p.interval else ""
            lines.append(f"  {rule:22s} {format_plan_ratio(p.ratio):40s} f1 {p.f1:.3f}  f2 {p.f2:.3f}{ci}{mark}")
        return "\n".join(lines)

    def _row(self, name: str, p: PlanPoint) -> str:
        cells = " ".join(f"{p.ratio.get(k, 0.0):7.3f}" for k in self.kinds)
        return f"{name:4s} {cells} {p.f1:7.3f} {p.f2:7.3f}"

    def to_json(self) -> dict[str, Any]:
        return {
            **plan_document(PLAN_VERSION, self.rule, self.recommended, self.picks),
            "kinds": list(self.kinds),
            "unit_costs": self.unit_costs,
            "constraints": self.constraints.to_json(),
            "search": {"method": self.method, "seed": self.seed, "evaluated": int(len(self.f1))},
            "quality_model": self.model.to_json(),
            "front": [p.to_json() for p in self.front],
            "named": [p.to_json() for p in self.named],
        }


def plan_document(version: int, rule: str, recommended, picks: dict) -> dict[str, Any]:
    """The head every plan file shares (``cqbnet labels simulate --plan`` reads it): its format and version, the
    recommended plan with the rule that picked it, and every pick (each with ``to_json``)."""
    return {
        "format": PLAN_FORMAT,
        "version": version,
        "recommended": {"rule": rule, **recommended.to_json()},
        "picks": {r: p.to_json() for r, p in picks.items()},
    }


def unit_costs(costs: CostModel, kinds: tuple[str, ...]) -> np.ndarray:
    """(K,) expected cost per image of each kind, in full-label units: a ratio's cost is ``rho @ unit``."""
    return np.array([costs.expected_per_image(k) for k in kinds])


def format_plan_ratio(ratio: dict[str, float]) -> str:
    return ",".join(f"{k}={v:.3g}" for k, v in ratio.items() if v > 0)


def _point(
    model: QualityModel, kinds: tuple[str, ...], costs: np.ndarray, rho: np.ndarray, name: str = ""
) -> PlanPoint:
    f1 = float(model.f1(rho[None], kinds)[0])
    iv = model.f1_interval(rho[None], kinds)
    interval = None if iv is None else (float(iv[0, 0]), float(iv[0, 1]))
    ratio = {k: float(v) for k, v in zip(kinds, rho)}
    return PlanPoint(ratio, f1, float(rho @ costs), interval, name)


def make_plan(
    model: QualityModel,
    costs: CostModel,
    constraints: Constraints,
    budget: float | None = None,
    quality_target: float | None = None,
    method: str = "random",
    samples: int = 7500,
    seed: int = 0,
    population: int = 100,
    named: dict[str, dict[str, float]] | None = None,
    named_paper: dict[str, dict[str, Any]] | None = None,
) -> PlanResult:
    """Search the ratios, keep the Pareto front of (f1 max, f2 min) and pick a plan.

    With ``budget`` the recommendation is the best f1 with f2 <= budget; else with
    ``quality_target`` the cheapest plan with f1 >= target; else the knee.
    """
    if method not in SEARCH_METHODS:
        raise InputError(f"unknown search {method!r}; choose one of {', '.join(SEARCH_METHODS)}")
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        raise InputError(f"the budget must be a cost >= 0 (full labelling costs 1), got {budget:g}")
    kinds = constraints.kinds
    unit = unit_costs(costs, kinds)

    def objectives(rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return model.f1(rho, kinds), rho @ unit

    parts = []
    if method in ("random", "both"):
        parts.append(sample_ratios(samples, constraints, seed))
    if method in ("nsga2", "both"):
        generations = max(1, math.ceil(samples / population))
        parts.append(nsga2_ratios(objectives, constraints, seed, population, generations))
    rho = np.concatenate(parts)
    f1, f2 = objectives(rho)
    idx = non_dominated(f1, f2)
    front = [_point(model, kinds, unit, rho[i]) for i in idx]
    ff1 = np.array([p.f1 for p in front])
    ff2 = np.array([p.f2 for p in front])

    picks: dict[str, PlanPoint] = {}
    if budget is not None:
        ok = np.flatnonzero(ff2 <= budget + 1e-12)
        if len(ok) == 0:
            raise InputError(f"no plan costs at most {budget:g}; the cheapest feasible plan costs {ff2.min():.4f}")
        picks[f"best within {budget:g}"] = front[ok[np.argmax(ff1[ok])]]
    if quality_target is not None:
        ok = np.flatnonzero(ff1 >= quality_target)
        if len(ok) == 0:
            raise InputError(f"no plan reaches f1 = {quality_target:g}; the best plan found reaches {ff1.max():.4f}")
        picks[f"cheapest to f1 {quality_target:g}"] = front[ok[np.argmin(ff2[ok])]]
    picks["knee"] = front[knee(ff1, ff2)]
    rule = next(iter(picks))

    named_points = []
    for name, ratio in (named or {}).items():
        r = np.array([ratio.get(k, 0.0) for k in kinds])
        p = _point(model, kinds, unit, r, name)
        p.extra["on_front"] = not dominated_by(p.f1, p.f2, ff1, ff2)
        if named_paper and name in named_paper:
            p.extra["paper"] = named_paper[name]
        named_points.append(p)
    return PlanResult(
        kinds,
        dict(zip(kinds, unit.tolist())),
        model,
        constraints,
        method,
        seed,
        rho,
        f1,
        f2,
        front,
        picks,
        rule,
        named_points,
    )


def random_plans_at_cost(
    costs: CostModel,
    constraints: Constraints,
    target: float,
    n: int,
    seed: int = 0,
    tolerance: float = 0.01,
    samples: int = 20000,
) -> list[dict[str, float]]:
    """``n`` random plans (uniform on the feasible simplex) whose cost is within ``tolerance`` of ``target``.

    The "random allocation ratios" that paper 000's Table 1 (R1-R7) and Fig. 1 right compare the front with,
    matched in cost so that only the allocation differs. Shares are rounded to 3 decimals (summing to 1).
    """
    kinds = constraints.kinds
    unit = unit_costs(costs, kinds)
    rho = sample_ratios(samples, constraints, seed)
    near = np.flatnonzero(np.abs(rho @ unit - target) <= tolerance)
    if len(near) < n:
        raise InputError(
            f"only {len(near)} of {samples} random plans cost {target:g} +- {tolerance:g}; widen the tolerance"
        )
    pick = np.random.default_rng([seed, 11]).choice(near, size=n, replace=False)
    return [round_ratio(dict(zip(kinds, rho[i].tolist()))) for i in pick]


def round_ratio(ratio: dict[str, float], digits: int = 3) -> dict[str, float]:
    """Shares rounded to ``digits`` decimals that still sum to 1 (largest remainder); zero shares dropped."""
    unit = 10**digits
    total = sum(ratio.values())
    raw = {k: v / total * unit for k, v in ratio.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: out[k] - raw[k])[: unit - sum(out.values())]:
        out[k] += 1
    return {k: v / unit for k, v in out.items() if v > 0}


def load_plan_ratio(path: str | os.PathLike) -> dict[frozenset[str], float]:
    """The recommended ratio of a plan JSON, as ``cqbnet labels simulate`` takes it."""
    path = Path(path)
    obj = read_json(path, "plan file")
    if not isinstance(obj, dict) or obj.get("format") != PLAN_FORMAT:
        raise InputError(f"{path}: not a plan written by 'cqbnet plan' (format must be {PLAN_FORMAT!r})")
    rec = obj.get("recommended")
    ratio = rec.get("ratio") if isinstance(rec, dict) else None
    if not isinstance(ratio, dict) or not ratio:
        raise InputError(f"{path}: recommended.ratio is missing")
    out = {}
    for k, v in ratio.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise InputError(f"{path}: recommended.ratio.{k}: share must be a number >= 0, got {v!r}")
        if v > 0:
            out[parse_kind_set(k)] = float(v)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"{path}: recommended.ratio shares sum to {total:.6g}, not 1")
    return out
