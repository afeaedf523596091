"""Shared machinery of every aggregator: checking replies, ordering, combining.

Aggregators differ only in :meth:`Aggregator.weights`; everything else lives here.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Message

from fedrl.protocol import (
    GRADS,
    ClientUpdate,
    InvalidReply,
    describe,
    parse_update_reply,
)

log = logging.getLogger("fedrl")


@dataclass
class Aggregate:
    """The outcome of one exchange.

    ``arrays`` is the combined gradient (or parameters) or ``None`` when no reply was
    valid; ``updates`` and ``weights`` are the accepted replies, sorted by partition,
    with the weight each one got; ``rejected`` maps senders to the reason.
    """

    arrays: dict[str, np.ndarray] | None
    updates: list[ClientUpdate]
    weights: np.ndarray
    rewards: list[float]
    rejected: dict[str, str]


class Aggregator(ABC):
    """Combines client replies of one exchange into a single update.

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

    def aggregate(self, replies: Iterable[Message], reference: Mapping[str, tuple[int, ...]],
                  rewards: Mapping[int, float]) -> Aggregate:
        """Validate ``replies``, drop bad ones with a WARNING, and combine the rest.

        ``reference`` gives the model's parameter names and shapes; ``rewards`` maps a
        partition id to the episodic return it reported in this round's rollout. A reply
        from a partition without a valid rollout is rejected too.
        """
        updates: list[ClientUpdate] = []
        rejected: dict[str, str] = {}
        seen: set[int] = set()
        for msg in replies:
            try:
                update = parse_update_reply(msg, self.reply_record, dict(reference))
                if update.partition_id not in rewards:
                    raise InvalidReply("no valid rollout from this partition in this round")
                if update.partition_id in seen:
                    raise InvalidReply("duplicate reply for this partition")
            except InvalidReply as exc:
                who = describe(msg)
                rejected[who] = str(exc)
                log.warning("rejected reply from %s: %s", who, exc)
                continue
            seen.add(update.partition_id)
            updates.append(update)
        updates.sort(key=lambda u: u.partition_id)
        reward_list = [float(rewards[u.partition_id]) for u in updates]
        if not updates:
            return Aggregate(None, [], np.zeros(0), [], rejected)
        weights = np.asarray(self.weights(updates, np.asarray(reward_list, np.float64)), np.float64)
        if self.normalize_weights:
            weights = weights / weights.sum()
        combined = {
            key: np.sum([w * u.arrays[key].astype(np.float64) for w, u in zip(weights, updates)], axis=0).astype(np.float32)
            for key in reference
        }
        return Aggregate(combined, updates, weights, reward_list, rejected)


def share(values: np.ndarray) -> np.ndarray:
    """x_i / Σ_j x_j for non-negative ``values``, or 1/n for every i when the sum is 0.

    This is the data-dependent term of the reward- and loss-weighted rules.
    """
    values = np.asarray(values, np.float64)
    total = values.sum()
    if total == 0.0:
        return np.full(len(values), 1.0 / len(values))
    return values / total
