"""``cqbnet pilot``: paper 000's Table 2 protocol as Ray runs, appended to a pilot table the planner fits from."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cqbnet.io import atomic_path
from cqbnet.labels.kinds import KINDS
from cqbnet.sweep.protocol import PilotRun, RunSpec, table2_runs, unique_specs
from cqbnet.sweep.runner import finished, run_specs

COLUMNS = ["study", "arm", "seed", *(f"rho_{k}" for k in KINDS), "pq_th", "pq_st", "pq", "sq", "rq", "seconds", "run"]


def pilot_runs(cfg: dict[str, Any]) -> list[PilotRun]:
    """The runs the config's ``pilot`` section asks for."""
    p = cfg["pilot"]
    return table2_runs(p["studies"], p["rho_P"], p["seeds"], p["arms"])


def write_pilot_table(path: str | os.PathLike, runs: list[PilotRun], results: dict[str, dict[str, Any]]) -> int:
    """Write (atomically) one row per pilot cell whose run has finished, in protocol order; the row count.

    PQ is in percent, as :func:`cqbnet.planner.pilot.load_pilot_table` reads it; ``seconds`` and ``run`` (the
    run's folder) are extra columns that the planner ignores.
    """
    rows = []
    for run in runs:
        res = results.get(run.spec.key)
        if res is None:
            continue
        row = {"study": run.study, "arm": run.arm, "seed": run.seed}
        row.update({f"rho_{k}": f"{run.rho.get(k, 0.0):.6g}" for k in KINDS})
        row.update({c: f"{res[c]:.4f}" for c in ("pq_th", "pq_st", "pq", "sq", "rq")})
        row.update(seconds=f"{res['seconds']:.1f}", run=run.spec.key)
        rows.append(row)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    return len(rows)


def run_pilot(
    cfg: dict[str, Any],
    root: str | os.PathLike,
    table: str | os.PathLike | None = None,
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float = 0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    after_each: Callable[[Path], None] | None = None,
) -> Path:
    """Run (or finish) the pilot into ``root``; the table (default ``root/pilot.csv``) grows as runs end.

    ``after_each(table)`` is called once the table holds a newly finished run (e.g. to commit it).
    """
    root = Path(root)
    table = Path(table) if table else root / "pilot.csv"
    runs = pilot_runs(cfg)
    specs = unique_specs(runs)
    done = finished(specs, root)
    write_pilot_table(table, runs, done)
    left = len(specs) - len(done)
    log(f"pilot: {len(runs)} table rows from {len(specs)} distinct runs; {len(done)} finished, {left} to go")

    def on_result(spec: RunSpec, res: dict[str, Any]) -> None:
        done[spec.key] = res
        n = write_pilot_table(table, runs, done)
        log(
            f"[{len(done)}/{len(specs)}] {spec.key}: PQ {res['pq']:.1f} (th {res['pq_th']:.1f}, st {res['pq_st']:.1f}) "
            f"in {res['seconds'] / 60:.1f} min; {table} has {n} rows"
        )
        if after_each is not None:
            after_each(table)

    run_specs(specs, cfg, root, address, cpus_per_run, gpus_per_run, device, on_result)
    return table
