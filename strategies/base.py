"""Shared machinery of every aggregator: weighting and combining the replies of one exchange.

Aggregators differ only in :meth:`Aggregator.weights`; everything else lives here. They
see replies that the protocol has already checked (:func:`fedrl.federation.protocol.check_replies`),
one per partition and sorted by partition.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from fedrl.federation.aggregation import Aggregate
from fedrl.federation.protocol import GRADS, ClientUpdate


class Aggregator(ABC):
    """Combines client replies of one exchange into a single update
    (:class:`fedrl.federation.aggregation.Aggregator` is what schedulers expect of it).

    ``reply_record`` names what clients send back: ``"grads"`` for gradient
    aggregators, ``"model"`` (parameters) for FedAvg/FedProx.
    """

    name: str = ""
    reply_record: str = GRADS

    def __init__(self, weight_floor_h: float = 0.0, normalize_weights: bool = False) -> None:
        if weight_floor_h < 0:
            raise ValueError(f"weight-floor-h must be >= 0, got {weight_floor_h}")
        self.weight_floor_h = weight_floor_h
        self.normalize_weights = normalize_weights

    @abstractmethod
    def weights(self, updates: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        """One weight per (sorted, valid) update; ``rewards[i]`` is update i's episodic return."""

    def floor(self, n: int) -> float:
        """The paper's minimum weight 1/h; h = 0 means "the number of replies"."""
        return 1.0 / (self.weight_floor_h if self.weight_floor_h > 0 else n)

    def aggregate(self, updates: list[ClientUpdate], reference: Mapping[str, tuple[int, ...]],
                  rewards: Mapping[int, float]) -> Aggregate:
        """Weight and combine the checked ``updates`` of one exchange (sorted by partition).

        ``reference`` gives the model's parameter names and shapes; ``rewards`` maps a
        partition id to the episodic return it reported in this round's rollout.
        """
        reward_list = [float(rewards[u.partition_id]) for u in updates]
        if not updates:
            return Aggregate(None, [], np.zeros(0), [])
        weights = np.asarray(self.weights(updates, np.asarray(reward_list, np.float64)), np.float64)
        if self.normalize_weights:
            weights = weights / weights.sum()
        combined = {
            key: np.sum([w * u.arrays[key].astype(np.float64) for w, u in zip(weights, updates)], axis=0).astype(np.float32)
            for key in reference
        }
        return Aggregate(combined, updates, weights, reward_list)


def share(values: np.ndarray) -> np.ndarray:
    """x_i / Σ_j x_j for non-negative ``values``, or 1/n for every i when the sum is 0.

    This is the data-dependent term of the reward- and loss-weighted rules.
    """
    values = np.asarray(values, np.float64)
    total = values.sum()
    if total == 0.0:
        return np.full(len(values), 1.0 / len(values))
    return values / total
