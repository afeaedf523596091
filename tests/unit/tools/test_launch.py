"""fedrl-run's handling of run-config items."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedrl.tools.launch import main, merge_run_config, to_overrides

ROOT = Path(__file__).resolve().parents[3]


def test_preset_plus_overrides_becomes_one_string_flower_accepts():
    preset = str(ROOT / "experiments" / "presets" / "cartpole.toml")
    merged = merge_run_config([preset, 'aggregator="lweighted" seed=3', "server-lr=0.001"])
    assert len(merged) == 1
    parsed = parse_config_args(merged)
    assert parsed["aggregator"] == "lweighted" and parsed["seed"] == 3 and parsed["server-lr"] == 0.001
    assert parsed["min-steps"] == 500 and parsed["env-id"] == "CartPole-v1"


def test_single_items_pass_unchanged():
    assert merge_run_config(["experiments/presets/cartpole.toml"]) == ["experiments/presets/cartpole.toml"]
    assert merge_run_config(["a=1", "b=2"]) == ["a=1", "b=2"]


def test_to_overrides_round_trips_through_flowers_parser():
    config = {"env-id": "LunarLander-v3", "normalize-weights": True, "server-lr": 2.5e-4, "seed": 7,
              "outdir": "/tmp/x y"}
    assert parse_config_args([to_overrides(config)]) == config


def test_missing_preset_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--run-config", "no/such/preset.toml"])
    err = capsys.readouterr().err
    assert "--run-config" in err and "no/such/preset.toml" in err
