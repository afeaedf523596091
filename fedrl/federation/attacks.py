"""Byzantine clients for experiments: what a partition in ``byzantine-clients`` does instead of its job.

Only for measuring robust rules (``attack`` in the run config); an honest deployment
leaves ``attack = "none"``. Each attack changes what the client *reports*, after it has
done its job honestly, except ``random-actions``, which plays uniformly random actions
and then computes its gradients honestly from that experience:

============== ======================================================= ===============
attack         the client sends                                        default scale s
============== ======================================================= ===============
sign-flip      −s·g (FedAvg: θ − s·(θ_i − θ))                           1
scale          s·g (FedAvg: θ + s·(θ_i − θ))                            100
noise          g + N(0, (s·rms(g))²) per coordinate (FedAvg: of θ_i − θ) 10
random-actions its honest gradient of random-action experience          —
reward-lie     each episode return r reported as s·max(1, |r|)          10
loss-lie       its loss l reported as s·max(1, |l|)                     10
============== ======================================================= ===============
"""

from __future__ import annotations

import numpy as np

from fedrl.config import FedRLConfig
from fedrl.rl.ppo import LossParts

DEFAULT_SCALE = {"sign-flip": 1.0, "scale": 100.0, "noise": 10.0, "reward-lie": 10.0, "loss-lie": 10.0}


def attack_of(cfg: FedRLConfig, partition_id: int) -> str:
    """The attack ``partition_id`` carries out ("none" for an honest client)."""
    return cfg.attack if partition_id in cfg.attackers else "none"


def _scale(cfg: FedRLConfig) -> float:
    return cfg.attack_scale if cfg.attack_scale > 0 else DEFAULT_SCALE.get(cfg.attack, 1.0)


def corrupt(cfg: FedRLConfig, partition_id: int, arrays: dict[str, np.ndarray], seed_words: list[int],
            center: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """What an attacking client sends instead of ``arrays`` (a gradient, or parameters that started at ``center``)."""
    attack = attack_of(cfg, partition_id)
    if attack not in ("sign-flip", "scale", "noise"):
        return arrays
    s = _scale(cfg)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, partition_id, *seed_words]))
    out = {}
    for key, value in arrays.items():
        base = center[key].astype(np.float64) if center is not None else 0.0
        delta = value.astype(np.float64) - base
        if attack == "sign-flip":
            delta = -s * delta
        elif attack == "scale":
            delta = s * delta
        else:
            rms = float(np.sqrt(np.mean(delta**2))) if delta.size else 0.0
            delta = delta + rng.normal(0.0, s * rms, size=delta.shape)
        out[key] = (base + delta).astype(value.dtype)
    return out


def reported_returns(cfg: FedRLConfig, partition_id: int, returns: list[float]) -> list[float]:
    """The episode returns a client reports (``reward-lie`` inflates them)."""
    if attack_of(cfg, partition_id) != "reward-lie":
        return returns
    return [_scale(cfg) * max(1.0, abs(r)) for r in returns]


def reported_parts(cfg: FedRLConfig, partition_id: int, parts: LossParts) -> LossParts:
    """The loss parts a client reports (``loss-lie`` inflates its total loss)."""
    if attack_of(cfg, partition_id) != "loss-lie":
        return parts
    return parts._replace(loss=_scale(cfg) * max(1.0, abs(parts.loss)))


def plays_randomly(cfg: FedRLConfig, partition_id: int) -> bool:
    """True for a ``random-actions`` attacker."""
    return attack_of(cfg, partition_id) == "random-actions"
