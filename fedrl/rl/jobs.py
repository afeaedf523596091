"""The fixed-length jobs of the asynchronous methods, as the learner computes them.

A job is self-contained: it starts from the parameters and statistics it is given,
resets its envs with its own seed and plays exactly ``job-steps`` steps, so its cost is
known when it is sent and its result depends only on its parameters and on (seed,
partition, round, n-th job of the partition in the round).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.model import ActorCritic
from fedrl.rl.normalizer import RunningStats
from fedrl.rl.ppo import LossParts, Minibatch, Rollout, Trajectory, collect_rollout, play, ppo_loss
from fedrl.rl.vtrace import vtrace

# What an actor ships for IMPALA, apart from its behaviour log-probabilities.
TRAJECTORY_KEYS = ("raw_obs", "next_raw_obs", "actions", "rewards", "terminated", "truncated")


def job_seed(seed: int, partition_id: int, server_round: int, nth: int) -> int:
    """A seed for one job: distinct per (run seed, partition, round, n-th job in it), and from every round seed."""
    return int(np.random.SeedSequence([seed, partition_id, server_round, nth, 0xA5]).generate_state(1)[0])


def vector_steps(cfg: FedRLConfig) -> int:
    """Vector-env steps of one job: ``job-steps`` rounded up to whole steps of all the client's envs."""
    return -(-cfg.job_steps // cfg.num_envs_per_client)


def policy_gradient(model: ActorCritic, stats: RunningStats, envs: gym.vector.VectorEnv, cfg: FedRLConfig,
                    seed: int, device: torch.device) -> tuple[dict[str, np.ndarray], LossParts, Rollout]:
    """Play a fresh job at the given parameters and return the PPO-loss gradient over all of it.

    The data come from the parameters the gradient is taken at, so the ratio is 1 and the
    clipped surrogate's gradient is −Â·∇log π: the advantage actor-critic gradient with
    GAE (plus the value loss), which is A3C's update and NIGT's stochastic gradient.
    """
    rollout = collect_rollout(model, stats, envs, cfg, seed, device, steps=vector_steps(cfg) * envs.num_envs)
    model.zero_grad(set_to_none=True)
    loss, parts = ppo_loss(model, Minibatch.take(rollout.arrays(), np.arange(rollout.num_steps), device), cfg)
    loss.backward()
    grads = {name: p.grad.detach().cpu().numpy() for name, p in model.named_parameters()}
    return {k: grads[k] for k in model.state_dict()}, parts, rollout


def actor_trajectory(model: ActorCritic, stats: RunningStats, envs: gym.vector.VectorEnv, cfg: FedRLConfig,
                     seed: int, device: torch.device) -> Trajectory:
    """An IMPALA actor's job: a fixed-length trajectory under the (possibly stale) policy it was sent."""
    return play(model, stats, envs, cfg, seed, device, steps=vector_steps(cfg) * envs.num_envs)


def impala_loss(model: ActorCritic, stats: RunningStats, batch: dict[str, torch.Tensor], behaviour: torch.Tensor,
                cfg: FedRLConfig) -> tuple[torch.Tensor, LossParts, float]:
    """The IMPALA learner's loss on ``(T, B)`` trajectories at the current parameters.

    Observations arrive raw and are normalised here with the learner's statistics, so the
    ratio π/μ does not absorb the drift of the statistics. Returns the loss, its parts
    and the fraction of clipped importance weights.

        loss = −mean(A_t·log π(a_t|x_t)) + vf_coef·½·mean((v_t − V(x_t))²) − ent_coef·mean(H)
    """
    steps, width = batch["rewards"].shape
    obs = torch.as_tensor(stats.normalize(batch["raw_obs"].reshape(steps * width, -1).numpy()), dtype=torch.float32)
    next_obs = torch.as_tensor(stats.normalize(batch["next_raw_obs"].reshape(steps * width, -1).numpy()),
                               dtype=torch.float32)
    actions = batch["actions"].reshape(steps * width, *batch["actions"].shape[2:])
    logprob, entropy, value = model.evaluate_actions(obs, actions)
    with torch.no_grad():
        next_value = model.value(next_obs)
    targets = vtrace(behaviour, logprob.detach().reshape(steps, width), value.detach().reshape(steps, width),
                     next_value.reshape(steps, width), batch["rewards"], batch["terminated"], batch["truncated"],
                     cfg.gamma, cfg.vtrace_rho_bar, cfg.vtrace_c_bar)
    pg_loss = -(targets.pg_advantages.reshape(-1) * logprob).mean()
    v_loss = 0.5 * ((targets.vs.reshape(-1) - value) ** 2).mean()
    ent = entropy.mean()
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent
    with torch.no_grad():
        logratio = logprob.reshape(steps, width) - behaviour
        approx_kl = float(((logratio.exp() - 1) - logratio).mean())
    parts = LossParts(float(loss.detach()), float(pg_loss.detach()), float(v_loss.detach()), float(ent.detach()),
                      approx_kl, targets.rho_clipfrac)
    return loss, parts, targets.rho_clipfrac
