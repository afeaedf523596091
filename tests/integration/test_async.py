"""The asynchronous scheduler in one process (LocalGrid): the simulated clock, the NIGT rounds, A3C, IMPALA."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message

from fedrl.config import ASYNC_METHODS, FedRLConfig
from fedrl.federation.protocol import BEHAVIOUR, GRADS, METRICS, PACKED
from fedrl.federation.recorder import EVENT_COLUMNS
from fedrl.rl.envs import make_vector_env
from fedrl.rl.global_model import GlobalModel
from fedrl.rl.jobs import job_seed, policy_gradient
from fedrl.runtime import set_torch_threads
from fedrl.tools.local_grid import LocalGrid
from server_app import build_scheduler

TINY = {"job-steps": 32, "steps-per-unit": 32, "eval-episodes": 0, "nigt-batch": 3, "nigt-init-batch": 3, "impala-batch": 2}


class ShuffledGrid(LocalGrid):
    """Hands back only a random part of the ready replies, in a random order: arrival order is noise."""

    def __init__(self, *args, order_seed: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(order_seed)

    def pull_messages(self, message_ids):
        ready = list(super().pull_messages(message_ids))
        self.rng.shuffle(ready)
        keep = int(self.rng.integers(0, len(ready) + 1))
        now = -math.inf
        for msg in ready[keep:]:  # back into the store, ready at once
            self._replies[msg.metadata.reply_to_message_id] = (now, msg)
        return ready[:keep]


def run(rc: dict, partitions: int = 3, grid_cls=LocalGrid, out: bool = False, **grid_kwargs):
    from client_app import app

    rc = {**TINY, **rc}
    set_torch_threads()  # as the ServerApp does: the initial parameters' last bits depend on the thread count
    grid = grid_cls(app, partitions, rc, **grid_kwargs)
    server = build_scheduler(FedRLConfig.from_run_config(rc), grid, run_id=7, out=out)
    server.run()
    return server


def params(server) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in server.state.model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def events(server) -> list[dict]:
    """The events.csv rows without the wall time, as text (NaN equals NaN)."""
    return [{k: repr(v) for k, v in row.items() if k != "wall_time_s"} for row in server.recorder.events]


@pytest.mark.parametrize("method", ["a3c", "impala", "rennala-nigt", "malenia-lweighted", "gala"])
def test_the_simulated_clock_gives_bit_identical_runs_whatever_the_arrival_order(method):
    rc = {"aggregator": method, "compute-time": "sqrt", "comm-time": "sqrt", "time-budget": 9.0}
    plain = run(rc)
    shuffled = [run(rc, grid_cls=ShuffledGrid, order_seed=seed) for seed in (1, 2)]
    assert plain.rule.version >= 2
    for other in shuffled:
        assert same(params(plain), params(other))
        assert events(plain) == events(other)


def test_rennalas_first_batch_is_the_m_earliest_finishing_gradients():
    n, m = 10, 20
    finishes = sorted((j * math.sqrt(i), i - 1) for i in range(1, n + 1) for j in range(1, m + 1))[:m]
    rc = {"aggregator": "rennala-nigt", "compute-time": "sqrt", "nigt-init-batch": m, "time-budget": finishes[-1][0]}
    server = run(rc, partitions=n)
    first = [e for e in server.recorder.events if e["round"] == 0 and e["outcome"] in ("batched", "applied")]
    assert [(e["sim_time"], e["partition_id"]) for e in first] == finishes
    assert first[-1]["outcome"] == "applied" and server.rule.round == 1
    aborted = [e for e in server.recorder.events if e["outcome"] == "aborted"]
    assert aborted and all(e["round"] == 0 for e in aborted)


def test_with_equal_times_and_m_equal_to_n_rennala_malenia_and_sync_nigt_coincide():
    runs = {m: run({"aggregator": m, "time-budget": 4.0}) for m in ("rennala-nigt", "malenia-nigt", "sync-nigt")}
    assert {s.rule.version for s in runs.values()} == {4}
    first = params(runs["rennala-nigt"])
    assert all(same(first, params(s)) for s in runs.values())
    assert not same(first, params(run({"aggregator": "rennala-nigt", "time-budget": 4.0, "nigt-batch": 2})))


def test_a_stale_reply_never_enters_a_rennala_batch():
    # Wall clock: partition 2's replies arrive 0.25 s late, after the other two have closed the round.
    rc = {"aggregator": "rennala-nigt", "clock": "wall", "nigt-batch": 2, "nigt-init-batch": 2, "time-budget": 1.5}
    server = run(rc, reply_delay={2: 0.25})
    rows = server.recorder.events
    closed = 0
    for row in rows:
        if row["outcome"] in ("batched", "applied"):
            assert row["round"] == closed, row
        closed += row["outcome"] == "applied"
    # Replies that come back after their round closed are discarded: the slow node's, and those
    # of fast nodes' jobs that were still running when the round closed (they cannot be stopped).
    discarded = [r for r in rows if r["outcome"] == "discarded"]
    assert 2 in {r["partition_id"] for r in discarded}
    assert all(r["round"] < server.rule.round for r in discarded)


def test_a3c_with_one_client_and_no_delay_is_one_single_process_step():
    rc = {"aggregator": "a3c", "time-budget": 1.0}
    server = run(rc, partitions=1)
    assert server.rule.version == 1
    cfg = FedRLConfig.from_run_config({**TINY, **rc})
    reference = GlobalModel(cfg, torch.device("cpu"))
    grads, _, _ = policy_gradient(reference.model, reference.obs_stats, make_vector_env(cfg.env_id, 1), cfg,
                                  job_seed(cfg.seed, 0, 0, 0), torch.device("cpu"))
    reference.model.zero_grad(set_to_none=True)
    assert reference.apply_gradient(grads)
    assert same(params(server), {k: v.detach().numpy() for k, v in reference.model.state_dict().items()})


def test_a_stale_a3c_gradient_is_applied_and_its_staleness_logged():
    server = run({"aggregator": "a3c", "compute-time": "1,2,3", "time-budget": 6.0})
    stale = [e for e in server.recorder.events if e["outcome"] == "applied" and e["staleness"] > 0]
    assert stale and {e["partition_id"] for e in stale} >= {1, 2}
    assert all(e["staleness"] == e["version_applied"] - e["version_sent"] for e in server.recorder.events
               if e["outcome"] == "applied")


def corrupt(kind: str):
    def tamper(instruction: Message, reply: Message, pid: int) -> Message:
        if pid != 1 or reply.has_error():
            return reply
        if kind == "shape":
            reply.content.array_records[GRADS] = ArrayRecord({PACKED: Array(np.zeros(3, np.float32))})
        elif kind == "nan":
            flat = reply.content.array_records[GRADS][PACKED].numpy().copy()
            flat[0] = np.nan
            reply.content.array_records[GRADS] = ArrayRecord({PACKED: Array(flat)})
        elif kind == "job":
            reply.content.metric_records[METRICS]["job"] = 999
        elif kind == "behaviour":
            del reply.content.array_records[BEHAVIOUR]
        return reply
    return tamper


@pytest.mark.parametrize(("method", "kind", "why"), [
    ("a3c", "shape", "'grads' holds 3 values"),
    ("rennala-nigt", "nan", "'grads' is not a finite float array"),
    ("a3c", "job", "reply names job 999"),
    ("impala", "behaviour", "missing array record 'behaviour-logprobs'"),
])
def test_a_bad_job_reply_is_rejected_with_a_warning_naming_the_partition(caplog, method, kind, why):
    with caplog.at_level(logging.WARNING, logger="fedrl"):
        server = run({"aggregator": method, "time-budget": 4.0}, tamper=corrupt(kind))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rejected reply from partition 1" in w and why in w for w in warnings), warnings
    rows = server.recorder.events
    assert {r["partition_id"] for r in rows if r["outcome"] == "rejected"} <= {1, ""}
    assert any(r["outcome"] == "rejected" for r in rows)
    assert all(r["partition_id"] != 1 for r in rows if r["outcome"] in ("applied", "batched"))
    assert server.rule.version >= 1 and all(np.all(np.isfinite(v)) for v in params(server).values())


def test_an_async_run_writes_events_and_evaluations(tmp_path):
    rc = {"aggregator": "malenia-rweighted", "outdir": str(tmp_path), "time-budget": 4.0, "eval-episodes": 1,
          "eval-every": 0.25, "compute-time": "sqrt"}
    server = run(rc, out=True)
    path = server.recorder.path
    assert {p.name for p in path.iterdir()} == {"config.json", "events.csv", "evals.csv", "model.pt"}
    with open(path / "events.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == EVENT_COLUMNS
        rows = list(reader)
    applied = [r for r in rows if r["outcome"] == "applied"]
    assert applied and all(r["weights"] for r in applied)
    weights = [float(w.split(":")[1]) for w in applied[0]["weights"].split(";")]
    assert len(weights) == 3 and all(w > 0 for w in weights)
    with open(path / "evals.csv", newline="") as f:
        evals = list(csv.DictReader(f))
    assert [float(e["sim_time"]) for e in evals] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(math.isfinite(float(e["eval_return_mean"])) for e in evals)


def test_every_async_method_is_built_from_the_run_config():
    for method in ASYNC_METHODS:
        server = run({"aggregator": method, "time-budget": 2.0})
        assert server.rule.name == method and server.rule.version >= 1, method


def test_the_synchronous_scheduler_charges_the_same_clock():
    from client_app import app

    rc = {"num-server-rounds": 2, "min-steps": 64, "min-episodes": 1, "update-epochs": 1, "num-minibatches": 2,
          "job-steps": 64, "steps-per-unit": 64, "compute-time": "1,2", "comm-time": "sqrt", "eval-episodes": 0}
    server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, 2, rc), run_id=1, out=False)
    history = server.run()
    # Round 1: the slower client's rollout (2·steps/64) + κ_2 = √2, then 2 exchanges of κ_2 each.
    first = history[0]["sim_time"]
    assert first >= 2.0 + 3 * math.sqrt(2) - 1e-9
    assert history[1]["sim_time"] > first


def test_gala_agents_mix_with_a_peer_and_the_server_holds_their_mean():
    server = run({"aggregator": "gala", "compute-time": "sqrt", "comm-time": "sqrt", "time-budget": 12.0})
    rule = server.rule
    assert len(rule.agents) == 3 and rule.version >= 3
    states = [a.state_dict() for a in rule.agents.values()]
    for key, value in server.state.model.state_dict().items():
        assert torch.allclose(value, torch.stack([s[key] for s in states]).mean(0))
    applied = [e for e in server.recorder.events if e["outcome"] == "applied"]
    assert all(e["consensus_error"] >= 0 for e in applied) and applied[-1]["consensus_error"] > 0
    # Two hops per job: partition 0's first job finishes at h_1 + 2·κ_1 = 3.
    assert min(e["sim_time"] for e in applied if e["partition_id"] == 0) == 3.0
