"""End to end: ``flwr run`` in the simulation engine, 2 SuperNodes, a tiny budget per aggregator."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from fedrl.config import AGGREGATORS, ASYNC_METHODS
from fedrl.tools.launch import flwr_run
from fedrl.tools.simulation import CONNECTION, simulation_superlink

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def superlink(tmp_path_factory):
    with simulation_superlink(tmp_path_factory.mktemp("superlink")) as env:
        yield env


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_flwr_run_completes_with_finite_outputs(superlink, tmp_path, aggregator):
    outdir = tmp_path / "runs"
    overrides = (f'aggregator="{aggregator}" outdir="{outdir}" num-server-rounds=2 min-steps=64 '
                 f'min-episodes=1 update-epochs=1 num-minibatches=2' + (" mu=0.01" if aggregator == "fedprox" else ""))
    run_id, status, results = flwr_run(str(ROOT), [overrides], ["num-supernodes=2 client-resources-num-cpus=1"],
                                       CONNECTION, superlink)
    assert run_id is not None
    assert status == "finished:completed"
    run_dir = outdir / f"CartPole-v1_{aggregator}_seed1_run{run_id}"
    assert results == str(run_dir)
    for name in ("config.json", "rounds.csv", "clients.csv", "model.pt"):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "rounds.csv", newline="") as f:
        rounds = list(csv.DictReader(f))
    assert len(rounds) == 2
    for row in rounds:
        assert int(row["clients"]) == 2
        for col in ("env_steps", "episodic_return_mean", "loss_mean", "sps", "wall_time_s"):
            assert math.isfinite(float(row[col]))
    with open(run_dir / "clients.csv", newline="") as f:
        assert all(math.isfinite(float(r["weight"])) for r in csv.DictReader(f) if r["exchange"] != "0")


@pytest.mark.parametrize("method", ASYNC_METHODS)
def test_flwr_run_of_each_async_method_completes(superlink, tmp_path, method):
    outdir = tmp_path / "runs"
    overrides = (f'aggregator="{method}" outdir="{outdir}" time-budget=6.0 job-steps=64 steps-per-unit=64 nigt-batch=2 '
                 f'nigt-init-batch=2 eval-every=0.5 eval-episodes=1 compute-time="sqrt" comm-time="sqrt"')
    run_id, status, results = flwr_run(str(ROOT), [overrides], ["num-supernodes=2 client-resources-num-cpus=1"],
                                       CONNECTION, superlink)
    assert status == "finished:completed"
    run_dir = outdir / f"CartPole-v1_{method}_seed1_run{run_id}"
    assert results == str(run_dir)
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "events.csv", "evals.csv", "model.pt"}
    with open(run_dir / "events.csv", newline="") as f:
        events = list(csv.DictReader(f))
    assert any(e["outcome"] == "applied" for e in events)
    assert {e["partition_id"] for e in events} == {"0", "1"}
    with open(run_dir / "evals.csv", newline="") as f:
        evals = list(csv.DictReader(f))
    assert [float(e["sim_time"]) for e in evals] == [0.0, 3.0, 6.0]


def test_bad_config_fails_the_run(superlink, tmp_path):
    run_id, status, _ = flwr_run(str(ROOT), [f'aggregator="median" outdir="{tmp_path}"'], ["num-supernodes=2"],
                                 CONNECTION, superlink)
    assert run_id is not None and status != "finished:completed"
    assert not any(tmp_path.iterdir())


def _superlinks() -> set[int]:
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"flower-superlink" in cmdline.read_bytes().split(b"\0")[0]:
                pids.add(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_fedrl_run_starts_its_own_superlink_and_leaves_nothing_running(tmp_path):
    import subprocess
    import sys

    before = _superlinks()
    cmd = [str(Path(sys.executable).parent / "fedrl-run"), "--app", str(ROOT), "--clients", "2", "--run-config",
           f'outdir="{tmp_path}" num-server-rounds=1 min-steps=64 min-episodes=1 update-epochs=1 num-minibatches=2 '
           'eval-episodes=0']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "status finished:completed" in done.stdout and f"results in {tmp_path}" in done.stdout
    assert _superlinks() <= before
