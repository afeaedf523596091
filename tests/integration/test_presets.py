"""Every preset runs: one tiny round of each environment through the server loop."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from experiments.sweep import PRESETS
from fedrl.config import FedRLConfig
from fedrl.tools.local_grid import LocalGrid

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env_id", sorted(PRESETS))
def test_preset_runs_a_round(env_id, tmp_outdir):
    from client_app import app
    from server_app import build_scheduler

    preset = tomllib.loads((ROOT / "experiments" / "presets" / f"{PRESETS[env_id]}.toml").read_text())
    assert preset["env-id"] == env_id
    rc = {**preset, "num-server-rounds": 1, "min-steps": 32, "min-episodes": 1, "update-epochs": 1,
          "num-minibatches": 2, "outdir": tmp_outdir}
    server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, 2, rc), run_id=0, out=False)
    (row,) = server.run()
    assert row["clients"] == 2 and math.isfinite(row["loss_mean"]) and row["skipped_steps"] == 0
