"""PPO pieces: GAE, the loss, rollout collection and the model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.envs import make_vector_env
from fedrl.rl.model import build_model, count_parameters
from fedrl.rl.normalizer import RunningStats
from fedrl.rl.ppo import LossParts, Minibatch, collect_rollout, compute_gae, minibatch_indices, ppo_loss


def test_gae_hand_computed():
    # One env, 3 steps, the episode ends after step 1 (index 1), tail bootstrapped with 4.0.
    rewards = np.array([[1.0], [2.0], [3.0]], np.float32)
    values = np.array([[0.5], [1.0], [2.0]], np.float32)
    dones = np.array([[0.0], [1.0], [0.0]], np.float32)
    gamma, lam = 0.9, 0.8
    adv, ret = compute_gae(rewards, values, dones, np.array([4.0], np.float32), gamma, lam)
    d2 = 3.0 + 0.9 * 4.0 - 2.0          # 4.6
    d1 = 2.0 - 1.0                      # 1.0, no bootstrap across the episode end
    d0 = 1.0 + 0.9 * 1.0 - 0.5          # 1.4
    a2, a1 = d2, d1
    a0 = d0 + gamma * lam * a1          # 1.4 + 0.72
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret, adv + values, rtol=1e-6)


def test_gae_lambda_one_gives_discounted_returns():
    rewards = np.ones((4, 1), np.float32)
    values = np.zeros((4, 1), np.float32)
    adv, _ = compute_gae(rewards, values, np.zeros((4, 1), np.float32), np.zeros(1, np.float32), 0.5, 1.0)
    np.testing.assert_allclose(adv[:, 0], [1.875, 1.75, 1.5, 1.0])


@pytest.mark.parametrize(("size", "low", "high"), [("small", 8_000, 10_000), ("medium", 40_000, 50_000),
                                                    ("large", 700_000, 800_000)])
def test_model_sizes_match_the_paper(size, low, high):
    env = gym.make("CartPole-v1")
    model = build_model(env.observation_space, env.action_space, size)
    assert low <= count_parameters(model) <= high


def test_log_std_init_sets_the_gaussian_std_and_leaves_discrete_heads_alone():
    box = gym.spaces.Box(-1.0, 1.0, (3,))
    model = build_model(gym.spaces.Box(-1.0, 1.0, (5,)), box, "small", log_std_init=-2.0)
    dist = model.distribution(torch.zeros(4, 5))
    np.testing.assert_allclose(dist.stddev.detach().numpy(), np.full((4, 3), np.exp(-2.0)), rtol=1e-6)
    assert model.actor_logstd.requires_grad
    discrete = build_model(gym.spaces.Box(-1.0, 1.0, (5,)), gym.spaces.Discrete(2), "small", log_std_init=-2.0)
    assert not hasattr(discrete, "actor_logstd")


def rollout(cfg: FedRLConfig, seed: int = 3):
    torch.manual_seed(0)
    env = gym.make(cfg.env_id)
    model = build_model(env.observation_space, env.action_space, cfg.model_size)
    envs = make_vector_env(cfg.env_id, cfg.num_envs_per_client)
    stats = RunningStats.empty(env.observation_space.shape)
    return model, collect_rollout(model, stats, envs, cfg, seed, torch.device("cpu"))


def test_rollout_takes_whichever_comes_last():
    cfg = FedRLConfig(min_steps=50, min_episodes=3, num_envs_per_client=2)
    _, r = rollout(cfg)
    assert len(r.episode_returns) >= 3 and r.num_steps >= 50
    assert r.num_steps % 2 == 0
    assert r.obs_stats.count == r.num_steps
    # CartPole pays 1 per step, so returns equal lengths.
    assert r.episode_returns == [float(n) for n in r.episode_lengths]
    cfg = FedRLConfig(min_steps=600, min_episodes=1)
    _, r = rollout(cfg)
    assert r.num_steps == 600


def test_rollout_is_deterministic_per_seed():
    cfg = FedRLConfig(min_steps=64, min_episodes=1)
    _, a = rollout(cfg, seed=5)
    _, b = rollout(cfg, seed=5)
    _, c = rollout(cfg, seed=6)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert not np.array_equal(a.obs[:10], c.obs[:10])


def pendulum_reward(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Pendulum-v1's reward for taking ``action`` at observation (cos θ, sin θ, θ')."""
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    torque = np.clip(action[:, 0], -2.0, 2.0)
    return -(theta**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * torque**2)


def test_continuous_rollout_bootstraps_truncation():
    cfg = FedRLConfig(env_id="Pendulum-v1", min_steps=200, min_episodes=1, gamma=0.9, gae_lambda=1.0)
    torch.manual_seed(0)
    env = gym.make(cfg.env_id)
    model = build_model(env.observation_space, env.action_space, cfg.model_size)
    # A critic that says 10 everywhere: a bootstrapped truncation adds exactly gamma * 10.
    last = model.critic[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 10.0)
    r = collect_rollout(model, RunningStats.empty((3,)), make_vector_env(cfg.env_id, 1), cfg, 3, torch.device("cpu"))
    # Pendulum only truncates (200 steps): exactly one episode, ending with the rollout's last transition.
    assert len(r.episode_returns) == 1 and r.episode_lengths == [200] and r.actions.shape == (200, 1)
    rewards = pendulum_reward(r.obs, r.actions)  # empty statistics: r.obs are the raw observations
    np.testing.assert_allclose(sum(rewards), r.episode_returns[0], rtol=1e-5)
    # With lambda 1 and a constant critic the return of the last step is its reward plus the bootstrap.
    assert r.returns[-1] == pytest.approx(rewards[-1] + cfg.gamma * 10.0, rel=1e-5)
    assert r.returns[-2] == pytest.approx(rewards[-2] + cfg.gamma * r.returns[-1], rel=1e-5)


def test_ppo_loss_at_collection_parameters():
    cfg = FedRLConfig(min_steps=128, min_episodes=1)
    model, r = rollout(cfg)
    idx = minibatch_indices(r.num_steps, 4, np.random.default_rng(0))
    assert sorted(np.concatenate(idx).tolist()) == list(range(r.num_steps))
    batch = Minibatch.take(r.arrays(), idx[0], torch.device("cpu"))
    assert len(batch.obs) == len(idx[0]) and batch._fields == ("obs", "actions", "logprobs", "values", "advantages",
                                                               "returns")
    loss, parts = ppo_loss(model, batch, cfg)
    # Same parameters as when the data was collected: ratio 1, no KL, nothing clipped.
    assert parts.approx_kl == pytest.approx(0.0, abs=1e-6)
    assert parts.clipfrac == 0.0
    assert parts.loss == pytest.approx(parts.policy_loss + cfg.vf_coef * parts.value_loss
                                       - cfg.ent_coef * parts.entropy, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_vector_env_rejects_nothing_and_steps():
    # Same-step autoreset: every step is a real transition (CartPole pays 1 for each), and a
    # finished episode's last observation comes in info["final_obs"] beside the next episode's first.
    envs = make_vector_env("CartPole-v1", 3)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 4)
    ended = 0
    for _ in range(200):
        obs, reward, terminated, truncated, info = envs.step(np.ones(3, np.int64))  # always push right: falls fast
        np.testing.assert_array_equal(reward, np.ones(3))
        for i in np.flatnonzero(terminated | truncated):
            ended += 1
            assert np.abs(obs[i]).max() <= 0.05  # a fresh episode's first observation
            assert np.abs(info["final_obs"][i][2]) > 0.2  # the pole had fallen
    assert ended >= 3


def test_explained_variance_and_the_mean_of_loss_parts():
    cfg = FedRLConfig(min_steps=64, min_episodes=1)
    _, r = rollout(cfg)
    expected = 1 - np.var(r.returns - r.values) / np.var(r.returns)
    assert r.explained_variance == pytest.approx(float(expected), rel=1e-5)
    perfect = type(r)(**{**r.__dict__, "values": r.returns.copy()})
    assert perfect.explained_variance == 1.0
    flat = type(r)(**{**r.__dict__, "returns": np.ones_like(r.returns)})
    assert np.isnan(flat.explained_variance)
    a, b = LossParts(1.0, 2.0, 3.0, 4.0, 5.0, 0.0), LossParts(3.0, 2.0, 1.0, 0.0, 1.0, 0.5)
    assert LossParts.mean([a, b]) == LossParts(2.0, 2.0, 2.0, 2.0, 3.0, 0.25)


def test_rollout_does_not_depend_on_earlier_random_draws():
    cfg = FedRLConfig(min_steps=64, min_episodes=1)
    model, a = rollout(cfg, seed=5)
    envs = make_vector_env(cfg.env_id, 1)
    torch.rand(100)  # another client or test drew from the global generator in between
    b = collect_rollout(model, RunningStats.empty((4,)), envs, cfg, 5, torch.device("cpu"))
    np.testing.assert_array_equal(a.actions, b.actions)


def test_reward_scaling_uses_the_global_return_std_and_reports_raw_returns():
    cfg = FedRLConfig(min_steps=64, min_episodes=1)
    model, plain = rollout(cfg, seed=4)
    envs = make_vector_env(cfg.env_id, 1)
    ret_stats = RunningStats(100.0, np.array([0.0]), np.array([100.0 * 4.0]))  # std 2
    scaled = collect_rollout(model, RunningStats.empty((4,)), envs, cfg, 4, torch.device("cpu"), ret_stats)
    assert scaled.episode_returns == plain.episode_returns
    # CartPole pays 1 per step: scaled rewards are 0.5, so advantages+values shrink accordingly.
    np.testing.assert_array_equal(scaled.actions, plain.actions)
    assert np.abs(scaled.returns).mean() < np.abs(plain.returns).mean()
    # The discounted-return statistics cover every step: G_t = 1 + γ + ... within an episode.
    assert scaled.return_stats.count == scaled.num_steps
    assert scaled.return_stats.mean[0] > 1.0
