"""The quality objective f1 of paper 000: marginal improvements per label kind and region.

Paper 000 ("MOOP by Pareto-front") models quality through one curve per label
kind i and region k (things, stuff): the marginal improvement nabla PQ^k_rho_i
(Eq. 4 splits PQ_all = r_th PQ_th + r_st PQ_st). The curves are regressed on the
pilot (Eqs. 5 and 6, :mod:`cqbnet.planner.pilot_table`), integrated from 0 to rho_i
(Eq. 7) and combined as

* ``product`` (Eq. 9):  f1(rho) = prod_{i,k} (1 + nabla PQ^k_i(rho_i)), or
* ``additive``:         f1(rho) = sum_i r_th nabla PQ^th_i + r_st nabla PQ^st_i,
  the predicted change of PQ_all by Eq. 4 with the gains simply added.

Each :class:`Term` says whether its curve is integrated. Eq. 7 integrates the
weak kinds' curves; Eq. 5 states the panoptic curve as a difference between two
ratios, which is itself a marginal quantity, so by default it is integrated too
(see :mod:`cqbnet.planner.presets` for the literal reading).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cqbnet.errors import InputError
from cqbnet.labels.kinds import KINDS
from cqbnet.planner.pilot_table import Samples
from cqbnet.planner.regression import Curve, curve_from_json, fit_curve

OBJECTIVES = ("product", "additive")


@dataclass
class Term:
    """One curve: kind i, region k, and whether its gain is the curve's integral (Eq. 7) or its value."""

    kind: str
    region: str  # "th" or "st"
    curve: Curve
    integrate: bool = True

    def gain(self, rho: np.ndarray) -> np.ndarray:
        """nabla PQ^k_rho_i at the kind's shares rho (N,) -> (N,)."""
        return self.curve.integral(rho) if self.integrate else self.curve(rho)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "region": self.region, "integrate": self.integrate, **self.curve.to_json()}


@dataclass
class QualityModel:
    """f1 of paper 000 with optional bootstrap replicates for its uncertainty."""

    terms: list[Term]
    objective: str = "product"
    thing_share: float | None = None  # r_th of Eq. 4; needed by the additive objective
    source: str = ""
    replicates: list[list[Term]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InputError(f"unknown quality objective {self.objective!r}; choose {' or '.join(OBJECTIVES)}")
        if self.objective == "additive":
            if self.thing_share is None:
                raise InputError("the additive objective needs the share of thing classes r_th (--thing-share)")
            if not 0.0 <= self.thing_share <= 1.0:
                raise InputError(f"thing share r_th must be in [0, 1], got {self.thing_share:g}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Label kinds with at least one curve, in the project's kind order."""
        have = {t.kind for t in self.terms}
        return tuple(k for k in KINDS if k in have)

    def _combine(self, terms: list[Term], rho: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
        # rho: (N, len(kinds)) -> (N,)
        rho = np.atleast_2d(np.asarray(rho, dtype=float))
        index = {k: j for j, k in enumerate(kinds)}
        if self.objective == "product":
            out = np.ones(len(rho))
            for t in terms:
                if t.kind in index:
                    out *= 1.0 + t.gain(rho[:, index[t.kind]])
            return out
        out = np.zeros(len(rho))
        for t in terms:
            if t.kind in index:
                w = self.thing_share if t.region == "th" else 1.0 - self.thing_share
                out += w * t.gain(rho[:, index[t.kind]])
        return out

    def f1(self, rho: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
        """Quality objective at ratios rho (N, K) over ``kinds`` -> (N,)."""
        return self._combine(self.terms, rho, kinds)

    def f1_interval(self, rho: np.ndarray, kinds: tuple[str, ...], level: float = 0.9) -> np.ndarray | None:
        """Bootstrap percentile interval of f1 -> (N, 2), or None without replicates."""
        if not self.replicates:
            return None
        reps = np.stack([self._combine(terms, rho, kinds) for terms in self.replicates])  # (B, N)
        a = (1.0 - level) / 2
        return np.stack([np.quantile(reps, a, axis=0), np.quantile(reps, 1 - a, axis=0)], axis=1)

    def describe(self) -> str:
        lines = [
            f"quality model: {self.source} (f1: {self.objective}"
            + (f", r_th = {self.thing_share:.3f})" if self.objective == "additive" else ", Eq. 9)")
        ]
        for t in self.terms:
            how = "integrated from 0 (Eq. 7)" if t.integrate else "used as is"
            lines.append(f"  {t.kind:2s} {t.region}: {t.curve.describe()}   [{how}]")
        if self.replicates:
            lines.append(f"  uncertainty: {len(self.replicates)} bootstrap refits of the pilot")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "objective": self.objective,
            "thing_share": self.thing_share,
            "terms": [t.to_json() for t in self.terms],
            "bootstrap_replicates": len(self.replicates),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> QualityModel:
        terms = [Term(t["kind"], t["region"], curve_from_json(t), bool(t["integrate"])) for t in obj["terms"]]
        return cls(terms, obj["objective"], obj.get("thing_share"), obj.get("source", ""))


def fit_quality_model(
    samples: dict[tuple[str, str], Samples],
    regressor: str = "poly",
    degree: int = 3,
    bootstrap: int = 200,
    seed: int = 0,
    objective: str = "product",
    thing_share: float | None = None,
    source: str = "pilot",
) -> QualityModel:
    """Fit every curve (Eq. 8 form by default) and ``bootstrap`` case-resampled refits for uncertainty."""
    if degree < 0:
        raise InputError(f"polynomial degree must be >= 0, got {degree}")
    keys = sorted(samples, key=lambda kr: (KINDS.index(kr[0]), kr[1]))
    terms = [Term(k, r, fit_curve(samples[(k, r)].x, samples[(k, r)].y, regressor, degree)) for k, r in keys]
    rng = np.random.default_rng([seed, 8])
    replicates = []
    for _ in range(bootstrap):
        rep = []
        for k, r in keys:
            s = samples[(k, r)]
            idx = rng.integers(0, len(s.x), len(s.x))
            rep.append(Term(k, r, fit_curve(s.x[idx], s.y[idx], regressor, degree)))
        replicates.append(rep)
    return QualityModel(terms, objective, thing_share, source, replicates)
