"""Annotation cost model: what each label kind costs relative to a full panoptic label.

Defaults follow paper 000 (CQB-Net, "Problem Formulation"): with a full
panoptic label costing 1, an image's tags cost C_I = 0.006, its boxes
C_B = 0.03 and a stuff map C_Sst = 0.68 (after Caesar et al. 2018 and Li et
al. 2018; Fig. 2a gives 1104 s per full COCO label, 7 s for tags, 32 s for
boxes). Points (paper 003) are not priced in paper 000; the default is 2.4 s
per click (Bearman et al., "What's the Point", ECCV 2016) against 1104 s, per
point.

A cost is a value in full-label units per *unit*: an image, a box or a point.
Per-box and per-point costs make the cost of an image depend on its content;
for the cost of a ratio they need the expected boxes or segments per image
(``stats``), taken from a dataset or given in the YAML.

The YAML override takes one of two forms::

    relative:        # fraction of a full panoptic label
      I: 0.006
      B: 0.03
    units: {B: image}

    seconds:         # seconds of annotator time; P must be given, per image
      P: 1104
      I: 7
      B: 7           # per box by default in this form
      S: 750
      PT: 2.4        # per point
    stats: {boxes_per_image: 7.3, segments_per_image: 11}

    content:         # seconds of annotator time per unit of content; each kind a sum of terms
      P: {thing: 79.2, stuff: 142}   # per thing mask and per stuff region
      I: {tag: 1.0}                  # per class present
      B: {box: 7}
      S: {stuff: 142}
      PT: {point: 2.4}
    stats: {boxes_per_image: 7.3, stuff_per_image: 3.7, tags_per_image: 7.2, segments_per_image: 11}

In the ``content`` form every cost is relative to the expected seconds of a full label of *this* data set's image
(its thing masks and stuff regions), so boxing an image of 40 small objects costs what 40 boxes cost against what
40 masks cost, not paper 000's fixed C_B. The counts per image come from ``--data`` (or ``stats``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from cqbnet.errors import InputError
from cqbnet.io import read_yaml
from cqbnet.labels.kinds import KIND_NAMES, KINDS

UNITS = ("image", "box", "point", "thing", "stuff", "tag", "segment")
# the per-image count each unit is charged by, as dataset_stats measures it (points: segments x clicks each)
STAT_OF_UNIT = {
    "box": "boxes_per_image",
    "thing": "boxes_per_image",
    "stuff": "stuff_per_image",
    "tag": "tags_per_image",
    "segment": "segments_per_image",
}
PAPER_FULL_SECONDS = 1104.0  # paper 000, Fig. 2a

DEFAULT_RELATIVE = {"P": 1.0, "I": 0.006, "B": 0.03, "S": 0.68, "PT": 2.4 / PAPER_FULL_SECONDS}
DEFAULT_UNITS = {"P": "image", "I": "image", "B": "image", "S": "image", "PT": "point"}
SECONDS_UNITS = {"P": "image", "I": "image", "B": "box", "S": "image", "PT": "point"}
# Annotator seconds per unit of content, from the literature (the content form's defaults; configs/costs_content.yaml
# states each source): a COCO instance polygon 79.2 s (PointSup, Cheng et al. 2022, after COCO); a stuff region
# 142 s (computed: paper 000's 1104 s per COCO image less 7.3 instances x 79.2 s, over its 3.7 stuff regions); a
# tag 1 s per class present (Bearman et al. 2016: about 1 s per class); a box 7 s (extreme clicking,
# Papadopoulos et al. 2017); a click 2.4 s (Bearman et al. 2016).
LITERATURE_SECONDS = {
    "P": {"thing": 79.2, "stuff": 142.0},
    "I": {"tag": 1.0},
    "B": {"box": 7.0},
    "S": {"stuff": 142.0},
    "PT": {"point": 2.4},
}
SOURCES = {
    "P": "1 by definition (paper 000)",
    "I": "paper 000, C_I = 0.006",
    "B": "paper 000, C_B = 0.03",
    "S": "paper 000, C_Sst = 0.68",
    "PT": "2.4 s / 1104 s per click (Bearman et al. 2016; paper 000 Fig. 2a)",
}


@dataclass
class CostModel:
    """Per-kind cost and the unit it is charged per: in full-label units, or (``content``) annotator seconds per
    unit of content, each kind a sum of terms, made relative to the expected seconds of one full label."""

    value: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RELATIVE))
    unit: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_UNITS))
    stats: dict[str, float] = field(default_factory=dict)  # boxes_per_image, segments_per_image, points_per_segment
    source: str = "paper 000 defaults"
    content: dict[str, dict[str, float]] | None = None  # kind -> unit -> seconds; replaces value and unit

    def __post_init__(self) -> None:
        for k, v in self.value.items():
            if k not in KINDS:
                raise InputError(f"{self.source}: unknown label kind {k!r}; known kinds: {', '.join(KINDS)}")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise InputError(f"{self.source}: cost of {k} must be a finite number >= 0, got {v!r}")
        if "P" in self.value and not self.value["P"] > 0:
            raise InputError(
                f"{self.source}: the cost of P (a full panoptic label) must be above 0; others are relative to it"
            )
        for k, u in self.unit.items():
            if k not in KINDS:
                raise InputError(f"{self.source}: unknown label kind {k!r} in units")
            if u not in UNITS:
                raise InputError(f"{self.source}: unit of {k} must be one of {', '.join(UNITS)}, got {u!r}")
        for k, v in self.stats.items():
            if not isinstance(v, (int, float)) or v < 0:
                raise InputError(f"{self.source}: stats.{k} must be a number >= 0, got {v!r}")
        if self.content is not None:
            self.content = _content_terms(self.content, self.source)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> CostModel:
        """Load an override file (``relative:`` or ``seconds:`` form, see the module docstring)."""
        return cls.from_dict(read_yaml(path, "cost file"), source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "costs") -> CostModel:
        if not isinstance(raw, dict):
            raise InputError(f"{source}: expected a mapping with 'relative' or 'seconds'")
        unknown = set(raw) - {"relative", "seconds", "content", "units", "stats"}
        if unknown:
            raise InputError(f"{source}: unknown key {sorted(unknown)[0]!r}")
        if sum(k in raw for k in ("relative", "seconds", "content")) != 1:
            raise InputError(f"{source}: give exactly one of 'relative', 'seconds' or 'content'")
        stats = raw.get("stats") or {}
        if not isinstance(stats, dict):
            raise InputError(f"{source}: 'stats' must be a mapping")
        if "content" in raw:
            if "units" in raw:
                raise InputError(f"{source}: 'units' has no meaning in the content form (each term names its unit)")
            return cls(stats=dict(stats), source=source, content=raw["content"])
        for key in ("relative", "seconds", "units"):
            if key in raw and not isinstance(raw[key], dict):
                raise InputError(f"{source}: '{key}' must be a mapping of kind -> value")
        if "relative" in raw:
            value = dict(DEFAULT_RELATIVE)
            unit = dict(DEFAULT_UNITS)
            value.update(raw["relative"])
        else:
            sec = raw["seconds"]
            if "P" not in sec:
                raise InputError(f"{source}: seconds.P (a full panoptic label, per image) is required")
            unit = dict(SECONDS_UNITS)
            defaults = {k: v * PAPER_FULL_SECONDS for k, v in DEFAULT_RELATIVE.items()}
            defaults.update(sec)
            for k, v in defaults.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    raise InputError(f"{source}: seconds.{k} must be a number >= 0, got {v!r}")
            if defaults["P"] <= 0:
                raise InputError(f"{source}: seconds.P must be > 0")
            value = {k: float(v) / float(defaults["P"]) for k, v in defaults.items()}
        unit.update(raw.get("units") or {})
        return cls(value, unit, dict(stats), source)

    def _count(self, unit: str, kind: str) -> float:
        """Expected count of ``unit`` per image (``stats``), or an error saying how to give it."""
        if unit == "image":
            return 1.0
        if unit == "point":
            if "segments_per_image" not in self.stats:
                raise InputError(
                    f"{self.source}: {kind} is priced per point; the cost of a ratio needs "
                    "stats.segments_per_image (give --data or set it in the cost YAML)"
                )
            return self.stats["segments_per_image"] * self.stats.get("points_per_segment", 1.0)
        key = STAT_OF_UNIT[unit]
        if key not in self.stats:
            raise InputError(
                f"{self.source}: {kind} is priced per {unit}; the cost of a ratio needs stats.{key}"
                " (give --data or set it in the cost YAML)"
            )
        return self.stats[key]

    def full_seconds(self) -> float:
        """Content form: the expected annotator seconds of one image's full label (the unit of every cost)."""
        assert self.content is not None
        sec = sum(v * self._count(u, "P") for u, v in self.content["P"].items())
        if not sec > 0:
            raise InputError(f"{self.source}: a full label of this data set's images costs 0 s (no content to mask)")
        return sec

    def per_image(self, kind: str, boxes: float | None = None, points: float | None = None, **counts: float) -> float:
        """Cost of one image's label of ``kind`` given its content: ``boxes``, ``points`` and ``things``, ``stuff``
        (regions), ``tags``, ``segments``; a count not given is the data set's expected one (``stats``)."""
        have = {
            "image": 1.0,
            "box": boxes,
            "point": points,
            "thing": counts.get("things", boxes),
            "stuff": counts.get("stuff"),
            "tag": counts.get("tags"),
            "segment": counts.get("segments"),
        }

        def n(unit: str) -> float:
            return self._count(unit, kind) if have.get(unit) is None else float(have[unit])

        if self.content is None:
            return self.value[kind] * n(self.unit[kind])
        return sum(v * n(u) for u, v in self.content[kind].items()) / self.full_seconds()

    def expected_per_image(self, kind: str) -> float:
        """Expected cost of one image's label of ``kind`` (needs ``stats`` for units other than the image)."""
        if self.content is not None:
            sec = sum(v * self._count(u, kind) for u, v in self.content[kind].items())
            return sec / self.full_seconds()
        return self.value[kind] * self._count(self.unit[kind], kind)

    def ratio_cost(self, ratio: dict[frozenset[str], float]) -> float:
        """f2 of paper 000 (Eq. 2): sum_i rho_i C_i, cost per image relative to full labelling."""
        return sum(r * sum(self.expected_per_image(k) for k in kinds) for kinds, r in ratio.items())

    def describe(self) -> str:
        if self.content is not None:
            lines = [f"{'kind':4s} {'label':15s} {'seconds per unit':40s} {'per image':>9s}", "-" * 72]
            for k in KINDS:
                terms = " + ".join(f"{v:g} s/{u}" for u, v in self.content[k].items())
                try:
                    rel = f"{self.expected_per_image(k):9.5f}"
                except InputError:
                    rel = f"{'?':>9s}"
                lines.append(f"{k:4s} {KIND_NAMES[k]:15s} {terms:40s} {rel}")
            lines.append(f"(content form, {self.source}; per image: relative to one full label of this data set)")
            return "\n".join(lines)
        lines = [f"{'kind':4s} {'label':15s} {'cost':>9s} {'per':6s} source", "-" * 72]
        for k in KINDS:
            src = SOURCES[k] if self.source == "paper 000 defaults" else self.source
            lines.append(f"{k:4s} {KIND_NAMES[k]:15s} {self.value[k]:9.5f} {self.unit[k]:6s} {src}")
        return "\n".join(lines)


def _content_terms(raw: Any, source: str) -> dict[str, dict[str, float]]:
    """The ``content`` form checked: every kind a mapping of unit -> seconds (P required; the others default to
    :data:`LITERATURE_SECONDS`)."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: 'content' must be a mapping of kind -> {{unit: seconds}}")
    if "P" not in raw:
        raise InputError(f"{source}: content.P (the seconds of a full label, e.g. {{thing: 79.2, stuff: 142}})")
    out = {k: dict(v) for k, v in LITERATURE_SECONDS.items()}
    for k, terms in raw.items():
        if k not in KINDS:
            raise InputError(f"{source}: unknown label kind {k!r} in content; known kinds: {', '.join(KINDS)}")
        if not isinstance(terms, dict) or not terms:
            raise InputError(f"{source}: content.{k} must be a mapping of unit -> seconds, e.g. {{box: 7}}")
        for u, v in terms.items():
            if u not in UNITS:
                raise InputError(f"{source}: content.{k}: unknown unit {u!r}; units: {', '.join(UNITS)}")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise InputError(f"{source}: content.{k}.{u} must be seconds >= 0, got {v!r}")
        out[k] = {u: float(v) for u, v in terms.items()}
    return out


@dataclass
class CostRow:
    kinds: str
    images: int
    boxes: int
    points: int
    cost: float  # total in full-label units


def cost_table(rows: list[CostRow], num_images: int) -> str:
    """Cost table: per kind set, images, cost in full-label units and per image; with a total."""
    total = sum(r.cost for r in rows)
    lines = [
        f"{'labels':10s} {'images':>7s} {'share':>6s} {'boxes':>7s} {'points':>7s} {'cost':>10s} {'per image':>10s}",
        "-" * 64,
    ]
    for r in rows:
        share = r.images / num_images if num_images else 0.0
        per = r.cost / r.images if r.images else 0.0
        lines.append(f"{r.kinds:10s} {r.images:7d} {share:6.3f} {r.boxes:7d} {r.points:7d} {r.cost:10.3f} {per:10.4f}")
    lines.append("-" * 64)
    rel = total / num_images if num_images else 0.0
    lines.append(f"{'total':10s} {num_images:7d} {1.0:6.3f} {'':7s} {'':7s} {total:10.3f} {rel:10.4f}")
    lines.append(f"cost relative to full panoptic labels for every image: {rel:.4f}")
    return "\n".join(lines)
