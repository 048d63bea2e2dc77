"""Arms of one recipe side by side (one schedule, paired seeds), with a score of each arm's own pseudo labels:
the driver behind ``benchmarks/points.py`` (paper 003) and ``benchmarks/tags_only.py`` (paper 002).

Each arm is a config, the labels every training image gets (simulated with the run's seed, so arms of one seed
label the same images alike), config overrides, and the switch of the paper's branch in the run's modules (paper
000's modules stay off in every arm). Every run resumes from its checkpoint, a finished run is never trained
again, and the results are written (and committed with ``--commit``) after each run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from cqbnet.engine.config import load_config
from cqbnet.engine.data import shared_data_config
from cqbnet.evaluation.statistics import mode_pq, paired_rows, ratio_of_means
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.recipes.points_offline_003 import write_pseudo_labels
from cqbnet.sweep.protocol import RunSpec
from cqbnet.sweep.runner import execute

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Arm:
    config: Path
    kind: str  # the label kind every training image gets ("P" for full supervision)
    overrides: list[str] = field(default_factory=list)
    branch: str | None = None  # the run's module switch that turns the paper's branch on (when its config has it)
    clicks: int = 1
    sampling: str = "uniform"
    # offline: the arm (same seed and overrides) whose trained point branch writes the pseudo labels this arm's
    # network learns from (``data.pseudo_labels``)
    pseudo_from: str | None = None
    pseudo_crf: bool = False  # those pseudo labels refined by the dense CRF (``cqbnet pseudo-labels --crf``)


def solver_overrides(config: Path) -> list[str]:
    """``solver.<key>=<value>`` for every solver setting of a recipe's config: full supervision trains with them,
    so that it shares the weak recipe's schedule."""
    return [f"solver.{k}={v}" for k, v in load_config(config)["solver"].items()]


# arm, run folder, the run's config, the work folder -> the arm's own score (or None)
Score = Callable[[str, Path, dict[str, Any], Path], dict[str, float] | None]


def arm_config(arm: Arm, seed: int, overrides: list[str]) -> tuple[RunSpec, dict]:
    """An arm's run spec and its config before the scenes are made (``sweep.runner.run_config`` of the two is
    what the run trains)."""
    extra = [f"pilot.points_per_segment={arm.clicks}", f"pilot.point_sampling={arm.sampling}"]
    cfg = load_config(arm.config, [*arm.overrides, *overrides, *extra])
    cfg["data"]["labels"] = None  # the runner simulates each run's labels with the run's seed
    on = arm.branch is not None and bool(cfg["model"]["weak"].get(arm.branch))
    return RunSpec(((arm.kind, 1.0),), (arm.branch,) if on else (), seed), cfg


def arm_run(name: str, arm: Arm, seed: int, overrides: list[str], work: Path) -> tuple[RunSpec, dict, Path]:
    """An arm's run: its spec, its config and its folder (the run itself is ``folder / "runs" / spec.key``)."""
    spec, cfg = arm_config(arm, seed, overrides)
    cfg = shared_data_config(cfg, work)  # one copy of the scenes for every arm
    # a run folder is reused once finished, and its key names only labels, modules and seed: runs with other
    # overrides get their own folder
    folder = work / (f"{name}_{hashlib.sha1(json.dumps(overrides).encode()).hexdigest()[:8]}" if overrides else name)
    return spec, cfg, folder


def written_pseudo_labels(run: Path, crf: bool = False) -> Path:
    """The pseudo labels of a finished point run's training images (``run/pseudo``, or ``run/pseudo_crf`` refined
    by the dense CRF; written once)."""
    out = run / ("pseudo_crf" if crf else "pseudo")
    if not (out / "panoptic_pred.json").is_file():
        write_pseudo_labels(run / "model_final.pth", run / "labels" / "manifest.json", out, crf=crf, overwrite=True)
    return out


def run_arm(
    name: str,
    arms: dict[str, Arm],
    seed: int,
    overrides: list[str],
    work: Path,
    score: Score | None,
    split: str = "test",
) -> dict[str, Any]:
    arm = arms[name]
    spec, cfg, folder = arm_run(name, arm, seed, overrides, work)
    source = None
    if arm.pseudo_from is not None:  # offline: the source arm's run first (reused when finished)
        src_spec, src_cfg, src_folder = arm_run(arm.pseudo_from, arms[arm.pseudo_from], seed, overrides, work)
        source = execute(src_spec, src_cfg, src_folder, split=split)
        cfg["data"]["pseudo_labels"] = str(written_pseudo_labels(src_folder / "runs" / src_spec.key, arm.pseudo_crf))
    res = execute(spec, cfg, folder, split=split)
    if source is not None:  # the very run whose pseudo labels it learnt from, for the paired difference
        res["source"] = {k: source[k] for k in ("pq", "pq_th", "pq_st", "sq_th")}
    run = folder / "runs" / spec.key
    if score is not None and "own" not in res:
        t = time.time()
        own = score(name, run, cfg, work)
        if own is not None:
            res["own"] = {**own, "seconds": time.time() - t}
            write_json(run / "result.json", res, indent=2)
    return {"arm": name, "seed": seed, "overrides": overrides, **res, "split": split}


def interval_text(d: dict[str, Any]) -> str:
    """``PQ +1.2 [-0.3, +2.7]`` of a :func:`cqbnet.evaluation.statistics.paired_rows` result (one seed: no interval)."""
    lo, hi = d["pq"][1:]
    return f"PQ {d['pq'][0]:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None else " (one seed: no interval)")


def ratio_text(value: float | None, interval: list[float] | None) -> str:
    """``81.2% [74.0, 88.4]`` (``-`` when not measured)."""
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def versus_full(by: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Each arm's paired difference from full supervision (:func:`cqbnet.evaluation.statistics.paired_rows`)."""
    out = {arm: paired_rows(rs, by.get("full", [])) for arm, rs in by.items() if arm != "full"}
    return {arm: d for arm, d in out.items() if d is not None}


def fraction_key(arm: str) -> str:
    """The summary's key of an arm's PQ over full supervision's, e.g. ``p10_clicked_fraction_of_full``."""
    return f"{arm.lower().replace('-', '_')}_fraction_of_full"


def fractions(
    rows: list[dict[str, Any]],
    targets: dict[str, float],
    sources: dict[str, str] | None = None,
    reference: dict[int, list[dict]] | None = None,
) -> dict[str, Any]:
    """Mean PQ per arm, each arm's method entry (:func:`methods`: compute and fractions of full supervision), each
    target arm's fraction (its entry's ``fraction_of_full``), every arm's paired difference from full supervision,
    and each offline arm's from the arm whose pseudo labels it learns from (``sources``: arm -> source arm)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["arm"], []).append(r)
    mean = {a: float(np.mean([r["pq"] for r in rs])) for a, rs in by.items()}
    out: dict[str, Any] = {"machine": machine_info(), "mean_pq": mean, "seeds": {a: len(rs) for a, rs in by.items()}}
    out["minus_full"] = versus_full(by)
    minus = {  # against the source run each row records, else the source arm's row of its seed
        a: paired_rows(by[a], [{"seed": r["seed"], **r["source"]} for r in by[a] if "source" in r] or by.get(src, []))
        for a, src in (sources or {}).items()
        if a in by
    }
    out["minus_source"] = {a: {**d, "source": sources[a]} for a, d in minus.items() if d is not None}
    own = {a: [r["own"] for r in rs if r.get("own")] for a, rs in by.items()}
    out["own_mean"] = {a: {k: float(np.mean([o[k] for o in v])) for k in v[0]} for a, v in own.items() if v}
    out["methods"] = methods(by, sources or {}, reference)
    for arm, target in targets.items():
        f = out["methods"].get(arm, {}).get("fraction_of_full")
        if f is not None:
            out[fraction_key(arm)] = f
            out[fraction_key(arm).replace("fraction_of_full", "target")] = target
    out["compute"] = {a: {k: m[k] for k in ("iterations", "networks", "minutes")} for a, m in out["methods"].items()}
    return out


def reference_rows(path: Path) -> dict[int, list[dict]]:
    """Full supervision at the full recipe's own schedule and learning rate, by iterations, from a paired-arms
    result (``benchmarks/results/full_test.json``: arms ``full1000``, ``full2000``)."""
    out: dict[int, list[dict]] = {}
    for r in read_json(path)["runs"]:
        if r["arm"].startswith("full") and r["arm"][4:].isdigit():
            out.setdefault(int(r["arm"][4:]), []).append(r)
    return out


def seed_ratio(pq: dict[int, float], ref: dict[int, float] | None) -> tuple[float | None, list[float] | None]:
    """PQ over the reference's (seed -> value each), paired over their common seeds: the estimate and its
    delta-method t interval (:func:`cqbnet.evaluation.statistics.ratio_of_means`), None without common seeds."""
    if not ref or not set(pq) & set(ref):
        return None, None
    e = ratio_of_means(pq, ref)
    return e.estimate, None if e.interval is None else list(e.interval)


def methods(
    by: dict[str, list[dict]], sources: dict[str, str], reference: dict[int, list[dict]] | None = None
) -> dict[str, dict[str, Any]]:
    """One entry per arm: its seeds, mean PQ, compute (every network it trains: an offline arm also trains the run
    whose pseudo labels it learns from) and its PQ over full supervision's with a paired delta-method t interval
    over seeds (:func:`cqbnet.evaluation.statistics.ratio_of_means`), in the arm's own inference mode (``mode``)
    and, under ``modes``, in each mode against full supervision in the same mode.

    Full supervision is ``reference`` when given (iterations -> rows: the full recipe at its own learning rate;
    ``fraction_of_full`` against 1000 iterations, ``fraction_of_full_same_iterations`` against as many iterations
    as the arm's networks train together, null when not measured), and the arm's own ``full`` run at the same
    schedule and overrides gives ``fraction_of_full_same_schedule``; without a reference the arms ``full`` and
    ``full<iterations>`` of the benchmark are the reference."""
    own_full = {1000: by["full"]} if "full" in by else {}
    own_full.update({int(a[4:]): rs for a, rs in by.items() if a[4:].isdigit()})
    ref = reference if reference else own_full
    out = {}
    for arm, rs in by.items():
        src = {r["seed"]: r for r in by.get(sources.get(arm, ""), [])}
        its = [r["iterations"] + (src[r["seed"]]["iterations"] if r["seed"] in src else 0) for r in rs]
        secs = [r["seconds"] + (src[r["seed"]]["seconds"] if r["seed"] in src else 0) for r in rs]
        total = int(max(its))
        entry: dict[str, Any] = {
            "seeds": sorted(r["seed"] for r in rs),
            "pq": float(np.mean([r["pq"] for r in rs])),
            "mode": rs[0].get("test_mode", "argmax"),
            "networks": 1 + (arm in sources),
            "iterations": total,
            "minutes": float(np.mean(secs)) / 60,
            "modes": {},
        }
        for mode in ("argmax", "heuristic"):
            pq = {r["seed"]: mode_pq(r, mode) for r in rs}
            if any(v is None for v in pq.values()):
                continue
            m: dict[str, Any] = {"pq": float(np.mean(list(pq.values())))}
            pairs = [("fraction_of_full", ref.get(1000)), ("fraction_of_full_same_iterations", ref.get(total))]
            if reference:
                pairs.append(("fraction_of_full_same_schedule", by.get("full")))
            for key, rows in pairs:
                refs = {r["seed"]: mode_pq(r, mode) for r in rows or []}
                m[key], m[f"{key}_interval"] = seed_ratio(pq, {k: v for k, v in refs.items() if v is not None})
            entry["modes"][mode] = m
        mine = entry["modes"].get(entry["mode"], {})
        for key in ("fraction_of_full", "fraction_of_full_same_iterations"):
            entry[key], entry[f"{key}_interval"] = mine.get(key), mine.get(f"{key}_interval")
        out[arm] = entry
    return out


def table(rows: list[dict[str, Any]], own_columns: list[tuple[str, str]]) -> list[str]:
    """The runs as a markdown table: PQ in the config's inference mode, and the arm's own score."""
    head = (
        "| arm | seed | iterations | PQ | PQ_th | PQ_st | SQ_th | " + " | ".join(t for _, t in own_columns) + " | min |"
    )
    lines = [head, "|" + "---|" * (8 + len(own_columns))]
    for r in rows:
        own = r.get("own")
        cols = " | ".join(f"{own[k]:.1f}" if own and k in own else "-" for k, _ in own_columns)
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['iterations']} | {r['pq']:.1f} | {r['pq_th']:.1f} | {r['pq_st']:.1f} | "
            f"{r['sq_th']:.1f} | {cols} | {r['seconds'] / 60:.1f} |"
        )
    return lines


def main(
    arms: dict[str, Arm],
    default_arms: list[str],
    score: Score | None,
    targets: dict[str, float],
    results: Path,
    report_path: Path,
    header: list[str],
    own_columns: list[tuple[str, str]],
    headline: str | None = None,
    recipe: dict[str, str] | None = None,
    paper: dict[str, str] | None = None,
) -> None:
    """Run the asked arms and seeds (each once), and after each run rewrite runs.json, summary.json and the report.
    ``headline`` names the arm whose PQ over full supervision's and whose own measures (means over seeds) the
    summary also gives at its top level (``fraction_of_full``, ``corloc``, ...). ``recipe`` maps a key prefix to
    the arm that is the toolkit's recipe for it (e.g. ``{"p10": "P10-offline-crf"}``): the summary gives that arm's
    fraction and target as ``p10_recipe_fraction_of_full`` and ``p10_recipe_target`` and names it in ``recipe``;
    ``paper`` maps a prefix to the paper's own method, whose fraction keeps the plain ``p10_fraction_of_full``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", nargs="+", default=default_arms, choices=list(arms))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / results.name)
    ap.add_argument("--results", type=Path, default=results, help="folder of runs.json and summary.json")
    ap.add_argument("--report", type=Path, default=report_path)
    ap.add_argument("--commit", action="store_true")
    ap.add_argument(
        "--split", choices=("val", "test"), default="test", help="val to choose between variants, test to report"
    )
    ap.add_argument("--report-only", action="store_true", help="rewrite the summary and report; train nothing")
    ap.add_argument(
        "--reference",
        type=Path,
        help="full supervision at its own recipe (a paired-arms result, e.g. results/full_test.json): the reference of "
        "every fraction of full (the benchmark's own full arm then gives fraction_of_full_same_schedule)",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides for every arm, e.g. solver.max_iter=320")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    saved = args.results / "runs.json"
    rows = read_json(saved)["runs"] if saved.is_file() else []
    mine = args.overrides

    def save() -> None:
        write_json(saved, {"runs": rows}, indent=2)
        these = [r for r in rows if r["overrides"] == mine and r.get("split", "val") == args.split]
        sources = {a: arm.pseudo_from for a, arm in arms.items() if arm.pseudo_from}
        summ = fractions(these, targets, sources, reference_rows(args.reference) if args.reference else None)
        summ["split"] = args.split
        if args.reference:
            summ["reference"] = {"file": str(args.reference.resolve().relative_to(ROOT)), "iterations": [1000, 2000]}
        if headline is not None and fraction_key(headline) in summ:
            summ["fraction_of_full"] = summ[fraction_key(headline)]
            summ.update({k: v for k, v in summ["own_mean"].get(headline, {}).items() if k != "seconds"})
        for prefix, arm in (paper or {}).items():  # the paper's method: the key's meaning since it was asked for
            if fraction_key(arm) in summ:
                summ[f"{prefix}_fraction_of_full"] = summ[fraction_key(arm)]
                summ[f"{prefix}_target"] = targets[arm]
        for prefix, arm in (recipe or {}).items():  # the toolkit's recipe: a key of its own, naming its arm
            if fraction_key(arm) in summ:
                summ.setdefault("recipe", {})[prefix] = arm
                summ[f"{prefix}_recipe_fraction_of_full"] = summ[fraction_key(arm)]
                summ[f"{prefix}_recipe_target"] = targets[arm]
        write_json(args.results / "summary.json", summ, indent=2)
        given = f"`{' '.join(mine)}`" if mine else "none"
        lines = [
            *header,
            f"Split: **{args.split}**. Machine: `{summ['machine']}`. Overrides of every arm: {given}.",
            "",
        ]
        lines += [*table(these, own_columns), ""]
        for arm, target in targets.items():
            key = fraction_key(arm)
            if key in summ:
                f = summ[key]
                ci = summ["methods"][arm].get("fraction_of_full_interval")
                verdict = "met" if f >= target else "MISSED"
                if ci and ci[0] < target <= f:
                    verdict += " at the estimate; the interval reaches below the target"
                lines.append(
                    f"- {arm}: {ratio_text(f, ci)} of full supervision's PQ in its inference mode (target "
                    f"{100 * target:.0f}%; seeds {summ['seeds'].get(arm)}): {verdict}."
                )
        for prefix, arm in summ.get("recipe", {}).items():
            lines.append(f"- `{prefix}_recipe_fraction_of_full` in summary.json is the toolkit's recipe: arm {arm}.")
        for prefix, arm in (paper or {}).items():
            lines.append(f"- `{prefix}_fraction_of_full` in summary.json is the paper's method: arm {arm}.")
        ref = summ.get("reference")
        lines += [
            "",
            "Fractions of full supervision: "
            + (
                f"against the full recipe at its own learning rate (`{ref['file']}`), 1000 iterations and as many as "
                "the arm's networks together; *same schedule*: against this benchmark's own full arm"
                if ref
                else "against this benchmark's full arm (and `full<iterations>` arms for the same iterations)"
            )
            + "; each in the same inference mode, a paired delta-method 95% t interval over seeds.",
            "",
            "| arm | seeds | networks | iterations | minutes | mode | PQ | of full [95% t] | of full, same iterations "
            "| same schedule |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for arm, m in summ["methods"].items():
            for mode, mm in m["modes"].items():
                keys = ("fraction_of_full", "fraction_of_full_same_iterations", "fraction_of_full_same_schedule")
                lines.append(
                    f"| {arm} | {m['seeds']} | {m['networks']} | {m['iterations']} | {m['minutes']:.1f} | {mode}"
                    + ("" if mode != m["mode"] else " (its own)")
                    + f" | {mm['pq']:.1f} | "
                    + " | ".join(ratio_text(mm.get(k), mm.get(f"{k}_interval")) for k in keys)
                    + " |"
                )
        for arm, d in summ["minus_full"].items():
            lines.append(f"- {arm} minus full, paired over seeds {d['seeds']}: {interval_text(d)}.")
        for arm, d in summ["minus_source"].items():
            lines.append(
                f"- {arm} minus {d['source']} (the run whose pseudo labels it learns from), paired over seeds "
                f"{d['seeds']}: {interval_text(d)}, PQ_th {d['pq_th'][0]:+.1f}."
            )
        with atomic_path(args.report) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        if args.commit:
            commit([saved, args.results / "summary.json", args.report], f"{args.results.name}: results so far")

    for seed in [] if args.report_only else args.seeds:
        for name in args.arms:
            if any(
                r["arm"] == name
                and r["seed"] == seed
                and r["overrides"] == mine
                and r.get("split", "val") == args.split
                for r in rows
            ):
                continue
            row = run_arm(name, arms, seed, mine, args.work, score, args.split)
            rows.append(row)
            print(f"{name} seed {seed}: PQ {row['pq']:.1f} (th {row['pq_th']:.1f}, st {row['pq_st']:.1f})", flush=True)
            save()
    save()
