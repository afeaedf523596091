"""Each method name (:data:`fedrl.config.AGGREGATORS` and :data:`~fedrl.config.ASYNC_METHODS`) and its class."""

from __future__ import annotations

from fedrl.config import AGGREGATORS as NAMES
from fedrl.config import ASYNC_METHODS, GRADIENT_AGGREGATORS, ROBUST_RULES, FedRLConfig
from fedrl.federation.aggregation import AsyncRule
from fedrl.federation.protocol import GRADS
from fedrl.rl.global_model import GlobalModel
from strategies.asynchronous import (
    A3C,
    GALA,
    IMPALA,
    MaleniaLWeighted,
    MaleniaNIGT,
    MaleniaRWeighted,
    RennalaNIGT,
    SyncNIGT,
)
from strategies.base import Aggregator
from strategies.gradient import BaselineAvg, BaselineSum, LossWeighted, RewardWeighted
from strategies.parameters import FedAvg, FedProx
from strategies.robust import ROBUST_RULES as ROBUST_CLASSES

AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls for cls in (BaselineSum, BaselineAvg, RewardWeighted, LossWeighted, FedAvg, FedProx)
}
if tuple(AGGREGATORS) != NAMES or any((cls.reply_record == GRADS) != (name in GRADIENT_AGGREGATORS)
                                      for name, cls in AGGREGATORS.items()):
    raise ImportError(f"strategies.registry implements {list(AGGREGATORS)}, but fedrl.config lists {list(NAMES)}: "
                      "keep the two in the same order, with the same gradient/parameter kind")

ASYNC_RULES: dict[str, type] = {
    cls.name: cls for cls in (A3C, IMPALA, RennalaNIGT, MaleniaNIGT, SyncNIGT, MaleniaRWeighted, MaleniaLWeighted,
                              GALA)
}
if tuple(ASYNC_RULES) != ASYNC_METHODS:
    raise ImportError(f"strategies.registry implements {list(ASYNC_RULES)}, but fedrl.config lists "
                      f"{list(ASYNC_METHODS)}: keep the two in the same order")


if tuple(ROBUST_CLASSES) != ROBUST_RULES:
    raise ImportError(f"strategies.robust implements {list(ROBUST_CLASSES)}, but fedrl.config lists "
                      f"{list(ROBUST_RULES)}: keep the two in the same order")


def make_rule(cfg: FedRLConfig, state: GlobalModel) -> AsyncRule:
    """The asynchronous rule named by ``cfg.aggregator``, on the server's ``state``."""
    return ASYNC_RULES[cfg.aggregator](cfg, state)  # type: ignore[no-any-return]


def make_aggregator(cfg: FedRLConfig) -> Aggregator:
    """The aggregator named by ``cfg.aggregator``."""
    robust = ROBUST_CLASSES[cfg.robust_rule](f=cfg.robust_f, sigma=cfg.fedpg_sigma, delta=cfg.fedpg_delta)
    return AGGREGATORS[cfg.aggregator](weight_floor_h=cfg.weight_floor_h, normalize_weights=cfg.normalize_weights,
                                       robust=robust, norm_screen=cfg.grad_norm_screen)
