"""How well a set of panoptic labels (a network's predictions, or pseudo labels made from clicks or boxes) fits the
ground truth's things, by object size: where small, crowded objects are lost, merged or spilled over.

For each ground-truth thing (crowd regions left out) of an image, against the labels' thing segments of its class:

* ``best_iou``: the highest mask IoU with one of them (0 when none overlaps); ``matched``: best IoU > 0.5 (PQ's
  match rule, so the matched share is the size bin's recall);
* ``coverage``: the share of its pixels that some labelled thing of its class covers;
* ``box_iou``: IoU of its box with the box of its best segment (what a detector trained on the labels would be
  taught);
* ``merged``: its best segment also overlaps another ground-truth thing of the class by more than half of that
  thing (two touching objects labelled as one).

And for each labelled thing segment: ``precision``, the share of its pixels on a ground-truth thing of its class.
Sizes are binned by the ground-truth thing's area (:data:`SIZE_BINS`, COCO's small < 32^2 split finer, since the
crowded scenes live there); a labelled segment is binned by its own area.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cqbnet.data.panoptic_format import Category, SegmentInfo, bbox_of

SIZE_BINS = (("<64", 0, 64), ("64-256", 64, 256), ("256-1024", 256, 1024), (">=1024", 1024, float("inf")))


def size_bin(area: float) -> str:
    """The name of the bin of :data:`SIZE_BINS` an area in pixels falls in."""
    return next(name for name, lo, hi in SIZE_BINS if lo <= area < hi)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two COCO ``[x, y, w, h]`` pixel boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class SizeFit:
    """Accumulates :func:`image_fit` over images; :meth:`summary` gives the table per size bin."""

    things: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))
    segments: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(
        self,
        gt_ids: np.ndarray,
        gt_segments: list[SegmentInfo],
        ids: np.ndarray,
        segments: list[SegmentInfo],
        categories: dict[int, Category],
    ) -> None:
        things, precision = image_fit(gt_ids, gt_segments, ids, segments, categories)
        for t in things:
            self.things[t["bin"]].append(t)
        for b, p in precision:
            self.segments[b].append(p)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per size bin (and ``all``): things, matched share, mean best IoU, coverage, box IoU, merged share, and the
        labelled segments' count and mean precision."""
        out = {}
        names = [name for name, _, _ in SIZE_BINS]
        everything = [t for b in names for t in self.things.get(b, [])]
        all_segments = [p for b in names for p in self.segments.get(b, [])]
        for name, things, segs in [
            *((b, self.things.get(b, []), self.segments.get(b, [])) for b in names),
            ("all", everything, all_segments),
        ]:
            row: dict[str, Any] = {"things": len(things), "segments": len(segs)}
            for key in ("matched", "best_iou", "coverage", "box_iou", "merged"):
                row[key] = float(np.mean([t[key] for t in things])) if things else None
            row["precision"] = float(np.mean(segs)) if segs else None
            out[name] = row
        return out


def image_fit(
    gt_ids: np.ndarray,
    gt_segments: list[SegmentInfo],
    ids: np.ndarray,
    segments: list[SegmentInfo],
    categories: dict[int, Category],
) -> tuple[list[dict[str, Any]], list[tuple[str, float]]]:
    """One image: a record per ground-truth thing (see the module docstring) and (size bin, precision) per labelled
    thing segment. ``gt_ids`` and ``ids`` (H, W) hold the segment ids of ``gt_segments`` and ``segments``."""
    if gt_ids.shape != ids.shape:
        raise ValueError(f"label map {ids.shape} and ground truth {gt_ids.shape} differ in size")
    gt_things = [s for s in gt_segments if categories[s.category_id].isthing and not s.iscrowd]
    labelled = [s for s in segments if s.category_id in categories and categories[s.category_id].isthing]
    gt_masks = {s.id: gt_ids == s.id for s in gt_things}
    masks = {s.id: ids == s.id for s in labelled}
    records = []
    for g in gt_things:
        gm = gt_masks[g.id]
        area = int(gm.sum())
        if area == 0:
            continue
        same = [s for s in labelled if s.category_id == g.category_id]
        best, best_seg = 0.0, None
        covered = np.zeros_like(gm)
        for s in same:
            m = masks[s.id]
            inter = int((gm & m).sum())
            if inter == 0:
                continue
            covered |= m
            iou = inter / int((gm | m).sum())
            if iou > best:
                best, best_seg = iou, s
        merged = False
        b_iou = 0.0
        if best_seg is not None:
            m = masks[best_seg.id]
            b_iou = box_iou(bbox_of(gm), bbox_of(m))
            for other in gt_things:
                if other.id != g.id and other.category_id == g.category_id:
                    om = gt_masks[other.id]
                    n = int(om.sum())
                    if n and int((om & m).sum()) > n / 2:
                        merged = True
                        break
        records.append(
            {
                "bin": size_bin(area),
                "area": area,
                "matched": float(best > 0.5),
                "best_iou": best,
                "coverage": float((gm & covered).sum()) / area,
                "box_iou": b_iou,
                "merged": float(merged),
            }
        )
    precision = []
    for s in labelled:
        m = masks[s.id]
        n = int(m.sum())
        if n == 0:
            continue
        on = np.zeros_like(m)
        for g in gt_things:
            if g.category_id == s.category_id:
                on |= gt_masks[g.id]
        precision.append((size_bin(n), float((m & on).sum()) / n))
    return records, precision
