"""Planning over label methods: which share of images gets which labels, learnt by which method.

Paper 000 shares images among single label kinds and models quality through its own modules' curves. Here the
decision variables are the catalogue's methods (:mod:`cqbnet.labels.catalogue`), each on a kind set, written
``KINDS:METHOD`` (``P:full``, ``B+I:boxes-tags-001``, ``PT:points-crf``, ``I:tags-002``, ``B:modules-000``, ...),
with shares summing to 1. Three objectives: predicted PQ, label cost (full labelling = 1) and training compute.

The pilot (:func:`load_method_pilot`) is one CSV row per training run::

    variable,seed,rho_P,pq,iterations,minutes
    P:full,0,0.1,31.2,320,3.9          # a share rho_P of images fully labelled, the rest unlabelled
    P:full,0,1,63.4,320,4.1
    B+I:boxes-tags-001,0,0.1,55.0,1280,17.5   # rho_P fully labelled, the rest B+I through paper 001

The quality model (:class:`MethodModel`) states how methods combine. ``equivalent`` (the default): an image of
variable v is worth e_v(rho_P) fully labelled images, measured by inverting the full-label curve F at each pilot
cell, e = (F^-1(PQ_v(rho_P)) - rho_P) / (1 - rho_P); a mix is then

    PQ(s) = F(rho_P + sum_v e_v(rho_P) s_v)        (F: PQ with a share x of full labels and nothing else)

so gains shrink as the labelled share grows, as they do along F. ``linear``: each variable adds its measured gain
in proportion to its share, PQ(s) = F(rho_P) + sum_v s_v (PQ_v(rho_P) - F(rho_P)) / (1 - rho_P). Both reproduce
every pilot cell; they differ between cells and for mixes of weak methods, and :func:`leave_one_out` measures how
well each predicts a cell it has not seen. F is monotone through (0, 0) (no labels, no quality) and the pilot's
full runs (isotonic fit, PCHIP; beyond 1 extended along its last slope); e_v is interpolated linearly in rho_P.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cqbnet.errors import InputError
from cqbnet.io import atomic_path
from cqbnet.labels.costs import CostModel
from cqbnet.labels.kinds import kind_set_name, parse_kind_set
from cqbnet.planner.pareto import knee, non_dominated
from cqbnet.planner.pilot_table import cell_number, open_table
from cqbnet.planner.regression import MonotoneCurve
from cqbnet.planner.search import project

FULL = "P:full"
COMBINE = ("equivalent", "linear")
PILOT_COLUMNS = ("variable", "seed", "rho_P", "pq", "pq_th", "pq_st", "iterations", "minutes", "run")
PLAN_VERSION = 2


@dataclass(frozen=True)
class Variable:
    """Images of one kind set learnt by one catalogue method."""

    kinds: frozenset[str]
    method: str

    @property
    def name(self) -> str:
        return f"{kind_set_name(self.kinds)}:{self.method}"


def parse_variable(text: str, where: str = "") -> Variable:
    """``"B+I:boxes-tags-001"`` -> a :class:`Variable` the catalogue can learn from (else a one-line error)."""
    from cqbnet.labels.catalogue import method_of

    if ":" not in text:
        raise InputError(f"{where}label method {text!r} is not KINDS:METHOD, e.g. B+I:boxes-tags-001")
    kinds_text, method = (s.strip() for s in text.split(":", 1))
    kinds = parse_kind_set(kinds_text)
    method_of(method, kinds, where)
    return Variable(kinds, method)


def conflicting(a: Variable, b: Variable) -> bool:
    """Whether two variables cannot be in one plan: the same kind set (an image's kinds name its method), or
    methods that cannot share one fit (:data:`cqbnet.labels.catalogue.CONFLICTS`)."""
    from cqbnet.labels.catalogue import CONFLICTS

    if a.kinds == b.kinds:
        return True
    return any({a.method, b.method} <= group and a.method != b.method for group in CONFLICTS)


# ---------------------------------------------------------------------------------------------------- the pilot


@dataclass(frozen=True)
class PilotRun:
    line: int
    variable: str
    seed: str
    rho_p: float
    pq: float
    iterations: float | None
    minutes: float | None


@dataclass
class MethodPilot:
    path: str
    runs: list[PilotRun]

    @property
    def variables(self) -> list[str]:
        return list(dict.fromkeys(r.variable for r in self.runs))

    def cells(self) -> dict[tuple[str, float], list[PilotRun]]:
        out: dict[tuple[str, float], list[PilotRun]] = defaultdict(list)
        for r in self.runs:
            out[(r.variable, round(r.rho_p, 6))].append(r)
        return dict(out)

    def without(self, cell: tuple[str, float]) -> MethodPilot:
        return MethodPilot(self.path, [r for r in self.runs if (r.variable, round(r.rho_p, 6)) != cell])

    def summary(self) -> str:
        lines = [f"{'variable':28s} {'rho_P':>6s} {'runs':>4s} {'PQ':>6s} {'iterations':>10s} {'minutes':>8s}"]
        lines.append("-" * len(lines[0]))
        for (v, rho), runs in sorted(self.cells().items()):
            its = [r.iterations for r in runs if r.iterations is not None]
            mins = [r.minutes for r in runs if r.minutes is not None]
            lines.append(
                f"{v:28s} {rho:6.3f} {len(runs):4d} {np.mean([r.pq for r in runs]):6.2f} "
                + (f"{np.median(its):10.0f} " if its else f"{'-':>10s} ")
                + (f"{np.mean(mins):8.1f}" if mins else f"{'-':>8s}")
            )
        return "\n".join(lines)


def is_method_pilot(path: str | os.PathLike) -> bool:
    """Whether a pilot CSV is one over methods (its header has a ``variable`` column)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return "variable" in [h.strip() for h in header]


def _cell(raw: dict[str, str], col: str, path: str, line: int, required: bool = True) -> float | None:
    v = cell_number(raw.get(col, ""), path, line, col, minimum=0.0)
    if v is None and required:
        raise InputError(f"{path}: line {line}: column {col} is empty")
    return v


def load_method_pilot(path: str | os.PathLike) -> MethodPilot:
    """Read and check a pilot over methods; every error names the line and column."""
    path = Path(path)
    reader = open_table(path, ("variable", "seed", "rho_P", "pq"))
    runs = []
    for line, raw in enumerate(reader, start=2):
        where = f"{path}: line {line}: "
        var = parse_variable((raw.get("variable") or "").strip(), where)
        rho = _cell(raw, "rho_P", str(path), line)
        pq = _cell(raw, "pq", str(path), line)
        if rho > 1 or pq > 100:
            raise InputError(f"{where}rho_P must be a share in [0, 1] and pq a PQ in percent, got {rho:g}, {pq:g}")
        if var.name == FULL and rho <= 0:
            raise InputError(f"{where}a {FULL} run needs rho_P > 0 (the share of images fully labelled)")
        if var.name != FULL and rho >= 1:
            raise InputError(f"{where}a run of {var.name} needs rho_P < 1 (the rest of the images carry its labels)")
        its = _cell(raw, "iterations", str(path), line, required=False)
        mins = _cell(raw, "minutes", str(path), line, required=False)
        runs.append(PilotRun(line, var.name, (raw.get("seed") or "").strip(), rho, pq, its, mins))
    if not runs:
        raise InputError(f"{path}: no runs in the pilot table")
    if not any(r.variable == FULL and r.rho_p >= 1 for r in runs):
        raise InputError(f"{path}: the pilot needs full supervision ({FULL} at rho_P = 1), the curve's end")
    return MethodPilot(str(path), runs)


def write_method_pilot(path: str | os.PathLike, rows: list[dict[str, Any]]) -> int:
    """Write (atomically) pilot rows (dicts with :data:`PILOT_COLUMNS`); the row count."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=PILOT_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return len(rows)


# ---------------------------------------------------------------------------------------------- quality model


@dataclass
class FullCurve:
    """F(x): PQ with a share x of full labels and the rest unlabelled; monotone, through (0, 0)."""

    curve: MonotoneCurve

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> FullCurve:
        """Through (0, 0) (nothing labelled teaches nothing) and the runs' means at each share, made
        non-decreasing by isotonic regression (weighted by runs): more full labels never predict less."""
        from scipy.optimize import isotonic_regression

        knots, inv = np.unique(np.concatenate([[0.0], x]), return_inverse=True)
        values = np.concatenate([[0.0], y])
        counts = np.bincount(inv)
        means = np.bincount(inv, weights=values) / counts
        return cls(MonotoneCurve(knots, isotonic_regression(means, weights=counts, increasing=True).x))

    @property
    def _end(self) -> tuple[float, float, float]:
        x, y = self.curve.x, self.curve.y
        slope = (y[-1] - y[-2]) / (x[-1] - x[-2]) if len(x) > 1 else 0.0
        return float(x[-1]), float(y[-1]), max(float(slope), 1e-6)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        x1, y1, slope = self._end
        return np.where(x > x1, y1 + slope * (x - x1), self.curve(np.clip(x, 0.0, x1)))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """The smallest x with F(x) = y (bisection on the monotone curve; beyond its end, along its last slope)."""
        y = np.asarray(y, dtype=float)
        x1, y1, slope = self._end
        lo, hi = np.zeros_like(y), np.full_like(y, x1)
        for _ in range(60):
            mid = (lo + hi) / 2
            below = self.curve(mid) < y
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return np.where(y > y1, x1 + (y - y1) / slope, np.where(y <= 0, 0.0, hi))


@dataclass
class MethodModel:
    """Predicted PQ of a plan over variables (see the module docstring for the two ways methods combine)."""

    full: FullCurve
    cells: dict[str, tuple[np.ndarray, np.ndarray]]  # variable -> (rho_P knots, efficiency or gain at each)
    combine: str = "equivalent"
    replicates: list[MethodModel] = field(default_factory=list)

    @property
    def variables(self) -> list[str]:
        return [FULL, *self.cells]

    def _at(self, v: str, rho_p: np.ndarray) -> np.ndarray:
        x, e = self.cells[v]
        return np.interp(rho_p, x, e)

    def predict(self, shares: dict[str, np.ndarray | float]) -> np.ndarray:
        """PQ (percent) of plans given each variable's shares (N,) (missing shares 0; the rest unlabelled)."""
        n = max((np.size(s) for s in shares.values()), default=1)
        rho_p = np.broadcast_to(np.asarray(shares.get(FULL, 0.0), dtype=float), (n,))
        unknown = [v for v in shares if v != FULL and v not in self.cells]
        if unknown:
            raise InputError(
                f"the quality model has no pilot runs of {unknown[0]} (pilot variables: {', '.join(self.variables)})"
            )
        if self.combine == "equivalent":
            x = rho_p + sum(self._at(v, rho_p) * np.asarray(s, dtype=float) for v, s in shares.items() if v != FULL)
            return self.full(np.maximum(x, 0.0))
        gain = sum(self._at(v, rho_p) * np.asarray(s, dtype=float) for v, s in shares.items() if v != FULL)
        return np.maximum(self.full(rho_p) + gain, 0.0)

    def interval(self, shares: dict[str, np.ndarray | float], level: float = 0.9) -> np.ndarray | None:
        """Percentile interval of the prediction over the seed-bootstrap refits -> (N, 2), or None without them."""
        if not self.replicates:
            return None
        reps = np.stack([m.predict(shares) for m in self.replicates])
        a = (1 - level) / 2
        return np.stack([np.quantile(reps, a, axis=0), np.quantile(reps, 1 - a, axis=0)], axis=1)

    def describe(self) -> str:
        knots = ", ".join(f"({a:.2f}, {b:.1f})" for a, b in zip(self.full.curve.x, self.full.curve.y))
        what = "worth in full labels per image" if self.combine == "equivalent" else "PQ gain per unit share"
        lines = [f"quality model over methods ({self.combine}): F through {knots}", f"  each method's {what}:"]
        for v, (x, e) in self.cells.items():
            lines.append(f"  {v:28s} " + ", ".join(f"rho_P {a:g}: {b:+.3f}" for a, b in zip(x, e)))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "combine": self.combine,
            "full_curve": self.full.curve.to_json(),
            "cells": {v: {"rho_P": x.tolist(), "value": e.tolist()} for v, (x, e) in self.cells.items()},
            "bootstrap_replicates": len(self.replicates),
        }


def _fit_once(by_cell: dict[tuple[str, float], list[float]], combine: str) -> MethodModel:
    full = [(rho, pq) for (v, rho), pqs in by_cell.items() if v == FULL for pq in pqs]
    if not any(rho >= 1 for rho, _ in full):
        raise InputError(f"the quality model needs full supervision ({FULL} at rho_P = 1)")
    xy = np.asarray(full, dtype=float)
    curve = FullCurve.fit(xy[:, 0], xy[:, 1])
    per: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (v, rho), pqs in sorted(by_cell.items()):
        if v == FULL:
            continue
        pq = float(np.mean(pqs))
        if combine == "equivalent":
            value = (float(curve.inverse(np.array(pq))) - rho) / (1 - rho)
        else:
            value = (pq - float(curve(np.array(rho)))) / (1 - rho)
        per[v].append((rho, value))
    cells = {v: (np.array([a for a, _ in pts]), np.array([b for _, b in pts])) for v, pts in per.items()}
    return MethodModel(curve, cells, combine)


def fit_method_model(
    pilot: MethodPilot, combine: str = "equivalent", bootstrap: int = 200, seed: int = 0
) -> MethodModel:
    """The quality model from a pilot, with ``bootstrap`` refits on seeds resampled within each cell."""
    if combine not in COMBINE:
        raise InputError(f"unknown way methods combine {combine!r}; choose one of {', '.join(COMBINE)}")
    cells = {k: [r.pq for r in runs] for k, runs in pilot.cells().items()}
    model = _fit_once(cells, combine)
    rng = np.random.default_rng([seed, 45])
    for _ in range(bootstrap):
        rep = {k: list(rng.choice(v, size=len(v))) for k, v in cells.items()}
        model.replicates.append(_fit_once(rep, combine))
    return model


@dataclass
class LooCell:
    variable: str
    rho_p: float
    measured: float
    predicted: float


def leave_one_out(pilot: MethodPilot, combine: str = "equivalent") -> list[LooCell]:
    """Each pilot cell (variable, rho_P) predicted by the model fitted without it (its seeds' mean PQ against the
    prediction). Cells nothing else can predict (full supervision itself; a variable's only cell) are skipped."""
    out = []
    for (v, rho), runs in sorted(pilot.cells().items()):
        if v == FULL and rho >= 1:
            continue
        rest = pilot.without((v, rho))
        if v != FULL and v not in rest.variables:
            continue
        model = fit_method_model(rest, combine, bootstrap=0)
        shares = {FULL: rho} if v == FULL else {FULL: rho, v: 1 - rho}
        pred = float(model.predict(shares)[0])
        out.append(LooCell(v, rho, float(np.mean([r.pq for r in runs])), pred))
    return out


def loo_mae(cells: list[LooCell]) -> float:
    """Mean absolute leave-one-out error in PQ points (nan with no cell)."""
    return float(np.mean([abs(c.predicted - c.measured) for c in cells])) if cells else float("nan")


@dataclass
class Fitted:
    """What a pilot over methods gives the planner: the quality model, the compute model, and the leave-one-out
    cells of each way methods combine (the model's own way among them)."""

    model: MethodModel
    compute: Compute
    loo: dict[str, list[LooCell]]

    @property
    def loo_mae(self) -> float:
        """The model's own leave-one-out error (PQ points)."""
        return loo_mae(self.loo[self.model.combine])


def fit_pilot(pilot: MethodPilot, combine: str | None = None, bootstrap: int = 200, seed: int = 0) -> Fitted:
    """The planner's models from a pilot; ``combine`` None takes the way methods combine with the smaller
    leave-one-out error over the pilot's cells (a choice made on the pilot's split, val)."""
    loo = {c: leave_one_out(pilot, c) for c in COMBINE}
    if combine is None:
        scored = {c: loo_mae(cells) for c, cells in loo.items() if cells}
        combine = min(scored, key=scored.get) if scored else "equivalent"
    return Fitted(fit_method_model(pilot, combine, bootstrap, seed), Compute.from_pilot(pilot), loo)


# ------------------------------------------------------------------------------------------------ compute model


@dataclass
class Compute:
    """Training compute of a plan: the final network, plus the stages each method needs (once per plan)."""

    base_iterations: float
    base_minutes: float
    extra_iterations: dict[str, float]  # variable -> iterations of its stages
    extra_minutes: dict[str, float]

    @classmethod
    def from_pilot(cls, pilot: MethodPilot) -> Compute:
        """Iterations and minutes of full supervision's runs, and each variable's extra (the median of its runs
        less full supervision's; preparation and stages counted once per plan, whatever the share)."""
        full = [r for r in pilot.runs if r.variable == FULL and r.rho_p >= 1]

        def med(runs: list[PilotRun], key: str) -> float:
            vals = [getattr(r, key) for r in runs if getattr(r, key) is not None]
            return float(np.median(vals)) if vals else float("nan")

        base_i, base_m = med(full, "iterations"), med(full, "minutes")
        ext_i, ext_m = {}, {}
        for v in pilot.variables:
            if v == FULL:
                continue
            runs = [r for r in pilot.runs if r.variable == v]
            ext_i[v] = max(0.0, med(runs, "iterations") - base_i) if math.isfinite(base_i) else float("nan")
            ext_m[v] = max(0.0, med(runs, "minutes") - base_m) if math.isfinite(base_m) else float("nan")
        return cls(base_i, base_m, ext_i, ext_m)

    def of(self, support: list[str]) -> tuple[float, float]:
        """(iterations, minutes) of a plan using ``support``; variables of one method share its stages."""
        by_method: dict[str, tuple[float, float]] = {}
        for v in support:
            if v == FULL:
                continue
            m = v.split(":", 1)[1]
            a, b = by_method.get(m, (0.0, 0.0))
            by_method[m] = (max(a, self.extra_iterations.get(v, 0.0)), max(b, self.extra_minutes.get(v, 0.0)))
        its = self.base_iterations + sum(a for a, _ in by_method.values())
        mins = self.base_minutes + sum(b for _, b in by_method.values())
        return its, mins


# ------------------------------------------------------------------------------------------------------ search


@dataclass
class MethodPlanPoint:
    shares: dict[str, float]  # variable -> share (> 0)
    pq: float
    cost: float
    iterations: float
    minutes: float
    interval: tuple[float, float] | None = None
    close_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ratio(self) -> dict[str, float]:
        """Kind set -> share, as ``cqbnet labels simulate --plan`` reads it."""
        return {v.split(":", 1)[0]: s for v, s in self.shares.items()}

    def text(self) -> str:
        return ", ".join(f"{v} {s:.3f}" for v, s in self.shares.items())

    def to_json(self) -> dict[str, Any]:
        out = {
            "methods": self.shares,
            "ratio": self.ratio,
            "predicted_pq": self.pq,
            "label_cost": self.cost,
            "compute": {"iterations": self.iterations, "minutes": self.minutes},
        }
        if self.interval is not None:
            out["predicted_pq_interval"] = list(self.interval)
        if self.close_calls:
            out["close_calls"] = self.close_calls
        return out


@dataclass
class MethodPlan:
    variables: list[str]
    costs: dict[str, float]  # variable -> expected cost per image (full labels = 1)
    model: MethodModel
    compute: Compute
    loo_mae: float | None
    points: list[MethodPlanPoint]  # the three-objective front
    picks: dict[str, MethodPlanPoint]
    rule: str
    evaluated: int

    @property
    def recommended(self) -> MethodPlanPoint:
        return self.picks[self.rule]

    def table(self, max_rows: int = 14) -> str:
        lines = [
            f"front over quality, label cost and compute: {len(self.points)} of {self.evaluated} plans",
            f"{'PQ':>6s} {'cost':>7s} {'iterations':>10s} {'minutes':>8s}  methods",
        ]
        rows = sorted(self.points, key=lambda p: p.cost)
        if len(rows) > max_rows:
            rows = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, max_rows).round().astype(int))]
        for p in rows:
            lines.append(f"{p.pq:6.1f} {p.cost:7.4f} {p.iterations:10.0f} {p.minutes:8.1f}  {p.text()}")
        lines += ["", "plans picked"]
        for rule, p in self.picks.items():
            mark = "  <- recommended" if rule == self.rule else ""
            iv = f" [90%: {p.interval[0]:.1f}, {p.interval[1]:.1f}]" if p.interval else ""
            lines.append(
                f"  {rule:28s} PQ {p.pq:.1f}{iv}, cost {p.cost:.4f}, {p.iterations:.0f} iterations: {p.text()}{mark}"
            )
            for c in p.close_calls:
                lines.append(
                    f"    {'':26s} the model cannot tell it from: {c['text']} (PQ {c['predicted_pq']:.1f}, "
                    f"cost {c['label_cost']:.4f}; leave-one-out error {self.loo_mae:.1f} PQ)"
                )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        from cqbnet.planner.plan import plan_document

        return {
            **plan_document(PLAN_VERSION, self.rule, self.recommended, self.picks),
            "variables": self.variables,
            "unit_costs": self.costs,
            "compute": {
                "base_iterations": self.compute.base_iterations,
                "base_minutes": self.compute.base_minutes,
                "extra_iterations": self.compute.extra_iterations,
                "extra_minutes": self.compute.extra_minutes,
            },
            "quality_model": self.model.to_json(),
            "loo_mae_pq": self.loo_mae,
            "search": {"evaluated": self.evaluated},
            "front": [p.to_json() for p in self.points],
        }


def variable_cost(costs: CostModel, variable: str) -> float:
    """Expected label cost per image of a variable's kinds (full labelling = 1)."""
    kinds = parse_kind_set(variable.split(":", 1)[0])
    return sum(costs.expected_per_image(k) for k in kinds)


def supports(variables: list[str], max_size: int) -> list[tuple[str, ...]]:
    """Every set of up to ``max_size`` variables that can share one plan (no kind set twice, no conflict)."""
    parsed = {v: parse_variable(v) for v in variables}
    out = []
    for size in range(1, max_size + 1):
        for combo in itertools.combinations(variables, size):
            if all(not conflicting(parsed[a], parsed[b]) for a, b in itertools.combinations(combo, 2)):
                out.append(combo)
    return out


def sample_plans(
    variables: list[str],
    lower: dict[str, float],
    upper: dict[str, float],
    max_support: int = 3,
    per_support: int = 400,
    seed: int = 0,
) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Feasible plans on every support: its vertices and Dirichlet draws projected onto the bounds, seeded."""
    rng = np.random.default_rng([seed, 46])
    out = []
    for sup in supports(variables, max_support):
        if any(lower.get(v, 0.0) > 0 for v in variables if v not in sup):
            continue
        lo = np.array([lower.get(v, 0.0) for v in sup])
        hi = np.array([upper.get(v, 1.0) for v in sup])
        if lo.sum() > 1 + 1e-9 or hi.sum() < 1 - 1e-9 or (lo > hi).any():
            continue
        k = len(sup)
        draws = np.eye(k) if k > 1 else np.ones((1, 1))
        if k > 1:
            draws = np.concatenate([draws, rng.dirichlet(np.ones(k), size=per_support)])
        rho = project(draws, lo, hi)
        rho = rho[(rho > 1e-6).all(axis=1)] if k > 1 else rho  # a share of 0 belongs to a smaller support
        if len(rho):
            out.append((sup, np.round(rho, 6)))
    return out


def check_bounds(measured: list[str], lower: dict[str, float], upper: dict[str, float]) -> None:
    """Every variable a minimum or a cap names was measured by the pilot (else a one-line error naming it)."""
    for v in (*lower, *upper):
        if v not in measured:
            raise InputError(f"a bound names {v!r}, which the pilot did not measure ({', '.join(measured)})")


def make_method_plan(
    model: MethodModel,
    costs: CostModel,
    compute: Compute,
    budget: float | None = None,
    compute_budget: float | None = None,
    quality_target: float | None = None,
    lower: dict[str, float] | None = None,
    upper: dict[str, float] | None = None,
    unavailable: set[str] | None = None,
    max_support: int = 3,
    per_support: int = 400,
    seed: int = 0,
    loo: float | None = None,
    budgets: list[float] | None = None,
) -> MethodPlan:
    """Search plans over the model's variables, keep the front over (PQ max, label cost min, iterations min), and
    pick: the best PQ within ``budget`` (and ``compute_budget`` iterations), or the cheapest plan reaching
    ``quality_target``, else the knee of PQ against cost; ``budgets`` adds a pick per budget. With ``loo`` (the
    model's leave-one-out error), each pick lists the plans of other methods it cannot be told from."""
    lower, upper, unavailable = dict(lower or {}), dict(upper or {}), set(unavailable or ())
    variables = [v for v in model.variables if not (parse_kind_set(v.split(":", 1)[0]) & unavailable)]
    check_bounds(model.variables, lower, upper)
    if not variables:
        raise InputError("no label method is left to plan with (every one needs an unavailable kind)")
    for v, share in lower.items():
        if share > 0 and v not in variables:
            raise InputError(f"a minimum share of {v} is asked for, but it needs a kind that is unavailable")
    unit = {v: variable_cost(costs, v) for v in variables}
    sup_shares = sample_plans(variables, lower, upper, max_support, per_support, seed)
    plans: list[tuple[tuple[str, ...], np.ndarray]] = []
    pq, cost, its, mins = [], [], [], []
    for sup, rho in sup_shares:
        shares = {v: rho[:, j] for j, v in enumerate(sup)}
        pq.append(model.predict(shares))
        cost.append(sum(unit[v] * rho[:, j] for j, v in enumerate(sup)))
        i, m = compute.of(list(sup))
        its.append(np.full(len(rho), i))
        mins.append(np.full(len(rho), m))
        plans += [(sup, r) for r in rho]
    if not plans:
        raise InputError("no plan satisfies the bounds (--min, --cap, --unavailable)")
    pq_a, cost_a, its_a, mins_a = (np.concatenate(a) for a in (pq, cost, its, mins))
    if compute_budget is None:
        ok_compute = np.ones(len(its_a), dtype=bool)
    elif np.isnan(its_a).all():
        raise InputError("the pilot records no iterations (column 'iterations'), so no compute budget can be checked")
    else:
        ok_compute = its_a <= compute_budget + 1e-9
        if not ok_compute.any():
            cheapest = np.nanmin(its_a)
            raise InputError(f"no plan trains within {compute_budget:g} iterations; the cheapest needs {cheapest:.0f}")
    its_front = np.nan_to_num(its_a, nan=0.0)  # a pilot without compute: one level, the front over PQ and cost

    def point(i: int, interval: bool = True) -> MethodPlanPoint:
        sup, r = plans[i]
        shares = {v: float(s) for v, s in zip(sup, r)}
        iv = model.interval({v: np.array([s]) for v, s in shares.items()}) if interval else None
        return MethodPlanPoint(
            shares,
            float(pq_a[i]),
            float(cost_a[i]),
            float(its_a[i]),
            float(mins_a[i]),
            None if iv is None else (float(iv[0, 0]), float(iv[0, 1])),
        )

    front_idx: list[int] = []
    for level in np.unique(its_front):
        pool = np.flatnonzero(its_front <= level)
        keep = pool[non_dominated(pq_a[pool], cost_a[pool])]
        front_idx += [int(i) for i in keep if its_front[i] == level]

    def best_within(b: float) -> int:
        ok = np.flatnonzero(ok_compute & (cost_a <= b + 1e-12))
        if len(ok) == 0:
            cheapest = cost_a[ok_compute].min()
            raise InputError(f"no plan costs at most {b:g}; the cheapest feasible plan costs {cheapest:.4f}")
        return int(ok[np.lexsort((cost_a[ok], -pq_a[ok]))[0]])

    picks: dict[str, MethodPlanPoint] = {}
    if budget is not None:
        picks[f"best within {budget:g}"] = point(best_within(budget))
    for b in budgets or []:
        picks.setdefault(f"best within {b:g}", point(best_within(b)))
    if quality_target is not None:
        ok = np.flatnonzero(ok_compute & (pq_a >= quality_target))
        if len(ok) == 0:
            raise InputError(f"no plan reaches PQ {quality_target:g}; the best reaches {pq_a[ok_compute].max():.1f}")
        picks[f"cheapest to PQ {quality_target:g}"] = point(int(ok[np.lexsort((-pq_a[ok], cost_a[ok]))[0]]))
    pool = np.flatnonzero(ok_compute)
    front2 = pool[non_dominated(pq_a[pool], cost_a[pool])]
    picks["knee"] = point(int(front2[knee(pq_a[front2], cost_a[front2])]))
    rule = next(iter(picks))
    if loo is not None and math.isfinite(loo):
        for p in picks.values():
            p.close_calls = _close_calls(p, plans, pq_a, cost_a, ok_compute, loo)
    return MethodPlan(
        variables,
        unit,
        model,
        compute,
        loo,
        [point(i, interval=False) for i in sorted(front_idx, key=lambda i: cost_a[i])],
        picks,
        rule,
        len(plans),
    )


def _close_calls(
    pick: MethodPlanPoint, plans: list, pq: np.ndarray, cost: np.ndarray, ok: np.ndarray, error: float, n: int = 3
) -> list[dict[str, Any]]:
    """The best plan of each other set of methods, no dearer than the pick, whose predicted PQ is within the model's
    leave-one-out error of the pick's: the pilot cannot tell them apart."""
    mine = set(pick.shares)
    best: dict[tuple[str, ...], int] = {}
    for i in np.flatnonzero(ok & (cost <= pick.cost + 1e-12) & (pq >= pick.pq - error)):
        sup = plans[i][0]
        if set(sup) != mine and (sup not in best or pq[i] > pq[best[sup]]):
            best[sup] = int(i)
    order = sorted(best.values(), key=lambda i: -pq[i])[:n]
    out = []
    for i in order:
        sup, r = plans[i]
        shares = {v: float(s) for v, s in zip(sup, r)}
        out.append(
            {
                "methods": shares,
                "text": ", ".join(f"{v} {s:.3f}" for v, s in shares.items()),
                "predicted_pq": float(pq[i]),
                "label_cost": float(cost[i]),
            }
        )
    return out


def load_plan_methods(path: str | os.PathLike) -> dict[frozenset[str], str]:
    """Kind set -> method of a plan over methods (empty for a plan over kinds), for ``labels simulate --plan``."""
    from cqbnet.io import read_json

    obj = read_json(Path(path), "plan file")
    methods = (obj.get("recommended") or {}).get("methods") if isinstance(obj, dict) else None
    if not isinstance(methods, dict):
        return {}
    out = {}
    for v in methods:
        var = parse_variable(str(v), f"{path}: recommended.methods: ")
        out[var.kinds] = var.method
    return out


def random_method_plans(
    variables: list[str],
    costs: CostModel,
    target: float,
    n: int,
    seed: int = 0,
    tolerance: float = 0.1,
    max_support: int = 3,
) -> list[dict[str, float]]:
    """``n`` random plans over ``variables`` whose label cost is within ``tolerance`` (relative) of ``target``:
    supports drawn uniformly among those that can cost that much, shares uniform on each support's simplex,
    rounded to 3 decimals. The random arms a planned plan is compared with at matched cost (headline v6)."""
    from cqbnet.planner.plan import round_ratio

    unit = {v: variable_cost(costs, v) for v in variables}
    rng = np.random.default_rng([seed, 47])
    pool = []
    for sup, rho in sample_plans(variables, {}, {}, max_support, 400, seed):
        c = rho @ np.array([unit[v] for v in sup])
        near = rho[np.abs(c - target) <= tolerance * target]
        if len(near):
            pool.append((sup, near))
    if sum(len(r) for _, r in pool) < n:
        raise InputError(f"fewer than {n} plans over these methods cost {target:g} +- {100 * tolerance:g}%")
    out: list[dict[str, float]] = []
    order = rng.permutation(len(pool))
    while len(out) < n:  # a different support each time, while there are supports left
        for j in order:
            sup, rho = pool[j]
            r = rho[rng.integers(len(rho))]
            plan = round_ratio(dict(zip(sup, r.tolist())))
            if plan not in out:
                out.append(plan)
            if len(out) == n:
                break
    return out
