"""A small environment of the tests' own, registered on import: what a user's package would hold.

Used as ``env-id = "custom_envs:Corridor-v0"`` to check that fedrl imports the module
(gymnasium's "module:EnvName-v0" syntax) on the server and the clients before the id is checked.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right along a corridor of 10 cells: +1 at its end, −0.01 a step."""

    LENGTH = 10
    metadata = {"render_modes": []}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.position / self.LENGTH], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position = int(self.np_random.integers(0, 3))
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position = max(0, self.position + (1 if action == 1 else -1))
        done = self.position >= self.LENGTH
        return self._obs(), 1.0 if done else -0.01, done, False, {}


gym.register(id="Corridor-v0", entry_point=Corridor, max_episode_steps=50)
