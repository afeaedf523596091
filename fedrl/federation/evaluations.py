"""Evaluations of the current parameters at fixed fractions of the budget, for every scheduler.

K deterministic episodes with the same seeds each time, so successive evaluations differ
only by the parameters; they are not charged to simulated time.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from fedrl.config import FedRLConfig
from fedrl.federation.recorder import Recorder
from fedrl.rl.evaluate import evaluate
from fedrl.rl.global_model import GlobalModel

log = logging.getLogger("fedrl")

EVAL_SEED = 10_000


class Evaluations:
    """Evaluates every ``eval-every`` × ``budget`` (simulated time, or rounds) and writes evals.csv."""

    def __init__(self, cfg: FedRLConfig, budget: float, recorder: Recorder) -> None:
        self.cfg = cfg
        self.step = cfg.eval_every * budget
        self.budget = budget
        self.next_at = 0.0
        self.recorder = recorder

    def due(self, now: float) -> list[float]:
        """The evaluation points up to ``now`` that have not been evaluated yet."""
        points = []
        while self.cfg.eval_episodes > 0 and self.next_at <= now + 1e-9 and self.next_at <= self.budget + 1e-9:
            points.append(self.next_at)
            self.next_at += self.step
        return points

    def run(self, points: list[float], state: GlobalModel, env_steps: int, updates: int,
            behaviour: list[float]) -> None:
        """Evaluate ``state`` once, as the parameters at each simulated time in ``points`` (a row each)."""
        if not points:
            return
        returns = evaluate(state.model, state.obs_stats, self.cfg.env_id, self.cfg.eval_episodes,
                           EVAL_SEED + 100 * self.cfg.seed)
        for at in points:
            row = {"sim_time": at, "wall_time_s": self.recorder.wall_time(), "env_steps": env_steps,
                   "updates": updates, "eval_return_mean": float(np.mean(returns)),
                   "eval_return_std": float(np.std(returns)),
                   "behaviour_return": float(np.mean(behaviour)) if behaviour else math.nan}
            self.recorder.evaluation(row, state)
        log.info("[eval t=%.1f] env_steps=%d updates=%d eval_return=%.1f±%.1f behaviour_return=%.1f wall=%.1fs",
                 points[-1], env_steps, updates, row["eval_return_mean"], row["eval_return_std"],
                 row["behaviour_return"], row["wall_time_s"])
