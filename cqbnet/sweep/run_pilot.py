"""``cqbnet pilot``: paper 000's Table 2 protocol as Ray runs, appended to a pilot table the planner fits from."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cqbnet.planner.pilot_table import write_pilot_table
from cqbnet.sweep.protocol import PilotRun, RunSpec, table2_runs, unique_specs
from cqbnet.sweep.runner import finished, run_specs


def pilot_runs(cfg: dict[str, Any]) -> list[PilotRun]:
    """The runs the config's ``pilot`` section asks for."""
    p = cfg["pilot"]
    return table2_runs(p["studies"], p["rho_P"], p["seeds"], p["arms"])


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
