"""Panoptic quality, numerically identical to the COCO reference (panopticapi).

PQ = sum_{(p,g) in TP} IoU(p,g) / (|TP| + |FP|/2 + |FN|/2), and PQ = SQ x RQ
(Kirillov et al., "Panoptic Segmentation", CVPR 2019, Eq. 1-2). Matching rules
follow panopticapi's ``pq_compute`` exactly:

* a (ground truth, prediction) pair of the same category matches when
  IoU > 0.5, where the union leaves out the prediction's pixels on GT void;
* crowd GT segments are never matched; an unmatched prediction is not a false
  positive when more than half of it lies on void or on the crowd region of its
  own category (the last crowd segment of that category, as in the reference);
* class averages run over categories with at least one TP, FP or FN.

The reference builds a ``uint64`` key per pixel and calls ``np.unique`` (a
sort). Here each id map is turned into dense segment indices through a lookup
table and the joint histogram is taken with OpenCV's ``calcHist`` (or
``np.bincount`` for images with more than 254 segments): linear time, one pass.
The same histogram gives the semantic confusion matrix for mIoU.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cqbnet.data.panoptic_format import (
    MAX_ID,
    VOID,
    Category,
    SegmentInfo,
    check_size,
    load_panoptic_json,
    parse_segments,
    read_panoptic_png,
)
from cqbnet.errors import InputError, where

_UNKNOWN = 1  # dense index of ids absent from the JSON; 0 is void, segments start at 2
_tls = threading.local()


def _lut(dtype: type) -> np.ndarray:
    """A per-thread 2^24-entry table from segment id to dense index (kept all-unknown between uses)."""
    key = f"lut_{np.dtype(dtype).name}"
    lut = getattr(_tls, key, None)
    if lut is None:
        lut = np.full(MAX_ID + 1, _UNKNOWN, dtype=dtype)
        lut[VOID] = 0
        setattr(_tls, key, lut)
    return lut


def _dense_index(ids: np.ndarray, seg_ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W) dense indices: void 0, unknown 1, seg_ids[k] -> k + 2.

    Maps with small ids (below 256, as a model's output usually is) go through a
    256-entry ``cv2.LUT``; others through a per-thread 2^24-entry table.
    """
    n = len(seg_ids)
    dtype = np.uint8 if n + 2 <= 256 else np.uint16 if n + 2 <= 65536 else None
    if dtype is None:
        raise InputError(f"more than {65536 - 2} segments in one image")
    if ids.dtype != np.uint32:
        lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
        if lo < 0 or hi > MAX_ID:
            raise InputError(f"segment ids must lie in [0, {MAX_ID}]")
        if hi < 256 and dtype == np.uint8:
            table = np.full(256, _UNKNOWN, dtype=np.uint8)
            table[VOID] = 0
            small = seg_ids < 256
            table[seg_ids[small]] = np.arange(2, n + 2, dtype=np.uint8)[small]
            ids8 = ids if ids.dtype == np.uint8 else ids.astype(np.uint8)
            return cv2.LUT(np.ascontiguousarray(ids8), table)
        ids = ids.astype(np.uint32)
    lut = _lut(dtype)
    lut[seg_ids] = np.arange(2, n + 2, dtype=dtype)
    try:
        return np.take(lut, ids)
    finally:
        lut[seg_ids] = _UNKNOWN


def _joint_histogram(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> np.ndarray:
    """Counts of (a, b) index pairs, an (na, nb) int64 matrix."""
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        h = cv2.calcHist([a, b], [0, 1], None, [na, nb], [0, na, 0, nb])
        return h.astype(np.int64)
    joint = a.astype(np.int64).ravel() * nb + b.ravel()
    return np.bincount(joint, minlength=na * nb).reshape(na, nb)


def _index_values(values: np.ndarray, seg_ids: np.ndarray) -> np.ndarray:
    """Segment ids -> dense indices (void 0, unknown 1, seg_ids[k] -> k + 2) for values already range-checked.

    Meant for short arrays (one value per run): ids below 2^16 go through a small
    table, larger ones through the per-thread 2^24-entry table.
    """
    top = int(values.max()) if values.size else 0
    if top < 65536:
        table = np.full(top + 1, _UNKNOWN, dtype=np.int64)
        small = seg_ids <= top
        table[seg_ids[small]] = np.flatnonzero(small) + 2
        table[VOID] = 0
        return table[values]
    lut = _lut(np.int32)
    lut[seg_ids] = np.arange(2, len(seg_ids) + 2, dtype=np.int32)
    try:
        return lut[values].astype(np.int64)
    finally:
        lut[seg_ids] = _UNKNOWN


_MAX_RUN_FRACTION = 0.25  # above this many runs per pixel the dense path is faster


def _pair_histogram(
    gt_ids: np.ndarray,
    g_id: np.ndarray,
    pred_ids: np.ndarray,
    p_id: np.ndarray,
    where_gt: str = "",
    where_pred: str = "",
) -> np.ndarray:
    """(ng + 2, np + 2) counts of (GT dense index, prediction dense index) pixel pairs.

    Panoptic maps are piecewise constant, so the pixels are first cut into runs
    along the raster order over which neither map changes (a few thousand for a
    COCO image, against a few hundred thousand pixels); only the runs' values
    are looked up, and the histogram is a weighted count over runs. Maps too
    fragmented for that to pay (noise) take the per-pixel path.
    """
    ng, np_ = len(g_id) + 2, len(p_id) + 2
    for ids, at in ((gt_ids, where_gt), (pred_ids, where_pred)):
        if ids.dtype.kind not in "iu":
            raise InputError(f"{at}segment id map must be an integer array, got {ids.dtype}")
    g, p = gt_ids.ravel(), pred_ids.ravel()
    if g.size == 0:
        return np.zeros((ng, np_), dtype=np.int64)
    change = g[1:] != g[:-1]  # (N - 1,) a run ends before pixel i + 1
    change |= p[1:] != p[:-1]
    n_runs = int(np.count_nonzero(change)) + 1
    fragmented = n_runs > _MAX_RUN_FRACTION * g.size
    if not fragmented:
        starts = np.empty(n_runs, dtype=np.intp)  # (R,)
        starts[0] = 0
        starts[1:] = np.flatnonzero(change) + 1
        g, p = g[starts], p[starts]  # (R,) every pixel's value is its run's
    for values, at in ((g, where_gt), (p, where_pred)):
        if (values.dtype.kind == "i" and values.min() < 0) or values.max() > MAX_ID:
            raise InputError(f"{at}segment ids must lie in [0, {MAX_ID}]")
    if fragmented:
        return _joint_histogram(_dense_index(gt_ids, g_id), _dense_index(pred_ids, p_id), ng, np_)
    lengths = np.diff(starts, append=gt_ids.size)  # (R,)
    joint = _index_values(g, g_id) * np_ + _index_values(p, p_id)  # (R,)
    hist = np.bincount(joint, weights=lengths, minlength=ng * np_)
    return hist.astype(np.int64).reshape(ng, np_)


def _segment_row(s: SegmentInfo | dict) -> tuple[int, int, bool, int]:
    """(id, category id, crowd flag, JSON area or -1) of a SegmentInfo or a JSON dict."""
    if isinstance(s, SegmentInfo):
        return s.id, s.category_id, s.iscrowd, -1 if s.area is None else s.area
    area = s.get("area")
    return int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", 0)), -1 if area is None else int(area)


def _segment_arrays(
    segments: Sequence[SegmentInfo | dict],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segment ids, category ids, crowd flags and JSON areas (-1 when absent) as (n,) arrays.

    Accepts SegmentInfo objects or JSON dicts.
    """
    rows = [_segment_row(s) for s in segments]
    table = np.array(rows, dtype=np.int64).reshape(-1, 4).T  # (4, n)
    return table[0], table[1], table[2].astype(bool), table[3]


@dataclass
class ImageStats:
    """What one image adds, as short lists (cheap to send between processes).

    TPs in GT order (category index and IoU), the category index of each FN and
    FP, and the non-zero cells of the semantic confusion (GT category x
    predicted category, the last column being predicted void).
    """

    tp_cat: np.ndarray  # (T,) int64
    tp_iou: np.ndarray  # (T,) float64
    fn_cat: np.ndarray  # (F,) int64
    fp_cat: np.ndarray  # (P,) int64
    conf_idx: np.ndarray  # (K,) int64 flat index into the (C, C + 1) confusion
    conf_val: np.ndarray  # (K,) int64 pixel counts
    warnings: tuple[str, ...] = ()  # ground-truth defects passed over as panopticapi does (not strict)


def image_counts(s: ImageStats, n: int) -> np.ndarray:
    """(C, 4) float64: one image's IoU sum, TP, FP and FN per category index."""
    return np.stack(
        [
            np.bincount(s.tp_cat, weights=s.tp_iou, minlength=n),
            np.bincount(s.tp_cat, minlength=n),
            np.bincount(s.fp_cat, minlength=n),
            np.bincount(s.fn_cat, minlength=n),
        ],
        axis=1,
    ).astype(np.float64)


def pq_arrays(counts: np.ndarray, isthing: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """PQ, SQ, RQ (fractions) and the number of categories averaged, from summed counts of shape (..., C, 4)
    [IoU sum, TP, FP, FN]: panopticapi's ``pq_average`` over the categories (those with ``isthing`` where given)
    that have a TP, FP or FN, for every leading index at once (0 where no category counts)."""
    iou, tp, fp, fn = (counts[..., i] for i in range(4))  # (..., C) each
    keep = (tp + fp + fn) > 0
    if isthing is not None:
        keep = keep & np.asarray(isthing, dtype=bool)
    n = keep.sum(axis=-1)
    denom = np.where(keep, tp + 0.5 * fp + 0.5 * fn, 1.0)
    sq_c = np.divide(iou, tp, out=np.zeros_like(iou), where=tp > 0)
    out = {"n": n}
    for name, per_class in (("pq", iou / denom), ("sq", sq_c), ("rq", tp / denom)):
        out[name] = np.where(keep, per_class, 0.0).sum(axis=-1) / np.maximum(n, 1)
    return out


def pq_from_counts(counts: np.ndarray, isthing: np.ndarray | None = None) -> dict[str, float]:
    """:func:`pq_arrays` of one (C, 4) table of summed counts, as plain numbers."""
    r = pq_arrays(counts, isthing)
    return {"pq": float(r["pq"]), "sq": float(r["sq"]), "rq": float(r["rq"]), "n": int(r["n"])}


class PanopticWarning(UserWarning):
    """Ground truth that panopticapi accepts but that is probably wrong (an empty segment, a wrong area)."""


def _unknown_ids(ids: np.ndarray, known: np.ndarray) -> list[int]:
    known_set = set(known.tolist())
    return [int(x) for x in np.unique(ids) if x != VOID and int(x) not in known_set]


def _category_positions(
    seg_ids: np.ndarray, cats: np.ndarray, cat_index: dict[int, int], label: str, path: Any, image_id: Any
) -> np.ndarray:
    """Check one side's segments (ids unique and in range, categories known); their category positions, (n,)."""
    id_list = seg_ids.tolist()
    if len(set(id_list)) != len(id_list):
        dup = next(x for x in id_list if id_list.count(x) > 1)
        raise InputError(f"{where(path, image_id, dup)}duplicate segment id in the {label}")
    if seg_ids.size and (seg_ids.min() <= VOID or seg_ids.max() > MAX_ID):
        bad = next(x for x in id_list if not VOID < x <= MAX_ID)
        raise InputError(f"{where(path, image_id, bad)}segment id out of range")
    positions = [cat_index.get(c, -1) for c in cats.tolist()]
    if -1 in positions:
        k = positions.index(-1)
        raise InputError(f"{where(path, image_id, id_list[k])}unknown category_id {int(cats[k])}")
    return np.asarray(positions, dtype=np.int64)


def _false_positives(
    p_ci: np.ndarray,
    p_cat: np.ndarray,
    p_area: np.ndarray,
    p_matched: np.ndarray,
    void_pred: np.ndarray,
    inter: np.ndarray,
    g_cat: np.ndarray,
    g_crowd_unmatched: np.ndarray,
) -> np.ndarray:
    """Category positions of the unmatched predictions that count as false positives, (P,).

    As panopticapi: an unmatched prediction is ignored when more than half of it lies on GT void plus the
    crowd region of its own category, that region being the last crowd segment of the category.
    """
    unmatched = np.flatnonzero(~p_matched)  # (U,)
    ignored = void_pred[unmatched]  # (U,) a copy
    if g_crowd_unmatched.any():
        crowd_of_cat = {int(g_cat[k]): int(k) for k in np.flatnonzero(g_crowd_unmatched)}  # the last one wins
        rows = np.asarray([crowd_of_cat.get(c, -1) for c in p_cat[unmatched].tolist()], dtype=np.int64)
        has = rows >= 0
        ignored[has] += inter[rows[has], unmatched[has]]
    return p_ci[unmatched[ignored / p_area[unmatched] <= 0.5]]


def image_stats(
    gt_ids: np.ndarray,
    gt_segments: Sequence[SegmentInfo | dict],
    pred_ids: np.ndarray,
    pred_segments: Sequence[SegmentInfo | dict],
    cat_index: dict[int, int],
    image_id: Any = None,
    gt_path: Any = None,
    pred_path: Any = None,
    strict: bool = False,
) -> ImageStats:
    """PQ statistics of one image (panopticapi's ``pq_compute_single_core`` body).

    ``cat_index`` maps category id -> position in the output arrays. Raises
    :class:`InputError` where panopticapi fails: a size mismatch, ids in a PNG that the segments do not
    list, predicted segments without pixels, unknown categories. Two ground-truth defects panopticapi
    passes over are, by default, passed over the same way and noted in ``warnings``: a listed segment with
    no pixel (a false negative, or a crowd region of no area) and a JSON area that disagrees with the PNG
    (panopticapi takes a GT segment's area from the JSON, so the IoU does too). ``strict`` raises on those.
    """
    if gt_ids.shape != pred_ids.shape:
        raise InputError(
            f"{where(pred_path, image_id)}prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]}, "
            f"ground truth is {gt_ids.shape[1]}x{gt_ids.shape[0]}"
        )
    g_id, g_cat, g_crowd, g_json_area = _segment_arrays(gt_segments)
    p_id, p_cat, _, _ = _segment_arrays(pred_segments)
    g_ci = _category_positions(g_id, g_cat, cat_index, "ground truth", gt_path, image_id)
    p_ci = _category_positions(p_id, p_cat, cat_index, "prediction", pred_path, image_id)

    ng, np_ = len(g_id), len(p_id)
    hist = _pair_histogram(
        gt_ids, g_id, pred_ids, p_id, where(gt_path, image_id), where(pred_path, image_id)
    )  # (ng+2, np+2)

    if hist[_UNKNOWN].any():
        raise InputError(f"{where(gt_path, image_id, _unknown_ids(gt_ids, g_id)[0])}in the PNG but not in the JSON")
    if hist[:, _UNKNOWN].any():
        raise InputError(f"{where(pred_path, image_id, _unknown_ids(pred_ids, p_id)[0])}in the PNG but not in the JSON")
    g_area = hist[2:].sum(axis=1)  # (ng,)
    p_area = hist[:, 2:].sum(axis=0)  # (np,)
    notes: list[str] = []
    for area, seg_ids, path, side in ((g_area, g_id, gt_path, "gt"), (p_area, p_id, pred_path, "pred")):
        for k in np.flatnonzero(area == 0):
            text = f"{where(path, image_id, int(seg_ids[k]))}in the JSON but has no pixel in the PNG"
            if strict or side == "pred":
                raise InputError(text)
            notes.append(f"{text}: counted as panopticapi does (a false negative unless crowd)")
    for k in np.flatnonzero((g_json_area >= 0) & (g_json_area != g_area) & (g_area > 0)):
        text = (
            f"{where(gt_path, image_id, int(g_id[k]))}JSON area {int(g_json_area[k])} but {int(g_area[k])} "
            "pixels in the PNG"
        )
        if strict:
            raise InputError(text)
        notes.append(f"{text}: the JSON area is used in the IoU, as panopticapi does")
    union_area = np.where(g_json_area >= 0, g_json_area, g_area)  # panopticapi's GT area: the JSON's, when given

    inter = hist[2:, 2:]  # (ng, np) intersections
    void_pred = hist[VOID, 2:]  # (np,) prediction pixels on GT void
    n_cat = len(cat_index)

    # Matching: same category, GT not crowd, IoU > 0.5 (unique by construction).
    same = (g_cat[:, None] == p_cat[None, :]) & ~g_crowd[:, None] & (inter > 0)
    union = union_area[:, None] + p_area[None, :] - inter - void_pred[None, :]
    impossible = same & (inter > union)  # a JSON area too small for the pixels: an IoU above 1, a PQ above 100%
    if impossible.any():
        k = int(np.argwhere(impossible)[0][0])
        raise InputError(
            f"{where(gt_path, image_id, int(g_id[k]))}JSON area {int(g_json_area[k])} but {int(g_area[k])} pixels in "
            "the PNG: the IoU taken with the JSON's area would exceed 1; correct or drop the JSON area"
        )
    iou = np.where(same, inter / np.maximum(union, 1), 0.0)
    gi, pi = np.nonzero(iou > 0.5)  # row-major: GT id order, as the reference's sorted keys

    g_matched = np.zeros(ng, dtype=bool)
    g_matched[gi] = True
    p_matched = np.zeros(np_, dtype=bool)
    p_matched[pi] = True
    fn_cat = g_ci[~g_matched & ~g_crowd]
    fp_cat = _false_positives(p_ci, p_cat, p_area, p_matched, void_pred, inter, g_cat, g_crowd & ~g_matched)

    # Semantic confusion cells (GT void rows dropped; prediction void is the last column).
    cells = np.concatenate([hist[2:, :1], hist[2:, 2:]], axis=1)  # (ng, np + 1)
    r, c = np.nonzero(cells)
    cols = np.concatenate([[n_cat], p_ci])
    return ImageStats(
        tp_cat=g_ci[gi],
        tp_iou=iou[gi, pi],
        fn_cat=fn_cat,
        fp_cat=fp_cat,
        conf_idx=g_ci[r] * (n_cat + 1) + cols[c],
        conf_val=cells[r, c],
        warnings=tuple(notes),
    )


@dataclass
class PQResult:
    """PQ, SQ, RQ (fractions in [0, 1]) for all, things and stuff, and per class; plus mIoU."""

    all: dict[str, float]
    things: dict[str, float]
    stuff: dict[str, float]
    per_class: dict[int, dict[str, float]]
    miou: float
    per_class_iou: dict[int, float]
    num_images: int
    extra: dict[str, Any] = field(default_factory=dict)
    categories: dict[int, Category] = field(default_factory=dict)  # for names in tables
    image_counts: np.ndarray | None = None  # (N, C, 4) per image, when the metric kept them (keep_images)

    def summary(self) -> dict[str, float]:
        """The headline numbers as one flat dict (fractions): pq, sq, rq, each also _th and _st, miou, images."""
        out: dict[str, float] = {}
        for suffix, d in (("", self.all), ("_th", self.things), ("_st", self.stuff)):
            for k in ("pq", "sq", "rq"):
                out[k + suffix] = d[k]
        out["miou"] = self.miou
        out["images"] = self.num_images
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "All": self.all,
            "Things": self.things,
            "Stuff": self.stuff,
            "per_class": {str(k): v for k, v in self.per_class.items()},
            "mIoU": self.miou,
            "per_class_iou": {str(k): v for k, v in self.per_class_iou.items()},
            "num_images": self.num_images,
            **self.extra,
        }

    def table(self, categories: dict[int, Category] | None = None, per_class: bool = False) -> str:
        """The PQ summary as a text table (percent), optionally with one row per class."""
        categories = categories or self.categories
        lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
        for name, r in (("All", self.all), ("Things", self.things), ("Stuff", self.stuff)):
            lines.append(f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} {r['n']:5d}")
        lines.append(f"mIoU {100 * self.miou:.1f} over {len(self.per_class_iou)} classes, {self.num_images} images")
        if per_class:
            lines.append("")
            lines.append(f"{'class':20s} {'PQ':>5s} {'SQ':>5s} {'RQ':>5s} {'TP':>5s} {'FP':>5s} {'FN':>5s} {'IoU':>5s}")
            for cid, r in self.per_class.items():
                name = categories[cid].name if categories and cid in categories else str(cid)
                iou = self.per_class_iou.get(cid, float("nan"))
                lines.append(
                    f"{name[:20]:20s} {100 * r['pq']:5.1f} {100 * r['sq']:5.1f} {100 * r['rq']:5.1f} "
                    f"{r['tp']:5d} {r['fp']:5d} {r['fn']:5d} {100 * iou:5.1f}"
                )
        return "\n".join(lines)


class PanopticQuality:
    """Accumulates PQ statistics over images; the in-memory API the trainer uses.

    >>> pq = PanopticQuality(categories)
    >>> pq.update(gt_ids, gt_segments, pred_ids, pred_segments)
    >>> result = pq.compute()
    """

    def __init__(self, categories: dict[int, Category], strict: bool = False, keep_images: bool = False):
        self.categories = dict(categories)
        self.cat_index = {cid: i for i, cid in enumerate(self.categories)}
        self.strict = strict  # raise on ground-truth defects panopticapi passes over (see image_stats)
        self.keep_images = keep_images  # keep each image's per-class counts (for a bootstrap over images)
        self.reset()

    def reset(self) -> None:
        n = len(self.cat_index)
        self.iou = np.zeros(n)
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)
        self.confusion = np.zeros((n, n + 1), dtype=np.int64)
        self.num_images = 0
        self._pending: list[ImageStats] = []
        self._images: list[np.ndarray] = []

    def add(self, s: ImageStats) -> None:
        """Add one image's statistics (summed in batches, in the order given); its notes become warnings."""
        for text in s.warnings:
            warnings.warn(text, PanopticWarning, stacklevel=2)
        self._pending.append(s)
        self.num_images += 1
        if self.keep_images:
            self._images.append(image_counts(s, len(self.cat_index)))
        if len(self._pending) >= 256:
            self._flush()

    def _flush(self) -> None:
        """Fold the pending images into the totals with one weighted count per statistic."""
        if not self._pending:
            return
        n = len(self.cat_index)
        p, self._pending = self._pending, []

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(s, name) for s in p])

        tp_cat = cat("tp_cat")
        self.iou += np.bincount(tp_cat, weights=cat("tp_iou"), minlength=n)
        self.tp += np.bincount(tp_cat, minlength=n)
        self.fn += np.bincount(cat("fn_cat"), minlength=n)
        self.fp += np.bincount(cat("fp_cat"), minlength=n)
        conf = np.bincount(cat("conf_idx"), weights=cat("conf_val"), minlength=self.confusion.size)
        self.confusion += conf.astype(np.int64).reshape(self.confusion.shape)

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[SegmentInfo | dict],
        pred_ids: np.ndarray,
        pred_segments: Sequence[SegmentInfo | dict],
        image_id: Any = None,
    ) -> None:
        """Add one image: (H, W) integer id maps and their segment lists."""
        self.add(
            image_stats(gt_ids, gt_segments, pred_ids, pred_segments, self.cat_index, image_id, strict=self.strict)
        )

    def image_counts(self) -> np.ndarray:
        """(N, C, 4) float64: each image's per-class IoU sum, TP, FP and FN, in the order the images came
        (needs ``keep_images=True``); summed over images they give this metric's totals exactly."""
        if not self.keep_images:
            raise ValueError("PanopticQuality(keep_images=True) keeps the per-image counts")
        n = len(self.cat_index)
        return np.stack(self._images) if self._images else np.zeros((0, n, 4))

    def _average(self, isthing: bool | None) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Class average as panopticapi's ``PQStat.pq_average``."""
        self._flush()
        pq = sq = rq = 0.0
        n = 0
        per_class: dict[int, dict[str, float]] = {}
        for cid, cat in self.categories.items():
            if isthing is not None and cat.isthing != isthing:
                continue
            i = self.cat_index[cid]
            iou, tp, fp, fn = float(self.iou[i]), int(self.tp[i]), int(self.fp[i]), int(self.fn[i])
            if tp + fp + fn == 0:
                per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            pq_c, sq_c, rq_c = iou / denom, (iou / tp if tp else 0.0), tp / denom
            per_class[cid] = {"pq": pq_c, "sq": sq_c, "rq": rq_c, "tp": tp, "fp": fp, "fn": fn}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class

    def semantic_iou(self) -> tuple[float, dict[int, float]]:
        """Per-class IoU from the pixel confusion (GT void ignored; predicted void counts as a miss).

        mIoU averages over classes present in the ground truth or the prediction.
        """
        self._flush()
        conf = self.confusion
        n = conf.shape[0]
        tp = np.diag(conf[:, :n]).astype(np.float64)
        gt = conf.sum(axis=1)
        pred = conf[:, :n].sum(axis=0)
        union = gt + pred - tp
        per: dict[int, float] = {}
        for cid, i in self.cat_index.items():
            if union[i] > 0:
                per[cid] = float(tp[i] / union[i])
        miou = float(np.mean(list(per.values()))) if per else 0.0
        return miou, per

    def compute(self) -> PQResult:
        all_, per_class = self._average(None)
        things, _ = self._average(True)
        stuff, _ = self._average(False)
        miou, per_iou = self.semantic_iou()
        kept = self.image_counts() if self.keep_images else None
        return PQResult(
            all_,
            things,
            stuff,
            per_class,
            miou,
            per_iou,
            self.num_images,
            categories=self.categories,
            image_counts=kept,
        )


def _pairs(gt_set, pred_set, pred_json: Path, strict: bool) -> list:
    """(ground truth, prediction) records per GT image; predictions of other images are ignored, as
    panopticapi does (with a warning), or refused when ``strict``."""
    preds = pred_set.by_image_id()
    pairs = []
    for r in gt_set.records:
        p = preds.get(r.image_id)
        if p is None:
            raise InputError(f"{where(pred_json, r.image_id)}no prediction for this image")
        pairs.append((r, p))
    extra = sorted(set(preds) - {r.image_id for r in gt_set.records})
    if extra:
        text = f"{where(pred_json, extra[0])}prediction for an image that is not in the ground truth"
        if strict:
            raise InputError(text)
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        warnings.warn(f"{text}{more}: ignored, as panopticapi does", PanopticWarning, stacklevel=3)
    return pairs


def evaluate_panoptic_files(
    gt_json: str | os.PathLike,
    pred_json: str | os.PathLike,
    gt_dir: str | os.PathLike | None = None,
    pred_dir: str | os.PathLike | None = None,
    categories: dict[int, Category] | str | os.PathLike | None = None,
    workers: int | None = None,
    compute_ap: bool = False,
    strict: bool = False,
) -> PQResult:
    """PQ of a prediction folder against a GT folder, both in COCO panoptic format.

    Arguments mirror panopticapi's ``pq_compute``: folders default to the JSON
    path without ``.json``; categories come from the GT JSON unless given.
    ``workers`` processes decode and count in parallel (default: CPU count);
    the sums are taken in image order, so the result does not depend on
    ``workers``. With ``compute_ap`` the thing segments are also scored as
    instances (box and mask AP through pycocotools), in ``result.extra``. Ground-truth defects that
    panopticapi passes over give a :class:`PanopticWarning` (errors with ``strict``; see :func:`image_stats`).
    """
    from cqbnet.evaluation.coco_ap import InstanceCollector

    # segments are checked per image by the workers (in parallel), not here
    gt_set = load_panoptic_json(gt_json, gt_dir, categories=categories, lazy_segments=True)
    pred_set = load_panoptic_json(pred_json, pred_dir, categories=gt_set.categories, lazy_segments=True)
    for d, j in ((gt_set.png_dir, gt_json), (pred_set.png_dir, pred_json)):
        if not Path(d).is_dir():
            raise InputError(f"{d}: PNG folder for {j} not found")
    metric = PanopticQuality(gt_set.categories, strict)
    instances = InstanceCollector(gt_set.categories) if compute_ap else None
    pairs = [
        (g, gt_set.png_path(g), pred_set.png_path(p), p) for g, p in _pairs(gt_set, pred_set, Path(pred_json), strict)
    ]
    state = (metric.cat_index, instances, pairs, gt_set.categories, Path(gt_json), Path(pred_json), strict)
    for stats, enc in _ordered_map(_file_task, range(len(pairs)), workers, state):
        metric.add(stats)
        if instances is not None:
            instances.add_encoded(enc)
    result = metric.compute()
    if instances is not None:
        result.extra.update(instances.compute())
    return result


_worker_state: tuple | None = None


def _file_task(index: int) -> tuple[ImageStats, tuple | None]:
    """Decode one GT/prediction pair and count it (runs in a worker process)."""
    cat_index, instances, pairs, categories, gt_json, pred_json, strict = _worker_state
    g, gp, pp, p = pairs[index]
    g_segs, p_segs = (
        r.segments if r.raw_segments is None else parse_segments(r.raw_segments, categories, where(j, r.image_id))
        for r, j in ((g, gt_json), (p, pred_json))
    )
    gt_ids = read_panoptic_png(gp)
    pred_ids = read_panoptic_png(pp)
    check_size(gt_ids, g, gp)
    stats = image_stats(gt_ids, g_segs, pred_ids, p_segs, cat_index, g.image_id, gp, pp, strict)
    enc = instances.encode(g.image_id, gt_ids, g_segs, pred_ids, p_segs) if instances is not None else None
    return stats, enc


_shared_blocks: tuple | None = None  # (blocks, counter): inherited by the forked workers


def _next_block(counter, total: int) -> int | None:
    """Take the next untaken block index from the counter shared by all processes, or None when none is left."""
    with counter.get_lock():
        b = counter.value
        if b >= total:
            return None
        counter.value = b + 1
    return b


def _take_blocks(fn) -> dict[int, list]:
    """Compute blocks taken from the shared counter until none is left; {block index: results}."""
    blocks, counter = _shared_blocks
    out = {}
    while (b := _next_block(counter, len(blocks))) is not None:
        out[b] = [fn(t) for t in blocks[b]]
    return out


def _worker_main(fn, conn) -> None:
    """A forked worker: take blocks until none is left, then send ("ok", {block: results}) or ("error", exc)."""
    try:
        result = ("ok", _take_blocks(fn))
    except BaseException as e:  # raised again in the parent, as the serial path raises it
        result = ("error", e)
    conn.send(result)
    conn.close()


def _ordered_map(fn, tasks, workers: int | None, state: tuple) -> Iterable:
    """Map ``fn`` over ``tasks`` and give the results in task order, with ``workers - 1`` forked workers helping.

    The tasks are cut into blocks; this process and the workers take the next untaken block from one
    shared counter until none is left, so a process that runs slower (this one also unpickles the
    workers' results) simply takes fewer blocks. Each worker sends its results once, at the end, through
    its own pipe. The workers inherit ``state`` and the blocks through fork, so no task is pickled. The
    parent starts no helper threads (a pool starts three), and a worker that dies before sending loses
    nothing: the blocks no process returned are computed here, with a warning.
    """
    global _worker_state, _shared_blocks
    tasks = list(tasks)
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    _worker_state = state
    procs: list = []
    try:
        if workers <= 1 or "fork" not in mp.get_all_start_methods():
            yield from map(fn, tasks)
            return
        ctx = mp.get_context("fork")
        size = max(1, len(tasks) // (workers * 16))
        blocks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
        _shared_blocks = (blocks, ctx.Value("l", 0))
        for _ in range(workers - 1):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, args=(fn, send), daemon=True)
            proc.start()
            send.close()  # the worker holds the only write end: its exit without a message is EOF here
            procs.append((proc, recv))
        done = _take_blocks(fn)
        for proc, recv in procs:
            try:
                status, value = recv.recv()
            except EOFError:
                proc.join()
                warnings.warn(
                    f"an evaluation worker ended (exit code {proc.exitcode}) without its results; "
                    "its images are scored in the main process",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if status == "error":
                raise value
            done.update(value)
        for b in range(len(blocks)):
            yield from done[b] if b in done else map(fn, blocks[b])
    finally:
        for proc, recv in procs:
            recv.close()
            if proc.is_alive():
                proc.terminate()
            proc.join()
        _worker_state = None
        _shared_blocks = None
