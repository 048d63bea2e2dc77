"""Pareto dominance for paper 000's two objectives: quality f1 (maximised) and cost f2 (minimised).

Paper 000, Eq. 1 and "Problem Formulation": a ratio dominates another when it
is no worse in both objectives and better in one; the Pareto front is the set of
ratios nothing dominates. Equal points do not dominate each other, so
duplicates on the front are all kept.
"""

from __future__ import annotations

import numpy as np


def non_dominated(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Indices of the Pareto-optimal points, ordered by rising cost. O(N log N).

    Sweep in order of cost (ties: best quality first); a point survives when its
    quality beats everything cheaper, or it equals the best point exactly.
    """
    f1 = np.asarray(f1, dtype=float)
    f2 = np.asarray(f2, dtype=float)
    order = np.lexsort((-f1, f2))
    keep = []
    best_f1 = -np.inf
    best_f2 = np.nan
    for i in order:
        if f1[i] > best_f1:
            keep.append(i)
            best_f1, best_f2 = f1[i], f2[i]
        elif f1[i] == best_f1 and f2[i] == best_f2:
            keep.append(i)
    return np.asarray(keep, dtype=int)


def dominated_by(f1: float, f2: float, front_f1: np.ndarray, front_f2: np.ndarray) -> bool:
    """Whether some front point dominates (f1, f2)."""
    better_eq = (front_f1 >= f1) & (front_f2 <= f2)
    strictly = (front_f1 > f1) | (front_f2 < f2)
    return bool(np.any(better_eq & strictly))


def knee(f1: np.ndarray, f2: np.ndarray) -> int:
    """Index (into the given front) of the knee: farthest from the line joining the two ends.

    Both objectives are scaled to [0, 1] over the front first, so the choice does
    not depend on their units.
    """
    f1 = np.asarray(f1, dtype=float)
    f2 = np.asarray(f2, dtype=float)
    if len(f1) < 3:
        return len(f1) - 1
    q = (f1 - f1.min()) / max(np.ptp(f1), 1e-12)
    c = (f2 - f2.min()) / max(np.ptp(f2), 1e-12)
    i0, i1 = int(np.argmin(c)), int(np.argmax(c))
    if c[i1] == c[i0]:
        return int(np.argmax(q))
    chord = q[i0] + (q[i1] - q[i0]) * (c - c[i0]) / (c[i1] - c[i0])
    # the vertical gap above the chord is proportional to the perpendicular distance
    return int(np.argmax(q - chord))


def hypervolume(f1: np.ndarray, f2: np.ndarray, ref_f1: float, ref_f2: float) -> float:
    """Area dominated by the points and bounded by the reference (worse in both objectives)."""
    from pymoo.indicators.hv import HV

    pts = np.stack([-np.asarray(f1, dtype=float), np.asarray(f2, dtype=float)], axis=1)
    return float(HV(ref_point=np.array([-ref_f1, ref_f2]))(pts))
