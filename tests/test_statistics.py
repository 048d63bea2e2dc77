"""The statistics module: effects over seeds with Student-t intervals, checked against scipy's own t test and by
simulated coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cqbnet.evaluation.statistics import (
    difference_to_group,
    paired_difference,
    paired_rows,
    ratio_of_means,
    t_interval,
)


def test_t_interval_is_scipys_one_sample_interval():
    values = [3.1, -0.4, 2.2, 5.0, 1.3]
    ref = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    e = t_interval(values)
    assert e.estimate == pytest.approx(np.mean(values), abs=1e-12)
    assert (e.low, e.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert e.n == 5 and not e.excludes(0.0) and ref.low < 0 < ref.high
    assert t_interval([2.0, 2.5, 3.0]).excludes(0.0)


def test_paired_difference_uses_the_shared_seeds_only():
    treated = {0: 70.0, 1: 72.0, 2: 69.0, 3: 80.0}
    control = {0: 68.0, 1: 71.5, 2: 66.0, 9: 10.0}
    d = paired_difference(treated, control)
    ref = stats.ttest_rel([70.0, 72.0, 69.0], [68.0, 71.5, 66.0]).confidence_interval(0.95)
    assert d.seeds == (0, 1, 2) and d.estimate == pytest.approx(5.5 / 3)
    assert (d.low, d.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_one_seed_gives_an_estimate_and_no_interval():
    d = paired_difference({4: 2.0}, {4: 1.5})
    assert d.estimate == 0.5 and d.interval is None and not d.excludes(0.0)
    assert d.text() == "+0.5 (one seed: no interval)"
    assert d.to_json()["interval"] is None


def test_ratio_of_means_against_a_reference_without_spread_is_the_scaled_t_interval():
    treated = {0: 60.0, 1: 66.0, 2: 63.0}
    r = ratio_of_means(treated, {0: 75.0, 1: 75.0, 2: 75.0})
    ref = t_interval([v / 75.0 for v in treated.values()])
    assert r.estimate == pytest.approx(63.0 / 75.0)
    assert (r.low, r.high) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_ratio_of_means_covers_the_true_ratio_about_95_percent_of_the_time():
    """Paired seeds whose shared part moves both arms, the case of a weak recipe against full supervision."""
    rng = np.random.default_rng(0)
    hits, sims = 0, 4000
    for _ in range(sims):
        shared = rng.normal(0, 1.5, 5)
        t = 66 + 0.9 * shared + rng.normal(0, 1.0, 5)
        r = 75 + shared + rng.normal(0, 0.5, 5)
        e = ratio_of_means(dict(enumerate(t)), dict(enumerate(r)))
        hits += e.low <= 66 / 75 <= e.high
    assert 0.93 <= hits / sims <= 0.97


def test_a_group_of_alternatives_is_compared_with_the_alternative_as_the_unit():
    planned = {0: 50.0, 1: 52.0}
    randoms = [{0: 40.0, 1: 44.0}, {0: 49.0, 1: 47.0}, {0: 45.0, 1: 45.0}]
    e = difference_to_group(planned, randoms)
    units = [9.0, 3.0, 6.0]  # each random plan's paired difference, averaged over the two seeds
    ref = t_interval(units)
    assert e.n == 3 and e.estimate == pytest.approx(6.0)
    assert (e.low, e.high) == pytest.approx((ref.low, ref.high))


def test_paired_rows_keep_the_summaries_json_shape():
    rows = [{"seed": 0, "pq": 60.0, "pq_th": 50.0}, {"seed": 1, "pq": 62.0, "pq_th": 49.0}]
    base = [{"seed": 0, "pq": 70.0, "pq_th": 60.0}, {"seed": 1, "pq": 71.0, "pq_th": 62.0}]
    out = paired_rows(rows, base, ("pq", "pq_th"))
    assert out["seeds"] == [0, 1] and out["pq"][0] == pytest.approx(-9.5) and len(out["pq_th"]) == 3
    assert paired_rows(rows, [{"seed": 7, "pq": 1.0, "pq_th": 1.0}], ("pq",)) is None
    assert paired_rows(rows[:1], base, ("pq",))["pq"][1:] == [None, None]


def test_rank_correlation_is_spearman_with_a_fisher_z_interval():
    from cqbnet.evaluation.statistics import rank_correlation

    pred = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    meas = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0, 8.0, 7.0]
    e = rank_correlation(pred, meas)
    rho = stats.spearmanr(pred, meas).statistic
    half = stats.norm.ppf(0.975) * 1.06 / np.sqrt(8 - 3)
    assert e.estimate == pytest.approx(rho) and e.n == 8
    assert e.low == pytest.approx(np.tanh(np.arctanh(rho) - half)) and e.high == pytest.approx(
        np.tanh(np.arctanh(rho) + half)
    )
    assert rank_correlation(pred, pred).interval is None  # rho = 1: no finite z
    assert rank_correlation([1, 2, 3], [3, 1, 2]).interval is None  # below 4 units
