"""Byzantine-robust rules: one class each, the rule in its docstring.

A rule sees the n checked replies of one exchange as flat float64 vectors v_i (gradients,
or for FedAvg/FedProx the updates θ_i − θ), with the aggregator's weights w_i. It either
*selects* which replies the aggregator may combine (Krum, multi-Krum, FedPG-BR), or
*combines* them itself in place of the weighted sum Σ_i w_i v_i (median, trimmed mean):
then the result is (Σ_i w_i) · c, c the rule's robust centre, so Baseline-Sum stays a
sum and Baseline-Avg an average. ``f`` is the number of Byzantine replies tolerated
(``robust-f``).
"""

from __future__ import annotations

import math

import numpy as np


class RobustRule:
    """No robustness: every reply is selected and the combination is Σ_i w_i v_i."""

    name = "none"

    def __init__(self, f: int = 1, sigma: float = 0.0, delta: float = 0.6) -> None:
        self.f = f
        self.sigma = sigma
        self.delta = delta

    def select(self, vectors: np.ndarray, batch: float) -> np.ndarray:
        """Indices (sorted) of the replies the aggregator may combine; ``batch`` is FedPG-BR's B."""
        return np.arange(len(vectors))

    def combine(self, vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The combination of the selected ``vectors`` (one row each) with their ``weights``."""
        return np.sum(weights[:, None] * vectors, axis=0)


def _cut(f: int, n: int) -> int:
    """At most (n − 1) // 2, so something is always left in the middle."""
    return max(0, min(f, (n - 1) // 2))


class CoordinateMedian(RobustRule):
    """Coordinate-wise median: c_k = the weighted median of v_{1k} … v_{nk} (weights w_i / Σ_j w_j).

    With equal weights and even n it is the mean of the two middle values, as ``np.median``.
    """

    name = "median"

    def combine(self, vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(Σ_i w_i) · weighted coordinate-wise median."""
        total = float(weights.sum())
        order = np.argsort(vectors, axis=0, kind="stable")
        values = np.take_along_axis(vectors, order, axis=0)
        cum = np.cumsum(weights[order] / total, axis=0)
        n = len(vectors)
        # The first sorted value whose cumulative weight reaches 1/2; where it is exactly 1/2
        # the median lies between it and the next value, so take their mean.
        first = np.minimum(np.argmax(cum >= 0.5 - 1e-12, axis=0), n - 1)
        cols = np.arange(vectors.shape[1])
        low = values[first, cols]
        tie = np.isclose(cum[first, cols], 0.5, rtol=0.0, atol=1e-12) & (first + 1 < n)
        high = values[np.minimum(first + 1, n - 1), cols]
        return total * np.where(tie, (low + high) / 2, low)


class TrimmedMean(RobustRule):
    """Coordinate-wise trimmed mean: per coordinate, drop the f largest and f smallest v_ik,
    then c_k = Σ_{kept} w_i v_ik / Σ_{kept} w_i (f is cut to (n − 1) // 2)."""

    name = "trimmed-mean"

    def combine(self, vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(Σ_i w_i) · the weighted mean of what is left after the cut."""
        n = len(vectors)
        cut = _cut(self.f, n)
        order = np.argsort(vectors, axis=0, kind="stable")[cut:n - cut]
        values = np.take_along_axis(vectors, order, axis=0)
        w = weights[order]
        return float(weights.sum()) * np.sum(w * values, axis=0) / np.sum(w, axis=0)


def _squared_distances(vectors: np.ndarray) -> np.ndarray:
    diff = vectors[:, None, :] - vectors[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


class Krum(RobustRule):
    """Krum (Blanchard et al., 2017): score_i = Σ_{j ∈ N_i} ||v_i − v_j||², N_i the
    n − f − 2 replies nearest to v_i (at least 1); select the one reply with the lowest score."""

    name = "krum"
    keep_all_but_f = False

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Each reply's Krum score."""
        n = len(vectors)
        if n == 1:
            return np.zeros(1)
        k = min(max(n - self.f - 2, 1), n - 1)
        d = _squared_distances(vectors)
        nearest = np.sort(d, axis=1)[:, 1:k + 1]  # column 0 is the distance to itself
        return nearest.sum(axis=1)

    def select(self, vectors: np.ndarray, batch: float) -> np.ndarray:
        """The lowest score (ties: the lowest index)."""
        m = max(len(vectors) - self.f, 1) if self.keep_all_but_f else 1
        return np.sort(np.argsort(self.scores(vectors), kind="stable")[:m])


class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al., 2017): Krum's scores; select the m = n − f replies with
    the lowest scores, which the aggregator then weights as usual."""

    name = "multi-krum"
    keep_all_but_f = True


class FedPGBR(RobustRule):
    """The Byzantine filter of FedPG-BR (Fan et al., NeurIPS 2021, Algorithm 1.1).

    With K replies, T = 2σ·√(V/B), V = 2 log(2K/δ):

    1. S = {i : |{j : ||v_i − v_j|| ≤ T}| > K/2}; m = the member of S nearest to mean(S);
       G = {i : ||v_i − m|| ≤ T}.
    2. If S is empty or |G| < (1 − α)K, repeat 1 with 2σ in place of T.

    The aggregator combines G (none selected if it is still empty). α = f/K; σ = ``fedpg-sigma``,
    or where that is 0 an estimate: half the median over i of the distance from v_i to its
    ⌈K/2⌉-th nearest reply, which more than half honest replies keep at the honest scale.
    B is the median number of episodes the clients played this round.
    """

    name = "fedpg-br"

    def estimate_sigma(self, distances: np.ndarray) -> float:
        """σ from the replies themselves (see the class docstring)."""
        k = math.ceil(len(distances) / 2)
        return float(np.median(np.sort(distances, axis=1)[:, min(k, len(distances) - 1)])) / 2

    @staticmethod
    def _good(distances: np.ndarray, vectors: np.ndarray, threshold: float) -> np.ndarray:
        n = len(vectors)
        compact = np.flatnonzero((distances <= threshold).sum(axis=1) > n / 2)
        if len(compact) == 0:
            return compact
        mean = vectors[compact].mean(axis=0)
        centre = vectors[compact[np.argmin(np.linalg.norm(vectors[compact] - mean, axis=1))]]
        return np.flatnonzero(np.linalg.norm(vectors - centre, axis=1) <= threshold)

    def select(self, vectors: np.ndarray, batch: float) -> np.ndarray:
        """The filter's good set G."""
        n = len(vectors)
        distances = np.sqrt(np.maximum(_squared_distances(vectors), 0.0))
        sigma = self.sigma if self.sigma > 0 else self.estimate_sigma(distances)
        threshold = 2 * sigma * math.sqrt(2 * math.log(2 * n / self.delta) / max(batch, 1.0))
        good = self._good(distances, vectors, threshold)
        if len(good) == 0 or len(good) < n - self.f:  # |G| < (1 − α)K
            good = self._good(distances, vectors, 2 * sigma)
        return good


ROBUST_RULES: dict[str, type[RobustRule]] = {
    cls.name: cls for cls in (RobustRule, CoordinateMedian, TrimmedMean, Krum, MultiKrum, FedPGBR)
}
