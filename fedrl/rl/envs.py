"""Gymnasium environments for fedrl clients."""

from __future__ import annotations

import difflib
import importlib

import gymnasium as gym
import numpy as np


class UnsupportedEnv(ValueError):
    """An env id the learner cannot use; ``allowed`` says what would do."""

    def __init__(self, env_id: str, allowed: str) -> None:
        self.env_id = env_id
        self.allowed = allowed
        super().__init__(f"{env_id!r}: allowed: {allowed}")


def import_env_module(env_id: str) -> str:
    """For gymnasium's ``"package.module:EnvName-v0"`` form, import the module (it registers the env);
    returns the id without the module, or :class:`UnsupportedEnv` if the module cannot be imported."""
    if ":" not in env_id:
        return env_id
    module, name = env_id.split(":", 1)
    try:
        importlib.import_module(module)
    except Exception as exc:  # the module's own import error says what is missing
        raise UnsupportedEnv(env_id, f"\"module:EnvName-v0\" with a module that can be imported here, on the "
                             f"server and on every client (importing {module!r} failed: {exc})") from exc
    return name


def check_env_id(env_id: str) -> None:
    """Raise :class:`UnsupportedEnv` unless ``env_id`` is registered, makeable and has supported spaces.

    ``"package.module:EnvName-v0"`` (gymnasium's own syntax) imports the module first.
    """
    registered = import_env_module(env_id)
    if registered not in gym.registry:
        close = difflib.get_close_matches(registered, list(gym.registry), n=3)
        hint = f"a registered gymnasium id, e.g. {', '.join(close)}" if close else "a registered gymnasium id"
        where = f" by importing {env_id.split(':', 1)[0]!r}" if registered != env_id else ""
        raise UnsupportedEnv(env_id, f"{hint} ({registered!r} is not registered{where})")
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
