"""End to end on Flower's deployment engine: SuperLink + 2 SuperNodes (fedrl-supernode) on loopback.

Each test starts its own deployment, so the budgets are the smallest that still
exercise the protocol.
"""

from __future__ import annotations

import csv
import math
import subprocess
import time
from pathlib import Path

from fedrl.tools.deploy import CONNECTION, LocalDeployment, make_node_keys
from fedrl.tools.launch import flwr_run

ROOT = Path(__file__).resolve().parents[2]
TINY = "min-steps=64 min-episodes=1 update-epochs=1 num-minibatches=1"


def rounds_of(outdir: Path) -> list[dict]:
    files = list(outdir.glob("*/rounds.csv"))
    if not files:
        return []
    with open(files[0], newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(outdir: Path, rounds: int) -> list[dict]:
    (run_dir,) = list(outdir.iterdir())
    for name in ("config.json", "rounds.csv", "clients.csv", "model.pt"):
        assert (run_dir / name).is_file(), name
    rows = rounds_of(outdir)
    assert len(rows) == rounds
    for row in rows:
        for col in ("env_steps", "episodic_return_mean", "loss_mean", "wall_time_s"):
            assert math.isfinite(float(row[col])), col
    return rows


def test_insecure_loopback_deployment(tmp_path):
    outdir = tmp_path / "runs"
    with LocalDeployment(tmp_path / "dep", nodes=2, secure=False) as dep:
        run_id, status, results = flwr_run(str(ROOT), [f'num-server-rounds=2 {TINY} outdir="{outdir}"'], [],
                                           CONNECTION, dep.env, echo=False)
    assert status == "finished:completed", status
    rows = check_outputs(outdir, 2)
    assert all(int(r["clients"]) == 2 for r in rows)


def test_tls_and_node_authentication(tmp_path):
    outdir = tmp_path / "runs"
    with LocalDeployment(tmp_path / "dep", nodes=2) as dep:
        rogue = make_node_keys(tmp_path / "rogue", 1)[0][0]
        intruder = dep.start_supernode(0, key=rogue, name="intruder", max_retries=2)
        assert intruder.wait(timeout=120) != 0  # an unregistered key is refused
        run_id, status, _ = flwr_run(str(ROOT), [f'num-server-rounds=1 {TINY} outdir="{outdir}"'], [],
                                     CONNECTION, dep.env, echo=False)
    assert status == "finished:completed", status
    assert "Failed to activate SuperNode" in (dep.logs / "intruder.log").read_text()
    check_outputs(outdir, 1)


def test_killed_supernode_run_completes_and_a_restarted_one_rejoins(tmp_path):
    outdir = tmp_path / "runs"
    overrides = f'num-server-rounds=6 {TINY} reply-timeout=15.0 outdir="{outdir}"'
    with LocalDeployment(tmp_path / "dep", nodes=2, secure=False) as dep:
        proc = subprocess.Popen(["flwr", "run", str(ROOT), CONNECTION, "--stream", "--run-config", overrides],
                                env={**dep.env, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while len(rounds_of(outdir)) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        dep.procs["supernode-1"].kill()
        # Rounds are short, so one more may finish with both nodes before the kill lands.
        while (all(int(r["clients"]) == 2 for r in rounds_of(outdir)) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.2)
        dep.start_supernode(1, name="supernode-1-restarted")
        proc.wait(timeout=600)
        rows = rounds_of(outdir)
    assert len(rows) == 6, rows
    clients = [int(r["clients"]) for r in rows]
    assert clients[0] == 2 and 1 in clients  # the run went on without the killed node
    assert sum(int(r["timed_out"]) for r in rows[clients.index(1):]) >= 1
    assert clients[-1] == 2  # the restarted SuperNode (partition 1) takes part again


def test_wall_clock_a3c_goes_on_when_a_supernode_is_killed(tmp_path):
    outdir = tmp_path / "runs"
    # 90 s of budget: on a loaded machine a SuperNode's first job can take a good part of a minute,
    # and the run must still have time to go on after the kill.
    overrides = (f'aggregator="a3c" clock="wall" time-unit-s=0.1 time-budget=900.0 job-steps=64 steps-per-unit=64 '
                 f'reply-timeout=15.0 eval-episodes=0 outdir="{outdir}"')
    with LocalDeployment(tmp_path / "dep", nodes=2, secure=False) as dep:
        proc = subprocess.Popen(["flwr", "run", str(ROOT), CONNECTION, "--stream", "--run-config", overrides],
                                env={**dep.env, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300

        def events() -> list[dict]:
            files = list(outdir.glob("*/events.csv"))
            if not files:
                return []
            with open(files[0], newline="") as f:
                return list(csv.DictReader(f))

        while len({e["partition_id"] for e in events() if e["outcome"] == "applied"}) < 2 \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        before = events()
        dep.procs["supernode-1"].kill()
        killed_at = len(before)
        proc.wait(timeout=600)
        rows = events()
    assert proc.returncode == 0
    assert {r["partition_id"] for r in before if r["outcome"] == "applied"} == {"0", "1"}, before
    assert (list(outdir.iterdir())[0] / "model.pt").is_file()
    after = rows[killed_at:]
    # The killed node's job either times out or comes back as the SuperLink's error reply.
    assert any(r["outcome"] in ("timed_out", "rejected") and r["partition_id"] == "1" for r in after)
    assert sum(r["outcome"] == "applied" and r["partition_id"] == "0" for r in after) >= 5  # the run went on
    assert float(rows[-1]["sim_time"]) <= 900.0
