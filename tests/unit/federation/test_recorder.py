"""The recorder: one round's notes become its rounds.csv and clients.csv rows."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from fedrl.config import FedRLConfig
from fedrl.federation.aggregation import Aggregate
from fedrl.federation.protocol import Checked, ClientUpdate, RolloutResult
from fedrl.federation.recorder import CLIENT_COLUMNS, ROUND_COLUMNS, Recorder
from fedrl.rl.global_model import GlobalModel
from fedrl.rl.normalizer import RunningStats
from fedrl.rl.ppo import LossParts


def rollout(pid: int, returns: list[float], steps: int, explained: float) -> RolloutResult:
    return RolloutResult(pid, 100 + pid, returns, steps, RunningStats.empty((4,)), RunningStats.empty((1,)),
                         explained, compute_s=0.5 + pid)


def update(pid: int, loss: float, clipfrac: float) -> ClientUpdate:
    return ClientUpdate(pid, 100 + pid, {}, LossParts(loss, 0.1, 0.2, 0.3, 0.01, clipfrac), 32, compute_s=0.01 * (pid + 1))


def test_a_round_becomes_its_rows(tmp_path):
    cfg = FedRLConfig(outdir=str(tmp_path), num_server_rounds=1)
    recorder = Recorder(cfg, run_id=9)
    record = recorder.start_round(1)
    record.note_rollout(Checked([rollout(0, [10.0, 20.0], 300, 0.5), rollout(1, [30.0], 200, float("nan"))],
                                [("node 7", "duplicate reply for this partition")], arrival=[1, 0]), seconds=1.5)
    record.note_timeouts(["partition 2"])
    updates = [update(0, 1.0, 0.2), update(1, 3.0, 0.4), update(2, 99.0, 0.9)]
    record.note_exchange(1, Checked(updates, [("partition 1", "bad")]),
                         Aggregate(None, updates[:2], np.array([0.75, 1.25]), [15.0, 30.0],
                                   [("partition 2 (node 102)", "norm above the screen")]), seconds=0.02)
    record.skipped += 1
    row = recorder.end_round(record, GlobalModel(cfg, torch.device("cpu")))
    recorder.close()
    assert row["env_steps"] == 500 and row["clients"] == 2 and row["episodes"] == 3
    assert row["episodic_return_mean"] == 20.0 and row["episodic_return_std"] == pytest.approx(np.std([30, 10, 20]))
    assert row["loss_mean"] == 2.0 and row["clipfrac_mean"] == pytest.approx(0.3)
    assert row["explained_variance"] == 0.5  # the client without one is left out of the mean
    assert row["rejected_replies"] == 2 and row["timed_out"] == 1 and row["skipped_steps"] == 1
    assert row["screened_replies"] == 1  # left out by the rule: counted, and its loss is not in loss_mean
    # The exchange waited for every reply it checked, the left-out one too.
    assert row["rollout_compute_ms"] == 1500.0 and row["client_compute_ms_mean"] == 30.0
    assert row["exchanges"] == 1 and math.isclose(row["exchange_ms_mean"], 20.0)
    with open(recorder.path / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ROUND_COLUMNS and float(rows[0]["clipfrac_mean"]) == pytest.approx(0.3)
    with open(recorder.path / "clients.csv", newline="") as f:
        clients = list(csv.DictReader(f))
    assert tuple(clients[0]) == CLIENT_COLUMNS
    assert [(r["exchange"], r["partition_id"], r["weight"]) for r in clients] == [
        ("0", "0", ""), ("0", "1", ""), ("1", "0", "0.75"), ("1", "1", "1.25")]
    assert (recorder.path / "model.pt").is_file() and (recorder.path / "config.json").is_file()


def test_without_output_nothing_is_written(tmp_path):
    recorder = Recorder(FedRLConfig(outdir=str(tmp_path)), run_id=1, out=False)
    assert recorder.path is None and not any(tmp_path.iterdir())
