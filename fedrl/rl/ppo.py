"""PPO pieces: rollout collection, GAE and the clipped-surrogate loss.

The same functions serve the federated clients and the single-process reference loop
(:mod:`fedrl.rl.single`), so both learn with identical code. Minibatches and loss parts
are typed (:class:`Minibatch`, :class:`LossParts`); only the protocol turns them into
wire names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.model import ActorCritic
from fedrl.rl.normalizer import RunningStats

CLIP_REWARD = 10.0


class Minibatch(NamedTuple):
    """The tensors of one PPO minibatch (SB3's ``RolloutBufferSamples``)."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    @classmethod
    def take(cls, arrays: dict[str, np.ndarray], idx: np.ndarray, device: torch.device) -> Minibatch:
        """The rows ``idx`` of a rollout's arrays (:meth:`Rollout.arrays`) as tensors."""
        return cls(*(torch.as_tensor(arrays[k][idx], device=device) for k in cls._fields))


class LossParts(NamedTuple):
    """The PPO loss of one minibatch and its parts, as floats."""

    loss: float
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clipfrac: float

    @classmethod
    def mean(cls, parts: list[LossParts]) -> LossParts:
        """The part-by-part mean of ``parts`` (summed in order, then divided)."""
        totals = [0.0] * len(cls._fields)
        for p in parts:
            totals = [t + v for t, v in zip(totals, p)]
        return cls(*(t / len(parts) for t in totals))


ROLLOUT_KEYS = Minibatch._fields


@dataclass
class Rollout:
    """One client's experience for a round, flattened over time and envs.

    ``obs`` are already normalised with the statistics that were global during the
    round, so every gradient exchange of the round sees the same inputs.
    """

    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    obs_stats: RunningStats | None = None
    return_stats: RunningStats | None = None

    @property
    def num_steps(self) -> int:
        """Number of transitions."""
        return int(self.obs.shape[0])

    @property
    def explained_variance(self) -> float:
        """1 - Var(returns - values) / Var(returns), as CleanRL and SB3 log it; NaN if the returns are constant."""
        var = float(np.var(self.returns))
        return float("nan") if var == 0.0 else 1.0 - float(np.var(self.returns - self.values)) / var

    def arrays(self) -> dict[str, np.ndarray]:
        """The training arrays by name (what a client keeps between messages)."""
        return {k: getattr(self, k) for k in ROLLOUT_KEYS}


def compute_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_value: np.ndarray,
                gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and returns.

    Arrays are ``(T, num_envs)``. ``dones[t]`` is 1 when the episode ended with
    transition ``t`` (its reward already includes any bootstrap for truncation), so no
    value flows back across it; ``last_value`` bootstraps the unfinished tail.
    """
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    last_gae = np.zeros_like(last_value, dtype=np.float32)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last_gae = delta + gamma * gae_lambda * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


@dataclass
class Trajectory:
    """What the envs did under one policy, step by step: arrays are ``(T, num_envs, ...)``.

    ``obs`` are normalised with the statistics the actor was given, ``raw_obs`` and
    ``next_raw_obs`` are not (``next_raw_obs[t]`` is the observation after step ``t``, the
    final one of an episode that ended there). ``rewards`` are raw; ``bootstrap_rewards``
    are scaled (with reward normalisation) and carry ``gamma * V(final obs)`` at truncations.
    """

    raw_obs: np.ndarray
    obs: np.ndarray
    next_raw_obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    bootstrap_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    last_value: np.ndarray
    discounted_returns: np.ndarray
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)

    @property
    def dones(self) -> np.ndarray:
        """1.0 where an episode ended with that step (terminated or truncated)."""
        return np.logical_or(self.terminated, self.truncated).astype(np.float32)

    @property
    def num_steps(self) -> int:
        """Number of transitions over all envs."""
        return int(self.rewards.size)

    def obs_stats(self) -> RunningStats:
        """Statistics of the raw observations it saw."""
        return RunningStats.from_batch(self.raw_obs.reshape(self.num_steps, -1))


@torch.no_grad()
def play(model: ActorCritic, stats: RunningStats, envs: gym.vector.VectorEnv, cfg: FedRLConfig, seed: int,
         device: torch.device, return_stats: RunningStats | None = None, steps: int | None = None,
         random_actions: bool = False) -> Trajectory:
    """Reset the envs with ``seed`` and act with ``model`` until the rollout is long enough.

    With ``steps`` it plays exactly that many env steps (rounded up to whole vector
    steps): a job of fixed length, whose cost is known in advance. Without, it plays
    until at least ``min-episodes`` have finished *and* ``min-steps`` were taken, as the
    paper's workers gather "two episodes or 2000 timesteps, whichever happens last".
    Truncated episodes (time limits) are bootstrapped with the value of their final
    observation. With ``return_stats`` rewards are divided by the discounted return's
    standard deviation and clipped to ±10, as SB3's VecNormalize does. ``random_actions``
    (a Byzantine client in experiments) acts uniformly at random and records the policy's
    log-probabilities of those actions.
    """
    num_envs = envs.num_envs
    # Action sampling draws from torch's global generator; seeding it here makes a
    # client's rollout depend only on its seed, whichever process (a Ray actor, a
    # fresh ClientApp, the test's) happens to run it.
    torch.manual_seed(seed)
    obs_raw, _ = envs.reset(seed=seed)
    envs.action_space.seed(seed)
    action_space = envs.single_action_space
    continuous = isinstance(action_space, gym.spaces.Box)

    names = ("raw_obs", "obs", "next_raw_obs", "actions", "logprobs", "values", "rewards", "bootstrap_rewards",
             "terminated", "truncated", "discounted_returns")
    columns: dict[str, list[np.ndarray]] = {k: [] for k in names}
    (raw_l, obs_l, next_l, act_l, logp_l, val_l, rew_l, boot_l, term_l, trunc_l, disc_l) = columns.values()
    ep_ret = np.zeros(num_envs)
    ep_len = np.zeros(num_envs, dtype=np.int64)
    disc_ret = np.zeros(num_envs)
    scaled = return_stats is not None and return_stats.count > 0
    reward_scale = float(1.0 / np.sqrt(return_stats.var[0] + 1e-8)) if scaled else 1.0  # type: ignore[union-attr]
    episode_returns: list[float] = []
    episode_lengths: list[int] = []
    taken = 0

    def more() -> bool:
        if steps is not None:
            return taken < steps
        return taken < cfg.min_steps or len(episode_returns) < cfg.min_episodes

    while more():
        obs = stats.normalize(obs_raw)
        action, logprob, value = model.act(torch.as_tensor(obs, device=device))
        if random_actions:
            action = torch.as_tensor(envs.action_space.sample(), device=device)
            logprob, _, value = model.evaluate_actions(torch.as_tensor(obs, device=device), action)
        action_np = action.cpu().numpy()
        env_action = np.clip(action_np, action_space.low, action_space.high) if continuous else action_np
        next_obs, reward, terminated, truncated, info = envs.step(env_action)
        reward = np.asarray(reward, np.float64)
        ep_ret += reward
        ep_len += 1
        disc_ret = cfg.gamma * disc_ret + reward
        disc_l.append(disc_ret.copy())
        done = np.logical_or(terminated, truncated)
        bootstrap_reward = np.clip(reward * reward_scale, -CLIP_REWARD, CLIP_REWARD) if scaled else reward.copy()
        next_raw = next_obs
        if done.any():
            disc_ret[done] = 0.0
            # The vector env has already reset a finished env: its last observation is in info.
            next_raw = np.array(next_obs, np.float64)
            for i in np.flatnonzero(done):
                next_raw[i] = info["final_obs"][i]
                episode_returns.append(float(ep_ret[i]))
                episode_lengths.append(int(ep_len[i]))
                ep_ret[i] = 0.0
                ep_len[i] = 0
            cut = truncated & ~terminated
            if cut.any():
                idx = np.flatnonzero(cut)
                final = np.stack([info["final_obs"][i] for i in idx])
                final_v = model.value(torch.as_tensor(stats.normalize(final), device=device)).cpu().numpy()
                bootstrap_reward[idx] += cfg.gamma * final_v
        raw_l.append(obs_raw)
        obs_l.append(obs)
        next_l.append(next_raw)
        act_l.append(action_np)
        logp_l.append(logprob.cpu().numpy())
        val_l.append(value.cpu().numpy())
        rew_l.append(reward)
        boot_l.append(bootstrap_reward)
        term_l.append(terminated)
        trunc_l.append(truncated)
        obs_raw = next_obs
        taken += num_envs

    last_value = model.value(torch.as_tensor(stats.normalize(obs_raw), device=device)).cpu().numpy()
    kinds = {"raw_obs": np.float64, "next_raw_obs": np.float64, "actions": np.float32 if continuous else np.int64,
             "rewards": np.float64, "terminated": np.float32, "truncated": np.float32,
             "discounted_returns": np.float64}
    arrays = {k: np.asarray(v, kinds.get(k, np.float32)) for k, v in columns.items()}
    return Trajectory(**arrays, last_value=last_value.astype(np.float32), episode_returns=episode_returns,
                      episode_lengths=episode_lengths)


def collect_rollout(model: ActorCritic, stats: RunningStats, envs: gym.vector.VectorEnv, cfg: FedRLConfig,
                    seed: int, device: torch.device, return_stats: RunningStats | None = None,
                    steps: int | None = None, random_actions: bool = False) -> Rollout:
    """:func:`play`, then GAE; the rollout carries the statistics of the observations and returns it saw.

    The unfinished tail is bootstrapped through GAE; the episode returns reported stay raw.
    """
    traj = play(model, stats, envs, cfg, seed, device, return_stats, steps, random_actions)
    advantages, returns = compute_gae(traj.bootstrap_rewards, traj.values, traj.dones, traj.last_value, cfg.gamma,
                                      cfg.gae_lambda)

    def flat(arr: np.ndarray) -> np.ndarray:
        return arr.reshape(arr.shape[0] * arr.shape[1], *arr.shape[2:])

    return Rollout(
        obs=flat(traj.obs),
        actions=flat(traj.actions),
        logprobs=flat(traj.logprobs),
        values=flat(traj.values),
        advantages=flat(advantages),
        returns=flat(returns),
        episode_returns=traj.episode_returns,
        episode_lengths=traj.episode_lengths,
        obs_stats=traj.obs_stats(),
        return_stats=RunningStats.from_batch(traj.discounted_returns.reshape(-1, 1)),
    )


def minibatch_indices(num_steps: int, num_minibatches: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random split of ``range(num_steps)`` into ``num_minibatches`` near-equal parts."""
    return np.array_split(rng.permutation(num_steps), num_minibatches)


def ppo_loss(model: ActorCritic, batch: Minibatch, cfg: FedRLConfig) -> tuple[torch.Tensor, LossParts]:
    """The PPO objective on one minibatch: clipped surrogate + value loss - entropy bonus.

    Returns the differentiable total and its parts as floats, for logging and for the
    loss-weighted aggregator.
    """
    logprob, entropy, value = model.evaluate_actions(batch.obs, batch.actions)
    logratio = logprob - batch.logprobs
    ratio = logratio.exp()
    adv = batch.advantages
    if cfg.norm_adv and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    v_loss = 0.5 * ((value - batch.returns) ** 2).mean()
    ent = entropy.mean()
    loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
    parts = LossParts(loss=float(loss.detach()), policy_loss=float(pg_loss.detach()), value_loss=float(v_loss.detach()),
                      entropy=float(ent.detach()), approx_kl=float(approx_kl), clipfrac=float(clipfrac))
    return loss, parts


def train_epochs(model: ActorCritic, optimizer: torch.optim.Optimizer, arrays: dict[str, np.ndarray],
                 cfg: FedRLConfig, rngs: list[np.random.Generator], device: torch.device,
                 anchor: list[torch.Tensor] | None = None) -> LossParts:
    """Run PPO epochs locally (one generator per epoch shuffles the data); returns mean loss parts.

    With ``anchor`` (the global parameters) and ``cfg.mu > 0`` the FedProx term
    (mu/2)·||θ - θ_anchor||² is added to every minibatch loss.
    """
    history: list[LossParts] = []
    for rng in rngs:
        for idx in minibatch_indices(len(arrays["obs"]), cfg.num_minibatches, rng):
            loss, parts = ppo_loss(model, Minibatch.take(arrays, idx, device), cfg)
            if anchor is not None and cfg.mu > 0:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                loss = loss + 0.5 * cfg.mu * prox
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            history.append(parts)
    return LossParts.mean(history)


def epoch_rng(seed: int, partition_id: int, server_round: int, epoch: int) -> np.random.Generator:
    """The generator that shuffles one client's rollout for one epoch (same on every retry)."""
    return np.random.default_rng([seed, partition_id, server_round, epoch])
