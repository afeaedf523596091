"""Compute and communication times from the run config."""

from __future__ import annotations

import math

import pytest

from fedrl.config import ConfigError, FedRLConfig
from fedrl.federation.clock import CostModel, emulated_delay


def test_named_and_listed_times():
    costs = CostModel(FedRLConfig(compute_time="sqrt", comm_time="sqrt-d4"), 4, 10_000)
    assert [costs.h(i) for i in range(4)] == [math.sqrt(i + 1) for i in range(4)]
    assert costs.kappa(3) == pytest.approx(2.0 * 10.0)
    assert CostModel(FedRLConfig(), 3, 5).comm == [0.0, 0.0, 0.0]
    assert CostModel(FedRLConfig(compute_time="1,3"), 2, 5).compute == [1.0, 3.0]
    assert CostModel(FedRLConfig(steps_per_unit=100), 1, 5).rollout(0, 250) == 2.5
    assert CostModel(FedRLConfig(compute_time="2", job_steps=64, steps_per_unit=256), 1, 5).h(0) == 0.5


def test_a_list_of_the_wrong_length_or_a_bad_name_is_refused():
    with pytest.raises(ConfigError, match="compute-time.*one number per partition .3 partitions"):
        CostModel(FedRLConfig(compute_time="1,3"), 3, 5)
    with pytest.raises(ConfigError, match="comm-time.*\"zero\", \"sqrt\", \"sqrt-d4\""):
        FedRLConfig.from_run_config({"comm-time": "fast"})
    with pytest.raises(ConfigError, match="compute-time"):
        FedRLConfig.from_run_config({"compute-time": "1,-2"})


def test_only_the_wall_clock_with_a_time_unit_sleeps():
    assert emulated_delay(FedRLConfig(compute_time="1,3", time_unit_s=0.5), 1, 2, 5, 0.1) == 0.0
    cfg = FedRLConfig(clock="wall", compute_time="1,3", time_unit_s=0.5)
    assert emulated_delay(cfg, 1, 2, 5, 0.1) == pytest.approx(1.4)
    assert emulated_delay(cfg, 0, 2, 5, 0.7) == 0.0
