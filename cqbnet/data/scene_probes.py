"""Probes of how much a scene's appearance tells about its classes (the scenes issue's measurements).

* :func:`colour_only_accuracy`: nearest class centroid of each thing's normalised 4 x 4 x 4 RGB histogram,
  centroids from the training things, accuracy on the validation things (non-crowd segments of at least
  ``min_area`` pixels). Real photographs score well above chance here without being solved by it.
* :func:`lab_edge_statistics`: LAB distances of pixel pairs ``gap`` pixels apart, inside one thing and across a
  thing's boundary: a silhouette is visible when the first is mostly below the second.
* :func:`neighbour_affinity_pass_rates`: the share of neighbour pairs whose colour similarity
  ``exp(-||dLAB|| / theta)`` passes a threshold, inside one segment and across segments, on the image average
  pooled by a given factor (the scale at which BoxInst-style pairwise terms are computed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cqbnet.data.synthetic import Scene, lab

HIST_BINS = 4


def _things(scene: Scene, num_things: int, min_area: int) -> Iterable[tuple[int, np.ndarray]]:
    for seg in scene.segments:
        if seg.category_id <= num_things and not seg.iscrowd and seg.area >= min_area:
            yield seg.category_id, scene.ids == seg.id


def colour_histogram(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(64,) normalised 4 x 4 x 4 RGB histogram of ``image`` (H, W, 3 uint8) under ``mask`` (H, W bool)."""
    q = image[mask].astype(np.int64) * HIST_BINS // 256  # (n, 3) bin per channel
    flat = (q[:, 0] * HIST_BINS + q[:, 1]) * HIST_BINS + q[:, 2]
    h = np.bincount(flat, minlength=HIST_BINS**3).astype(np.float64)
    return h / max(h.sum(), 1.0)


def colour_only_accuracy(
    train: Sequence[Scene], val: Sequence[Scene], num_things: int, min_area: int = 20
) -> dict[str, float]:
    """Nearest-centroid accuracy of the colour histogram on ``val``'s things, and the majority-class rate."""

    def table(scenes: Sequence[Scene]) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = [], []
        for sc in scenes:
            for cid, m in _things(sc, num_things, min_area):
                feats.append(colour_histogram(sc.image, m))
                labels.append(cid)
        return np.array(feats).reshape(-1, HIST_BINS**3), np.array(labels, np.int64)

    x, y = table(train)
    xv, yv = table(val)
    classes = np.unique(y)
    centroids = np.stack([x[y == c].mean(0) for c in classes])  # (C, 64)
    d = ((xv[:, None, :] - centroids[None]) ** 2).sum(-1)  # (n_val, C)
    pred = classes[d.argmin(1)]
    majority = np.bincount(yv).max() / max(len(yv), 1)
    return {"accuracy": float((pred == yv).mean()), "majority": float(majority), "val_things": int(len(yv))}


def lab_edge_statistics(scenes: Sequence[Scene], num_things: int, gap: int = 2) -> dict[str, float]:
    """Percentiles of the LAB distance of horizontal and vertical pixel pairs ``gap`` apart, within one thing
    (both pixels in the same thing segment) and across a thing's boundary (one in a thing, the other not in it)."""
    inside, across = [], []
    for sc in scenes:
        lab_img = lab(sc.image.astype(np.float32))  # (H, W, 3)
        thing_id = np.where(sc.ids // 1000 <= num_things, sc.ids, 0).astype(np.int64)  # 0 = not a thing
        for a, b, la, lb in (
            (thing_id[:, :-gap], thing_id[:, gap:], lab_img[:, :-gap], lab_img[:, gap:]),
            (thing_id[:-gap], thing_id[gap:], lab_img[:-gap], lab_img[gap:]),
        ):
            d = np.linalg.norm(la - lb, axis=-1)
            inside.append(d[(a > 0) & (a == b)])
            across.append(d[(a != b) & ((a > 0) | (b > 0))])
    i, x = np.concatenate(inside), np.concatenate(across)
    return {
        "inside_p50": float(np.percentile(i, 50)),
        "inside_p90": float(np.percentile(i, 90)),
        "across_p50": float(np.percentile(x, 50)),
    }


def neighbour_affinity_pass_rates(
    scenes: Sequence[Scene],
    num_things: int,
    pool: int,
    theta: float = 2.0,
    threshold: float = 0.3,
    dilation: int = 1,
) -> dict[str, float]:
    """Share of 8-neighbour cell pairs (``dilation`` cells apart) with ``exp(-||dLAB|| / theta) >= threshold`` on
    the image average pooled by ``pool``: pairs within one thing segment, within one stuff segment, and across two
    labelled segments (and the mean similarity of each set). A cell belongs to a segment only when the segment
    covers all of it."""
    counts = {k: [0.0, 0.0, 0] for k in ("within_thing", "within_stuff", "across")}  # [passed, sum S, pairs]
    offsets = [(0, dilation), (dilation, 0), (dilation, dilation), (dilation, -dilation)]
    for sc in scenes:
        img = torch.from_numpy(sc.image).permute(2, 0, 1).float()[None]  # (1, 3, H, W)
        lab_small = lab(F.avg_pool2d(img, pool)[0].permute(1, 2, 0).numpy())  # (H/p, W/p, 3)
        ids = torch.from_numpy(sc.ids.astype(np.float64))[None, None]
        lo = -F.max_pool2d(-ids, pool)[0, 0].numpy()
        hi = F.max_pool2d(ids, pool)[0, 0].numpy()
        seg = np.where((lo == hi) & (lo > 0), lo, -1).astype(np.int64)  # pure cells keep their segment id
        h, w = seg.shape
        for dy, dx in offsets:
            ys, ye, xs, xe = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)
            a, b = seg[ys:ye, xs:xe], seg[ys + dy : ye + dy, xs + dx : xe + dx]
            d = np.linalg.norm(lab_small[ys:ye, xs:xe] - lab_small[ys + dy : ye + dy, xs + dx : xe + dx], axis=-1)
            sim = np.exp(-d / theta)
            passed = sim >= threshold
            valid = (a >= 0) & (b >= 0)
            thing = a // 1000 <= num_things
            for key, sel in (
                ("within_thing", valid & (a == b) & thing),
                ("within_stuff", valid & (a == b) & ~thing),
                ("across", valid & (a != b)),
            ):
                counts[key][0] += float(passed[sel].sum())
                counts[key][1] += float(sim[sel].sum())
                counts[key][2] += int(sel.sum())
    out = {k: p / max(n, 1) for k, (p, _, n) in counts.items()}
    out.update({f"{k}_mean_similarity": s / max(n, 1) for k, (_, s, n) in counts.items()})
    return out
