"""Paper 000's pilot protocol (Table 2): which training runs measure each label kind's curve.

For a weak kind W and a share rho_P of panoptic labels (the rest labelled with W):

* ``baseline``: the network trained on that mix *without* W's modules (the weak labels still give the losses
  the base network can take from them);
* ``module``: the same mix with W's modules switched on;
* ``upper``: the same rho_P panoptic labels, the rest given a finer label (tags -> boxes, boxes and stuff
  maps -> full masks); reported beside the others, not fitted. This departs from paper 000's Table 2, whose
  upper bounds are tags -> boxes for Cls2Box but stuff maps for Cls2Pixel, thing masks for boxes, and boxes
  plus stuff maps (either way round) for the graph: here one finer label per kind stands for all of them.

Study P trains with rho_P panoptic labels and the rest unlabelled, at every rho_P and at 1 (full supervision).
The unlabelled images stay in the data stream, so that for a fixed schedule a run sees rho_P times as many
labelled images as full supervision does, as an epoch-based schedule over the labelled images would; they are
the tagged images of the tags study with the tag modules off (tags then give no loss at all), so study P at
rho_P < 1 *is* the tags baseline and is trained once. Which module each kind tests (paper 000, "Ablation Study
for Pareto-front Approximation"):

====  ==============================================  ===================================
kind  modules                                         curves
====  ==============================================  ===================================
I     Cls2Box (things), Cls2Pixel (stuff)              PQ_th, PQ_st
B     Box2Mask (things), relation reasoning th->st     PQ_th, PQ_st
S     relation reasoning st->th                        PQ_th
PT    paper 003's point branch (FDD pseudo labels)     PQ_th, PQ_st
====  ==============================================  ===================================

Runs that come out identical (the full-supervision run is study P's rho = 1 *and* the upper bound of B and
S) are one :class:`RunSpec`, trained once. For a seed, every study draws the panoptic images the same way
(P is placed first in the ratio), so arms of one seed differ only in what the other images carry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from cqbnet.errors import InputError
from cqbnet.labels.catalogue import PAPER_000_MODULES

MODULES = PAPER_000_MODULES  # paper 000's four weak-supervision modules
POINTS = "points"  # paper 003's point branch: on only in the module arm of a PT study
MODULES_OF_KIND = {
    "I": ("cls2box", "cls2pixel"),
    "B": ("box2mask", "relation"),
    "S": ("relation",),
    "PT": (POINTS,),
}
UPPER_KIND = {"I": "B", "B": "P", "S": "P", "PT": "P"}  # the finer label an upper-bound run gets instead
STUDIES = ("P", *MODULES_OF_KIND)
WEAK_ARMS = ("baseline", "module", "upper")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a labelling ratio (kind set -> share), the modules switched on, and a seed."""

    ratio: tuple[tuple[str, float], ...]
    modules: tuple[str, ...] = MODULES
    seed: int = 0
    methods: tuple[tuple[str, str], ...] = ()  # kind set -> label method: the run is a `cqbnet fit` of the mix

    @property
    def key(self) -> str:
        """A readable, unique folder name, e.g. ``P0.3-B0.7_box2mask+relation_s0_3f2a9c1e``."""
        mix = "-".join(f"{k}{v:g}" for k, v in self.ratio)
        mods = "+".join(self.modules) or "none"
        what = [self.ratio, self.modules, self.seed] + ([self.methods] if self.methods else [])
        digest = hashlib.sha1(json.dumps(what).encode())
        if self.methods:
            mods = "+".join(m for _, m in self.methods)
        return f"{mix}_{mods}_s{self.seed}_{digest.hexdigest()[:8]}"

    def ratio_text(self) -> str:
        return ",".join(f"{k}={v:.10g}" for k, v in self.ratio)


@dataclass(frozen=True)
class PilotRun:
    """One row of the pilot table: a (study, arm, rho_P, seed) cell and the run that measures it."""

    study: str
    arm: str
    seed: int
    rho: dict[str, float] = field(hash=False)  # kind -> share, as written to the pilot table
    spec: RunSpec

    @property
    def cell(self) -> tuple[str, str, str, float]:
        return (self.study, self.arm, str(self.seed), round(self.rho.get("P", 0.0), 6))


def _mix(rho_p: float, other: str) -> tuple[tuple[str, float], ...]:
    """rho_P panoptic labels, the rest of kind ``other`` (P first, so a seed draws the same panoptic images)."""
    rest = round(1.0 - rho_p, 10)
    return (("P", 1.0),) if rest <= 0 or other == "P" else (("P", rho_p), (other, rest))


def _without(kind: str) -> tuple[str, ...]:
    """Every module of paper 000 but the ones that learn from ``kind`` (a baseline's switches)."""
    return tuple(m for m in MODULES if m not in MODULES_OF_KIND[kind])


def _with(kind: str) -> tuple[str, ...]:
    """Paper 000's modules and the kind's own (a module arm's switches; the point branch only for PT)."""
    return MODULES + tuple(m for m in MODULES_OF_KIND[kind] if m not in MODULES)


def table2_runs(
    studies: list[str] | tuple[str, ...] = STUDIES,
    rhos: list[float] | tuple[float, ...] = (0.1, 0.3, 0.5),
    seeds: list[int] | tuple[int, ...] = (0, 1),
    arms: list[str] | tuple[str, ...] = WEAK_ARMS,
) -> list[PilotRun]:
    """The pilot's runs, fitted arms first (study P, then baseline and module of each kind), upper bounds last."""
    for s in studies:
        if s not in STUDIES:
            raise InputError(f"pilot: unknown study {s!r}; choose from {', '.join(STUDIES)}")
    for a in arms:
        if a not in WEAK_ARMS:
            raise InputError(f"pilot: unknown arm {a!r}; choose from {', '.join(WEAK_ARMS)}")
    for r in rhos:
        if not 0 < r < 1:
            raise InputError(f"pilot: rho_P must lie in (0, 1), got {r}")
    if not seeds:
        raise InputError("pilot: no seeds")
    runs: list[PilotRun] = []
    for seed in seeds:
        if "P" in studies:
            for r in [*sorted(rhos), 1.0]:
                # the rest tagged, with the tag modules off: unlabelled images (the tags study's baseline)
                spec = RunSpec(_mix(r, "I"), _without("I") if r < 1 else MODULES, seed)
                runs.append(PilotRun("P", "full", seed, {"P": r}, spec))
        for kind in MODULES_OF_KIND:
            if kind not in studies:
                continue
            for arm in ("baseline", "module"):
                if arm not in arms:
                    continue
                on = _with(kind) if arm == "module" else _without(kind)
                for r in sorted(rhos):
                    runs.append(
                        PilotRun(kind, arm, seed, {"P": r, kind: round(1 - r, 10)}, RunSpec(_mix(r, kind), on, seed))
                    )
    if "upper" in arms:
        for seed in seeds:
            for kind in MODULES_OF_KIND:
                if kind in studies:
                    for r in sorted(rhos):
                        spec = RunSpec(_mix(r, UPPER_KIND[kind]), MODULES, seed)
                        runs.append(PilotRun(kind, "upper", seed, {"P": r, kind: round(1 - r, 10)}, spec))
    return runs


# the quick pilot over methods (`cqbnet pilot --quick`): the first seed, each method alone and at rho_P 0.3, full labels
# at 0.3 and 1; its prediction error against the whole pilot is measured in benchmarks/planner_methods.md
QUICK = {"seeds": 1, "method_rho_P": [0.0, 0.3], "rho_P": [0.3]}


def quick(pilot: dict) -> dict:
    """A pilot section cut to the quick pilot over methods (:data:`QUICK`)."""
    if not pilot.get("methods"):
        raise InputError("pilot: --quick is a pilot over label methods; name them in pilot.methods")
    return {**pilot, "seeds": pilot["seeds"][: QUICK["seeds"]], "method_rho_P": QUICK["method_rho_P"],
            "rho_P": QUICK["rho_P"]}  # fmt: skip


def method_runs(
    variables: list[str] | tuple[str, ...],
    rhos: list[float] | tuple[float, ...] = (0.0, 0.1, 0.3),
    full_rhos: list[float] | tuple[float, ...] = (0.1, 0.3, 0.5),
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
) -> list[PilotRun]:
    """The pilot over label methods (:mod:`cqbnet.planner.methods`): full labels alone at every ``full_rhos`` and at
    1 (the rest unlabelled: study P's runs of :func:`table2_runs`, trained once for both pilots), then for each
    variable ``KINDS:METHOD`` full labels at every ``rhos`` and the method on the rest, each a `cqbnet fit`."""
    from cqbnet.labels.kinds import kind_set_name
    from cqbnet.planner.methods import FULL, parse_variable

    parsed = [parse_variable(v, "pilot.methods: ") for v in variables if v != FULL]
    for r in rhos:
        if not 0 <= r < 1:
            raise InputError(f"pilot: method_rho_P must lie in [0, 1), got {r}")
    if not seeds:
        raise InputError("pilot: no seeds")
    runs = [r for r in table2_runs(("P",), full_rhos, seeds, ()) if r.study == "P"]
    runs = [PilotRun(FULL, "full", r.seed, r.rho, r.spec) for r in runs]
    for seed in seeds:
        for var in parsed:
            kinds = kind_set_name(var.kinds)
            for r in sorted(rhos):
                ratio = ((kinds, 1.0),) if r == 0 else (("P", r), (kinds, round(1 - r, 10)))
                spec = RunSpec(ratio, MODULES, seed, ((kinds, var.method),))
                runs.append(PilotRun(var.name, "method", seed, {"P": r}, spec))
    return runs


def unique_specs(runs: list[PilotRun]) -> list[RunSpec]:
    """The distinct runs to train, in first-needed order."""
    seen: dict[str, RunSpec] = {}
    for run in runs:
        seen.setdefault(run.spec.key, run.spec)
    return list(seen.values())
