"""Gymnasium environments for fedrl clients."""

from __future__ import annotations

import difflib

import gymnasium as gym
import numpy as np


class UnsupportedEnv(ValueError):
    """An env id the learner cannot use; ``allowed`` says what would do."""

    def __init__(self, env_id: str, allowed: str) -> None:
        self.env_id = env_id
        self.allowed = allowed
        super().__init__(f"{env_id!r}: allowed: {allowed}")


def check_env_id(env_id: str) -> None:
    """Raise :class:`UnsupportedEnv` unless ``env_id`` is registered, makeable and has supported spaces."""
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"a registered gymnasium id, e.g. {', '.join(close)}" if close else "a registered gymnasium id"
        raise UnsupportedEnv(env_id, f"{hint} ({env_id!r} is not registered)")
    try:
        env = gym.make(env_id)
    except Exception as exc:  # a missing extra (box2d, mujoco) surfaces here
        raise UnsupportedEnv(env_id, f"an environment that can be created here ({exc})") from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs_space, gym.spaces.Box):
        raise UnsupportedEnv(env_id, f"an env with a Box observation space (got {obs_space})")
    if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise UnsupportedEnv(env_id, f"an env with a Discrete or Box action space (got {act_space})")


def env_spaces(env_id: str) -> tuple[gym.spaces.Box, gym.spaces.Space]:
    """The observation and action spaces of ``env_id``."""
    env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    """A synchronous vector env with same-step autoreset.

    Same-step autoreset makes every step a real transition: when an episode ends the
    returned observation is already the next episode's first one and the last one is
    in ``info["final_obs"]``, which the rollout needs to bootstrap truncated episodes.
    Sync beats async on few cores, and the policy forward is batched over the envs.
    """
    return gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def client_seed(seed: int, partition_id: int, server_round: int) -> int:
    """A seed for one client's rollout: distinct per (run seed, partition, round)."""
    return int(np.random.SeedSequence([seed, partition_id, server_round]).generate_state(1)[0])
