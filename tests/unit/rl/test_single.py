"""The single-process reference loop."""

from __future__ import annotations

import math

from fedrl.config import FedRLConfig
from fedrl.rl.single import train_single


def test_single_process_loop_is_deterministic_and_counts_steps():
    cfg = FedRLConfig(min_steps=128, min_episodes=1, update_epochs=2, num_minibatches=2)
    a = train_single(cfg, iterations=2, steps_per_iteration=256)
    b = train_single(cfg, iterations=2, steps_per_iteration=256)
    assert [r["env_steps"] for r in a] == [256, 512]
    assert [r["episodic_return_mean"] for r in a] == [r["episodic_return_mean"] for r in b]
    assert [r["loss_mean"] for r in a] == [r["loss_mean"] for r in b]
    assert all(math.isfinite(r["loss_mean"]) for r in a)
