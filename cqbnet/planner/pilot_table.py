"""The pilot table: results of paper 000's Table 2 protocol, and the regression samples they give.

A pilot table is a CSV with one training run per row::

    study,arm,seed,rho_P,rho_I,rho_B,rho_S,rho_PT,pq_th,pq_st
    P,full,0,0.1,0,0,0,0,31.2,24.0
    B,baseline,0,0.1,0,0.9,0,0,39.1,25.3
    B,module,0,0.1,0,0.9,0,0,48.8,26.1
    B,upper,0,0.1,0,0.9,0,0,49.4,26.5

``study`` names the label kind whose curve the run measures. Runs of study P see
only a share rho_P of panoptic labels (the rest unlabelled, Eq. 5); runs of a weak
study W see rho_P panoptic labels and rho_W = 1 - rho_P labels of kind W, trained
without (``baseline``) or with (``module``) W's weak-supervision module, or with
finer labels in their place (``upper``, reported, not fitted). PQ is in percent;
an empty cell means the run did not measure that region. Missing ``rho_*``
columns are 0 and extra columns are ignored, so a runner may add its own.

From these rows :func:`regression_samples` makes the (rho, y) samples of each
curve:

* study P (Eq. 5): consecutive ratios rho1 < rho2 give the marginal rate
  y = (PQ(rho2) - PQ(rho1)) / (rho2 - rho1), PQ as a fraction, at the midpoint.
  The paper prints the plain difference at rho1; dividing by the step makes
  pilots with uneven steps comparable and makes the curve a rate that Eq. 7 can
  integrate.
* weak study W (Eq. 6): y = PQ_module / PQ_baseline - 1 at rho_W.

When the same seeds ran on both sides, each seed gives a sample (so the bootstrap
sees the run-to-run noise); otherwise the means give one sample.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cqbnet.errors import InputError
from cqbnet.io import atomic_path
from cqbnet.labels.kinds import KINDS

ARMS = {"P": ("full",), **{k: ("baseline", "module", "upper") for k in KINDS if k != "P"}}
REGIONS = ("th", "st")
# Which curves each study measures. Paper 000 leaves out the stuff curve of stuff
# maps ("not a valid weak supervision": the stuff labels are the supervision).
REGIONS_OF_KIND = {"P": ("th", "st"), "I": ("th", "st"), "B": ("th", "st"), "S": ("th",), "PT": ("th", "st")}
RATIO_COLUMNS = tuple(f"rho_{k}" for k in KINDS)
# the columns the pilot runner writes: the table above, then what it adds for people
COLUMNS = ("study", "arm", "seed", *RATIO_COLUMNS, "pq_th", "pq_st", "pq", "sq", "rq", "seconds", "run")
RATIO_TOLERANCE = 2e-3  # ratios printed to three decimals may miss 1 by this much


@dataclass(frozen=True)
class PilotRow:
    line: int  # line in the file, for error messages
    study: str
    arm: str
    seed: str
    ratio: dict[str, float]  # kind -> share
    pq: dict[str, float]  # region -> PQ in percent (absent when not measured)


@dataclass
class PilotTable:
    path: str
    rows: list[PilotRow]

    def summary(self) -> str:
        """Table 2 analogue: mean PQ per study, ratio and arm, with the seed count."""
        groups: dict[tuple, list[PilotRow]] = defaultdict(list)
        for r in self.rows:
            groups[(KINDS.index(r.study), round(r.ratio["P"], 4), ARMS[r.study].index(r.arm), r.study, r.arm)].append(r)
        lines = [f"{'study':5s} {'rho_P':>6s} {'arm':9s} {'runs':>4s} {'PQ_th':>7s} {'PQ_st':>7s}", "-" * 44]
        for key in sorted(groups):
            rows = groups[key]
            cells = []
            for region in REGIONS:
                vals = [r.pq[region] for r in rows if region in r.pq]
                cells.append(f"{np.mean(vals):7.2f}" if vals else f"{'-':>7s}")
            lines.append(f"{key[3]:5s} {key[1]:6.3f} {key[4]:9s} {len(rows):4d} {cells[0]} {cells[1]}")
        return "\n".join(lines)


def cell_number(text: str, path: str, line: int, column: str, minimum: float | None = None) -> float | None:
    """A CSV cell as a finite number (None when empty), at least ``minimum`` when given; errors name the cell."""
    text = (text or "").strip()
    if text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{path}: line {line}: column {column}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{path}: line {line}: column {column}: {text!r} is not finite")
    if minimum is not None and v < minimum:
        raise InputError(f"{path}: line {line}: column {column}: {text!r} must be at least {minimum:g}")
    return v


def open_table(path: str | os.PathLike, required: tuple[str, ...]) -> csv.DictReader:
    """A pilot CSV's rows (header cells stripped), after checking the file exists, is UTF-8 and has ``required``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pilot table not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [h.strip() for h in (reader.fieldnames or [])]
    for col in required:
        if col not in reader.fieldnames:
            raise InputError(f"{path}: missing column {col!r} (header: {', '.join(reader.fieldnames) or 'empty'})")
    return reader


def load_pilot_table(path: str | os.PathLike) -> PilotTable:
    """Read and check a pilot CSV; every error names the line and column."""
    path = Path(path)
    reader = open_table(path, ("study", "arm", "seed", "rho_P"))
    if "pq_th" not in reader.fieldnames and "pq_st" not in reader.fieldnames:
        raise InputError(f"{path}: needs a pq_th or a pq_st column")
    rows = [_parse_row(raw, str(path), n) for n, raw in enumerate(reader, start=2)]
    if not rows:
        raise InputError(f"{path}: no runs in the pilot table")
    return PilotTable(str(path), rows)


def _parse_row(raw: dict[str, str], path: str, line: int) -> PilotRow:
    if None in raw:
        raise InputError(f"{path}: line {line}: more cells than header columns")
    study = (raw.get("study") or "").strip()
    if study not in KINDS:
        raise InputError(f"{path}: line {line}: column study: unknown label kind {study!r}; known: {', '.join(KINDS)}")
    arm = (raw.get("arm") or "").strip()
    if arm not in ARMS[study]:
        raise InputError(
            f"{path}: line {line}: column arm: {arm!r} is not an arm of study {study} ({'/'.join(ARMS[study])})"
        )
    ratio = {}
    for k, col in zip(KINDS, RATIO_COLUMNS):
        v = cell_number(raw.get(col, ""), path, line, col)
        v = 0.0 if v is None else v
        if not 0.0 <= v <= 1.0:
            raise InputError(f"{path}: line {line}: column {col}: share {v:g} is outside [0, 1]")
        ratio[k] = v
    total = sum(ratio.values())
    if abs(total - 1.0) > RATIO_TOLERANCE and not (study == "P" and total <= 1.0 + RATIO_TOLERANCE):
        raise InputError(f"{path}: line {line}: ratio shares sum to {total:.4g}, not 1")
    if study != "P" and ratio[study] <= 0:
        raise InputError(f"{path}: line {line}: study {study} needs rho_{study} > 0")
    if study == "P" and any(ratio[k] > 0 for k in KINDS if k != "P"):
        raise InputError(f"{path}: line {line}: study P runs see panoptic labels only; other shares must be 0")
    pq = {}
    for region in REGIONS:
        v = cell_number(raw.get(f"pq_{region}", ""), path, line, f"pq_{region}")
        if v is not None:
            if not 0.0 <= v <= 100.0:
                raise InputError(f"{path}: line {line}: column pq_{region}: {v:g} is not a PQ in percent (0-100)")
            pq[region] = v
    if not pq:
        raise InputError(f"{path}: line {line}: the run has neither pq_th nor pq_st")
    seed = (raw.get("seed") or "").strip()
    return PilotRow(line, study, arm, seed, ratio, pq)


@dataclass
class Samples:
    """Regression samples of one curve (kind, region)."""

    x: np.ndarray  # (n,) allocation ratio of the kind
    y: np.ndarray  # (n,) marginal improvement


def _by_seed(rows: list[PilotRow], region: str) -> dict[str, float]:
    out: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if region in r.pq:
            out[r.seed].append(r.pq[region])
    return {s: float(np.mean(v)) for s, v in out.items()}


def _paired(a: dict[str, float], b: dict[str, float]) -> list[tuple[float, float]]:
    """Seed-paired values of two sides, or their means when no seed ran on both."""
    common = sorted(set(a) & set(b))
    if common:
        return [(a[s], b[s]) for s in common]
    if a and b:
        return [(float(np.mean(list(a.values()))), float(np.mean(list(b.values()))))]
    return []


def _panoptic_samples(rows: list[PilotRow], region: str) -> list[tuple[float, float]]:
    """Eq. 5 as a rate: (PQ(rho2) - PQ(rho1)) / (rho2 - rho1) at the midpoint, PQ as a fraction."""
    by_ratio: dict[float, list[PilotRow]] = defaultdict(list)
    for r in rows:
        by_ratio[round(r.ratio["P"], 6)].append(r)
    ratios = sorted(by_ratio)
    out = []
    for r1, r2 in zip(ratios, ratios[1:]):
        for q1, q2 in _paired(_by_seed(by_ratio[r1], region), _by_seed(by_ratio[r2], region)):
            out.append(((r1 + r2) / 2, (q2 - q1) / 100.0 / (r2 - r1)))
    return out


class Unmeasured(ValueError):
    """A curve whose baseline is too close to 0 for Eq. 6's ratio to mean anything."""


def _weak_samples(rows: list[PilotRow], kind: str, region: str, min_baseline: float) -> list[tuple[float, float]]:
    """Eq. 6: PQ_module / PQ_baseline - 1 at rho_kind."""
    by_ratio: dict[float, dict[str, list[PilotRow]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_ratio[round(r.ratio[kind], 6)][r.arm].append(r)
    out = []
    for rho in sorted(by_ratio):
        arms = by_ratio[rho]
        for base, mod in _paired(_by_seed(arms["baseline"], region), _by_seed(arms["module"], region)):
            if base < min_baseline or base <= 0:
                raise Unmeasured(
                    f"study {kind} at rho_{kind}={rho:g}: baseline PQ_{region} is {base:g}, below {min_baseline:g}, "
                    "so the relative improvement of Eq. 6 is undefined or noise; curve left out"
                )
            out.append((rho, mod / base - 1.0))
    return out


def regression_samples(
    table: PilotTable, min_baseline: float = 1.0, notes: list[str] | None = None
) -> dict[tuple[str, str], Samples]:
    """(kind, region) -> samples of its marginal-improvement curve (Eqs. 5 and 6).

    A weak curve whose baseline PQ (percent) is below ``min_baseline`` somewhere is left out (the planner
    then treats the kind as teaching nothing in that region) and a line saying why is appended to ``notes``.
    """
    notes = [] if notes is None else notes
    by_study: dict[str, list[PilotRow]] = defaultdict(list)
    for r in table.rows:
        by_study[r.study].append(r)
    out = {}
    for kind in KINDS:
        rows = by_study.get(kind)
        if not rows:
            continue
        for region in REGIONS_OF_KIND[kind]:
            if kind == "P":
                pairs = _panoptic_samples(rows, region)
            else:
                try:
                    pairs = _weak_samples(rows, kind, region, min_baseline)
                except Unmeasured as e:
                    notes.append(str(e))
                    continue
            if pairs:
                xy = np.asarray(pairs, dtype=float)
                out[(kind, region)] = Samples(xy[:, 0], xy[:, 1])
    if not out:
        raise InputError(
            f"{table.path}: no curve can be fitted: study P needs two or more ratios, "
            "a weak study needs baseline and module runs at the same ratio" + "".join(f"; {n}" for n in notes)
        )
    return out


def write_pilot_table(path: str | os.PathLike, runs: list, results: dict[str, dict[str, Any]]) -> int:
    """Write (atomically) one row per pilot cell whose run has finished, in protocol order; the row count.

    ``runs``: :class:`cqbnet.sweep.protocol.PilotRun` rows; ``results``: each finished run's metrics by its key.
    PQ is in percent, as :func:`load_pilot_table` reads it; ``seconds`` and ``run`` (the run's folder) are extra
    columns that the planner ignores.
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
