"""Perturbed predictions from ground truth, for testing and benchmarking evaluators.

Each perturbation mimics an error a panoptic model makes: shifted or eroded
masks, two instances merged, one split, a wrong class, a missed segment, an
extra (hallucinated) segment, and segments spilling onto void and crowd
regions. :func:`perturb` applies a seeded random mix of them.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from cqbnet.data.panoptic_format import MAX_ID, VOID, Category, SegmentInfo

Pred = tuple[np.ndarray, list[SegmentInfo]]


def _copy(ids: np.ndarray, segs: list[SegmentInfo]) -> Pred:
    return ids.copy(), [SegmentInfo(s.id, s.category_id, False, score=float(s.score or 1.0)) for s in segs]


def _fresh_id(segs: list[SegmentInfo], rng: np.random.Generator) -> int:
    used = {s.id for s in segs}
    while True:
        i = int(rng.integers(1, MAX_ID))
        if i not in used:
            return i


def _prune(ids: np.ndarray, segs: list[SegmentInfo]) -> Pred:
    present = set(np.unique(ids).tolist())
    return ids, [s for s in segs if s.id in present]


def shift(ids, segs, cats, rng) -> Pred:
    dy, dx = rng.integers(-3, 4, 2)
    return _prune(np.roll(ids, (int(dy), int(dx)), axis=(0, 1)), segs)


def erode(ids, segs, cats, rng) -> Pred:
    out = ids.copy()
    for s in segs:
        if rng.random() < 0.5:
            m = (ids == s.id).astype(np.uint8)
            e = cv2.erode(m, np.ones((3, 3), np.uint8), iterations=int(rng.integers(1, 4)))
            out[(m > 0) & (e == 0)] = VOID
    return _prune(out, segs)


def merge(ids, segs, cats, rng) -> Pred:
    by_cat: dict[int, list[SegmentInfo]] = {}
    for s in segs:
        by_cat.setdefault(s.category_id, []).append(s)
    groups = [g for g in by_cat.values() if len(g) >= 2]
    if not groups:
        return ids, segs
    g = groups[int(rng.integers(len(groups)))]
    out = ids.copy()
    out[ids == g[1].id] = g[0].id
    return _prune(out, segs)


def split(ids, segs, cats, rng) -> Pred:
    if not segs:
        return ids, segs
    s = segs[int(rng.integers(len(segs)))]
    ys, xs = np.nonzero(ids == s.id)
    if len(xs) < 2:
        return ids, segs
    cut = np.median(xs)
    out = ids.copy()
    new = _fresh_id(segs, rng)
    out[ys[xs > cut], xs[xs > cut]] = new
    segs = segs + [SegmentInfo(new, s.category_id, False, score=0.5)]
    return _prune(out, segs)


def wrong_class(ids, segs, cats, rng) -> Pred:
    if not segs:
        return ids, segs
    k = int(rng.integers(len(segs)))
    s = segs[k]
    same_kind = [c for c in cats.values() if c.isthing == cats[s.category_id].isthing and c.id != s.category_id]
    if not same_kind:
        return ids, segs
    segs = list(segs)
    segs[k] = SegmentInfo(s.id, same_kind[int(rng.integers(len(same_kind)))].id, False, score=s.score)
    return ids, segs


def missing(ids, segs, cats, rng) -> Pred:
    if not segs:
        return ids, segs
    s = segs[int(rng.integers(len(segs)))]
    out = ids.copy()
    out[ids == s.id] = VOID
    return _prune(out, segs)


def extra(ids, segs, cats, rng) -> Pred:
    h, w = ids.shape
    m = np.zeros((h, w), np.uint8)
    r = int(rng.integers(2, max(3, min(h, w) // 6)))
    cv2.circle(m, (int(rng.integers(w)), int(rng.integers(h))), r, 1, -1)
    out = ids.copy()
    new = _fresh_id(segs, rng)
    out[m > 0] = new
    cat = list(cats)[int(rng.integers(len(cats)))]
    return _prune(out, segs + [SegmentInfo(new, cat, False, score=float(rng.random()))])


def onto_void_and_crowd(ids, segs, cats, rng, gt_ids=None, gt_segs=None) -> Pred:
    """Grow predictions over GT void, and paint a new segment over a crowd region of its class."""
    out = ids.copy()
    if gt_ids is None:
        return ids, segs
    void = gt_ids == VOID
    if void.any() and segs:
        s = segs[int(rng.integers(len(segs)))]
        grown = cv2.dilate((ids == s.id).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        out[grown & void] = s.id
    crowds = [g for g in (gt_segs or []) if g.iscrowd]
    if crowds:
        c = crowds[int(rng.integers(len(crowds)))]
        new = _fresh_id(segs, rng)
        m = gt_ids == c.id
        if rng.random() < 0.5:  # partly spill out of the crowd region
            m = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        out[m] = new
        segs = segs + [SegmentInfo(new, c.category_id, False, score=0.9)]
    return _prune(out, segs)


PERTURBATIONS: dict[str, Callable] = {
    "shift": shift,
    "erode": erode,
    "merge": merge,
    "split": split,
    "wrong_class": wrong_class,
    "missing": missing,
    "extra": extra,
    "void_and_crowd": onto_void_and_crowd,
}


def perturb(
    gt_ids: np.ndarray,
    gt_segs: list[SegmentInfo],
    categories: dict[int, Category],
    rng: np.random.Generator,
    kinds: list[str] | None = None,
) -> Pred:
    """A prediction made from the GT by the named perturbations (default: a random subset)."""
    ids, segs = _copy(gt_ids, gt_segs)
    names = kinds if kinds is not None else [k for k in PERTURBATIONS if rng.random() < 0.4]
    for name in names:
        fn = PERTURBATIONS[name]
        if name == "void_and_crowd":
            ids, segs = fn(ids, segs, categories, rng, gt_ids, gt_segs)
        else:
            ids, segs = fn(ids, segs, categories, rng)
    return ids, segs
