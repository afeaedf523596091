"""The experiment-only attacks: what an attacking partition sends instead of its honest reply."""

from __future__ import annotations

import numpy as np
import pytest

from fedrl.config import FedRLConfig
from fedrl.federation.attacks import corrupt, plays_randomly, reported_parts, reported_returns
from fedrl.rl.ppo import LossParts

G = {"w": np.array([1.0, -2.0, 3.0], np.float32)}


def cfg(attack, scale=0.0):
    return FedRLConfig(attack=attack, byzantine_clients="1", attack_scale=scale)


def test_honest_partitions_send_what_they_computed():
    for attack in ("sign-flip", "scale", "noise", "reward-lie", "loss-lie", "random-actions"):
        assert corrupt(cfg(attack), 0, G, [1]) is G
        assert reported_returns(cfg(attack), 0, [5.0]) == [5.0]
        assert not plays_randomly(cfg(attack), 0)


@pytest.mark.parametrize(("attack", "scale", "expected"), [("sign-flip", 0.0, [-1, 2, -3]),
                                                            ("sign-flip", 3.0, [-3, 6, -9]),
                                                            ("scale", 0.0, [100, -200, 300])])
def test_gradient_attacks(attack, scale, expected):
    np.testing.assert_array_equal(corrupt(cfg(attack, scale), 1, G, [1])["w"], expected)


def test_parameter_attacks_act_on_the_update_from_the_global_parameters():
    center = {"w": np.array([1.0, 1.0, 1.0], np.float32)}
    sent = corrupt(cfg("sign-flip"), 1, G, [1], center=center)["w"]
    np.testing.assert_array_equal(sent, [1.0, 4.0, -1.0])  # θ − (θ_i − θ)


def test_noise_is_seeded_and_scaled_by_the_gradient_rms():
    a = corrupt(cfg("noise"), 1, G, [1, 2, 3])["w"]
    b = corrupt(cfg("noise"), 1, G, [1, 2, 3])["w"]
    c = corrupt(cfg("noise"), 1, G, [1, 2, 4])["w"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    big = corrupt(cfg("noise"), 1, {"w": np.ones(100_000, np.float32)}, [1])["w"]
    assert 9.5 < float(np.std(big - 1.0)) < 10.5  # default s = 10 times rms(g) = 1


def test_lies_about_reward_and_loss():
    assert reported_returns(cfg("reward-lie"), 1, [5.0, -20.0, 0.5]) == [50.0, 200.0, 10.0]
    parts = LossParts(loss=-0.5, policy_loss=0.1, value_loss=0.2, entropy=0.6, approx_kl=0.0, clipfrac=0.0)
    assert reported_parts(cfg("loss-lie"), 1, parts).loss == 10.0
    assert reported_parts(cfg("loss-lie"), 1, parts).policy_loss == 0.1
    assert plays_randomly(cfg("random-actions"), 1)
