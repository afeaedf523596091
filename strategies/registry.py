"""Each aggregator name (the list is :data:`fedrl.config.AGGREGATORS`) and the class that implements it."""

from __future__ import annotations

from fedrl.config import AGGREGATORS as NAMES
from fedrl.config import GRADIENT_AGGREGATORS, FedRLConfig
from fedrl.federation.protocol import GRADS
from strategies.base import Aggregator
from strategies.gradient import BaselineAvg, BaselineSum, LossWeighted, RewardWeighted
from strategies.parameters import FedAvg, FedProx

AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls for cls in (BaselineSum, BaselineAvg, RewardWeighted, LossWeighted, FedAvg, FedProx)
}
if tuple(AGGREGATORS) != NAMES or any((cls.reply_record == GRADS) != (name in GRADIENT_AGGREGATORS)
                                      for name, cls in AGGREGATORS.items()):
    raise ImportError(f"strategies.registry implements {list(AGGREGATORS)}, but fedrl.config lists {list(NAMES)}: "
                      "keep the two in the same order, with the same gradient/parameter kind")


def make_aggregator(cfg: FedRLConfig) -> Aggregator:
    """The aggregator named by ``cfg.aggregator``."""
    return AGGREGATORS[cfg.aggregator](weight_floor_h=cfg.weight_floor_h, normalize_weights=cfg.normalize_weights)
