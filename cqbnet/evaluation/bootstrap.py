"""Confidence intervals for PQ differences between training arms: a two-level bootstrap over seeds and images.

Two arms trained with the same seeds (the same images get the same labels, the same initialisation, the same data
order) and evaluated on the same validation images differ by the arm's effect, by the seed, and by which images
happen to be in the validation split. PQ is not a mean over images (it pools TP, FP, FN and IoU sums per class
before averaging over classes), so the bootstrap resamples the per-image counts kept by
``PanopticQuality(keep_images=True)`` and recomputes PQ from their weighted sums. One replicate draws the seeds
with replacement and, independently, the images with replacement; the same images are used for every run of the
replicate, so the comparison stays paired. The interval is the percentile interval of the replicates.

With a handful of seeds a percentile interval over seeds spans about the range of what was observed, not a 95%
interval: effects over seeds are estimated with :mod:`cqbnet.evaluation.statistics` (Student's t, the seed as the
unit). Here, ``resample_seeds=False`` keeps the seeds (and groups) as measured and draws only the images: the
"images only" interval, which says how much the choice of evaluation images alone moves a difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cqbnet.evaluation.panoptic_quality import pq_arrays

REGIONS = ("all", "th", "st")


def region_mask(isthing: np.ndarray, region: str) -> np.ndarray | None:
    """The categories a region averages over: all of them, the things or the stuff."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
    isthing = np.asarray(isthing, dtype=bool)
    return None if region == "all" else (isthing if region == "th" else ~isthing)


def image_weights(num_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(B, N) how often each image is drawn in each replicate (N draws with replacement); row 0 is all ones,
    the data as measured."""
    idx = rng.integers(num_images, size=(replicates, num_images))
    w = np.stack([np.bincount(r, minlength=num_images) for r in idx]).astype(np.float64)
    w[0] = 1.0
    return w


def resampled_pq(counts: np.ndarray, weights: np.ndarray, isthing: np.ndarray, region: str = "all") -> np.ndarray:
    """(B, R) PQ in percent of R runs under B image weightings; counts (R, N, C, 4) per run, image and class."""
    sums = np.einsum("bn,rnck->brck", weights, counts)  # (B, R, C, 4)
    return 100.0 * pq_arrays(sums, region_mask(isthing, region))["pq"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (PQ points) and what it was drawn from."""

    estimate: float
    low: float
    high: float
    seeds: int
    images: int
    replicates: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "seeds": self.seeds,
            "images": self.images,
            "replicates": self.replicates,
        }

    def __str__(self) -> str:
        return f"{self.estimate:+.1f} [{self.low:+.1f}, {self.high:+.1f}]"


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of the replicates (replicate 0, the measured data, included)."""
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [a, 1.0 - a])
    return float(lo), float(hi)


def paired_difference(
    treated: np.ndarray,
    control: np.ndarray,
    isthing: np.ndarray,
    region: str = "all",
    replicates: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> Interval:
    """Mean over seeds of PQ(treated) - PQ(control), with its two-level bootstrap interval (images only when
    ``resample_seeds`` is False).

    ``treated`` and ``control``: (S, N, C, 4) per-image counts of S paired runs (run s of both arms has seed s)
    on the same N images. With one seed only the images are resampled.
    """
    treated, control = np.asarray(treated, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if treated.shape != control.shape or treated.ndim != 4:
        raise ValueError(f"paired arms need counts of one shape (S, N, C, 4); got {treated.shape} and {control.shape}")
    s, n = treated.shape[:2]
    rng = np.random.default_rng(seed)
    w = image_weights(n, replicates, rng)
    diff = resampled_pq(treated, w, isthing, region) - resampled_pq(control, w, isthing, region)  # (B, S)
    pick = rng.integers(s, size=(replicates, s))
    if not resample_seeds:
        pick[:] = np.arange(s)
    pick[0] = np.arange(s)
    boot = np.take_along_axis(diff, pick, axis=1).mean(axis=1)
    lo, hi = percentile_interval(boot, level)
    return Interval(float(diff[0].mean()), lo, hi, s, n, replicates)


def difference_to_groups(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    isthing: np.ndarray,
    region: str = "all",
    replicates: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> tuple[Interval, list[Interval]]:
    """One treatment against a group of alternatives, in several settings, with bootstrap intervals.

    ``pairs[j] = (treated, controls)``: setting j's treated runs (S, N, C, 4) and G alternative runs per seed
    (G, S, N, C, 4), every run of seed s with seed s, all on the same N images (e.g. the planned plan of one budget
    against G random plans of the same cost). With ``resample_seeds`` False only the images are drawn. Setting
    j's difference is the mean over seeds of PQ(treated) minus
    the mean over alternatives and seeds of PQ(alternative). A replicate draws the images once for every setting,
    the seeds (the same for treated and alternatives) and, per setting, the alternatives. Returns the mean
    difference over settings and each setting's own.
    """
    if not pairs:
        raise ValueError("no settings to compare")
    s, n = np.asarray(pairs[0][0]).shape[:2]
    for treated, controls in pairs:
        if np.asarray(treated).shape[:2] != (s, n) or np.asarray(controls).shape[1:3] != (s, n):
            raise ValueError("every setting needs the same seeds and images for the treated and the alternative runs")
    rng = np.random.default_rng(seed)
    w = image_weights(n, replicates, rng)
    seeds = rng.integers(s, size=(replicates, s))
    if not resample_seeds:  # images only: the seeds and the alternatives as measured
        seeds[:] = np.arange(s)
    seeds[0] = np.arange(s)
    per_setting = []
    for treated, controls in pairs:
        controls = np.asarray(controls, dtype=np.float64)
        g = controls.shape[0]
        t = resampled_pq(np.asarray(treated, dtype=np.float64), w, isthing, region)  # (B, S)
        c = resampled_pq(controls.reshape(g * s, *controls.shape[2:]), w, isthing, region).reshape(-1, g, s)
        groups = rng.integers(g, size=(replicates, g))
        if not resample_seeds:
            groups[:] = np.arange(g)
        groups[0] = np.arange(g)
        c = np.take_along_axis(c, groups[:, :, None], axis=1)  # (B, G, S) alternatives drawn
        c = np.take_along_axis(c, np.broadcast_to(seeds[:, None, :], c.shape), axis=2).mean(axis=(1, 2))
        per_setting.append(np.take_along_axis(t, seeds, axis=1).mean(axis=1) - c)  # (B,)
    boot = np.stack(per_setting)  # (J, B)

    def interval(x: np.ndarray) -> Interval:
        lo, hi = percentile_interval(x, level)
        return Interval(float(x[0]), lo, hi, s, n, replicates)

    return interval(boot.mean(axis=0)), [interval(b) for b in boot]
