"""Kill a run at each point of a round, resume it, and get the uninterrupted run's rows and model.

Runs in one process (LocalGrid): a "kill" is an exception raised where the run would
die, after which nothing more of that run is written, as with SIGKILL (every row was
flushed when it was written). The resumed run is a fresh scheduler and fresh clients.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from fedrl.config import ConfigError, FedRLConfig
from fedrl.federation import resume as resume_module
from fedrl.federation.resume import CHECKPOINT, RESUME_TOML
from fedrl.rl.checkpoint import load_policy
from fedrl.tools.local_grid import LocalGrid
from server_app import build_scheduler

RC = {"num-server-rounds": 4, "min-steps": 64, "min-episodes": 1, "update-epochs": 2, "num-minibatches": 2,
      "eval-every": 0.5, "eval-episodes": 1}
TIMING = {"rollout_ms", "rollout_compute_ms", "exchange_ms_mean", "client_compute_ms_mean", "sps", "wall_time_s"}


class Killed(Exception):
    """Where the process would have died."""


def run(rc, tamper=None):
    from client_app import app

    server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, 2, rc, tamper=tamper), run_id=7)
    server.run()
    return server


def rows(path, drop=()):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def assert_same_run(a, b):
    assert rows(a / "rounds.csv", TIMING) == rows(b / "rounds.csv", TIMING)
    assert rows(a / "clients.csv") == rows(b / "clients.csv")
    assert rows(a / "evals.csv", {"wall_time_s"}) == rows(b / "evals.csv", {"wall_time_s"})
    model_a, stats_a, _ = load_policy(a / "model.pt")
    model_b, stats_b, _ = load_policy(b / "model.pt")
    for k, v in model_a.state_dict().items():
        assert torch.equal(v, model_b.state_dict()[k]), k
    assert stats_a.count == stats_b.count and (stats_a.mean == stats_b.mean).all()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run({**RC, "outdir": str(tmp_path_factory.mktemp("whole"))}).recorder.path


def kill_at_message(message_type, server_round, nth=1):
    """A tamper that kills the run at the ``nth`` ``message_type`` instruction of ``server_round``."""
    seen = []

    def tamper(instruction, reply, partition_id):
        conf = instruction.content.config_records.get("config")
        if instruction.metadata.message_type == message_type and conf and conf.get("server-round") == server_round:
            seen.append(1)
            if len(seen) >= nth:
                raise Killed(f"{message_type} round {server_round}")
        return reply
    return tamper


@pytest.mark.parametrize("where", ["mid-rollout", "mid-exchange", "mid-local-epochs"])
def test_a_run_killed_mid_round_resumes_to_the_same_rows_and_model(tmp_path, uninterrupted, where):
    rc = {**RC, "outdir": str(tmp_path)}
    if where == "mid-local-epochs":  # FedAvg has one exchange per round, of local training
        rc["aggregator"] = "fedavg"
        whole = run({**rc, "outdir": str(tmp_path / "whole")}).recorder.path
    else:
        whole = uninterrupted
    tamper = {"mid-rollout": kill_at_message("train.rollout", 3, 2),
              "mid-exchange": kill_at_message("train.gradient", 3, 3),
              "mid-local-epochs": kill_at_message("train.local", 2, 2)}[where]
    with pytest.raises(Killed):
        run(rc, tamper)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.endswith("run7")]
    killed_rounds = len(rows(run_dir / "rounds.csv"))
    assert killed_rounds < 4
    resumed = run({**rc, "resume-from": str(run_dir)})
    assert resumed.recorder.path == run_dir
    assert_same_run(whole, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert [r["after_round"] for r in config["resumed"]] == [killed_rounds]


def test_a_kill_during_the_checkpoint_write_resumes_from_the_previous_checkpoint(tmp_path, uninterrupted,
                                                                                 monkeypatch):
    real = resume_module.atomic_save
    calls = []

    def dying_save(obj, path):
        calls.append(obj["round"])
        if obj["round"] == 3:
            with open(path.with_name(path.name + ".tmp"), "wb") as f:
                f.write(b"half a checkpoint")
            raise Killed("during the checkpoint write of round 3")
        real(obj, path)

    monkeypatch.setattr(resume_module, "atomic_save", dying_save)
    rc = {**RC, "outdir": str(tmp_path)}
    with pytest.raises(Killed):
        run(rc)
    monkeypatch.setattr(resume_module, "atomic_save", real)
    (run_dir,) = list(tmp_path.iterdir())
    assert len(rows(run_dir / "rounds.csv")) == 3  # round 3's rows were written before its checkpoint
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["round"] == 2
    run({**rc, "resume-from": str(run_dir)})
    assert_same_run(uninterrupted, run_dir)
    assert len(rows(run_dir / "rounds.csv")) == 4  # round 3 again, not twice


def test_a_half_written_row_is_cut_off_on_resume(tmp_path, uninterrupted, monkeypatch):
    rc = {**RC, "outdir": str(tmp_path)}
    with pytest.raises(Killed):
        run(rc, kill_at_message("train.rollout", 3))
    (run_dir,) = list(tmp_path.iterdir())
    with open(run_dir / "rounds.csv", "a") as f:
        f.write("3,123,45.")  # the process died in the middle of a row
    with open(run_dir / "clients.csv", "a") as f:
        f.write("3,0,1,")
    run({**rc, "resume-from": str(run_dir)})
    assert_same_run(uninterrupted, run_dir)


def test_resume_toml_resumes_with_the_runs_own_config(tmp_path, uninterrupted):
    import tomllib

    rc = {**RC, "outdir": str(tmp_path)}
    with pytest.raises(Killed):
        run(rc, kill_at_message("train.gradient", 2))
    (run_dir,) = list(tmp_path.iterdir())
    config = tomllib.loads((run_dir / RESUME_TOML).read_text())
    assert config["resume-from"] == str(run_dir)
    run(config)
    assert_same_run(uninterrupted, run_dir)


def test_a_finished_run_resumed_runs_nothing_more(tmp_path):
    rc = {**RC, "num-server-rounds": 1, "outdir": str(tmp_path)}
    first = run(rc).recorder.path
    before = (first / "rounds.csv").read_text()
    run({**rc, "resume-from": str(first)})
    assert (first / "rounds.csv").read_text() == before


def test_resume_refuses_another_config_and_names_the_keys(tmp_path):
    rc = {**RC, "num-server-rounds": 1, "outdir": str(tmp_path)}
    run_dir = run(rc).recorder.path
    with pytest.raises(ConfigError, match=r"resume-from.*seed = 2 \(the run has 1\).*resume.toml"):
        run({**rc, "seed": 2, "resume-from": str(run_dir)})


def test_resume_refuses_a_directory_without_a_checkpoint_or_with_a_bad_one(tmp_path):
    rc = {**RC, "num-server-rounds": 1, "outdir": str(tmp_path)}
    with pytest.raises(ConfigError, match="resume-from.*checkpoint.pt"):
        run({**rc, "resume-from": str(tmp_path)})
    run_dir = run(rc).recorder.path
    ckpt = torch.load(run_dir / CHECKPOINT, weights_only=True)
    next(iter(ckpt["global"]["model"].values())).fill_(float("nan"))
    torch.save(ckpt, run_dir / CHECKPOINT)
    with pytest.raises(ConfigError, match="resume-from.*not finite"):
        run({**rc, "resume-from": str(run_dir)})


def test_resume_refuses_a_csv_shorter_than_its_checkpoint_and_changes_nothing(tmp_path):
    rc = {**RC, "num-server-rounds": 2, "outdir": str(tmp_path)}
    run_dir = run(rc).recorder.path
    (run_dir / "clients.csv").write_text("round\n")
    rounds_before = (run_dir / "rounds.csv").read_text()
    with pytest.raises(ConfigError, match="resume-from.*clients.csv holds at least"):
        run({**rc, "resume-from": str(run_dir)})
    assert (run_dir / "rounds.csv").read_text() == rounds_before
