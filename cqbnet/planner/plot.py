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


def plot_method_plan(result, path: str | os.PathLike, budget: float | None = None) -> None:
    """A plan over label methods (:class:`cqbnet.planner.methods.MethodPlan`): the front's plans, label cost across,
    predicted PQ up, training iterations as colour; the picks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    cost = np.array([p.cost for p in result.points])
    pq = np.array([p.pq for p in result.points])
    its = np.array([p.iterations for p in result.points])
    sc = ax.scatter(cost, pq, c=its, s=14, cmap="viridis", lw=0, label=f"front ({len(pq)} of {result.evaluated} plans)")
    fig.colorbar(sc, ax=ax, label="training iterations (every network of the plan)")
    for rule, p in result.picks.items():
        star = rule == result.rule
        ax.scatter(
            [p.cost],
            [p.pq],
            marker="*" if star else "D",
            s=220 if star else 40,
            color="gold" if star else "tab:red",
            edgecolor="k",
            zorder=4,
            label=f"{rule}: {p.text()}",
        )
    if budget is not None:
        ax.axvline(budget, color="k", ls="--", lw=0.8, label=f"budget {budget:g}")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("label cost (full labels for every image = 1)")
    ax.set_ylabel(f"predicted PQ ({result.model.combine} model)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
