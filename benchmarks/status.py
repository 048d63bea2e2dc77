"""The README's status table, written from the committed results (never typed).

Each row is one method: the labels it needs, their cost relative to full panoptic labels (paper 000's relative
costs on the realistic scenes' measured statistics, ``results/scene_stats.json``), the compute it trains (networks
and total iterations), the split and seeds it was measured on, its PQ, and its PQ over full supervision's with a
paired t interval over seeds (:func:`cqbnet.evaluation.statistics.ratio_of_means`), against full at the same
schedule and, where measured, against full trained for the same total iterations.

Each paper's docs page holds its benchmark's results the same way: a table of every method of the recipe
summary (``results/<benchmark>/summary.json``, the layout of :func:`benchmarks.recipe_arms.methods`) between the
page's results markers (:data:`DOC_RESULTS`).

Usage: ``python -m benchmarks.status`` prints the table; ``--write`` puts it into README.md between the status
markers and each docs page's results table between its markers; ``tests/test_status.py`` fails when the README's
table or a page's differs from what this script writes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.recipe_arms import ratio_text
from cqbnet.engine.config import load_config
from cqbnet.evaluation.statistics import mode_pq, ratio_of_means
from cqbnet.labels.costs import CostModel
from cqbnet.labels.simulate import parse_ratio

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- status-table: written by benchmarks/status.py -->", "<!-- /status-table -->"


@dataclass
class Method:
    name: str
    doc: str  # the docs page
    labels: str  # a ratio of `cqbnet labels simulate`
    points_per_segment: int
    results: str  # a runs.json under benchmarks/results
    arm: str
    full_arm: str  # full supervision at the same schedule, in the same runs.json (or in `full_results`)
    networks: int
    iterations: int
    same_iterations: tuple[str, str] | None = None  # (runs file, arm) of full supervision at `iterations`
    split: str = "val"
    mode: str = "argmax"  # the inference mode of the method's PQ and of full supervision's it is divided by
    full_results: str | None = None  # the full supervision's runs file, when not `results`


def _iterations(config: str) -> int:
    return int(load_config(ROOT / "configs" / config)["solver"]["max_iter"])


def on_test(m: Method) -> Method:
    """``m`` measured on the test split once it has 3 seeds there: against the full recipe at its own learning rate
    (``full_test.json``) at 1000 iterations and, for 1000 or 2000 in all, at the method's total iterations."""
    if not _has(m.results, m.arm, "test", 3):
        return m
    same = ("full_test.json", f"full{m.iterations}") if m.iterations in (1000, 2000) else None
    if m.arm == m.full_arm:
        return m
    return replace(m, split="test", full_results="full_test.json", full_arm="full1000", same_iterations=same)


def methods() -> list[Method]:
    """The methods of the table, with their compute read from the configs they train with; each on test once it
    has 3 seeds there (:func:`on_test`), else on val as first measured."""
    net, cam = _iterations("synthetic_full.yaml"), _iterations("synthetic_pilot.yaml")
    tags_test = _has("tags_only/runs.json", "tags", "test", 3)
    rows = [
        Method("Full supervision (CPU recipe)", "paper_004_network.md", "P=1", 1, "boxes_tags/runs.json", "full",
               "full", 1, net),
        Method("Boxes + tags, paper 001's released rule, round 1", "paper_001_boxes_tags.md", "B+I=1", 1,
               "boxes_tags/runs.json", "both_round1", "full", 3, cam + 2 * net),
        Method("Boxes + tags, predicted-pixels fill, round 5", "paper_001_boxes_tags.md", "B+I=1", 1,
               "boxes_tags/runs.json", "fill-predicted_round5", "full", 7, cam + 6 * net),
        Method("Tags alone, paper 002 (JTSM)", "paper_002_tags.md", "I=1", 1, "tags_only/runs.json", "tags",
               "full1000", 1, net, ("full_test.json", "full1000"), "test", "heuristic", "full_test.json")
        if tags_test else
        Method("Tags alone, paper 002 (JTSM)", "paper_002_tags.md", "I=1", 1, "tags_only/runs.json", "tags", "full",
               1, net, mode="heuristic"),
        Method("1 click per segment, paper 003's online rule", "paper_003_points.md", "PT=1", 1, "points/runs.json",
               "P1-paper", "full", 1, net),
        Method("1 click per segment, offline from CRF-refined pseudo labels", "paper_003_points.md", "PT=1", 1,
               "points/runs.json", "P1-offline-crf", "full", 2, 2 * net, ("points_full2000/runs.json", "full")),
        Method("10 clicks per segment, paper 003's online rule", "paper_003_points.md", "PT=1", 10,
               "points/runs.json", "P10-paper", "full", 1, net),
        Method("10 clicks per segment, offline from CRF-refined pseudo labels", "paper_003_points.md", "PT=1", 10,
               "points/runs.json", "P10-offline-crf", "full", 2, 2 * net, ("points_full2000/runs.json", "full")),
    ]  # fmt: skip
    return [on_test(m) for m in rows]


def runs(path: str, split: str) -> list[dict[str, Any]]:
    """The rows of a committed runs file on ``split`` (rows from before the test split existed are val; a
    paired-arms file names its split once)."""
    data = json.loads((RESULTS / path).read_text())
    return [r for r in data["runs"] if r.get("split", data.get("split", "val")) == split]


def _has(path: str, arm: str, split: str, seeds: int) -> bool:
    """Whether ``arm`` has at least ``seeds`` seeds on ``split``."""
    return len({r["seed"] for r in runs(path, split) if r["arm"] == arm}) >= seeds


def by_seed(rows: list[dict[str, Any]], arm: str, mode: str | None = None) -> dict[int, float]:
    """Seed -> PQ of ``arm`` (in ``mode``; None: the PQ each run reports in its config's mode)."""
    out = {}
    for r in rows:
        if r["arm"] == arm:
            pq = None if mode is None else mode_pq(r, mode)
            out[int(r["seed"])] = float(r["pq"] if pq is None else pq)  # a run without that mode: its own PQ
    return out


def label_cost(ratio: str, points_per_segment: int) -> float:
    stats = json.loads((RESULTS / "scene_stats.json").read_text())
    costs = CostModel(
        stats={
            "boxes_per_image": stats["boxes_per_image"],
            "segments_per_image": stats["segments_per_image"],
            "points_per_segment": points_per_segment,
        }
    )
    return costs.ratio_cost(parse_ratio(ratio))


def _fraction(pq: Mapping[int, float], full: Mapping[int, float]) -> str:
    if not set(pq) & set(full):
        return "-"
    e = ratio_of_means(pq, full)
    if e.interval is None:
        return f"{100 * e.estimate:.1f}% (1 seed)"
    return f"{100 * e.estimate:.1f}% [{100 * e.low:.1f}, {100 * e.high:.1f}]"


def row(m: Method) -> str:
    rs = runs(m.results, m.split)
    # val rows before the test split divided each method's own mode by full supervision's argmax (kept as measured)
    mode = m.mode if m.split == "test" else None
    pq = by_seed(rs, m.arm, mode)
    full = by_seed(runs(m.full_results or m.results, m.split), m.full_arm, mode)
    same = "-"
    if m.same_iterations is not None:
        same = _fraction(pq, by_seed(runs(m.same_iterations[0], m.split), m.same_iterations[1], mode))
    elif m.arm == m.full_arm:
        same = "reference"
    seeds = ", ".join(str(s) for s in sorted(pq))
    of_full = "reference" if m.arm == m.full_arm else _fraction(pq, full)
    inference = m.mode if m.split == "test" else ("heuristic / argmax" if m.mode == "heuristic" else m.mode)
    return (
        f"| [{m.name}](docs/{m.doc}) | `{m.labels}`{f' x{m.points_per_segment}' if m.points_per_segment > 1 else ''} "
        f"| {label_cost(m.labels, m.points_per_segment):.4f} | {m.networks} / {m.iterations} | {m.split} | {seeds} | "
        f"{inference} | {np.mean(list(pq.values())):.1f} | {of_full} | {same} |"
    )


def headline_row() -> str:
    s = json.loads((RESULTS / "headline_v5" / "summary.json").read_text())
    d = s["planned_minus_random_t"]
    lo, hi = d["interval"]
    return (
        f"Headline v5 (paper 000's planner, val, {s['iterations']} iterations, heuristic merge): the best planned "
        f"mix within cost 0.45 reaches {100 * s['best_planned_fraction_of_full']:.1f}% of full supervision's PQ; "
        f"planned minus cost-matched random plans {d['estimate']:+.1f} PQ [{lo:+.1f}, {hi:+.1f}] (t over "
        f"{d['n']} random plans) (`benchmarks/results/headline_v5/summary.json`)."
    )


def test_split_row() -> str | None:
    """Full supervision measured on the held-out test split (`paired_arms.py --name full_test --split test`), at the
    standard schedule and at twice its iterations (the reference of two-network recipes)."""
    path = RESULTS / "full_test.json"
    if not path.is_file():
        return None
    from cqbnet.evaluation.statistics import t_interval

    data = json.loads(path.read_text())
    parts = []
    for arm in ("full1000", "full2000"):
        rows = [r for r in data["runs"] if r["arm"] == arm]
        if not rows:
            continue
        e = t_interval([r["pq"] for r in rows])
        ci = "" if e.interval is None else f" [{e.low:.1f}, {e.high:.1f}]"
        seeds = ", ".join(str(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"]))
        parts.append(f"{rows[0]['iterations']} iterations: PQ {e.estimate:.1f}{ci} (seeds {seeds})")
    if not parts:
        return None
    return (
        "Full supervision on the **test** split (the CPU recipe, lr 0.02, argmax; mean and 95% t interval over "
        f"seeds): {'; '.join(parts)} (`benchmarks/results/full_test.json`)."
    )


def table() -> str:
    lines = [
        BEGIN,
        "| method | labels | label cost | networks / iterations | split | seeds | inference | PQ | of full [95% t] | "
        "of full, same iterations |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(row(m) for m in methods()),
        "",
        "- " + headline_row(),
    ]
    test = test_split_row()
    if test is not None:
        lines.append("- " + test)
    lines.append(END)
    return "\n".join(lines)


def replaced(readme: str, new: str, begin: str = BEGIN, end: str = END) -> str:
    """``readme`` with the text between the markers ``begin`` and ``end`` replaced by ``new``."""
    start, stop = readme.index(begin), readme.index(end) + len(end)
    return readme[:start] + new + readme[stop:]


# docs page -> the benchmark whose recipe summary it shows
DOC_RESULTS = {
    "docs/paper_001_boxes_tags.md": "boxes_tags",
    "docs/paper_002_tags.md": "tags_only",
    "docs/paper_003_points.md": "points",
}
DOC_END = "<!-- /results -->"


def doc_begin(benchmark: str) -> str:
    return f"<!-- results: written by benchmarks/status.py from benchmarks/results/{benchmark}/summary.json -->"


def results_table(benchmark: str) -> str:
    """A recipe summary's methods, each inference mode a row: seeds, compute, PQ and the fractions of full
    supervision (at 1000 iterations, and at the method's total iterations) with their t intervals over seeds."""
    summary = json.loads((RESULTS / benchmark / "summary.json").read_text())
    lines = [
        doc_begin(benchmark),
        f"Split: **{summary.get('split', 'val')}**; machine: {summary['machine']['cpus']} CPU cores, torch "
        f"{summary['machine']['torch']}. Each method's keys in `summary.json`'s `methods`; the fractions divide by "
        "full supervision's PQ in the same inference mode (paired over seeds, a delta-method 95% t interval).",
        "",
        "| method | seeds | networks / iterations | minutes | inference | PQ | of full [95% t] | of full, same "
        "iterations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        for mode, mm in m.get("modes", {m.get("mode", "argmax"): m}).items():
            own = " (its own)" if mode == m.get("mode") else ""
            minutes = "-" if m.get("minutes") is None else f"{m['minutes']:.1f}"
            ratio = ratio_text(mm.get("fraction_of_full"), mm.get("fraction_of_full_interval"))
            same = "fraction_of_full_same_iterations"
            lines.append(
                f"| `{name}` | {m['seeds']} | {m.get('networks', 1)} / {m.get('iterations', '-')} | {minutes} | "
                f"{mode}{own} | {mm['pq']:.1f} | {ratio} | {ratio_text(mm.get(same), mm.get(same + '_interval'))} |"
            )
    return "\n".join([*lines, DOC_END])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    args = ap.parse_args()
    text = table()
    if args.write:
        README.write_text(replaced(README.read_text(), text))
        for page, benchmark in DOC_RESULTS.items():
            path = ROOT / page
            path.write_text(replaced(path.read_text(), results_table(benchmark), doc_begin(benchmark), DOC_END))
    print(text)


if __name__ == "__main__":
    main()
