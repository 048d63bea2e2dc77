"""The README's status table is what benchmarks/status.py writes from the committed results."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status():
    from benchmarks import status

    return status


def test_the_readme_status_table_is_written_from_the_results():
    status = _status()
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(status.BEGIN), readme.index(status.END) + len(status.END)
    assert readme[start:end] == status.table(), "run: python -m benchmarks.status --write"


def test_each_papers_page_shows_its_benchmarks_results_as_written_from_the_summary():
    status = _status()
    for page, benchmark in status.DOC_RESULTS.items():
        text = (ROOT / page).read_text()
        begin = status.doc_begin(benchmark)
        start, end = text.index(begin), text.index(status.DOC_END) + len(status.DOC_END)
        assert text[start:end] == status.results_table(benchmark), f"{page}: run python -m benchmarks.status --write"


def test_a_results_table_reads_every_method_and_mode_of_the_summary():
    """A row per method and inference mode, the method's own mode marked, the fraction and its interval in percent."""
    import json

    status = _status()
    summary = json.loads((status.RESULTS / "tags_only" / "summary.json").read_text())
    table = status.results_table("tags_only")
    m = summary["methods"]["tags"]
    for mode, mm in m["modes"].items():
        lo, hi = mm["fraction_of_full_interval"]
        cell = f"{100 * mm['fraction_of_full']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
        own = " (its own)" if mode == m["mode"] else ""
        assert f"| {mode}{own} | {mm['pq']:.1f} | {cell} |" in table
    assert f"Split: **{summary['split']}**" in table


def test_the_status_rows_read_the_numbers_they_claim(tmp_path):
    """A row reads its arm and full supervision's runs of its split: val until the arm has 3 seeds on test, then
    test against the full recipe of full_test.json (1000 iterations, and 2000 for a two-network recipe)."""
    status = _status()
    line = status.row(next(m for m in status.methods() if m.arm == "P10-offline-crf"))
    on_test = len({r["seed"] for r in status.runs("points/runs.json", "test") if r["arm"] == "P10-offline-crf"})
    if on_test >= 3:
        p10 = status.by_seed(status.runs("points/runs.json", "test"), "P10-offline-crf", "argmax")
        full = status.by_seed(status.runs("full_test.json", "test"), "full1000", "argmax")
        assert "| test |" in line
    else:
        rows = status.runs("points/runs.json", "val")
        p10, full = status.by_seed(rows, "P10-offline-crf"), status.by_seed(rows, "full")
        assert "| val |" in line
    ratio = sum(p10.values()) / sum(full[s] for s in p10)
    assert f"{100 * ratio:.1f}%" in line and "| 2 / 2000 |" in line and "| 0.1736 |" in line


def test_recipe_fractions_divide_by_full_supervision_in_the_same_inference_mode():
    """A recipe benchmark's fractions of full (benchmarks/recipe_arms.py): against the reference full supervision
    of the same seeds, each inference mode against the same mode, the arm's own mode at the top level."""
    import pytest

    from benchmarks import recipe_arms

    rows = [
        {"arm": "tags", "seed": s, "pq": h, "iterations": 1000, "seconds": 60.0, "test_mode": "heuristic",
         "modes": {"heuristic": {"pq": h}, "argmax": {"pq": a}}}
        for s, h, a in ((0, 40.0, 35.0), (1, 44.0, 37.0), (2, 42.0, 36.0))
    ]  # fmt: skip
    ref = {1000: [{"arm": "full1000", "seed": s, "pq": a, "heuristic": {"pq": h}}
                  for s, a, h in ((0, 75.0, 78.0), (1, 76.0, 79.0), (2, 77.0, 80.0), (3, 90.0, 90.0))]}  # fmt: skip
    m = recipe_arms.methods({"tags": rows}, {}, ref)["tags"]
    assert m["mode"] == "heuristic" and m["seeds"] == [0, 1, 2]
    assert m["fraction_of_full"] == pytest.approx(126 / 237)  # seed 3 has no tags run: left out
    assert m["modes"]["argmax"]["fraction_of_full"] == pytest.approx(108 / 228)
    assert m["fraction_of_full_same_iterations"] == m["fraction_of_full"]  # one network of 1000 iterations
    lo, hi = m["fraction_of_full_interval"]
    assert lo < m["fraction_of_full"] < hi
    assert m["modes"]["heuristic"]["fraction_of_full_same_schedule"] is None  # no full arm of its own here
