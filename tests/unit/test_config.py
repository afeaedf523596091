"""The typed run config: defaults, parsing and one clear error per bad value."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedrl.config import AGGREGATORS, ConfigError, FedRLConfig, descriptions, pyproject_section

ROOT = Path(__file__).resolve().parents[2]


def pyproject_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_has_the_config_classs_keys_and_values():
    run_config = pyproject_config()
    defaults = FedRLConfig().to_run_config()
    assert list(run_config) == list(defaults)
    for key, value in defaults.items():
        assert run_config[key] == value and type(run_config[key]) is type(value), key
    assert FedRLConfig.from_run_config(run_config) == FedRLConfig()


def test_pyproject_section_is_the_generated_one_with_each_fields_description():
    text = (ROOT / "pyproject.toml").read_text()
    section = text[text.index("[tool.flwr.app.config]"):]
    assert section == pyproject_section(), "run `python -m fedrl.config` and paste its output into pyproject.toml"
    help_of = descriptions()
    assert set(help_of) == set(FedRLConfig().to_run_config())
    for key, line in help_of.items():
        assert line and "\n" not in line and len(line) <= 120, key
    assert all(f'"{name}"' in help_of["aggregator"] for name in AGGREGATORS)


def test_roundtrip_and_replace():
    cfg = FedRLConfig(aggregator="lweighted", seed=3)
    assert FedRLConfig.from_run_config(cfg.to_run_config()) == cfg
    assert cfg.replace(seed=4).seed == 4


def test_presets_are_valid():
    for preset in (ROOT / "experiments" / "presets").glob("*.toml"):
        FedRLConfig.from_run_config({**pyproject_config(), **tomllib.loads(preset.read_text())})


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("aggregator", "median", "baseline-sum"),
        ("env-id", "CartPole-v9", "not registered"),
        ("env-id", "NoSuchEnv-v0", "not registered"),
        ("model-size", "huge", "small"),
        ("server-optimizer", "rmsprop", "adam"),
        ("num-server-rounds", 0, ">= 1"),
        ("min-steps", -5, ">= 1"),
        ("min-episodes", 0, ">= 1"),
        ("update-epochs", 0, ">= 1"),
        ("num-minibatches", 0, ">= 1"),
        ("num-envs-per-client", 0, ">= 1"),
        ("server-lr", 0.0, "> 0"),
        ("gamma", 1.5, "[0, 1]"),
        ("weight-floor-h", -1.0, "0 (the number of replies) or a number >= 1"),
        ("weight-floor-h", 1e-30, "0 (the number of replies) or a number >= 1"),
        ("clip-coef", 0.0, "a number > 0"),
        ("num-minibatches", 3000, "at most min-steps = 500"),
        ("grad-norm-screen", 0.5, "0 (off) or a number >= 1"),
        ("robust-rule", "mean", "one of \"none\", \"median\""),
        ("attack", "flip", "one of \"none\", \"sign-flip\""),
        ("byzantine-clients", "0,x", "distinct partition ids >= 0"),
        ("byzantine-clients", "1,1", "distinct partition ids >= 0"),
        ("fedpg-delta", 1.0, "a number in (0, 1)"),
        ("resume-from", "runs/x", "an absolute run directory"),
        ("mu", 0.1, "fedprox"),
        ("outdir", "runs", "absolute"),
        ("num-server-rounds", "3", "an integer"),
        ("normalize-weights", 1, "true or false"),
        ("aggregator", 3, "quoted string"),
        ("server-lr", float("nan"), "finite"),
        ("device", "tpu", "cpu"),
        ("reply-timeout", 0.0, "> 0"),
        ("min-replies", 0, ">= 1"),
        ("fraction-train", 0.0, "a fraction in (0, 1]"),
        ("fraction-train", 1.5, "a fraction in (0, 1]"),
        ("sim-poll-max-ms", -1.0, ">= 0"),
        ("normalize-reward", "yes", "true or false"),
        ("agregator", "rweighted", "one of"),
    ],
)
def test_bad_values_name_key_value_and_allowed(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        FedRLConfig.from_run_config({key: value})
    msg = str(info.value)
    assert key in msg and fragment in msg
    assert "\n" not in msg


def test_unknown_aggregator_lists_all_names():
    with pytest.raises(ConfigError) as info:
        FedRLConfig.from_run_config({"aggregator": "x"})
    for name in AGGREGATORS:
        assert name in str(info.value)


def test_fedprox_accepts_mu():
    assert FedRLConfig.from_run_config({"aggregator": "fedprox", "mu": 0.01}).mu == 0.01


@pytest.mark.parametrize("env_id", ["LunarLander-v3", "BipedalWalker-v3", "HalfCheetah-v5", "HumanoidStandup-v5"])
def test_paper_environments_are_installed(env_id):
    assert FedRLConfig.from_run_config({"env-id": env_id}).env_id == env_id


@pytest.mark.parametrize(("rc", "key", "fragment"), [
    ({"attack": "scale"}, "byzantine-clients", 'at least one partition id when attack = "scale"'),
    ({"byzantine-clients": "0"}, "attack", "when byzantine-clients is set"),
    ({"robust-rule": "fedpg-br", "aggregator": "fedavg"}, "robust-rule", "a gradient aggregator"),
    ({"robust-rule": "median", "aggregator": "a3c"}, "robust-rule", "synchronous aggregators only"),
    ({"resume-from": "/tmp/x", "aggregator": "impala"}, "resume-from", "synchronous aggregators only"),
    ({"fraction-train": 0.5, "aggregator": "rennala-nigt"}, "fraction-train", "whichever clients are free"),
])
def test_settings_that_do_not_go_together_name_the_key(rc, key, fragment):
    with pytest.raises(ConfigError) as info:
        FedRLConfig.from_run_config(rc)
    assert info.value.key == key and fragment in str(info.value)


def test_an_outdir_that_cannot_be_created_is_a_config_error_on_the_server(tmp_path):
    afile = tmp_path / "results.txt"
    afile.write_text("not a directory")
    for outdir, why in ((str(afile / "runs"), "is a file"), ("/proc/fedrl-runs", "is not writable")):
        cfg = FedRLConfig.from_run_config({"outdir": outdir})  # clients never create it, so they accept it
        with pytest.raises(ConfigError, match=why) as info:
            cfg.check_outdir()
        assert info.value.key == "outdir"
    FedRLConfig.from_run_config({"outdir": str(tmp_path / "new" / "runs")}).check_outdir()
