"""Byzantine-robust rules and the norm screen against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import update_reply

from fedrl.config import FedRLConfig
from fedrl.federation.identity import Identities
from fedrl.federation.protocol import check_replies, parse_update_reply
from strategies.base import NormScreen
from strategies.registry import make_aggregator
from strategies.robust import CoordinateMedian, FedPGBR, Krum, MultiKrum, RobustRule, TrimmedMean

REF = {"w": (2,)}


def vectors(*rows):
    return np.asarray(rows, np.float64)


def test_coordinate_median_odd_even_and_weighted():
    three = vectors([1, 10], [2, 20], [100, -5])
    np.testing.assert_array_equal(CoordinateMedian().combine(three, np.full(3, 1 / 3)), [2, 10])
    # Baseline-Sum's weights (1 each) scale the median by their sum, as the plain sum would.
    np.testing.assert_array_equal(CoordinateMedian().combine(three, np.ones(3)), [6, 30])
    np.testing.assert_array_equal(CoordinateMedian().combine(vectors([1], [3]), np.full(2, 0.5)), [2])
    # Weights 0.1, 0.1, 0.8: the cumulative weight passes 1/2 at the third value.
    np.testing.assert_array_equal(CoordinateMedian().combine(vectors([1], [2], [3]), np.array([.1, .1, .8])), [3])


def test_trimmed_mean_cuts_f_at_each_end_and_never_everything():
    four = vectors([1], [2], [3], [100])
    np.testing.assert_allclose(TrimmedMean(f=1).combine(four, np.full(4, 0.25)), [2.5])
    # f = 3 with n = 4 is cut to (n - 1) // 2 = 1.
    np.testing.assert_allclose(TrimmedMean(f=3).combine(four, np.full(4, 0.25)), [2.5])
    np.testing.assert_allclose(TrimmedMean(f=0).combine(four, np.full(4, 0.25)), [26.5])


def test_krum_scores_and_selection():
    points = vectors([0], [1], [2], [3], [100])
    # n - f - 2 = 2 nearest: 0 -> 1 + 4, 1 -> 1 + 1, 2 -> 1 + 1, 3 -> 1 + 4, 100 -> 97² + 98².
    np.testing.assert_array_equal(Krum(f=1).scores(points), [5, 2, 2, 5, 19013])
    np.testing.assert_array_equal(Krum(f=1).select(points, 1), [1])  # a tie goes to the lower index
    np.testing.assert_array_equal(MultiKrum(f=1).select(points, 1), [0, 1, 2, 3])
    np.testing.assert_array_equal(Krum(f=1).select(vectors([5]), 1), [0])


def test_fedpg_br_threshold_and_filter():
    points = vectors([0], [1], [2], [50])
    rule = FedPGBR(f=1, sigma=1.0, delta=0.6)
    threshold = 2 * 1.0 * math.sqrt(2 * math.log(2 * 4 / 0.6) / 1)
    assert 4.5 < threshold < 4.6  # |0 − 2| = 2 is inside, |2 − 50| = 48 is not
    np.testing.assert_array_equal(rule.select(points, 1), [0, 1, 2])
    # σ from the replies: the median over i of the 2nd-nearest distance (2, 1, 2, 49) is 2, halved.
    distances = np.abs(points - points.T)
    assert FedPGBR(f=1).estimate_sigma(distances) == 1.0
    np.testing.assert_array_equal(FedPGBR(f=1).select(points, 1), [0, 1, 2])
    # A larger B shrinks the threshold: with B = 100 it is 0.455 and no pair of replies is
    # that close, so the second stage's 2σ = 2 applies.
    np.testing.assert_array_equal(rule.select(points, 100), [0, 1, 2])


def test_no_robust_rule_is_the_weighted_sum():
    np.testing.assert_array_equal(RobustRule().combine(vectors([1, 2], [3, 4]), np.array([1.0, 0.5])), [2.5, 4])


def aggregate(config, values, rewards=None):
    aggregator = make_aggregator(FedRLConfig(**config))
    replies = [update_reply(i, {"w": np.array(v, np.float32)}) for i, v in enumerate(values)]
    rewards = rewards or {i: 1.0 for i in range(len(values))}
    checked = check_replies(replies, lambda m: parse_update_reply(m, aggregator.reply_record, REF), "test",
                            Identities(), partitions=rewards)
    return aggregator.aggregate(checked.accepted, REF, rewards)


@pytest.mark.parametrize(("rule", "expected"), [("median", [3, 30]), ("trimmed-mean", [3, 30]),
                                                 ("krum", [2, 20]), ("multi-krum", [2.5, 25])])
def test_each_rule_through_baseline_avg_ignores_one_far_reply(rule, expected):
    agg = aggregate({"aggregator": "baseline-avg", "robust_rule": rule, "robust_f": 1, "grad_norm_screen": 0.0},
                    [[1, 10], [2, 20], [3, 30], [4, 40], [1e6, 1e6]])
    # Median and trimmed mean: the middle of each coordinate. Krum (n − f − 2 = 2 neighbours):
    # [2, 20] and [3, 30] both score 101 + 101, and the tie goes to the lower index;
    # multi-Krum keeps the n − f = 4 lowest scores, the honest four, and averages them.
    np.testing.assert_allclose(agg.arrays["w"], expected, rtol=1e-6)
    if rule in ("krum", "multi-krum"):
        assert "partition 4 (node 104)" in [who for who, _ in agg.screened]


def test_norm_screen_drops_an_outlier_and_names_it(caplog):
    agg = aggregate({"aggregator": "baseline-sum"}, [[1, 1], [1, 2], [2, 1], [1e20, 0]])
    assert [u.partition_id for u in agg.updates] == [0, 1, 2]
    assert agg.screened[0][0] == "partition 3 (node 103)" and "above the screen" in agg.screened[0][1]
    assert "partition 3 (node 103)" in caplog.text


def test_norm_screen_follows_norms_that_grow_and_always_keeps_half():
    screen = NormScreen(10.0)
    for i in range(200):  # honest norms growing 5% per exchange: 17,000-fold in all
        kept, _ = screen.screen(np.array([1.0, 1.1, 0.9]) * 1.05 ** i)
        assert len(kept) == 3, i
    kept, _ = screen.screen(np.array([1.0, 1e6, 1.0, 1e6]) * 1.05 ** 200)
    np.testing.assert_array_equal(kept, [0, 2])
    # A whole exchange far above the history still keeps the half at or below its median.
    screen = NormScreen(10.0)
    for _ in range(32):
        screen.screen(np.array([1.0, 1.0]))
    kept, threshold = screen.screen(np.array([1e9, 2e9, 3e9]))
    assert threshold == 10.0
    np.testing.assert_array_equal(kept, [0, 1])


def test_a_huge_but_finite_gradient_that_overflows_the_sum_is_left_out_and_named():
    agg = aggregate({"aggregator": "baseline-sum", "grad_norm_screen": 0.0},
                    [[1, 1], [2, 2], [3, 3], [3e38, 3e38], [3e38, 3e38]])
    assert np.all(np.isfinite(agg.arrays["w"]))
    assert [who for who, why in agg.screened if "would not be finite" in why] == ["partition 3 (node 103)"]


def lweighted(losses):
    aggregator = make_aggregator(FedRLConfig(aggregator="lweighted", grad_norm_screen=0.0))
    replies = [update_reply(i, {"w": np.ones(2, np.float32)}, loss=loss) for i, loss in enumerate(losses)]
    rewards = {i: 1.0 for i in range(len(losses))}
    checked = check_replies(replies, lambda m: parse_update_reply(m, "grads", REF), "test", Identities(),
                            partitions=rewards)
    return aggregator.aggregate(checked.accepted, REF, rewards)


def test_lweighted_weights_stay_finite_under_losses_of_plus_or_minus_1e308():
    # Offset by the minimum, the losses are 1e308 + 1, 1e308 + 2 and 0: their sum overflows,
    # their shares (1/2, 1/2, 0) do not.
    agg = lweighted([1.0, 2.0, -1e308])
    np.testing.assert_allclose(agg.weights, [0.5 + 1 / 3, 0.5 + 1 / 3, 1 / 3])
    # Offset, +1e308 becomes inf: no weights can be had with both, so the most extreme goes, named.
    agg = lweighted([1.0, -1e308, 1e308])
    assert np.all(np.isfinite(agg.weights)) and np.all(np.isfinite(agg.arrays["w"]))
    assert agg.screened == [("partition 1 (node 101)", "the combined result with it would not be finite")]


def test_fedavg_never_loads_parameters_that_the_model_refuses():
    aggregator = make_aggregator(FedRLConfig(aggregator="fedavg", grad_norm_screen=0.0))
    replies = [update_reply(i, {"w": np.array(v, np.float32)}, record="model", num_examples=10)
               for i, v in enumerate([[1, 1], [1.1, 1], [3e38, 3e38]])]
    rewards = {0: 1.0, 1: 1.0, 2: 1.0}
    checked = check_replies(replies, lambda m: parse_update_reply(m, "model", REF), "test", Identities(),
                            partitions=rewards)
    from fedrl.federation.aggregation import Exchange

    refuse_huge = Exchange(center={"w": np.ones(2, np.float32)},
                           acceptable=lambda arrays: bool(np.all(np.abs(arrays["w"]) < 1e30)))
    agg = aggregator.aggregate(checked.accepted, REF, rewards, refuse_huge)
    np.testing.assert_allclose(agg.arrays["w"], [1.05, 1.0], rtol=1e-6)
    assert [u.partition_id for u in agg.updates] == [0, 1]
