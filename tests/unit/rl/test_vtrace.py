"""V-trace against hand-worked trajectories."""

from __future__ import annotations

import math

import pytest
import torch

from fedrl.rl.vtrace import vtrace

GAMMA = 0.9


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 1)


def test_on_policy_targets_are_the_bootstrapped_n_step_returns():
    rewards = column(1.0, 2.0, 3.0)
    values = column(0.5, 0.2, -0.1)
    next_values = column(0.2, -0.1, 4.0)  # the state after each step; 4.0 bootstraps the tail
    zeros = column(0.0, 0.0, 0.0)
    logp = column(-0.7, -1.2, -0.3)
    out = vtrace(logp, logp, values, next_values, rewards, zeros, zeros, GAMMA)
    expected = [1 + GAMMA * 2 + GAMMA ** 2 * 3 + GAMMA ** 3 * 4.0, 2 + GAMMA * 3 + GAMMA ** 2 * 4.0, 3 + GAMMA * 4.0]
    assert out.vs.flatten().tolist() == pytest.approx(expected, rel=1e-12)
    # A_t = r_t + γ v_{t+1} − V(x_t), with v_3 = V(x_3)
    following = expected[1:] + [4.0]
    assert out.pg_advantages.flatten().tolist() == pytest.approx(
        [r + GAMMA * f - v for r, f, v in zip([1, 2, 3], following, [0.5, 0.2, -0.1])], rel=1e-12)
    assert out.rho_clipfrac == 0.0


def test_a_terminal_step_stops_the_bootstrap_and_a_truncation_bootstraps_the_final_state():
    rewards = column(1.0, 1.0, 1.0, 1.0)
    values = column(0.0, 7.0, 0.0, 3.0)
    # Inside an episode the next state's value is the next step's; step 1 truncates with
    # V(final) = 5 (step 2 starts a new episode) and step 3 is terminal (its 2.0 is unused).
    next_values = column(7.0, 5.0, 3.0, 2.0)
    terminated = column(0.0, 0.0, 0.0, 1.0)
    truncated = column(0.0, 1.0, 0.0, 0.0)
    logp = column(0.0, 0.0, 0.0, 0.0)
    out = vtrace(logp, logp, values, next_values, rewards, terminated, truncated, GAMMA)
    assert out.vs.flatten().tolist() == pytest.approx([1 + GAMMA * (1 + GAMMA * 5.0), 1 + GAMMA * 5.0,
                                                       1 + GAMMA * 1.0, 1.0], rel=1e-12)


def test_the_rho_bar_clip_holds():
    rewards = column(1.0, 0.0)
    values = column(0.0, 0.0)
    next_values = column(0.0, 0.0)
    zeros = column(0.0, 0.0)
    behaviour = column(math.log(0.1), math.log(0.5))
    target = column(math.log(0.9), math.log(0.25))  # ratios 9 (clipped to 1) and 0.5
    out = vtrace(behaviour, target, values, next_values, rewards, zeros, zeros, GAMMA, rho_bar=1.0, c_bar=1.0)
    assert out.vs.flatten().tolist() == pytest.approx([1.0, 0.0])  # δ_0 = min(1, 9)·1
    assert out.pg_advantages[0, 0].item() == pytest.approx(1.0)
    assert out.rho_clipfrac == 0.5
    looser = vtrace(behaviour, target, values, next_values, rewards, zeros, zeros, GAMMA, rho_bar=3.0)
    assert looser.vs[0, 0].item() == pytest.approx(3.0)
