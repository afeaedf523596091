"""Aggregator weights and combination on hand-made replies, checked by the protocol first."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import update_reply

from fedrl.config import AGGREGATORS as NAMES
from fedrl.config import FedRLConfig
from fedrl.federation.identity import Identities
from fedrl.federation.protocol import check_replies, parse_update_reply
from strategies.gradient import BaselineAvg, BaselineSum, LossWeighted, RewardWeighted
from strategies.parameters import FedAvg
from strategies.registry import AGGREGATORS, make_aggregator

REF = {"w": (2,), "b": (1,)}


def combine(aggregator, replies, rewards):
    """What a scheduler does with an exchange's replies: check them, then hand them to the rule."""
    checked = check_replies(replies, lambda m: parse_update_reply(m, aggregator.reply_record, REF), "test",
                            Identities(), partitions=rewards)
    return aggregator.aggregate(checked.accepted, REF, rewards)


def grads(x: float) -> dict[str, np.ndarray]:
    return {"w": np.array([x, 2 * x], np.float32), "b": np.array([x], np.float32)}


def test_every_aggregator_is_registered_and_built_from_config():
    assert tuple(AGGREGATORS) == NAMES
    assert sorted(AGGREGATORS) == sorted(["baseline-sum", "baseline-avg", "rweighted", "lweighted", "fedavg", "fedprox"])
    for name in AGGREGATORS:
        agg = make_aggregator(FedRLConfig(aggregator=name, mu=0.01 if name == "fedprox" else 0.0))
        assert agg.name == name


def test_baseline_sum_and_avg():
    replies = [update_reply(1, grads(1.0)), update_reply(0, grads(3.0))]
    rewards = {0: 5.0, 1: 7.0}
    s = combine(BaselineSum(), replies, rewards)
    np.testing.assert_allclose(s.arrays["w"], [4.0, 8.0])
    np.testing.assert_allclose(s.weights, [1.0, 1.0])
    a = combine(BaselineAvg(), replies, rewards)
    np.testing.assert_allclose(a.arrays["w"], [2.0, 4.0])
    np.testing.assert_allclose(a.arrays["b"], [2.0])


def test_replies_are_sorted_by_partition():
    replies = [update_reply(2, grads(1.0)), update_reply(0, grads(1.0)), update_reply(1, grads(1.0))]
    agg = combine(BaselineSum(), replies, {0: 0.0, 1: 0.0, 2: 0.0})
    assert [u.partition_id for u in agg.updates] == [0, 1, 2]


def test_reward_weighted_hand_computed():
    # rewards 10, 20, 40 -> offset 0, 10, 30 -> shares 0, 0.25, 0.75; floor 1/3
    replies = [update_reply(i, grads(1.0 + i)) for i in range(3)]
    agg = combine(RewardWeighted(), replies, {0: 10.0, 1: 20.0, 2: 40.0})
    expected = np.array([0.0, 0.25, 0.75]) + 1 / 3
    np.testing.assert_allclose(agg.weights, expected)
    np.testing.assert_allclose(agg.weights.sum(), 2.0)
    np.testing.assert_allclose(agg.arrays["b"], [expected @ np.array([1.0, 2.0, 3.0])], rtol=1e-6)


def test_reward_weighted_negative_rewards_and_explicit_h():
    replies = [update_reply(0, grads(1.0)), update_reply(1, grads(1.0))]
    agg = combine(RewardWeighted(weight_floor_h=4), replies, {0: -300.0, 1: -100.0})
    np.testing.assert_allclose(agg.weights, [0.0 + 0.25, 1.0 + 0.25])


def test_reward_weighted_equal_rewards_share_is_one_over_n():
    replies = [update_reply(i, grads(1.0)) for i in range(4)]
    agg = combine(RewardWeighted(), replies, {i: 3.0 for i in range(4)})
    np.testing.assert_allclose(agg.weights, [0.5] * 4)


def test_loss_weighted_hand_computed():
    replies = [update_reply(0, grads(1.0), loss=1.0), update_reply(1, grads(1.0), loss=3.0)]
    agg = combine(LossWeighted(), replies, {0: 0.0, 1: 0.0})
    np.testing.assert_allclose(agg.weights, [0.25 + 0.5, 0.75 + 0.5])


def test_loss_weighted_offsets_negative_losses():
    replies = [update_reply(i, grads(1.0), loss=x) for i, x in enumerate([-1.0, 1.0, 3.0])]
    agg = combine(LossWeighted(), replies, {i: 0.0 for i in range(3)})
    # offset by -1: 0, 2, 4 -> shares 0, 1/3, 2/3
    np.testing.assert_allclose(agg.weights, np.array([0.0, 1 / 3, 2 / 3]) + 1 / 3)


def test_loss_weighted_zero_sum_share_is_one_over_n():
    replies = [update_reply(i, grads(1.0), loss=0.0) for i in range(2)]
    agg = combine(LossWeighted(), replies, {0: 0.0, 1: 0.0})
    np.testing.assert_allclose(agg.weights, [1.0, 1.0])


def test_normalize_weights_sum_to_one():
    replies = [update_reply(i, grads(1.0), loss=x) for i, x in enumerate([1.0, 3.0])]
    agg = combine(LossWeighted(normalize_weights=True), replies, {0: 0.0, 1: 0.0})
    np.testing.assert_allclose(agg.weights, [0.375, 0.625])
    np.testing.assert_allclose(agg.weights.sum(), 1.0)


def test_negative_h_is_refused():
    with pytest.raises(ValueError, match="weight-floor-h"):
        RewardWeighted(weight_floor_h=-1)


def test_fedavg_weights_by_num_examples():
    replies = [update_reply(0, grads(1.0), record="model", num_examples=100),
               update_reply(1, grads(4.0), record="model", num_examples=300)]
    agg = combine(FedAvg(), replies, {0: 0.0, 1: 0.0})
    np.testing.assert_allclose(agg.weights, [0.25, 0.75])
    np.testing.assert_allclose(agg.arrays["b"], [3.25])
