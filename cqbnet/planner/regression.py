"""One-dimensional regressors for the marginal-improvement curves of paper 000 (Eqs. 5-8).

Each curve maps a label kind's allocation ratio rho in [0, 1] to a quality
improvement. Paper 000 fits cubic polynomials (Eq. 8); :class:`PolynomialCurve`
takes any degree and :class:`MonotoneCurve` is a shape-constrained alternative
(isotonic fit through the per-ratio means, joined by a monotone PCHIP spline) for
pilots too small or too noisy for a cubic. Both integrate in closed form, which
Eq. 7 needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import polynomial as npoly
from scipy.interpolate import PchipInterpolator
from scipy.optimize import isotonic_regression

from cqbnet.errors import InputError

REGRESSORS = ("poly", "monotone")


@dataclass
class PolynomialCurve:
    """f(rho) = sum_j coef[j] rho^j (ascending powers, as Eq. 8 prints them)."""

    coef: np.ndarray  # (degree + 1,)

    def __call__(self, rho: np.ndarray) -> np.ndarray:
        return npoly.polyval(rho, self.coef)

    def integral(self, rho: np.ndarray) -> np.ndarray:
        """int_0^rho f(t) dt (Eq. 7 with a lower limit of 0)."""
        return npoly.polyval(rho, npoly.polyint(self.coef))

    @property
    def degree(self) -> int:
        return len(self.coef) - 1

    def to_json(self) -> dict[str, Any]:
        return {"regressor": "poly", "coef": [float(c) for c in self.coef]}

    def describe(self) -> str:
        return " ".join(f"{c:+.4f}" + (f"r^{j}" if j > 1 else "r" if j == 1 else "") for j, c in enumerate(self.coef))


@dataclass
class MonotoneCurve:
    """Monotone PCHIP through knots (x, y); constant beyond the first and last knot."""

    x: np.ndarray  # (K,) strictly increasing
    y: np.ndarray  # (K,) monotone

    def __post_init__(self) -> None:
        self._spline = PchipInterpolator(self.x, self.y, extrapolate=False) if len(self.x) > 1 else None

    def __call__(self, rho: np.ndarray) -> np.ndarray:
        rho = np.asarray(rho, dtype=float)
        if self._spline is None:
            return np.full_like(rho, self.y[0])
        return self._spline(np.clip(rho, self.x[0], self.x[-1]))

    def integral(self, rho: np.ndarray) -> np.ndarray:
        """int_0^rho f(t) dt with f held constant outside the knots."""
        rho = np.asarray(rho, dtype=float)
        x0, x1 = self.x[0], self.x[-1]
        below = np.minimum(rho, x0) * self.y[0]
        if self._spline is None:
            return below + np.maximum(rho - x0, 0.0) * self.y[0]
        anti = self._spline.antiderivative()
        inside = anti(np.clip(rho, x0, x1)) - anti(x0)
        above = np.maximum(rho - x1, 0.0) * self.y[-1]
        return below + inside + above

    def to_json(self) -> dict[str, Any]:
        return {"regressor": "monotone", "x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}

    def describe(self) -> str:
        return "monotone through " + ", ".join(f"({a:.2f}, {b:+.4f})" for a, b in zip(self.x, self.y))


Curve = PolynomialCurve | MonotoneCurve


def fit_polynomial(x: np.ndarray, y: np.ndarray, degree: int) -> PolynomialCurve:
    """Least-squares polynomial; the degree drops to (distinct ratios - 1) when the pilot is too small."""
    distinct = len(np.unique(x))
    if distinct == 0:
        raise InputError("no samples to fit")
    deg = min(degree, distinct - 1)
    return PolynomialCurve(npoly.polyfit(x, y, deg))


def fit_monotone(x: np.ndarray, y: np.ndarray) -> MonotoneCurve:
    """Isotonic regression of the per-ratio means (direction from the least-squares slope), then PCHIP."""
    knots, inv = np.unique(x, return_inverse=True)
    counts = np.bincount(inv)
    means = np.bincount(inv, weights=y) / counts
    if len(knots) > 1:
        increasing = bool(np.polyfit(x, y, 1)[0] >= 0)
        means = isotonic_regression(means, weights=counts, increasing=increasing).x
    return MonotoneCurve(knots.astype(float), np.asarray(means, dtype=float))


def fit_curve(x: np.ndarray, y: np.ndarray, regressor: str = "poly", degree: int = 3) -> Curve:
    """Fit one marginal-improvement curve (Eq. 8 by default: a cubic)."""
    if regressor == "poly":
        return fit_polynomial(x, y, degree)
    if regressor == "monotone":
        return fit_monotone(x, y)
    raise InputError(f"unknown regressor {regressor!r}; choose one of {', '.join(REGRESSORS)}")


def curve_from_json(obj: dict[str, Any]) -> Curve:
    if obj.get("regressor") == "poly":
        return PolynomialCurve(np.asarray(obj["coef"], dtype=float))
    if obj.get("regressor") == "monotone":
        return MonotoneCurve(np.asarray(obj["x"], dtype=float), np.asarray(obj["y"], dtype=float))
    raise InputError(f"unknown regressor {obj.get('regressor')!r} in a saved quality model")
