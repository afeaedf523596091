"""The NIGT outer loop: extrapolation, normalised steps, the critic's own optimizer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from fedrl.rl.model import ActorCritic
from fedrl.rl.nigt import NIGT, is_actor


def model() -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(4, gym.spaces.Box(-1, 1, (2,)))


def grads_like(net: ActorCritic, value: float) -> dict[str, np.ndarray]:
    return {k: np.full(v.shape, value, np.float32) for k, v in net.state_dict().items()}


def actor_flat(state: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([v.ravel() for k, v in state.items() if is_actor(k)]).astype(np.float64)


def test_with_eta_one_the_query_point_is_theta():
    net = model()
    nigt = NIGT(net, lr=0.1, momentum=1.0, critic_lr=1e-3, max_grad_norm=0.5)
    nigt.step(grads_like(net, 1.0))
    theta = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    query = nigt.query_point()
    assert all(np.array_equal(query[k], theta[k]) for k in theta)


def test_each_step_moves_the_actor_by_exactly_alpha_and_extrapolates_by_the_momentum_rule():
    net = model()
    nigt = NIGT(net, lr=0.05, momentum=0.1, critic_lr=1e-3, max_grad_norm=0.5)
    before = actor_flat(nigt.query_point())  # θ_0 (θ_{-1} = θ_0, so θ̃_0 = θ_0)
    nigt.step(grads_like(net, 3.0))
    after = actor_flat({k: v.detach().numpy() for k, v in net.state_dict().items()})
    assert np.linalg.norm(after - before) == np.float64(np.linalg.norm(after - before))
    assert abs(np.linalg.norm(after - before) - 0.05) < 1e-6
    query = actor_flat(nigt.query_point())
    assert np.allclose(query, after + 9.0 * (after - before), atol=1e-6)  # (1 − η)/η = 9


def test_the_critic_is_stepped_by_its_own_adam_and_not_extrapolated():
    net = model()
    critic_before = {k: v.clone() for k, v in net.state_dict().items() if not is_actor(k)}
    nigt = NIGT(net, lr=0.05, momentum=0.5, critic_lr=1e-2, max_grad_norm=10.0)
    nigt.step(grads_like(net, 1.0))
    for k, v in critic_before.items():
        moved = net.state_dict()[k] - v
        assert torch.allclose(moved, torch.full_like(v, -1e-2), atol=1e-5), k  # Adam's first step is lr·sign(g)
    query = nigt.query_point()
    assert all(np.array_equal(query[k], net.state_dict()[k].numpy()) for k in critic_before)
