"""Segment proposals for papers 001 and 002, whose MCG has no Python port: selective search's hierarchical grouping
(Uijlings et al. 2013) of Felzenszwalb superpixels (scikit-image), with its colour, size and fill similarities over
a true adjacency graph (its texture term is left out). Every region is kept as its set of superpixels, so masks are
exact and mask IoUs are superpixel-count dot products.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb

HIST_BINS = 25  # per LAB channel, selective search's colour histogram


@dataclass
class Proposals:
    """Segment proposals as sets of superpixels: ``members`` (R, S) bool over the superpixel map ``superpixels``
    (H, W) int; region r's mask is ``np.isin(superpixels, np.flatnonzero(members[r]))``."""

    superpixels: np.ndarray
    members: np.ndarray

    def mask(self, r: int) -> np.ndarray:
        return self.members[r][self.superpixels]


def _adjacency(sp: np.ndarray, n: int) -> np.ndarray:
    """(S, S) bool: superpixels that touch (4-neighbourhood)."""
    adj = np.zeros((n, n), dtype=bool)
    for a, b in ((sp[:, :-1], sp[:, 1:]), (sp[:-1], sp[1:])):
        diff = a != b
        adj[a[diff], b[diff]] = True
    return adj | adj.T


STRATEGIES = ("colour+size+fill", "size+fill", "colour+size")  # selective search's diversification (Sec. 3.2)


def segment_proposals(
    image: np.ndarray,
    scale: float = 100.0,
    sigma: float = 0.8,
    min_size: int = 20,
    strategies: tuple[str, ...] = STRATEGIES,
) -> Proposals:
    """Selective search's hierarchical grouping (Uijlings et al. 2013) on Felzenszwalb superpixels, once per
    similarity ``strategy`` (a sum of colour histogram intersection, size and fill terms): start from the
    superpixels, merge the most similar adjacent pair until one region is left; every region along the way is a
    proposal, each distinct region once."""
    sp = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
    groups = [_grouping(image, sp, set(s.split("+"))) for s in strategies]
    members = np.concatenate(groups)
    _, first = np.unique(np.packbits(members, axis=1), axis=0, return_index=True)
    return Proposals(sp, members[np.sort(first)])


def _grouping(image: np.ndarray, sp: np.ndarray, terms: set[str]) -> np.ndarray:
    """One hierarchical grouping of the superpixels ``sp`` with the similarity made of ``terms``: (2S - 1, S)."""
    if not terms <= {"colour", "size", "fill"}:
        raise ValueError(f"unknown similarity terms {sorted(terms)}; use colour, size and fill")
    n = int(sp.max()) + 1
    h, w = sp.shape
    lab = rgb2lab(image)
    lo, hi = np.array([0.0, -128.0, -128.0]), np.array([100.0, 128.0, 128.0])
    bins = np.clip(((lab - lo) / (hi - lo) * HIST_BINS).astype(int), 0, HIST_BINS - 1)  # (H, W, 3)
    hist = np.zeros((n, 3 * HIST_BINS))
    flat = sp.ravel()
    for c in range(3):
        np.add.at(hist, (flat, c * HIST_BINS + bins[..., c].ravel()), 1.0)
    size = np.bincount(flat, minlength=n).astype(float)
    ys, xs = np.mgrid[0:h, 0:w]
    box = np.stack(
        [
            np.full(n, np.inf),
            np.full(n, np.inf),
            np.full(n, -np.inf),
            np.full(n, -np.inf),
        ],
        axis=1,
    )
    np.minimum.at(box[:, 0], flat, xs.ravel())
    np.minimum.at(box[:, 1], flat, ys.ravel())
    np.maximum.at(box[:, 2], flat, xs.ravel() + 1)
    np.maximum.at(box[:, 3], flat, ys.ravel() + 1)
    total = float(h * w)
    members = list(np.eye(n, dtype=bool))
    hist = [hist[i] / size[i] for i in range(n)]
    size, box = list(size), [box[i] for i in range(n)]
    neighbours = {i: set(np.flatnonzero(row)) for i, row in enumerate(_adjacency(sp, n))}

    def similarity(a: int, b: int) -> float:
        out = 0.0
        if "colour" in terms:
            out += np.minimum(hist[a], hist[b]).sum() / 3.0
        if "size" in terms:
            out += 1.0 - (size[a] + size[b]) / total
        if "fill" in terms:
            bb = np.concatenate([np.minimum(box[a][:2], box[b][:2]), np.maximum(box[a][2:], box[b][2:])])
            out += 1.0 - ((bb[2] - bb[0]) * (bb[3] - bb[1]) - size[a] - size[b]) / total
        return out

    # the most similar adjacent pair first; a pair whose region was merged away is skipped when it comes up
    heap = [(-similarity(a, b), a, b) for a in neighbours for b in neighbours[a] if a < b]
    heapq.heapify(heap)
    alive = set(neighbours)
    while heap:
        _, a, b = heapq.heappop(heap)
        if a not in alive or b not in alive:
            continue
        k = len(members)
        members.append(members[a] | members[b])
        hist.append((hist[a] * size[a] + hist[b] * size[b]) / (size[a] + size[b]))
        size.append(size[a] + size[b])
        box.append(np.concatenate([np.minimum(box[a][:2], box[b][:2]), np.maximum(box[a][2:], box[b][2:])]))
        near = (neighbours.pop(a) | neighbours.pop(b)) - {a, b}
        alive -= {a, b}
        for m in near:
            neighbours[m] -= {a, b}
            neighbours[m].add(k)
            heapq.heappush(heap, (-similarity(m, k), m, k))
        neighbours[k] = near
        alive.add(k)
    return np.stack(members)
