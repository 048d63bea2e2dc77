"""The five label kinds and how each is derived from full panoptic ground truth.

=====  ==========  ==========================================================
kind   name        what an annotator delivers for one image
=====  ==========  ==========================================================
P      panoptic    every pixel: segment id, class, crowd flag (the full label)
I      tags        the set of thing and stuff categories present
B      boxes       one box with class per thing segment (crowd flagged)
S      stuff       a stuff map: stuff pixels labelled, thing pixels left out
PT     points      k clicks per segment, each with class and segment id
=====  ==========  ==========================================================

P, I, B and S are the four supervisions of paper 000 (CQB-Net, "Problem
Formulation"); PT is the point label of paper 003 (FDD), sampled uniform,
centre-biased or border-biased as in its Table 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cqbnet.data.panoptic_format import VOID, Category, PanopticRecord, SegmentInfo, bbox_of
from cqbnet.errors import InputError

KINDS = ("P", "I", "B", "S", "PT")
KIND_NAMES = {"P": "panoptic masks", "I": "image tags", "B": "boxes", "S": "stuff maps", "PT": "points"}
POINT_SAMPLING = ("uniform", "center", "border")


def parse_kind_set(text: str) -> frozenset[str]:
    """``"B+I"`` -> ``{"B", "I"}``; unknown kinds are an error."""
    parts = [p.strip() for p in text.split("+")]
    for p in parts:
        if p not in KINDS:
            raise InputError(f"unknown label kind {p!r}; known kinds: {', '.join(KINDS)}")
    return frozenset(parts)


def kind_set_name(kinds: frozenset[str] | set[str]) -> str:
    """Canonical name of a set of kinds, in the order of KINDS (``"I+B"``)."""
    return "+".join(k for k in KINDS if k in kinds)


@dataclass(frozen=True)
class Box:
    """A thing box in COCO ``[x, y, w, h]`` pixels."""

    category_id: int
    bbox: tuple[int, int, int, int]
    iscrowd: bool = False


@dataclass(frozen=True)
class Point:
    """One clicked point: pixel ``(x, y)`` with the class and segment id under it."""

    x: int
    y: int
    category_id: int
    segment_id: int
    iscrowd: bool = False


def derive_tags(record: PanopticRecord) -> list[int]:
    """Image tags: the sorted category ids of all segments (crowds included)."""
    return sorted({s.category_id for s in record.segments})


def derive_boxes(ids: np.ndarray, record: PanopticRecord, categories: dict[int, Category]) -> list[Box]:
    """One tight box per thing segment, measured on the PNG."""
    boxes = []
    for s in record.segments:
        if categories[s.category_id].isthing:
            boxes.append(Box(s.category_id, bbox_of(ids == s.id), s.iscrowd))
    return boxes


def derive_stuff_map(
    ids: np.ndarray, record: PanopticRecord, categories: dict[int, Category]
) -> tuple[np.ndarray, list[SegmentInfo]]:
    """Stuff map: the panoptic ids of stuff segments kept, thing pixels set to void."""
    stuff = [s for s in record.segments if not categories[s.category_id].isthing]
    keep = np.zeros(ids.shape, dtype=bool)
    for s in stuff:
        keep |= ids == s.id
    out = np.where(keep, ids, VOID).astype(np.uint32)
    return out, [SegmentInfo(s.id, s.category_id, s.iscrowd, s.area, s.bbox) for s in stuff]


def point_weights(mask: np.ndarray, sampling: str) -> np.ndarray:
    """Sampling density over a segment's pixels (paper 003, "Influence of Point Sampling Strategy").

    uniform: equal weight. border: proportional to the squared Euclidean
    distance to the mask centroid. center: that map reversed,
    ``max(d^2) - d^2`` (plus a floor so every pixel stays possible).
    """
    ys, xs = np.nonzero(mask)
    if sampling == "uniform":
        return np.full(len(ys), 1.0 / len(ys))
    d2 = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    if sampling == "border":
        w = d2 + 1e-6
    elif sampling == "center":
        w = d2.max() - d2 + 1e-6
    else:
        raise InputError(f"unknown point sampling {sampling!r}; choose one of {', '.join(POINT_SAMPLING)}")
    return w / w.sum()


def derive_points(
    ids: np.ndarray,
    record: PanopticRecord,
    k: int,
    sampling: str,
    rng: np.random.Generator,
) -> list[Point]:
    """``k`` clicks per segment, drawn without replacement where the segment is large enough."""
    if k < 1:
        raise InputError(f"points per segment must be >= 1, got {k}")
    points = []
    for s in record.segments:
        mask = ids == s.id
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            continue
        w = point_weights(mask, sampling)
        pick = rng.choice(ys.size, size=min(k, ys.size), replace=False, p=w)
        for j in np.sort(pick):
            points.append(Point(int(xs[j]), int(ys[j]), s.category_id, s.id, s.iscrowd))
    return points
