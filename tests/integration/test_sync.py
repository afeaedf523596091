"""The synchronous scheduler end to end in one process (LocalGrid): outputs, rejection, save/load."""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest
import torch
from flwr.app import Array, Error, Message

from fedrl.config import AGGREGATORS, FedRLConfig
from fedrl.federation.protocol import GRADS, PACKED
from fedrl.federation.recorder import CLIENT_COLUMNS, ROUND_COLUMNS
from fedrl.rl.checkpoint import load_policy
from fedrl.rl.evaluate import evaluate
from fedrl.rl.normalizer import RunningStats
from fedrl.tools.local_grid import LocalGrid
from server_app import build_scheduler

TINY = {"num-server-rounds": 2, "min-steps": 64, "min-episodes": 1, "update-epochs": 2, "num-minibatches": 2}


def scheduler(rc, grid, run_id, out=True):
    return build_scheduler(FedRLConfig.from_run_config(rc), grid, run_id=run_id, out=out)


def train(tmp_outdir, tamper=None, partitions=2, **overrides):
    from client_app import app

    rc = {**TINY, "outdir": tmp_outdir, **overrides}
    grid = LocalGrid(app, partitions, rc, tamper=tamper)
    server = scheduler(rc, grid, run_id=42)
    return server, server.run()


class FakeClock:
    """Stands in for ``time`` where replies are waited for: sleeping moves it on, and nothing else does."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    perf_counter = staticmethod(time.perf_counter)
    thread_time = staticmethod(time.thread_time)


@pytest.fixture
def clock(monkeypatch):
    """One fake clock for the exchange's timeouts and LocalGrid's reply delays."""
    from fedrl.tools import local_grid
    from fedrl.transport import exchange

    fake = FakeClock()
    monkeypatch.setattr(exchange, "time", fake)
    monkeypatch.setattr(local_grid, "time", fake)
    return fake


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_every_aggregator_trains_and_writes_outputs(tmp_outdir, aggregator):
    extra = {"mu": 0.01} if aggregator == "fedprox" else {}
    server, history = train(tmp_outdir, aggregator=aggregator, **extra)
    path = server.recorder.path
    assert path.name == f"CartPole-v1_{aggregator}_seed1_run42"
    config = json.loads((path / "config.json").read_text())
    assert config["config"]["aggregator"] == aggregator and "torch" in config["versions"]
    assert config["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    rounds = read_csv(path / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == [1, 2]
    assert set(ROUND_COLUMNS) <= set(rounds[0])
    for row in rounds:
        for col in ("env_steps", "episodic_return_mean", "loss_mean", "clipfrac_mean", "explained_variance", "sps",
                    "wall_time_s"):
            assert math.isfinite(float(row[col])), col
    assert config["patches"] == {"sim-poll": "applied", "object-pulls": "applied"}
    assert int(rounds[1]["env_steps"]) > int(rounds[0]["env_steps"]) >= 128
    clients = read_csv(path / "clients.csv")
    assert set(CLIENT_COLUMNS) <= set(clients[0])
    exchanges = [r for r in clients if r["exchange"] != "0"]
    per_round = 1 if aggregator in ("fedavg", "fedprox") else 4
    assert len(exchanges) == 2 * per_round * 2
    for row in exchanges:
        assert math.isfinite(float(row["weight"])) and math.isfinite(float(row["loss"]))
    model, stats, cfg = load_policy(path / "model.pt")
    assert cfg.aggregator == aggregator and stats.count == int(rounds[1]["env_steps"])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, server.state.model.state_dict()[k])


def test_clients_csv_weights_match_the_rule(tmp_outdir):
    server, _ = train(tmp_outdir, aggregator="rweighted", partitions=3)
    rows = [r for r in read_csv(server.recorder.path / "clients.csv") if r["exchange"] == "1" and r["round"] == "1"]
    r = np.array([float(x["episodic_return"]) for x in rows])
    expected = (r - r.min()) / (r - r.min()).sum() + 1 / 3 if np.ptp(r) > 0 else np.full(3, 1 / 3 + 1 / 3)
    np.testing.assert_allclose([float(x["weight"]) for x in rows], expected, rtol=1e-6)
    rollout_rows = [x for x in read_csv(server.recorder.path / "clients.csv") if x["exchange"] == "0" and x["round"] == "1"]
    assert [float(x["episodic_return"]) for x in rollout_rows] == pytest.approx(list(r))


def nan_gradients_from(bad_pid):
    def tamper(msg: Message, reply: Message, pid: int) -> Message:  # noqa: ARG001
        if pid == bad_pid and reply.has_content() and GRADS in reply.content.array_records:
            grads = reply.content.array_records[GRADS]
            arr = grads[PACKED].numpy().copy()
            arr[0] = np.nan
            grads[PACKED] = Array(arr)
        return reply
    return tamper


def test_nan_gradient_reply_is_dropped_and_model_stays_finite(tmp_outdir, caplog):
    with caplog.at_level("WARNING", logger="fedrl"):
        server, history = train(tmp_outdir, tamper=nan_gradients_from(1))
    assert all(torch.isfinite(p).all() for p in server.state.model.parameters())
    assert all(h["rejected_replies"] == 4 for h in history)
    assert any("partition 1" in r.message for r in caplog.records)
    clients = read_csv(server.recorder.path / "clients.csv")
    assert {r["partition_id"] for r in clients if r["exchange"] != "0"} == {"0"}


def test_all_replies_failing_skips_steps_and_keeps_parameters(tmp_outdir):
    def fail(msg: Message, reply: Message, pid: int) -> Message:
        if msg.metadata.message_type == "train.gradient":
            return Message(Error(code=3, reason="injected"), reply_to=msg)
        return reply

    from client_app import app

    rc = {**TINY, "outdir": tmp_outdir}
    server = scheduler(rc, LocalGrid(app, 2, rc, tamper=fail), run_id=1)
    before = {k: v.clone() for k, v in server.state.model.state_dict().items()}
    history = server.run()
    assert all(h["skipped_steps"] == 4 for h in history)
    for k, v in server.state.model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_bad_rollout_reply_is_dropped(tmp_outdir):
    def no_returns(msg: Message, reply: Message, pid: int) -> Message:
        metrics = reply.content.metric_records.get("metrics") if reply.has_content() else None
        if pid == 0 and metrics is not None and "episode-returns" in metrics:
            metrics["episode-returns"] = [float("nan")]
        return reply

    server, history = train(tmp_outdir, tamper=no_returns)
    assert all(h["clients"] == 1 for h in history)


def test_bad_config_stops_before_any_message(tmp_outdir):
    from flwr.app import Context, RecordDict

    import server_app
    from client_app import app
    from fedrl.config import ConfigError

    grid = LocalGrid(app, 2, {})
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                  run_config={"aggregator": "median", "outdir": tmp_outdir})
    with pytest.raises(ConfigError, match="aggregator"):
        server_app.main(grid, ctx)
    assert grid.client_seconds == 0.0


def test_saved_policy_evaluates(tmp_outdir):
    server, _ = train(tmp_outdir)
    model, stats, cfg = load_policy(server.recorder.path / "model.pt")
    returns = evaluate(model, stats, cfg.env_id, episodes=2)
    assert len(returns) == 2 and all(r >= 1 for r in returns)
    assert evaluate(model, stats, cfg.env_id, episodes=2) == returns


def test_training_is_deterministic(tmp_outdir):
    a, ha = train(tmp_outdir, aggregator="lweighted")
    b, hb = train(tmp_outdir, aggregator="lweighted")
    assert [h["episodic_return_mean"] for h in ha] == [h["episodic_return_mean"] for h in hb]
    for k, v in a.state.model.state_dict().items():
        torch.testing.assert_close(v, b.state.model.state_dict()[k], rtol=0, atol=0)
    assert b.recorder.path.name.endswith("-2")


def test_return_statistics_are_merged_only_when_asked(tmp_outdir):
    plain, _ = train(tmp_outdir)
    assert plain.state.return_stats.count == 0
    scaled, _ = train(tmp_outdir, **{"normalize-reward": True})
    assert scaled.state.return_stats.count == scaled.recorder.env_steps
    assert scaled.state.obs_stats.count == scaled.recorder.env_steps


def test_evaluate_cli_refuses_a_file_that_is_not_a_policy(tmp_path, capsys):
    from fedrl.rl.evaluate import main

    bogus = tmp_path / "model.pt"
    bogus.write_text("not a checkpoint")
    with pytest.raises(SystemExit):
        main([str(bogus)])
    assert "cannot load" in capsys.readouterr().err


def test_silent_node_times_out_and_the_rest_train(tmp_outdir, caplog, clock):
    def silent_in_updates(msg: Message, reply: Message, pid: int):
        return None if pid == 1 and msg.metadata.message_type == "train.gradient" else reply

    with caplog.at_level("WARNING", logger="fedrl"):
        server, history = train(tmp_outdir, tamper=silent_in_updates, **{"reply-timeout": 0.05})
    assert all(h["timed_out"] == 4 and h["skipped_steps"] == 0 for h in history)
    assert any("no reply within reply-timeout" in r.message and "partition 1" in r.message for r in caplog.records)
    rows = read_csv(server.recorder.path / "rounds.csv")
    assert [int(r["timed_out"]) for r in rows] == [4, 4]


def test_late_replies_are_never_applied(tmp_outdir, clock):
    from client_app import app

    rc = {**TINY, "outdir": tmp_outdir, "reply-timeout": 0.05}
    grid = LocalGrid(app, 2, rc, reply_delay={1: 0.2})
    server = scheduler(rc, grid, run_id=3)
    history = server.run()
    # Partition 1 always answers after the timeout: it never takes part, yet its replies did arrive.
    assert all(h["clients"] == 1 for h in history)
    clients = read_csv(server.recorder.path / "clients.csv")
    assert {r["partition_id"] for r in clients} == {"0"}
    clock.sleep(0.25)
    assert grid.unpulled() == len([r for r in clients if r["exchange"] == "0"])


def test_too_few_rollout_replies_retry_then_stop(tmp_outdir, clock):
    attempts = []

    def one_silent(msg: Message, reply: Message, pid: int):
        if msg.metadata.message_type == "train.rollout" and pid == 1:
            attempts.append(msg.metadata.group_id)
            return None
        return reply

    with pytest.raises(RuntimeError, match="min-replies=2"):
        train(tmp_outdir, tamper=one_silent, **{"reply-timeout": 0.05, "min-replies": 2})
    assert attempts == ["1", "1", "1"]


def test_too_few_update_replies_skip_the_step(tmp_outdir):
    server, history = train(tmp_outdir, tamper=nan_gradients_from(1), **{"min-replies": 2})
    assert all(h["skipped_steps"] == 4 for h in history)


def test_server_statistics_equal_the_pooled_observations_of_both_clients(tmp_outdir):
    from client_app import app

    rc = {**TINY, "num-server-rounds": 1, "outdir": tmp_outdir}
    grid = LocalGrid(app, 2, rc)
    server = scheduler(rc, grid, run_id=5, out=False)
    server.run()
    # Round 1 runs with empty statistics, so the stored (normalised) observations are the raw ones.
    pooled = np.concatenate([ctx.state.array_records["rollout"]["obs"].numpy() for ctx in grid.contexts.values()])
    expected = RunningStats.from_batch(pooled.astype(np.float64))
    assert server.state.obs_stats.count == expected.count == server.recorder.env_steps
    np.testing.assert_allclose(server.state.obs_stats.mean, expected.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(server.state.obs_stats.var, expected.var, rtol=1e-4, atol=1e-6)


def test_a_custom_env_from_the_users_own_module_trains(tmp_outdir):
    server, history = train(tmp_outdir, **{"env-id": "custom_envs:Corridor-v0", "eval-episodes": 1})
    assert len(history) == 2 and all(math.isfinite(h["loss_mean"]) for h in history)
    model, stats, cfg = load_policy(server.recorder.path / "model.pt")
    assert cfg.env_id == "custom_envs:Corridor-v0" and stats.mean.shape == (1,)


def test_tensorboard_scalars_use_cleanrls_names_at_env_steps(tmp_outdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    server, history = train(tmp_outdir, tensorboard=True, **{"eval-episodes": 1, "eval-every": 1.0})
    events = EventAccumulator(str(server.recorder.path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/SPS", "losses/value_loss", "losses/policy_loss", "losses/entropy",
            "losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "charts/eval_return"} <= tags
    returns = events.Scalars("charts/episodic_return")
    assert [e.step for e in returns] == [int(h["env_steps"]) for h in history]
    assert [e.value for e in returns] == pytest.approx([h["episodic_return_mean"] for h in history])


def test_tensorboard_without_the_package_is_a_config_error_naming_the_key(tmp_outdir, monkeypatch):
    import sys

    from fedrl.config import ConfigError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"tensorboard = True.*pip install 'fedrl\[tensorboard\]'"):
        train(tmp_outdir, tensorboard=True)


def test_evaluate_records_a_video_of_each_episode(tmp_outdir, tmp_path, capsys):
    from fedrl.rl.evaluate import main as evaluate_main

    server, _ = train(tmp_outdir)
    videos = tmp_path / "videos"
    assert evaluate_main([str(server.recorder.path / "model.pt"), "--episodes", "2", "--video", str(videos)]) == 0
    files = sorted(p.name for p in videos.glob("*.mp4"))
    assert files == ["CartPole-v1-episode-0.mp4", "CartPole-v1-episode-1.mp4"]
    assert all((videos / f).stat().st_size > 1000 for f in files)
    assert f"videos in {videos}" in capsys.readouterr().out


def test_fraction_train_samples_the_clients_of_each_round_and_repeats(tmp_outdir):
    server, rows = train(tmp_outdir, partitions=6, **{"fraction-train": 0.5, "num-server-rounds": 4})
    assert [int(r["clients"]) for r in rows] == [3, 3, 3, 3]
    trained = [sorted({int(c["partition_id"]) for c in read_csv(f"{server.recorder.path}/clients.csv")
                       if int(c["round"]) == r}) for r in range(1, 5)]
    assert all(len(t) == 3 for t in trained)
    assert len({tuple(t) for t in trained}) > 1  # not the same three every round
    again, _ = train(tmp_outdir, partitions=6, **{"fraction-train": 0.5, "num-server-rounds": 4})
    for k, v in server.state.model.state_dict().items():
        torch.testing.assert_close(v, again.state.model.state_dict()[k], rtol=0, atol=0)


def test_fraction_train_keeps_at_least_min_replies(tmp_outdir):
    _, rows = train(tmp_outdir, partitions=4, **{"fraction-train": 0.1, "min-replies": 2})
    assert [int(r["clients"]) for r in rows] == [2, 2]
