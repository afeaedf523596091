"""Hostile and mistaken clients on the in-process grid: each is named, and the global model stays finite."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from flwr.app import Message

from fedrl.config import FedRLConfig
from fedrl.federation.identity import PartitionConflict
from fedrl.federation.protocol import GRADS, MODEL, PACKED
from fedrl.tools.local_grid import LocalGrid
from server_app import build_scheduler

TINY = {"num-server-rounds": 2, "min-steps": 64, "min-episodes": 1, "update-epochs": 2, "num-minibatches": 2,
        "eval-episodes": 0}


def train(tmp_outdir, tamper=None, partitions=3, grid_hook=None, **overrides):
    from client_app import app

    rc = {**TINY, "outdir": tmp_outdir, **overrides}
    grid = LocalGrid(app, partitions, rc, tamper=tamper)
    if grid_hook:
        grid_hook(grid)
    server = build_scheduler(FedRLConfig.from_run_config(rc), grid, run_id=1)
    return server, server.run()


def metrics(reply: Message):
    return reply.content.metric_records.get("metrics") if reply.has_content() else None


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_client_that_claims_another_partition_is_refused_and_the_victim_is_kept(tmp_outdir, caplog):
    def spoof(instruction: Message, reply: Message, pid: int) -> Message:
        m = metrics(reply)
        if pid == 1 and instruction.metadata.message_type == "train.gradient" and m is not None:
            m["partition-id"] = 0  # partition 1's node passes its gradient off as partition 0's
        return reply

    with caplog.at_level("WARNING", logger="fedrl"):
        server, history = train(tmp_outdir, spoof)
    refusals = [r.message for r in caplog.records if "claimed partition 0" in r.message]
    assert refusals and all("node 1001 claimed partition 0, but it holds partition 1" in r for r in refusals)
    assert not any("partition 0 (node 1000)" in r.message for r in caplog.records)  # the victim is never blamed
    clients = [r for r in rows(server.recorder.path / "clients.csv") if r["exchange"] != "0"]
    assert {r["partition_id"] for r in clients} == {"0", "2"}
    assert sum(1 for r in clients if r["partition_id"] == "0") == 2 * 4  # every exchange of both rounds
    assert all(h["rejected_replies"] == 4 and h["skipped_steps"] == 0 for h in history)


def test_two_nodes_configured_with_the_same_partition_stop_the_run_naming_both(tmp_outdir):
    def same_partition(grid):
        grid.contexts[1002].node_config["partition-id"] = 1

    with pytest.raises(PartitionConflict, match="nodes 1001 and 1002 both serve partition 1"):
        train(tmp_outdir, grid_hook=same_partition)


def test_one_poisoned_client_is_named_counted_and_the_honest_steps_still_happen(tmp_outdir, caplog):
    def poison(instruction: Message, reply: Message, pid: int) -> Message:
        if pid == 2 and instruction.metadata.message_type == "train.gradient" and reply.has_content():
            record = reply.content.array_records[GRADS]
            flat = record[PACKED].numpy().copy()
            flat[0] = 1e20
            record[PACKED] = type(record[PACKED])(flat)
        return reply

    with caplog.at_level("WARNING", logger="fedrl"):
        server, history = train(tmp_outdir, poison)
    assert all(torch.isfinite(p).all() for p in server.state.model.parameters())
    assert all(h["skipped_steps"] == 0 and h["screened_replies"] == 4 for h in history)
    assert sum(1 for r in caplog.records if "partition 2 (node 1002)" in r.message and "screen" in r.message) == 8
    clients = [r for r in rows(server.recorder.path / "clients.csv") if r["exchange"] != "0"]
    assert {r["partition_id"] for r in clients} == {"0", "1"}


def test_fedavg_refuses_a_client_that_claims_more_examples_than_it_played(tmp_outdir, caplog):
    def inflate(instruction: Message, reply: Message, pid: int) -> Message:
        m = metrics(reply)
        if pid == 1 and instruction.metadata.message_type == "train.local" and m is not None:
            m["num-examples"] = 1e300
        return reply

    with caplog.at_level("WARNING", logger="fedrl"):
        server, history = train(tmp_outdir, inflate, aggregator="fedavg")
    refused = "'num-examples' must be an integer in [1, 2**53), got 1e+300"
    assert any("partition 1 (node 1001)" in r.message and refused in r.message for r in caplog.records)
    assert all(h["rejected_replies"] == 1 for h in history)
    assert all(torch.isfinite(p).all() for p in server.state.model.parameters())


def test_fedavg_huge_parameters_from_one_client_never_reach_the_global_model(tmp_outdir):
    def huge(instruction: Message, reply: Message, pid: int) -> Message:
        if pid == 0 and instruction.metadata.message_type == "train.local" and reply.has_content():
            record = reply.content.array_records[MODEL]
            record[PACKED] = type(record[PACKED])(np.full_like(record[PACKED].numpy(), 3e38))
        return reply

    server, history = train(tmp_outdir, huge, aggregator="fedavg", **{"grad-norm-screen": 0.0})
    assert all(float(p.detach().abs().max()) < 1e3 for p in server.state.model.parameters())
    assert all(h["skipped_steps"] == 0 and h["screened_replies"] == 1 for h in history)


def test_rollout_statistics_that_do_not_count_the_steps_played_are_refused(tmp_outdir, caplog):
    def miscount(instruction: Message, reply: Message, pid: int) -> Message:
        m = metrics(reply)
        if pid == 1 and m is not None and "obs-count" in m:
            m["obs-count"] = m["obs-count"] + 1
        return reply

    with caplog.at_level("WARNING", logger="fedrl"):
        server, history = train(tmp_outdir, miscount)
    assert any("node 1001 (claims partition 1)" in r.message and "obs-stats count 65 does not match the 64 steps"
               in r.message for r in caplog.records)
    assert all(h["clients"] == 2 for h in history)
    assert server.state.obs_stats.count == sum(h["env_steps"] for h in history[-1:])


@pytest.mark.parametrize("attack", ["sign-flip", "scale", "reward-lie", "loss-lie", "random-actions", "noise"])
def test_every_attack_runs_under_a_robust_rule_and_keeps_the_model_finite(tmp_outdir, attack):
    server, history = train(tmp_outdir, aggregator="baseline-avg", **{"robust-rule": "multi-krum", "robust-f": 1,
                                                                      "byzantine-clients": "2", "attack": attack})
    assert all(torch.isfinite(p).all() for p in server.state.model.parameters())
    assert len(history) == 2
