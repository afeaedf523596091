"""Heterogeneous compute and communication times, and the clocks that charge them.

Client i = partition + 1 takes h_i time units per ``steps-per-unit`` env steps (so a job
of ``job-steps`` costs h_i·job-steps/steps-per-unit, whatever the method) and κ_i per
communication:

    compute-time  "equal": h_i = 1          "sqrt": h_i = √i
    comm-time     "zero":  κ_i = 0          "sqrt": κ_i = √i        "sqrt-d4": κ_i = √i·d^{1/4}

(d: the parameters sent), or an explicit list, one number per partition. The simulated
clock (``clock = "simulated"``) charges these times and orders events by simulated finish
time, so a run is the same for a seed whatever the machine's load; the wall clock
(``clock = "wall"``) reads real time, in units of ``time-unit-s`` seconds (or seconds).
"""

from __future__ import annotations

import math
import time

from fedrl.config import ConfigError, FedRLConfig


def _times(key: str, value: str, num_partitions: int, named: dict[str, float]) -> list[float]:
    """Per-partition times: ``named[value]``·√i for a named rule ("equal": 1), or an explicit list."""
    if value == "equal":
        return [1.0] * num_partitions
    if value in named:
        return [named[value] * math.sqrt(i + 1) for i in range(num_partitions)]
    times = [float(x) for x in value.split(",")]
    if len(times) != num_partitions:
        raise ConfigError(key, value, f"one number per partition ({num_partitions} partitions)")
    return times


class CostModel:
    """h_i and κ_i of every partition, from the run config."""

    def __init__(self, cfg: FedRLConfig, num_partitions: int, num_parameters: int) -> None:
        self.compute = _times("compute-time", cfg.compute_time, num_partitions, {"sqrt": 1.0})
        self.comm = _times("comm-time", cfg.comm_time, num_partitions,
                           {"zero": 0.0, "sqrt": 1.0, "sqrt-d4": num_parameters ** 0.25})
        self.num_partitions = num_partitions
        self.steps_per_unit = cfg.steps_per_unit
        self.job_steps = cfg.job_steps

    def h(self, partition_id: int) -> float:
        """Time units of one job of ``partition_id``."""
        return self.compute[partition_id] * self.job_steps / self.steps_per_unit

    def kappa(self, partition_id: int) -> float:
        """Time units of one communication of ``partition_id``."""
        return self.comm[partition_id]

    def rollout(self, partition_id: int, steps: int) -> float:
        """A synchronous rollout of ``steps`` env steps."""
        return self.compute[partition_id] * steps / self.steps_per_unit


class WallClock:
    """Real time since the run started, in units of ``unit_s`` seconds (1 s when 0)."""

    def __init__(self, unit_s: float) -> None:
        self.unit_s = unit_s if unit_s > 0 else 1.0
        self.start = time.monotonic()

    def now(self) -> float:
        """Units elapsed."""
        return (time.monotonic() - self.start) / self.unit_s


def emulated_delay(cfg: FedRLConfig, partition_id: int, num_partitions: int, num_parameters: int,
                   elapsed_s: float) -> float:
    """Wall clock with ``time-unit-s`` > 0: seconds a client sleeps so its job lasts (h_i + κ_i) units."""
    if cfg.clock != "wall" or cfg.time_unit_s <= 0:
        return 0.0
    costs = CostModel(cfg, num_partitions, num_parameters)
    target = (costs.h(partition_id) + costs.kappa(partition_id)) * cfg.time_unit_s
    return max(0.0, target - elapsed_s)
