"""The learner learns: CartPole-v1 reaches a mean return of 195 within 100k env steps."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedrl.config import FedRLConfig
from fedrl.tools.local_grid import LocalGrid

ROOT = Path(__file__).resolve().parents[2]


def test_cartpole_reaches_195_within_100k_steps(tmp_outdir):
    from client_app import app
    from server_app import build_scheduler

    preset = tomllib.loads((ROOT / "experiments" / "presets" / "cartpole.toml").read_text())
    rc = {**preset, "seed": 7, "outdir": tmp_outdir}
    server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, 4, rc), run_id=0, out=False)
    best, steps = float("-inf"), 0
    # Train round by round, stopping once the target or the budget is reached.
    for server_round in range(1, server.cfg.num_server_rounds + 1):
        row = server.run_round(server_round)
        steps = int(row["env_steps"])
        best = max(best, row["episodic_return_mean"])
        if best >= 195 or steps >= 100_000:
            break
    assert best >= 195, f"best round mean return {best:.1f} after {steps} env steps"
    assert steps <= 100_000
