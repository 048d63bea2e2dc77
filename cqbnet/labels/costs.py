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
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from cqbnet.errors import InputError
from cqbnet.io import read_yaml
from cqbnet.labels.kinds import KIND_NAMES, KINDS

UNITS = ("image", "box", "point")
PAPER_FULL_SECONDS = 1104.0  # paper 000, Fig. 2a

DEFAULT_RELATIVE = {"P": 1.0, "I": 0.006, "B": 0.03, "S": 0.68, "PT": 2.4 / PAPER_FULL_SECONDS}
DEFAULT_UNITS = {"P": "image", "I": "image", "B": "image", "S": "image", "PT": "point"}
SECONDS_UNITS = {"P": "image", "I": "image", "B": "box", "S": "image", "PT": "point"}
SOURCES = {
    "P": "1 by definition (paper 000)",
    "I": "paper 000, C_I = 0.006",
    "B": "paper 000, C_B = 0.03",
    "S": "paper 000, C_Sst = 0.68",
    "PT": "2.4 s / 1104 s per click (Bearman et al. 2016; paper 000 Fig. 2a)",
}


@dataclass
class CostModel:
    """Per-kind cost (full-label units) and the unit it is charged per."""

    value: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RELATIVE))
    unit: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_UNITS))
    stats: dict[str, float] = field(default_factory=dict)  # boxes_per_image, segments_per_image, points_per_segment
    source: str = "paper 000 defaults"

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

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> CostModel:
        """Load an override file (``relative:`` or ``seconds:`` form, see the module docstring)."""
        return cls.from_dict(read_yaml(path, "cost file"), source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "costs") -> CostModel:
        if not isinstance(raw, dict):
            raise InputError(f"{source}: expected a mapping with 'relative' or 'seconds'")
        unknown = set(raw) - {"relative", "seconds", "units", "stats"}
        if unknown:
            raise InputError(f"{source}: unknown key {sorted(unknown)[0]!r}")
        if ("relative" in raw) == ("seconds" in raw):
            raise InputError(f"{source}: give exactly one of 'relative' or 'seconds'")
        stats = raw.get("stats") or {}
        if not isinstance(stats, dict):
            raise InputError(f"{source}: 'stats' must be a mapping")
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

    def per_image(self, kind: str, boxes: float = 0.0, points: float = 0.0) -> float:
        """Cost of one image's label of ``kind`` given its count of boxes and points."""
        u = self.unit[kind]
        n = 1.0 if u == "image" else boxes if u == "box" else points
        return self.value[kind] * n

    def expected_per_image(self, kind: str) -> float:
        """Expected cost of one image's label of ``kind`` (needs ``stats`` for per-box/per-point units)."""
        u = self.unit[kind]
        if u == "image":
            return self.value[kind]
        if u == "box":
            key = "boxes_per_image"
            if key not in self.stats:
                raise InputError(
                    f"{self.source}: {kind} is priced per box; the cost of a ratio needs stats.{key}"
                    " (give --data or set it in the cost YAML)"
                )
            return self.value[kind] * self.stats[key]
        if "segments_per_image" not in self.stats:
            raise InputError(
                f"{self.source}: {kind} is priced per point; the cost of a ratio needs "
                "stats.segments_per_image (give --data or set it in the cost YAML)"
            )
        k = self.stats.get("points_per_segment", 1.0)
        return self.value[kind] * self.stats["segments_per_image"] * k

    def ratio_cost(self, ratio: dict[frozenset[str], float]) -> float:
        """f2 of paper 000 (Eq. 2): sum_i rho_i C_i, cost per image relative to full labelling."""
        return sum(r * sum(self.expected_per_image(k) for k in kinds) for kinds, r in ratio.items())

    def describe(self) -> str:
        lines = [f"{'kind':4s} {'label':15s} {'cost':>9s} {'per':6s} source", "-" * 72]
        for k in KINDS:
            src = SOURCES[k] if self.source == "paper 000 defaults" else self.source
            lines.append(f"{k:4s} {KIND_NAMES[k]:15s} {self.value[k]:9.5f} {self.unit[k]:6s} {src}")
        return "\n".join(lines)


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
