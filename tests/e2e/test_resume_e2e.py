"""End to end: the SuperLink is killed mid-run (SIGKILL, with everything it started), and
``fedrl-run --resume`` on a fresh SuperLink finishes the run as if nothing had happened."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import torch

from fedrl.rl.checkpoint import load_policy
from fedrl.tools.launch import flwr_run, to_overrides
from fedrl.tools.simulation import CONNECTION, kill_superlink, simulation_superlink

ROOT = Path(__file__).resolve().parents[2]
RC = {"num-server-rounds": 6, "min-steps": 64, "min-episodes": 1, "update-epochs": 2, "num-minibatches": 2,
      "eval-episodes": 0}
FEDERATION = ["num-supernodes=2 client-resources-num-cpus=1"]
TIMING = {"rollout_ms", "rollout_compute_ms", "exchange_ms_mean", "client_compute_ms_mean", "sps", "wall_time_s"}
# The mean and std of a round's returns are summed in reply arrival order, which two
# simulation runs need not share: their last bits may differ, nothing else may.
ARRIVAL_ORDER = {"episodic_return_mean", "episodic_return_std"}


def rows(path: Path, drop: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def test_a_run_whose_superlink_is_killed_resumes_to_the_same_rows_and_model(tmp_path):
    config = {**RC, "outdir": str(tmp_path / "whole")}
    with simulation_superlink(tmp_path / "a") as env:
        run_id, status, whole = flwr_run(str(ROOT), [to_overrides(config)], FEDERATION, CONNECTION, env, echo=False)
    assert status == "finished:completed" and whole is not None

    outdir = tmp_path / "killed"
    config = {**RC, "outdir": str(outdir)}
    with simulation_superlink(tmp_path / "b") as env:
        flwr = [str(Path(sys.executable).parent / "flwr"), "run", str(ROOT), CONNECTION, "--stream",
                "--run-config", to_overrides(config), "--federation-config", FEDERATION[0]]
        with subprocess.Popen(flwr, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                found = list(outdir.glob("*/rounds.csv"))
                if found and len(rows(found[0])) >= 3:
                    break
                time.sleep(0.05)
            kill_superlink(env)
            proc.wait(timeout=60)
    (run_dir,) = [p.parent for p in outdir.glob("*/rounds.csv")]
    assert 3 <= len(rows(run_dir / "rounds.csv")) < 6

    with simulation_superlink(tmp_path / "c") as env:
        fedrl_run = [str(Path(sys.executable).parent / "fedrl-run"), "--app", str(ROOT), "--superlink", CONNECTION,
                     "--resume", str(run_dir)]
        done = subprocess.run(fedrl_run, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"results in {run_dir}" in done.stdout

    a, b = rows(Path(whole) / "rounds.csv", TIMING), rows(run_dir / "rounds.csv", TIMING)
    assert [{k: v for k, v in r.items() if k not in ARRIVAL_ORDER} for r in a] == \
        [{k: v for k, v in r.items() if k not in ARRIVAL_ORDER} for r in b]
    for x, y in zip(a, b):
        for k in ARRIVAL_ORDER:
            assert abs(float(x[k]) - float(y[k])) <= 1e-9 * max(1.0, abs(float(x[k]))), k
    assert rows(Path(whole) / "clients.csv") == rows(run_dir / "clients.csv")
    model_a, _, _ = load_policy(Path(whole) / "model.pt")
    model_b, _, _ = load_policy(run_dir / "model.pt")
    for k, v in model_a.state_dict().items():
        assert torch.equal(v, model_b.state_dict()[k]), k
