"""``cqbnet pilot``: paper 000's Table 2 protocol as Ray runs, appended to a pilot table the planner fits from."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cqbnet.planner.methods import write_method_pilot
from cqbnet.planner.pilot_table import write_pilot_table
from cqbnet.sweep.protocol import PilotRun, RunSpec, method_runs, table2_runs, unique_specs
from cqbnet.sweep.runner import finished, run_specs


def pilot_runs(cfg: dict[str, Any]) -> list[PilotRun]:
    """The runs the config's ``pilot`` section asks for: over label methods when it names ``methods``, else paper
    000's Table 2 protocol."""
    p = cfg["pilot"]
    if p["methods"]:
        return method_runs(p["methods"], p["method_rho_P"], p["rho_P"], p["seeds"])
    return table2_runs(p["studies"], p["rho_P"], p["seeds"], p["arms"])


def method_pilot_rows(runs: list[PilotRun], results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row of the pilot over methods per finished run (PQ in percent, training minutes, iterations of every
    network the run trained)."""
    rows = []
    for run in runs:
        res = results.get(run.spec.key)
        if res is None:
            continue
        seconds = res.get("seconds_train") or res["seconds"]
        rows.append(
            {
                "variable": run.study,
                "seed": run.seed,
                "rho_P": f"{run.rho.get('P', 0.0):.6g}",
                **{c: f"{res[c]:.4f}" for c in ("pq", "pq_th", "pq_st")},
                "iterations": res["iterations"],
                "minutes": f"{seconds / 60:.2f}",
                "run": run.spec.key,
            }
        )
    return rows


def write_table(path: Path, runs: list[PilotRun], results: dict[str, dict[str, Any]], methods: bool) -> int:
    if methods:
        return write_method_pilot(path, method_pilot_rows(runs, results))
    return write_pilot_table(path, runs, results)


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
    over_methods = bool(cfg["pilot"]["methods"])
    write_table(table, runs, done, over_methods)
    left = len(specs) - len(done)
    log(f"pilot: {len(runs)} table rows from {len(specs)} distinct runs; {len(done)} finished, {left} to go")

    def on_result(spec: RunSpec, res: dict[str, Any]) -> None:
        done[spec.key] = res
        n = write_table(table, runs, done, over_methods)
        log(
            f"[{len(done)}/{len(specs)}] {spec.key}: PQ {res['pq']:.1f} (th {res['pq_th']:.1f}, st {res['pq_st']:.1f}) "
            f"in {res['seconds'] / 60:.1f} min; {table} has {n} rows"
        )
        if after_each is not None:
            after_each(table)

    run_specs(specs, cfg, root, address, cpus_per_run, gpus_per_run, device, on_result)
    return table
