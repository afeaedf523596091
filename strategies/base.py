"""Shared machinery of every aggregator: weighting and combining the replies of one exchange.

Aggregators differ only in :meth:`Aggregator.weights`; everything else lives here. They
see replies that the protocol has already checked (:func:`fedrl.federation.protocol.check_replies`),
one per partition and sorted by partition.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping

import numpy as np

from fedrl.federation.aggregation import Aggregate, Exchange
from fedrl.federation.protocol import GRADS, ClientUpdate
from strategies.robust import RobustRule

log = logging.getLogger("fedrl")


SCREEN_WINDOW = 32


def who(update: ClientUpdate) -> str:
    """The sender of a checked update, for log lines."""
    return f"partition {update.partition_id} (node {update.node_id})"


class NormScreen:
    """Drops a reply whose norm (gradient, or θ_i − θ for parameter rules) exceeds ``factor`` ×
    the median of this exchange's norms and of the medians of the last :data:`SCREEN_WINDOW`
    exchanges.

    Every exchange's median joins the history, whatever was dropped, so the threshold follows
    norms that grow as training goes (the value loss grows with the returns). The past medians
    let it catch one outlier among two clients, where this exchange's median alone cannot.
    A reply at or below this exchange's median is always kept, so at least half of them
    are. ``factor`` = 0 turns it off.
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.history: deque[float] = deque(maxlen=SCREEN_WINDOW)

    def screen(self, norms: np.ndarray) -> tuple[np.ndarray, float]:
        """(indices kept, the threshold); this exchange's median joins the history."""
        finite = norms[np.isfinite(norms)]
        if self.factor <= 0 or len(finite) == 0:
            return np.arange(len(norms)), float("inf")
        current = float(np.median(finite))
        threshold = self.factor * float(np.median(np.concatenate([finite, np.asarray(self.history)])))
        kept = np.flatnonzero((norms <= threshold) | (norms <= current))
        self.history.append(current)
        return kept, threshold


class Aggregator(ABC):
    """Combines client replies of one exchange into a single update
    (:class:`fedrl.federation.aggregation.Aggregator` is what schedulers expect of it).

    ``reply_record`` names what clients send back: ``"grads"`` for gradient
    aggregators, ``"model"`` (parameters) for FedAvg/FedProx. Before the rule's weights,
    the :class:`NormScreen` and the robust rule's selection may leave replies out; a
    combination that is not finite in float32, or that ``exchange.acceptable`` refuses,
    drops the reply farthest from the coordinate-wise median and is tried again. Every
    reply left out is named in ``Aggregate.screened``.
    """

    name: str = ""
    reply_record: str = GRADS

    def __init__(self, weight_floor_h: float = 0.0, normalize_weights: bool = False,
                 robust: RobustRule | None = None, norm_screen: float = 0.0) -> None:
        if weight_floor_h < 0:
            raise ValueError(f"weight-floor-h must be >= 0, got {weight_floor_h}")
        self.weight_floor_h = weight_floor_h
        self.normalize_weights = normalize_weights
        self.robust = robust or RobustRule()
        self.screen = NormScreen(norm_screen)

    @abstractmethod
    def weights(self, updates: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        """One weight per (sorted, valid) update; ``rewards[i]`` is update i's episodic return."""

    def floor(self, n: int) -> float:
        """The paper's minimum weight 1/h; h = 0 means "the number of replies"."""
        return 1.0 / (self.weight_floor_h if self.weight_floor_h > 0 else n)

    def state(self) -> dict:
        """The norm screen's history (for a checkpoint)."""
        return {"screen_history": list(self.screen.history)}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`."""
        self.screen.history.clear()
        self.screen.history.extend(float(x) for x in state.get("screen_history", []))

    def _weights(self, kept: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        weights = np.asarray(self.weights(kept, rewards), np.float64)
        return weights / weights.sum() if self.normalize_weights else weights

    def aggregate(self, updates: list[ClientUpdate], reference: Mapping[str, tuple[int, ...]],
                  rewards: Mapping[int, float], exchange: Exchange | None = None) -> Aggregate:
        """Weight and combine the checked ``updates`` of one exchange (sorted by partition).

        ``reference`` gives the model's parameter names and shapes; ``rewards`` maps a
        partition id to the episodic return it reported in this round's rollout.
        """
        exchange = exchange or Exchange()
        if not updates:
            return Aggregate(None, [], np.zeros(0), [])
        raw = np.stack([np.concatenate([u.arrays[k].astype(np.float64).ravel() for k in reference])
                        for u in updates])
        center = None if exchange.center is None else np.concatenate(
            [np.asarray(exchange.center[k], np.float64).ravel() for k in reference])
        vectors = raw if center is None else raw - center
        # The plain weighted sum combines what was sent (θ_i itself for parameter rules), so its
        # float32 result is exactly that of Σ_i w_i θ_i; a robust centre is taken of θ_i − θ.
        plain = type(self.robust).combine is RobustRule.combine
        screened: list[tuple[str, str]] = []
        index = np.arange(len(updates))

        def leave_out(drop: np.ndarray, why: str) -> None:
            nonlocal index
            for i in drop:
                screened.append((who(updates[i]), why))
                log.warning("left out the reply of %s: %s", who(updates[i]), why)
            index = np.setdiff1d(index, drop)

        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.linalg.norm(vectors, axis=1)
        kept, threshold = self.screen.screen(norms)
        for i in np.setdiff1d(index, kept):
            leave_out(np.asarray([i]), f"norm {norms[i]:.4g} is above the screen's {threshold:.4g} "
                      f"(grad-norm-screen × the median norm)")
        if len(index):
            batch = float(np.median([exchange.episodes.get(updates[i].partition_id, 1) for i in index]))
            chosen = index[self.robust.select(vectors[index], batch)]
            leave_out(np.setdiff1d(index, chosen), f"not selected by robust-rule {self.robust.name!r}")
        while len(index):
            kept_updates = [updates[i] for i in index]
            reward_list = np.asarray([float(rewards[u.partition_id]) for u in kept_updates], np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                weights = self._weights(kept_updates, reward_list)
                if plain or center is None:
                    combined = self.robust.combine((raw if plain else vectors)[index], weights)
                else:
                    combined = self.robust.combine(vectors[index], weights) + float(weights.sum()) * center
                flat = combined.astype(np.float32)
            arrays = _split(flat, reference)
            if (np.all(np.isfinite(weights)) and np.all(np.isfinite(flat))
                    and (exchange.acceptable is None or exchange.acceptable(arrays))):
                return Aggregate(arrays, kept_updates, weights, [float(r) for r in reward_list], screened)
            # Some reply makes the result unusable: leave out the one farthest from the median.
            with np.errstate(over="ignore", invalid="ignore"):
                median = np.median(vectors[index], axis=0)
                far = np.linalg.norm(np.nan_to_num(vectors[index] - median, nan=np.inf, posinf=np.inf,
                                                   neginf=np.inf), axis=1)
                extreme = np.abs(reward_list - np.median(reward_list)) + np.abs(
                    np.asarray([u.loss for u in kept_updates]) - np.median([u.loss for u in kept_updates]))
            pick = int(np.argmax(far)) if np.all(np.isfinite(weights)) else int(np.argmax(extreme))
            leave_out(np.asarray([index[pick]]), "the combined result with it would not be finite")
        return Aggregate(None, [], np.zeros(0), [], screened)


def _split(flat: np.ndarray, reference: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for key, shape in reference.items():
        size = int(np.prod(shape))
        out[key] = flat[start:start + size].reshape(shape)
        start += size
    return out


def share(values: np.ndarray) -> np.ndarray:
    """x_i / Σ_j x_j for non-negative ``values``, or 1/n for every i when the sum is 0.

    This is the data-dependent term of the reward- and loss-weighted rules.
    """
    values = np.asarray(values, np.float64)
    total = values.sum()
    if not np.isfinite(total) and np.all(np.isfinite(values)):
        # Finite values whose sum overflows (a loss of 1e308): the same shares, computed at a smaller scale.
        values = values / values.max()
        total = values.sum()
    if total == 0.0:
        return np.full(len(values), 1.0 / len(values))
    return values / total
