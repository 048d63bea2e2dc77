"""The project's one statistics module: effects measured over seeds.

The unit is the seed. Two arms are *paired* when run ``s`` of both has seed ``s``: the same labels, the same
initialisation and the same data order, so their difference removes what the seed alone decides. Images enter only
through each run's PQ. With ``n`` paired seeds the interval is Student's t with ``n - 1`` degrees of freedom; with
one seed there is an estimate but no interval (``low`` and ``high`` are None).

* :func:`t_interval` - the mean of values and its t interval.
* :func:`paired_difference` - treated minus control over the seeds both have.
* :func:`ratio_of_means` - mean(treated) / mean(reference) over paired seeds, with a delta-method interval: the
  ratio's linearisation ``d_s = t_s - R r_s`` has mean 0 at the true ratio, so ``R +- t * sd(d) / (sqrt(n) mean(r))``
  (Fieller's interval to first order; exact for a reference without spread).
* :func:`difference_to_group` - one arm against a group of alternatives (e.g. a planned plan against random plans
  of the same cost): the unit is the alternative, its paired difference averaged over seeds.
* :func:`rank_correlation` - Spearman's rho of predictions against measurements (the unit: a plan), with the
  Fisher-z interval of Fieller, Hartley and Pearson (1957; standard error 1.06 / sqrt(n - 3)).

The percentile bootstrap over images (:mod:`cqbnet.evaluation.bootstrap`) stays as a secondary, labelled
"images only": it says how much the val or test images alone move a number, not how much another seed would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A measured effect with its two-sided interval over seeds (None bounds when there is only one unit)."""

    estimate: float
    low: float | None
    high: float | None
    n: int  # units (seeds, or alternative x seed)
    method: str
    seeds: tuple[int, ...] = ()

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def excludes(self, value: float = 0.0) -> bool:
        """True when the whole interval lies on one side of ``value`` (never with one unit)."""
        return self.interval is not None and (self.low > value or self.high < value)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["interval"] = None if self.interval is None else list(self.interval)
        return d

    def text(self, scale: float = 1.0, digits: int = 1, sign: bool = True) -> str:
        """``+1.2 [-0.3, +2.7]`` (times ``scale``); one unit: ``+1.2 (one seed: no interval)``."""
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        head = f.format(self.estimate * scale)
        if self.interval is None:
            return f"{head} (one seed: no interval)"
        return f"{head} [{f.format(self.low * scale)}, {f.format(self.high * scale)}]"


def _t_half_width(values: np.ndarray, level: float) -> float:
    return float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def t_interval(
    values: Iterable[float], level: float = LEVEL, method: str = "t over seeds", seeds: Sequence[int] = ()
) -> Estimate:
    """Mean of ``values`` (one per unit) and its Student-t interval with ``n - 1`` degrees of freedom."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ValueError("no values to estimate from")
    mean = float(v.mean())
    if v.size < 2:
        return Estimate(mean, None, None, 1, method, tuple(seeds))
    half = _t_half_width(v, level)
    return Estimate(mean, mean - half, mean + half, int(v.size), method, tuple(seeds))


def shared_seeds(*arms: Mapping[int, float]) -> list[int]:
    """The seeds every arm has, sorted; an error naming the arms' seeds when there is none."""
    seeds = sorted(set.intersection(*(set(a) for a in arms)))
    if not seeds:
        raise ValueError(f"the arms share no seed: {[sorted(a) for a in arms]}")
    return seeds


def paired_difference(treated: Mapping[int, float], control: Mapping[int, float], level: float = LEVEL) -> Estimate:
    """Mean over shared seeds of ``treated[s] - control[s]``, with its paired t interval."""
    seeds = shared_seeds(treated, control)
    return t_interval([treated[s] - control[s] for s in seeds], level, "paired t over seeds", seeds)


def ratio_of_means(treated: Mapping[int, float], reference: Mapping[int, float], level: float = LEVEL) -> Estimate:
    """``mean(treated) / mean(reference)`` over the shared seeds, with the paired delta-method t interval (see the
    module's docstring). The reference's mean must be positive."""
    seeds = shared_seeds(treated, reference)
    t = np.array([treated[s] for s in seeds], dtype=float)
    r = np.array([reference[s] for s in seeds], dtype=float)
    if r.mean() <= 0:
        raise ValueError(f"the reference's mean is {r.mean()}; a ratio to it is undefined")
    ratio = float(t.mean() / r.mean())
    method = "paired delta-method t over seeds"
    if len(seeds) < 2:
        return Estimate(ratio, None, None, 1, method, tuple(seeds))
    half = _t_half_width(t - ratio * r, level) / float(r.mean())
    return Estimate(ratio, ratio - half, ratio + half, len(seeds), method, tuple(seeds))


def difference_to_group(
    treated: Mapping[int, float], alternatives: Sequence[Mapping[int, float]], level: float = LEVEL
) -> Estimate:
    """``treated`` minus a group of alternatives drawn at random (e.g. random plans of the planned plan's cost),
    each paired with it by seed. The unit is the alternative: its paired difference averaged over the shared seeds,
    with a t interval over the alternatives. (Taking alternative x seed as the unit would count each seed's treated
    run several times as if independent, and give an interval too narrow.)"""
    if not alternatives:
        raise ValueError("no alternatives to compare with")
    seeds = shared_seeds(treated, *alternatives)
    diffs = [float(np.mean([treated[s] - alt[s] for s in seeds])) for alt in alternatives]
    return t_interval(diffs, level, "t over alternatives (each averaged over paired seeds)", seeds)


def rank_correlation(predicted: Sequence[float], measured: Sequence[float], level: float = LEVEL) -> Estimate:
    """Spearman's rho between ``predicted`` and ``measured`` (one pair per unit, e.g. a trained plan: its predicted
    PQ and its PQ measured as the mean over seeds), with the Fisher-z interval of Fieller, Hartley and Pearson
    (1957): atanh(rho) +- z * 1.06 / sqrt(n - 3); no interval below 4 units."""
    x, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if x.shape != y.shape or x.size < 2:
        raise ValueError("rank correlation needs two equal-length sequences of at least 2 values")
    rho = float(stats.spearmanr(x, y).statistic)
    n = int(x.size)
    method = "Spearman, Fisher-z interval (Fieller, Hartley and Pearson 1957)"
    if n < 4 or not np.isfinite(rho) or abs(rho) >= 1.0:
        return Estimate(rho, None, None, n, method)
    half = float(stats.norm.ppf(0.5 + level / 2)) * 1.06 / np.sqrt(n - 3)
    z = np.arctanh(rho)
    return Estimate(rho, float(np.tanh(z - half)), float(np.tanh(z + half)), n, method)


def by_seed(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[int, float]:
    """``{seed: row[metric]}`` of result rows that carry a ``seed``; two rows of one seed are an error."""
    out: dict[int, float] = {}
    for r in rows:
        s = int(r["seed"])
        if s in out:
            raise ValueError(f"two rows of seed {s}")
        out[s] = float(r[metric])
    return out


def mode_pq(row: Mapping[str, Any], mode: str) -> float | None:
    """A result row's PQ in an inference mode: a recipe run's ``modes[mode]``, or a paired-arms row's argmax
    ``pq`` and ``heuristic``; None when the row has no PQ in that mode."""
    if "modes" in row:
        return row["modes"].get(mode, {}).get("pq")
    return row["pq"] if mode == "argmax" else row.get("heuristic", {}).get("pq")


def paired_rows(
    rows: Iterable[Mapping[str, Any]],
    base: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] = ("pq", "pq_th", "pq_st"),
    level: float = LEVEL,
) -> dict[str, Any] | None:
    """Result rows minus base rows of the same seeds, per metric: ``{metric: [mean, low, high], "seeds": [...]}``
    (null bounds with one seed); None when they share no seed. The JSON shape the benchmarks' summaries keep."""
    rows, base = list(rows), list(base)
    if not rows or not base or not set(by_seed(rows, metrics[0])) & set(by_seed(base, metrics[0])):
        return None
    out: dict[str, Any] = {}
    for m in metrics:
        e = paired_difference(by_seed(rows, m), by_seed(base, m), level)
        out[m] = [e.estimate, e.low, e.high]
        out["seeds"] = list(e.seeds)
    return out
