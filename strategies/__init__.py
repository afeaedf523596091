"""Server-side aggregators, one class per rule. :func:`make_aggregator` builds one from a config."""

from __future__ import annotations

from fedrl.config import FedRLConfig
from strategies.base import Aggregate, Aggregator
from strategies.gradient import BaselineAvg, BaselineSum, LossWeighted, RewardWeighted
from strategies.parameters import FedAvg, FedProx

AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls for cls in (BaselineSum, BaselineAvg, RewardWeighted, LossWeighted, FedAvg, FedProx)
}


def make_aggregator(cfg: FedRLConfig) -> Aggregator:
    """The aggregator named by ``cfg.aggregator``."""
    return AGGREGATORS[cfg.aggregator](weight_floor_h=cfg.weight_floor_h, normalize_weights=cfg.normalize_weights)


__all__ = ["AGGREGATORS", "Aggregate", "Aggregator", "BaselineAvg", "BaselineSum", "FedAvg", "FedProx",
           "LossWeighted", "RewardWeighted", "make_aggregator"]
