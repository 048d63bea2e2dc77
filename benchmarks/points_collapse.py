"""Why paper 003's point runs collapse over 1000 iterations: the training curves of runs that differ in one thing.

Each run is one ``benchmarks/points.py`` P10 run (seed 0, the config's 1000 iterations, ``train.eval_period=0``)
with the overrides its row names; this script only reads their ``metrics.jsonl`` and, where the run finished,
its ``result.json`` and pseudo-label scores, and tabulates the point branch's partial cross-entropy at the
clicks (Eq. 3, ``loss_points_pce``; the total ``loss_points`` for runs logged before the terms were split), the
detector's first-stage classification loss and the gradient norm before clipping. A branch that keeps its clicks
right keeps L_pCE below 1; the collapse shows as L_pCE climbing past 2 once the pseudo labels ramp in. Usage::

    python -m benchmarks.points_collapse --run NAME=RUN_DIR[:NOTE] ... [--commit]

Results: ``benchmarks/results/points_collapse.json`` and ``benchmarks/points_collapse.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from cqbnet.io import atomic_path, write_json

RESULTS = Path(__file__).parent / "results" / "points_collapse.json"
REPORT = Path(__file__).parent / "points_collapse.md"
AT = (100, 200, 300, 400, 500, 750, 1000)  # iterations tabulated
SHOWN = ("pce", "cls_s0", "grad_norm")


def curve(metrics: Path) -> dict[int, dict[str, float]]:
    """Iteration -> the logged values this report shows, for the tabulated iterations the run reached."""
    out: dict[int, dict[str, float]] = {}
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if row.get("iter") not in AT or "loss" not in row:
            continue
        pce = row.get("loss_points_pce", row.get("loss_points"))
        values = {"pce": pce, "cls_s0": row.get("loss_cls_s0"), "grad_norm": row.get("grad_norm")}
        out[row["iter"]] = {k: v for k, v in values.items() if v is not None}
    return out


def describe(name: str, run: Path, note: str) -> dict:
    result = run / "result.json"
    row = {"name": name, "run": str(run), "note": note, "curve": curve(run / "metrics.jsonl")}
    if result.is_file():
        r = json.loads(result.read_text())
        row["pq"] = r.get("pq")
        row["pq_th"] = r.get("pq_th")
        row["pq_st"] = r.get("pq_st")
    return row


def report(rows: list[dict]) -> list[str]:
    lines = [
        "# Paper 003's point runs over 1000 iterations: where the collapse comes from",
        "",
        "Produced by `python -m benchmarks.points_collapse` from P10 runs of `benchmarks/points.py` (seed 0, the",
        "config's 1000 iterations; `results/points_collapse.json`). Each cell: L_pCE at the clicks (Eq. 3; the",
        "branch's whole loss for rows logged before its terms were split) / the detector's stage-1 class loss /",
        "the gradient norm before clipping (where logged). `-`: the run was stopped before.",
        f"Machine: `{machine_info()}`.",
        "",
        "| run | what differs | " + " | ".join(f"it {i}" for i in AT) + " | PQ |",
        "|---|---|" + "---|" * (len(AT) + 1),
    ]
    for r in rows:
        cells = []
        for i in AT:
            v = r["curve"].get(i)
            cells.append(
                "-" if v is None else " / ".join(f"{v[k] + 0.0:.2f}" for k in SHOWN if k in v)  # + 0.0: no "-0.00"
            )
        pq = "-" if r.get("pq") is None else f"{r['pq']:.1f}"
        lines.append(f"| {r['name']} | {r['note']} | " + " | ".join(cells) + f" | {pq} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR[:NOTE]")
    ap.add_argument("--findings", type=Path, help="markdown appended to the report")
    ap.add_argument("--commit", action="store_true")
    args = ap.parse_args()
    rows = []
    for spec in args.run:
        name, rest = spec.split("=", 1)
        path, _, note = rest.partition(":")
        rows.append(describe(name, Path(path), note))
    write_json(RESULTS, {"machine": machine_info(), "runs": rows}, indent=2)
    lines = report(rows)
    if args.findings:
        lines += ["", args.findings.read_text().strip()]
    with atomic_path(REPORT) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if args.commit:
        commit([RESULTS, REPORT], "points_collapse: the training curves")


if __name__ == "__main__":
    main()
