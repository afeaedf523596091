"""Saved policies load safely: no code runs, and non-finite weights or statistics are refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.checkpoint import load_policy, save_policy
from fedrl.rl.envs import env_spaces
from fedrl.rl.model import build_model
from fedrl.rl.normalizer import RunningStats


class Payload:
    """What a crafted model.pt could carry: unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def saved(tmp_path, weight=None, mean=0.0):
    model = build_model(*env_spaces("CartPole-v1"), "small")
    if weight is not None:
        with torch.no_grad():
            next(model.parameters()).fill_(weight)
    path = tmp_path / "model.pt"
    save_policy(path, model, RunningStats(5.0, np.full(4, mean), np.ones(4)), FedRLConfig())
    return path


def test_a_saved_policy_round_trips(tmp_path):
    model, stats, cfg = load_policy(saved(tmp_path))
    assert cfg.env_id == "CartPole-v1" and stats.count == 5.0 and not model.training


def test_a_file_that_carries_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    torch.save({"state_dict": Payload(marker), "obs_stats": {}, "config": {}}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_policy(path)
    assert not marker.exists()


@pytest.mark.parametrize(("weight", "mean", "match"), [(float("nan"), 0.0, "weight .* is not finite"),
                                                       (None, float("inf"), "observation statistic .* not finite")])
def test_non_finite_weights_or_statistics_are_refused(tmp_path, weight, mean, match):
    with pytest.raises(ValueError, match=match):
        load_policy(saved(tmp_path, weight, mean))
