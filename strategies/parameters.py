"""Parameter-averaging baselines: clients train locally and send parameters back."""

from __future__ import annotations

import numpy as np

from fedrl.federation.protocol import MODEL, ClientUpdate
from strategies.base import Aggregator


class FedAvg(Aggregator):
    """FedAvg (McMahan et al.): θ = Σ_i (n_i / Σ_j n_j) θ_i, n_i = the client's num-examples."""

    name = "fedavg"
    reply_record = MODEL

    def weights(self, updates: list[ClientUpdate], rewards: np.ndarray) -> np.ndarray:
        """w_i = n_i / Σ_j n_j."""
        n = np.asarray([u.num_examples for u in updates], np.float64)
        return n / n.sum()


class FedProx(FedAvg):
    """FedProx (Li et al.): FedAvg's weighted average θ = Σ_i (n_i / Σ_j n_j) θ_i.

    Clients minimise their PPO loss plus (mu/2)·||θ - θ_global||², which keeps local
    models near the global one; the server side is FedAvg's.
    """

    name = "fedprox"
