"""The seam between a scheduler and an aggregation rule: what a rule is handed, and what it gives back.

Schedulers are handed an :class:`Aggregator` (the rules live in ``strategies/``, which
schedulers never import); it sees only replies the protocol has checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedrl.federation.protocol import ClientUpdate


@dataclass
class Aggregate:
    """The outcome of one exchange.

    ``arrays`` is the combined gradient (or parameters) or ``None`` when no reply was
    valid; ``updates`` and ``weights`` are the replies, sorted by partition, with the
    weight each one got, and ``rewards`` the episodic return each reported this round.
    """

    arrays: dict[str, np.ndarray] | None
    updates: list[ClientUpdate]
    weights: np.ndarray
    rewards: list[float]


class Aggregator(Protocol):
    """An aggregation rule as a scheduler uses it."""

    name: str
    reply_record: str
    """What clients send back: ``"grads"`` (gradients) or ``"model"`` (parameters)."""

    def aggregate(self, updates: list[ClientUpdate], reference: Mapping[str, tuple[int, ...]],
                  rewards: Mapping[int, float]) -> Aggregate:
        """Weight and combine the checked ``updates`` of one exchange (sorted by partition)."""
        ...
