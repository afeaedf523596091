"""The seams between the schedulers and the rules: what a rule is handed, and what it gives back.

The synchronous scheduler is handed an :class:`Aggregator`, the asynchronous one an
:class:`AsyncRule` (the rules live in ``strategies/``, which schedulers never import);
both see only replies the protocol has checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedrl.federation.protocol import ClientUpdate, JobResult


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
    screened: list[tuple[str, str]] = field(default_factory=list)
    """(who, why) for every checked reply the rule left out: norm screen, robust filter, non-finite result."""


@dataclass
class Exchange:
    """What a rule may know about one exchange besides its replies.

    ``episodes``: how many episodes each partition finished this round; ``center``: the
    global parameters the replies started from (parameter rules compare θ_i − θ);
    ``acceptable``: whether the global model can take a combined result (it stays finite).
    """

    episodes: Mapping[int, int] = field(default_factory=dict)
    center: Mapping[str, np.ndarray] | None = None
    acceptable: Callable[[dict[str, np.ndarray]], bool] | None = None


class Aggregator(Protocol):
    """An aggregation rule as a scheduler uses it."""

    name: str
    reply_record: str
    """What clients send back: ``"grads"`` (gradients) or ``"model"`` (parameters)."""

    def aggregate(self, updates: list[ClientUpdate], reference: Mapping[str, tuple[int, ...]],
                  rewards: Mapping[int, float], exchange: Exchange | None = None) -> Aggregate:
        """Weight and combine the checked ``updates`` of one exchange (sorted by partition)."""
        ...

    def state(self) -> dict:
        """What the rule has learnt across exchanges (for a checkpoint)."""
        ...

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`."""
        ...


@dataclass
class Outcome:
    """What an asynchronous rule did with one job's result, for its events.csv row.

    ``outcome`` is "applied" (the result completed an update), "batched" (kept for the
    next one) or "discarded" (stale by the rule's definition); ``closed`` says that the
    result closed a NIGT round, so jobs still in flight for it are aborted.
    """

    outcome: str
    batch: int = 0
    batch_total: int = 0
    grad_norm: float = float("nan")
    direction_norm: float = float("nan")
    weights: dict[int, float] | None = None
    rho_clipfrac: float = float("nan")
    consensus_error: float = float("nan")
    closed: bool = False


class AsyncRule(Protocol):
    """An asynchronous method as the asynchronous scheduler uses it.

    What to send (:meth:`parameters`, :attr:`message_type`, :meth:`wants_job`) is kept
    apart from what to do with a result (:meth:`on_result`), as in a Flower strategy.
    """

    name: str
    message_type: str
    """``train.pg`` (a gradient per job) or ``train.actor`` (a trajectory per job)."""
    per_round: bool
    """True for the NIGT family: κ is charged once when a round closes, and its unfinished jobs are aborted."""
    hops: int
    """Communications per job charged κ_i each: 1, or 2 for gossip relayed by the server."""
    version: int
    """Updates of the global parameters so far."""
    round: int
    """The NIGT round every job sent now belongs to (the version for the others)."""

    def parameters(self, node: int) -> dict[str, np.ndarray]:
        """What a job sent now to ``node`` computes at (θ, NIGT's extrapolated θ̃, or a GALA agent's mix)."""
        ...

    def wants_job(self, partition_id: int) -> bool:
        """Whether ``partition_id`` gets another job before the round closes (synchronous NIGT: once per round)."""
        ...

    def on_result(self, result: JobResult, job_round: int, job_version: int, active: set[int]) -> Outcome:
        """Use, batch or discard one checked result; ``active`` are the partitions still taking part."""
        ...
