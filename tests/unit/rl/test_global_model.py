"""The server's learner refuses what would make it non-finite, and steps on huge but finite gradients."""

from __future__ import annotations

import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.global_model import GlobalModel
from fedrl.rl.normalizer import RunningStats


def model(**config):
    return GlobalModel(FedRLConfig(**config), torch.device("cpu"))


def snapshot(state):
    # numpy_state() shares memory with the CPU parameters: copy to compare before and after.
    return {k: v.copy() for k, v in state.numpy_state().items()}


def test_a_gradient_whose_float32_norm_overflows_is_clipped_in_float64_and_applied():
    state = model(server_optimizer="sgd", server_lr=1.0, max_grad_norm=0.5)
    before = snapshot(state)
    grads = {k: np.zeros_like(v) for k, v in before.items()}
    first = next(iter(grads))
    grads[first].flat[0] = 3e38
    grads[first].flat[1] = 3e38
    assert state.apply_gradient(grads)
    after = state.numpy_state()
    assert all(np.all(np.isfinite(v)) for v in after.values())
    moved = before[first].flat[:2] - after[first].flat[:2]
    np.testing.assert_allclose(moved, [0.5 / np.sqrt(2)] * 2, rtol=1e-5)  # clipped to norm 0.5


def test_a_non_finite_gradient_is_skipped_and_nothing_changes():
    state = model()
    before = snapshot(state)
    grads = {k: np.full_like(v, np.inf) for k, v in before.items()}
    assert not state.apply_gradient(grads)
    for k, v in state.numpy_state().items():
        np.testing.assert_array_equal(v, before[k])


def test_parameters_near_the_float32_limit_are_refused():
    state = model(aggregator="fedavg")
    params = snapshot(state)
    assert state.accepts_parameters(params)
    huge = {k: np.full_like(v, 3e38) for k, v in params.items()}
    assert not state.accepts_parameters(huge)
    assert not state.set_parameters(huge)
    for k, v in state.numpy_state().items():
        np.testing.assert_array_equal(v, params[k])


def test_statistics_that_would_make_the_global_normaliser_implausible_are_not_merged():
    state = model(normalize_reward=True)
    ok = RunningStats(10.0, np.zeros(4), np.ones(4) * 10)
    assert state.merge_stats(ok, RunningStats(10.0, np.zeros(1), np.ones(1)))
    huge = RunningStats(10.0, np.full(4, 1e200), np.ones(4))
    assert not state.merge_stats(huge, RunningStats(10.0, np.zeros(1), np.ones(1)))
    assert not state.merge_stats(ok, RunningStats(10.0, np.full(1, 1e308), np.full(1, 1e308)))
    assert state.obs_stats.count == 10 and np.all(state.obs_stats.mean == 0)
