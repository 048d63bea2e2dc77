"""The planner's picture, after paper 000's Fig. 1 (left): sampled ratios, Pareto front, named and picked plans."""

from __future__ import annotations

import os

import numpy as np

from cqbnet.io import atomic_path
from cqbnet.planner.plan import PlanResult, format_plan_ratio


def plot_plan(result: PlanResult, path: str | os.PathLike, budget: float | None = None) -> None:
    """Write a PNG: f2 (cost) across, f1 (quality) up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    ax.scatter(result.f2, result.f1, s=3, c="0.75", lw=0, label=f"searched ratios ({len(result.f1)})", rasterized=True)
    ff2 = np.array([p.f2 for p in result.front])
    ff1 = np.array([p.f1 for p in result.front])
    ax.plot(ff2, ff1, "-o", color="tab:red", ms=3, lw=1.2, label=f"Pareto front ({len(ff1)})")
    for p in result.named:
        optimal = p.name.startswith("O")
        ax.scatter(
            [p.f2],
            [p.f1],
            marker="s" if optimal else "^",
            s=28,
            color="tab:blue" if optimal else "tab:orange",
            zorder=3,
        )
        ax.annotate(p.name, (p.f2, p.f1), xytext=(3, 3), textcoords="offset points", fontsize=7)
    if result.named:
        ax.scatter([], [], marker="s", color="tab:blue", label="paper's Pareto-optimal ratios (O*)")
        ax.scatter([], [], marker="^", color="tab:orange", label="paper's random ratios (R*)")
    rec = result.recommended
    ax.scatter(
        [rec.f2],
        [rec.f1],
        marker="*",
        s=220,
        color="gold",
        edgecolor="k",
        zorder=4,
        label=f"recommended ({result.rule}): {format_plan_ratio(rec.ratio)}",
    )
    if budget is not None:
        ax.axvline(budget, color="k", ls="--", lw=0.8, label=f"budget {budget:g}")
    ax.set_xlabel("annotation cost f2 (full panoptic labels = 1)")
    ax.set_ylabel(f"quality f1 ({result.model.objective})")
    ax.set_title(result.model.source, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
