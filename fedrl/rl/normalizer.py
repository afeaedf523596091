"""Observation statistics that can be merged across clients (parallel Welford)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CLIP_OBS = 10.0
EPS = 1e-8
# No honest env observes (or returns) values beyond this; it keeps every merge far from overflow.
STATS_LIMIT = 1e8


@dataclass
class RunningStats:
    """Count, mean and sum of squared deviations (M2) of a stream of vectors.

    Merging two instances gives the statistics of the pooled data (Chan et al.'s
    parallel algorithm), so the server can combine clients' statistics without
    ever seeing their observations.
    """

    count: float
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> RunningStats:
        """Statistics of no data."""
        return cls(0.0, np.zeros(shape, np.float64), np.zeros(shape, np.float64))

    @classmethod
    def from_batch(cls, x: np.ndarray) -> RunningStats:
        """Statistics of a batch ``x`` of shape ``(n, *shape)``."""
        x = np.asarray(x, np.float64)
        mean = x.mean(axis=0)
        return cls(float(x.shape[0]), mean, ((x - mean) ** 2).sum(axis=0))

    @property
    def var(self) -> np.ndarray:
        """Population variance (ones before any data)."""
        if self.count == 0:
            return np.ones_like(self.mean)
        return self.m2 / self.count

    def merge(self, other: RunningStats) -> RunningStats:
        """The statistics of this data and ``other``'s data pooled."""
        if other.count == 0:
            return RunningStats(self.count, self.mean.copy(), self.m2.copy())
        if self.count == 0:
            return RunningStats(other.count, other.mean.copy(), other.m2.copy())
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return RunningStats(n, mean, m2)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Standardise ``obs`` and clip to ±10, as gymnasium's NormalizeObservation does.

        Without data (or with normalisation switched off) observations pass unchanged.
        """
        if self.count == 0:
            return np.asarray(obs, np.float32)
        out = (obs - self.mean) / np.sqrt(self.var + EPS)
        return np.clip(out, -CLIP_OBS, CLIP_OBS).astype(np.float32)

    def is_finite(self) -> bool:
        """True when every statistic is finite and the count and M2 are non-negative."""
        return bool(np.isfinite(self.count) and self.count >= 0 and np.all(np.isfinite(self.mean))
                    and np.all(np.isfinite(self.m2)) and np.all(self.m2 >= 0))

    def is_plausible(self) -> bool:
        """Finite, and mean and standard deviation within ±:data:`STATS_LIMIT`."""
        return self.is_finite() and bool(np.all(np.abs(self.mean) <= STATS_LIMIT)
                                         and np.all(self.var <= STATS_LIMIT**2))

    def to_dict(self) -> dict[str, np.ndarray | float]:
        """Plain values for saving in a checkpoint."""
        return {"count": self.count, "mean": self.mean.copy(), "m2": self.m2.copy()}

    def to_tensors(self) -> dict[str, float | torch.Tensor]:
        """:meth:`to_dict` with float64 tensors, which ``torch.load(weights_only=True)`` reads."""
        return {"count": float(self.count), "mean": torch.from_numpy(self.mean.copy()),
                "m2": torch.from_numpy(self.m2.copy())}

    @classmethod
    def from_dict(cls, d: dict) -> RunningStats:
        """Inverse of :meth:`to_dict` and :meth:`to_tensors`."""
        def array(x: object) -> np.ndarray:
            return x.numpy().astype(np.float64) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        return cls(float(d["count"]), array(d["mean"]), array(d["m2"]))
