"""The paper's gradient aggregators: one class each, the rule in its docstring."""

from __future__ import annotations

import numpy as np

from fedrl.federation.protocol import ClientUpdate
from strategies.base import Aggregator, share


class BaselineSum(Aggregator):
    """Baseline-Sum: g = Σ_i g_i."""

    name = "baseline-sum"

    def weights(self, updates: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        """w_i = 1."""
        return np.ones(len(updates))


class BaselineAvg(Aggregator):
    """Baseline-Avg: g = (1/n) Σ_i g_i."""

    name = "baseline-avg"

    def weights(self, updates: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        """w_i = 1/n."""
        return np.full(len(updates), 1.0 / len(updates))


class RewardWeighted(Aggregator):
    """R-Weighted (the paper's Algorithm 2).

    r'_i = r_i - min_j r_j;  w_i = r'_i / Σ_j r'_j + 1/h;  g = Σ_i w_i g_i.
    r_i is client i's mean episodic return of the round. When every r'_i is 0 (all
    rewards equal) the share term is 1/n.
    """

    name = "rweighted"

    def weights(self, updates: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        """Share of the offset reward plus the floor 1/h."""
        return share(rewards - rewards.min()) + self.floor(len(updates))


class LossWeighted(Aggregator):
    """L-Weighted (the paper's Algorithm 3).

    w_i = l_i / Σ_j l_j + 1/h;  g = Σ_i w_i g_i, where l_i is client i's total PPO loss
    in this exchange. If any l_i < 0 the losses are first offset by their minimum, as
    in R-Weighted; if they sum to 0 the share term is 1/n.
    """

    name = "lweighted"

    def weights(self, updates: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        """Share of the (offset if needed) loss plus the floor 1/h."""
        losses = np.asarray([u.loss for u in updates], np.float64)
        if losses.min() < 0:
            losses = losses - losses.min()
        return share(losses) + self.floor(len(updates))
