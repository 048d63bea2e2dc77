"""Searching the allocation simplex: paper 000's random sampling and NSGA-II through pymoo.

The variables are the shares rho of the kinds in play (sum 1, Eq. 2). A
:class:`Constraints` narrows them: kinds that cannot be bought are left out, a
minimum share of fully labelled images and per-kind caps bound the shares.
:func:`sample_ratios` draws uniformly from what is left (paper 000 samples
7500 ratios); :func:`nsga2_ratios` lets NSGA-II (Deb et al. 2002, as
implemented by pymoo) look for the front directly, with each candidate
projected onto the feasible set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cqbnet.errors import InputError
from cqbnet.labels.kinds import KINDS


@dataclass
class Constraints:
    """Feasible ratios: kinds in play, lower and upper bound per kind."""

    kinds: tuple[str, ...]
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kinds:
            raise InputError("no label kind is left to plan with (all unavailable or without a quality model)")
        for name, bounds in (("minimum", self.lower), ("cap", self.upper)):
            for k, v in bounds.items():
                if k not in KINDS:
                    raise InputError(f"{name} for unknown label kind {k!r}; known kinds: {', '.join(KINDS)}")
                if not np.isfinite(v) or not 0.0 <= v <= 1.0:
                    raise InputError(f"{name} of {k} must be a share in [0, 1], got {v:g}")
        for k in set(self.lower) - set(self.kinds):
            if self.lower[k] > 0:
                raise InputError(f"a minimum share of {k} is asked for, but {k} is not available to the plan")
        lo, hi = self.bounds()
        bad = [k for k, a, b in zip(self.kinds, lo, hi) if a > b]
        if bad:
            raise InputError(f"infeasible constraints: the minimum share of {bad[0]} exceeds its cap")
        if lo.sum() > 1.0 + 1e-9:
            raise InputError(f"infeasible constraints: the minimum shares add up to {lo.sum():.3g} > 1")
        if hi.sum() < 1.0 - 1e-9:
            raise InputError(
                f"infeasible constraints: the caps of {', '.join(self.kinds)} add up to {hi.sum():.3g} < 1, "
                "so no plan can label every image"
            )

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.lower.get(k, 0.0) for k in self.kinds])
        hi = np.array([self.upper.get(k, 1.0) for k in self.kinds])
        return lo, hi

    def to_json(self) -> dict:
        return {"kinds": list(self.kinds), "minimum": dict(self.lower), "cap": dict(self.upper)}


def project(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, iters: int = 100) -> np.ndarray:
    """Euclidean projection of rows of x (N, K) onto {lo <= rho <= hi, sum rho = 1}.

    rho = clip(x - tau, lo, hi) with the shift tau found by bisection (the sum is
    monotone in tau); the result is renormalised to remove the last rounding.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    a = (x - hi[None]).min(axis=1) - 1.0  # sum at a >= sum(hi) >= 1
    b = (x - lo[None]).max(axis=1) + 1.0  # sum at b = sum(lo) <= 1
    for _ in range(iters):
        mid = (a + b) / 2
        s = np.clip(x - mid[:, None], lo, hi).sum(axis=1)
        a = np.where(s > 1.0, mid, a)
        b = np.where(s > 1.0, b, mid)
    rho = np.clip(x - ((a + b) / 2)[:, None], lo, hi)
    free = (rho > lo) & (rho < hi)
    excess = rho.sum(axis=1) - 1.0
    nfree = np.maximum(free.sum(axis=1), 1)
    rho = rho - free * (excess / nfree)[:, None]
    return rho


def sample_ratios(n: int, constraints: Constraints, seed: int) -> np.ndarray:
    """``n`` ratios (n, K) uniform on the feasible part of the simplex, seeded.

    Shares above the minimums are Dirichlet(1, ..., 1) draws (uniform on the
    simplex); draws over a cap are rejected. If caps leave too thin a set for
    rejection, the remaining draws are projected onto it (feasible, no longer
    exactly uniform).
    """
    if n < 1:
        raise InputError(f"the number of sampled ratios must be >= 1, got {n}")
    lo, hi = constraints.bounds()
    k = len(constraints.kinds)
    rng = np.random.default_rng([seed, 9])
    slack = 1.0 - lo.sum()
    got: list[np.ndarray] = []
    have = 0
    for _ in range(50):
        draw = lo + slack * rng.dirichlet(np.ones(k), size=max(n, 64))
        ok = draw[(draw <= hi + 1e-12).all(axis=1)]
        got.append(ok)
        have += len(ok)
        if have >= n:
            break
    out = np.concatenate(got)[:n] if got else np.zeros((0, k))
    if len(out) < n:
        rest = project(rng.dirichlet(np.ones(k), size=n - len(out)), lo, hi)
        out = np.concatenate([out, rest])
    return out


def nsga2_ratios(
    objectives: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    constraints: Constraints,
    seed: int,
    population: int = 100,
    generations: int = 75,
) -> np.ndarray:
    """Ratios (N, K) found by NSGA-II; ``objectives(rho)`` returns (f1, f2) to maximise and minimise.

    Every candidate is projected onto the feasible set (a pymoo repair), so the
    equality sum rho = 1 and the bounds always hold. All evaluated ratios are
    returned (population x generations), for a fair comparison with sampling.
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.core.problem import Problem
    from pymoo.core.repair import Repair
    from pymoo.optimize import minimize

    lo, hi = constraints.bounds()

    class _Project(Repair):
        def _do(self, problem, X, **kwargs):
            return project(X, lo, hi)

    class _Plan(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=len(lo), n_obj=2, xl=lo, xu=hi)

        def _evaluate(self, X, out, *args, **kwargs):
            f1, f2 = objectives(X)
            out["F"] = np.stack([-f1, f2], axis=1)

    class _Collect(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[np.ndarray] = []

        def notify(self, algorithm):
            self.seen.append(algorithm.off.get("X") if algorithm.off is not None else algorithm.pop.get("X"))

    collect = _Collect()
    algorithm = NSGA2(pop_size=population, repair=_Project(), eliminate_duplicates=True)
    minimize(_Plan(), algorithm, ("n_gen", generations), seed=seed, callback=collect, verbose=False)
    return np.concatenate(collect.seen)


def parse_shares(text: str | None, what: str) -> dict[str, float]:
    """``"B=0.3,S=0.2"`` -> {"B": 0.3, "S": 0.2} for caps and minimums; errors name the term."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"{what} term {part.strip()!r} is not KIND=SHARE")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in KINDS:
            raise InputError(f"{what}: unknown label kind {k!r}; known kinds: {', '.join(KINDS)}")
        try:
            out[k] = float(v)
        except ValueError:
            raise InputError(f"{what}: share {v!r} for {k} is not a number") from None
    return out


def parse_kinds(text: str | None, what: str) -> set[str]:
    """``"I,PT"`` -> {"I", "PT"}; unknown kinds are an error."""
    kinds = {s.strip() for s in (text or "").split(",") if s.strip()}
    for k in kinds:
        if k not in KINDS:
            raise InputError(f"{what}: unknown label kind {k!r}; known kinds: {', '.join(KINDS)}")
    return kinds
