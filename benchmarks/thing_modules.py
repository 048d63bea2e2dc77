"""Thing-side weak supervision at the CPU recipe's schedule (a supplement to the headline experiment).

The headline pilot (``benchmarks/headline.py``, 200 iterations per run) cannot measure the modules that teach
things: at that schedule the detector has not yet learned the six thing shapes and PQ_th is 0 in every run,
full supervision included. This script runs a few cells of the same Table 2 protocol at the recipe's schedule
(``configs/synthetic_full.yaml``, 1000 iterations, about 13-15 minutes a run here), where full supervision reaches
PQ_th 61.2 on the realistic scenes (24.6 on the camouflage scenes with training version 4):

* ``baseline``: rho_P panoptic labels, the rest labelled with the weak kind, modules off;
* ``module``: the same labels with the named modules on.

Every run resumes from its checkpoint and a finished run is never trained again, so the script can be stopped
and restarted across sessions. Usage::

    python -m benchmarks.thing_modules --kind B --modules box2mask --rho 0.3 --seeds 0 [--commit]

Results: ``benchmarks/results/thing_modules.json`` and ``benchmarks/thing_modules.md``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from benchmarks.commit_results import commit
from benchmarks.detector_diagnostics import diagnose
from benchmarks.machine import machine_info
from cqbnet.engine.config import load_config
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.sweep.protocol import MODULES, RunSpec
from cqbnet.sweep.runner import execute, shared_data_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "thing_modules.json"
REPORT = Path(__file__).parent / "thing_modules.md"
CHANCE = 1 / 6  # six thing classes in the synthetic scenes
KIND_NAMES = {"B": "boxes", "I": "image tags", "S": "stuff maps"}
# what the network's training was when a run was made (rows before versions were recorded are version 1)
VERSION = 10
CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"


def training_versions() -> dict[int, str]:
    """What each training version changed, as ``CHANGELOG.md`` lists them (``- version N: what``)."""
    out = {}
    for line in CHANGELOG.read_text().splitlines():
        m = re.match(r"- version (\d+): (.+)", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


# versions that changed only the module arm's training: their baseline is the earlier version's run
SHARED_BASELINE = {8: 7, 9: 8, 10: 8}


def baseline_versions(version: int) -> set[int]:
    """The versions whose baseline runs pair with ``version``'s module runs (following the chain of shares)."""
    out = {version}
    while version in SHARED_BASELINE:
        version = SHARED_BASELINE[version]
        out.add(version)
    return out


def cells(kind: str, modules: tuple[str, ...], rho: float, seeds: list[int]) -> list[tuple[str, RunSpec]]:
    """(arm, run) pairs: the baseline and the module arm of one (kind, rho_P) cell for each seed."""
    ratio = (("P", rho), (kind, round(1 - rho, 10)))
    out = []
    for seed in seeds:
        out.append(("baseline", RunSpec(ratio, (), seed)))
        out.append(("module", RunSpec(ratio, modules, seed)))
    return out


def paired_cells(rows: list[dict[str, Any]]) -> list[tuple[tuple, dict[str, dict]]]:
    """((version, overrides, kind, rho_P, seed, modules tested), {arm: run}) for every cell with both arms."""
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        version = r.get("version", 1)
        shared = [v for v in SHARED_BASELINE if version in baseline_versions(v) - {v}] if r["arm"] == "baseline" else []
        for v in [version, *shared]:
            key = (v, " ".join(r["overrides"]), r["kind"], r["rho_P"], r["seed"])
            cells.setdefault((*key, tuple(r["modules_tested"])), {})[r["arm"]] = r
    return [(k, arms) for k, arms in sorted(cells.items()) if {"baseline", "module"} <= arms.keys()]


def run_folder(work: Path, overrides: list[str]) -> Path:
    """Where the runs of this version and these overrides live (a run's folder name says only its labels)."""
    return work / "".join([f"v{VERSION}", *(f"_{o.replace('/', '-')}" for o in overrides)])


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report(rows: list[dict[str, Any]], cfg_path: Path) -> str:
    """The markdown table of every finished run, and the module-minus-baseline differences per seed."""
    lines = [
        "# Thing-side weak supervision at the CPU recipe's schedule",
        "",
        f"Produced by `python -m benchmarks.thing_modules` from `{_shown(cfg_path)}` (with each row's overrides)"
        + "; runs in `results/thing_modules.json`. Evaluated on the val scenes "
        + f"({', '.join(sorted({str(r['images']) for r in rows}))} images), argmax inference, PQ in percent.",
        f"Machine: `{json.dumps(machine_info())}`.",
        "",
        "Class accuracy: of the ground-truth things (first 100 val scenes) that have a detection at IoU >= 0.5, the "
        "share whose best such detection has the right class (`benchmarks/detector_diagnostics.py`; chance 1/6 = "
        "16.7%).",
        "",
        "Version: the network's training when the run was made (what each changed: `CHANGELOG.md`); the current is "
        f"{VERSION}: {training_versions()[VERSION]}.",
        "",
        "| version | weak kind | rho_P | seed | arm | modules | overrides | PQ | PQ_th | SQ_th | RQ_th | PQ_st "
        "| class accuracy | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = f"{100 * r['class_accuracy']:.1f}%" if r.get("class_accuracy") is not None else ""
        lines.append(
            f"| {r.get('version', 1)} | {KIND_NAMES.get(r['kind'], r['kind'])} | {r['rho_P']:g} | {r['seed']} | "
            f"{r['arm']} | {'+'.join(r['modules']) or 'none'} | {' '.join(r['overrides']) or '-'} | "
            f"{r['pq']:.1f} | {r['pq_th']:.1f} | {r['sq_th']:.1f} | "
            f"{r['rq_th']:.1f} | {r['pq_st']:.1f} | {acc} | {r['seconds'] / 60:.1f} |"
        )
    lines.append("")
    for (version, overrides, kind, rho, seed, mods), arms in paired_cells(rows):
        d_th = arms["module"]["pq_th"] - arms["baseline"]["pq_th"]
        d_st = arms["module"]["pq_st"] - arms["baseline"]["pq_st"]
        lines.append(
            f"- version {version}{', ' + overrides if overrides else ''}, {KIND_NAMES.get(kind, kind)}, rho_P "
            f"{rho:g}, seed {seed}: {'+'.join(mods)} minus baseline "
            f"PQ_th {d_th:+.1f}, PQ_st {d_st:+.1f}."
        )
        for arm, r in arms.items():
            acc = r.get("class_accuracy")
            if acc is not None and acc < CHANCE / 2:
                lines.append(
                    f"  - The {arm} run's detector is below chance ({100 * acc:.1f}%): it finds almost no "
                    "thing at IoU >= 0.5 at inference, so its PQ_th says nothing about the labels."
                )
            elif acc is not None and acc < 1.5 * CHANCE:
                lines.append(
                    f"  - The {arm} run's detector is near chance ({100 * acc:.1f}%): it has not learned the "
                    "thing classes, so PQ_th compares numbers near 0."
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_full.yaml")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "thing_modules", help="runs and data (not committed)")
    ap.add_argument("--kind", default="B", choices=sorted(KIND_NAMES))
    ap.add_argument("--modules", default="box2mask", help="'+'-separated modules of the module arm")
    ap.add_argument("--rho", type=float, default=0.3, help="share of panoptic labels")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--commit", action="store_true", help="commit the table and report after every run")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON of the runs (default: the committed one)")
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. solver.max_iter=2 (for a trial)")
    args = ap.parse_args()
    modules = tuple(m for m in args.modules.split("+") if m)
    unknown = set(modules) - set(MODULES)
    if unknown:
        ap.error(f"unknown modules {sorted(unknown)}; choose from {', '.join(MODULES)}")
    cfg = shared_data_config(load_config(args.config, ["train.eval_period=0", *args.overrides]), args.work)
    rows = read_json(args.results)["runs"] if args.results.is_file() else []
    data = Path(cfg["data"]["root"])

    def save() -> None:
        write_json(args.results, {"machine": machine_info(), "config": str(args.config.name), "runs": rows}, indent=2)
        with atomic_path(args.report) as tmp:
            Path(tmp).write_text(report(rows, args.config))

    for arm, spec in cells(args.kind, modules, args.rho, args.seeds):
        if any(
            r["key"] == spec.key
            and r["overrides"] == args.overrides
            and r.get("version", 1) in (baseline_versions(VERSION) if arm == "baseline" else {VERSION})
            for r in rows
        ):
            continue
        folder = run_folder(args.work, args.overrides)
        res = execute(spec, cfg, folder)
        rows.append(
            {
                **{
                    k: res[k]
                    for k in ("key", "pq", "pq_th", "sq_th", "rq_th", "pq_st", "seconds", "iterations", "images")
                },
                "kind": args.kind,
                "rho_P": args.rho,
                "seed": spec.seed,
                "arm": arm,
                "modules": list(spec.modules),
                "modules_tested": list(modules),
                "overrides": args.overrides,
                "version": VERSION,
                "class_accuracy": diagnose(folder / "runs" / spec.key / "model_final.pth", data)["class_accuracy"],
            }
        )
        print(f"{arm} {spec.key}: PQ_th {res['pq_th']:.1f} PQ_st {res['pq_st']:.1f} ({res['seconds'] / 60:.1f} min)")
        save()
        if args.commit:
            commit([args.results, args.report], f"thing modules: {arm} {spec.key}")
    save()


if __name__ == "__main__":
    main()
