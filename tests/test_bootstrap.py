"""The two-level bootstrap over seeds and images of a paired PQ difference."""

from __future__ import annotations

import numpy as np
import pytest

from cqbnet.evaluation.bootstrap import image_weights, paired_difference, resampled_pq
from cqbnet.evaluation.panoptic_quality import pq_from_counts

ISTHING = np.array([True, True, True, False, False])


def _counts(rng: np.random.Generator, runs: int, images: int, fp_rate: float) -> np.ndarray:
    """(R, N, C, 4) made-up per-image counts: TPs with IoUs in [0.6, 1], FNs, and FPs at ``fp_rate``."""
    c = ISTHING.size
    tp = rng.integers(0, 3, size=(runs, images, c)).astype(float)
    iou = tp * rng.uniform(0.6, 1.0, size=tp.shape)
    fp = rng.binomial(3, fp_rate, size=tp.shape).astype(float)
    fn = rng.integers(0, 2, size=tp.shape).astype(float)
    return np.stack([iou, tp, fp, fn], axis=-1)


def test_replicate_zero_is_the_data_and_pq_matches_the_summed_counts():
    rng = np.random.default_rng(0)
    counts = _counts(rng, 2, 40, 0.3)
    w = image_weights(40, 50, np.random.default_rng(1))
    assert (w[0] == 1).all() and (w.sum(axis=1) == 40).all()
    pq = resampled_pq(counts, w, ISTHING, "th")
    for r in range(2):
        assert pq[0, r] == pytest.approx(100 * pq_from_counts(counts[r].sum(0), ISTHING)["pq"], abs=1e-9)
        # replicate 3 is PQ of the images drawn for it, repeats counted
        assert pq[3, r] == pytest.approx(
            100 * pq_from_counts(np.tensordot(w[3], counts[r], axes=1), ISTHING)["pq"], abs=1e-9
        )


def test_identical_arms_differ_by_exactly_zero():
    counts = _counts(np.random.default_rng(2), 3, 30, 0.3)
    iv = paired_difference(counts, counts.copy(), ISTHING, "all", replicates=200)
    assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert (iv.seeds, iv.images) == (3, 30)


def test_a_clearly_better_arm_has_its_interval_above_zero_and_a_noisy_one_does_not():
    rng = np.random.default_rng(3)
    control = _counts(rng, 3, 200, 0.5)
    better = control.copy()
    better[..., 2] = np.floor(control[..., 2] / 2)  # half the false positives removed, on every image and seed
    iv = paired_difference(better, control, ISTHING, "th", replicates=500, seed=4)
    direct = np.mean(
        [
            100 * (pq_from_counts(better[s].sum(0), ISTHING)["pq"] - pq_from_counts(control[s].sum(0), ISTHING)["pq"])
            for s in range(3)
        ]
    )
    assert iv.estimate == pytest.approx(direct, abs=1e-9)
    assert 0 < iv.low < iv.estimate < iv.high
    # an unrelated draw of the same process: no systematic difference, the interval covers 0
    other = _counts(np.random.default_rng(5), 3, 200, 0.5)
    noisy = paired_difference(other, control, ISTHING, "th", replicates=500, seed=4)
    assert noisy.low < 0 < noisy.high
    # reproducible by seed
    assert paired_difference(better, control, ISTHING, "th", replicates=500, seed=4) == iv


def test_unpaired_shapes_and_unknown_regions_are_refused():
    a = _counts(np.random.default_rng(6), 2, 10, 0.2)
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(a, a[:1], ISTHING)
    with pytest.raises(ValueError, match="unknown region"):
        paired_difference(a, a, ISTHING, "things")


def test_a_treatment_against_groups_of_alternatives():
    from cqbnet.evaluation.bootstrap import difference_to_groups

    rng = np.random.default_rng(7)
    pairs, direct = [], []
    for _ in range(3):  # three budgets: a planned plan (2 seeds) against 3 random plans (2 seeds each)
        controls = np.stack([_counts(rng, 2, 120, 0.5) for _ in range(3)])
        treated = controls[0].copy()
        treated[..., 2] = 0  # no false positives at all
        pairs.append((treated, controls))
        pq = lambda c: 100 * pq_from_counts(c.sum(0))["pq"]  # noqa: E731  (region "all")
        direct.append(
            np.mean([pq(treated[s]) for s in range(2)]) - np.mean([pq(c[s]) for c in controls for s in range(2)])
        )
    mean, each = difference_to_groups(pairs, ISTHING, "all", replicates=300, seed=1)
    assert mean.estimate == pytest.approx(np.mean(direct), abs=1e-9)
    assert [e.estimate for e in each] == pytest.approx(direct, abs=1e-9)
    assert 0 < mean.low < mean.estimate < mean.high and all(e.low > 0 for e in each)
    same, _ = difference_to_groups([(c[0], c[:1]) for _, c in pairs], ISTHING, replicates=100)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds"):
        difference_to_groups([(pairs[0][0][:1], pairs[0][1])], ISTHING)
