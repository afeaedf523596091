"""The one typed configuration object of a fedrl run.

Every key lives in ``[tool.flwr.app.config]`` of ``pyproject.toml`` (kebab-case).
:func:`FedRLConfig.from_run_config` is the single place where a run config is
parsed and validated; both the ServerApp and the ClientApp go through it, so a
bad value stops the run before any training starts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRADIENT_AGGREGATORS = ("baseline-sum", "baseline-avg", "rweighted", "lweighted")
PARAMETER_AGGREGATORS = ("fedavg", "fedprox")
AGGREGATORS = GRADIENT_AGGREGATORS + PARAMETER_AGGREGATORS
MODEL_SIZES = ("small", "medium", "large")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_OUTDIR = "~/fedrl-runs"


class ConfigError(ValueError):
    """A run-config value is invalid; the message names the key, value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid run config: {key} = {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class FedRLConfig:
    """Resolved, validated settings of one federated PPO run (see pyproject.toml for each key)."""

    env_id: str = "CartPole-v1"
    aggregator: str = "baseline-sum"
    num_server_rounds: int = 30
    min_steps: int = 2000
    min_episodes: int = 2
    num_envs_per_client: int = 1
    update_epochs: int = 4
    num_minibatches: int = 4
    server_optimizer: str = "adam"
    server_lr: float = 2.5e-4
    client_lr: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    normalize_obs: bool = True
    normalize_reward: bool = False
    model_size: str = "small"
    log_std_init: float = 0.0
    weight_floor_h: float = 0.0
    normalize_weights: bool = False
    mu: float = 0.0
    seed: int = 1
    outdir: str = DEFAULT_OUTDIR
    device: str = "cpu"
    sim_poll_max_ms: float = 2.0
    reply_timeout: float = 600.0
    min_replies: int = 1

    @property
    def is_gradient_aggregator(self) -> bool:
        """True when clients send gradients; False for the parameter baselines (FedAvg, FedProx)."""
        return self.aggregator in GRADIENT_AGGREGATORS

    @property
    def outdir_path(self) -> Path:
        """The absolute output directory (``~`` expanded)."""
        return Path(os.path.expanduser(self.outdir))

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case run-config mapping this object was built from."""
        return {_key(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> FedRLConfig:
        """A validated copy with some fields (snake_case names) changed."""
        return FedRLConfig.from_run_config({**self.to_run_config(), **{_key(k): v for k, v in changes.items()}})

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], *, check_env: bool = True) -> FedRLConfig:
        """Parse and validate a Flower run config (kebab-case keys).

        Keys that are absent take their defaults; unknown keys are an error, so a typo
        never silently falls back to a default. With ``check_env`` the env id is also
        looked up in gymnasium's registry.
        """
        fields = {_key(f.name): f for f in dataclasses.fields(cls)}
        unknown = sorted(set(run_config) - set(fields))
        if unknown:
            raise ConfigError(unknown[0], run_config[unknown[0]], "one of " + ", ".join(sorted(fields)))
        values: dict[str, Any] = {}
        for key, field in fields.items():
            if key in run_config:
                values[field.name] = _coerce(key, run_config[key], type(field.default))
        cfg = cls(**values)
        cfg._validate(check_env)
        return cfg

    def _validate(self, check_env: bool) -> None:
        _choice("aggregator", self.aggregator, AGGREGATORS)
        _choice("model-size", self.model_size, MODEL_SIZES)
        _choice("server-optimizer", self.server_optimizer, OPTIMIZERS)
        _choice("device", self.device, DEVICES)
        for key in ("num-server-rounds", "min-steps", "min-episodes", "num-envs-per-client",
                    "update-epochs", "num-minibatches", "min-replies"):
            if getattr(self, _attr(key)) < 1:
                raise ConfigError(key, getattr(self, _attr(key)), "an integer >= 1")
        for key in ("server-lr", "client-lr", "max-grad-norm", "reply-timeout"):
            if not getattr(self, _attr(key)) > 0:
                raise ConfigError(key, getattr(self, _attr(key)), "a number > 0")
        for key in ("gamma", "gae-lambda"):
            if not 0.0 <= getattr(self, _attr(key)) <= 1.0:
                raise ConfigError(key, getattr(self, _attr(key)), "a number in [0, 1]")
        for key in ("clip-coef", "ent-coef", "vf-coef", "mu", "weight-floor-h", "sim-poll-max-ms"):
            if not getattr(self, _attr(key)) >= 0:
                raise ConfigError(key, getattr(self, _attr(key)), "a number >= 0")
        if self.seed < 0:
            raise ConfigError("seed", self.seed, "an integer >= 0")
        if self.mu > 0 and self.aggregator != "fedprox":
            raise ConfigError("mu", self.mu, "0 unless aggregator = \"fedprox\"")
        if not (self.outdir.startswith("~") or os.path.isabs(self.outdir)):
            raise ConfigError("outdir", self.outdir,
                              "an absolute path or one starting with ~ (the ServerApp runs in the "
                              "SuperLink's working directory, so relative paths are ambiguous)")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("device", self.device, "\"cpu\" or \"auto\" (no CUDA device is visible)")
        if check_env:
            from fedrl.envs import check_env_id

            check_env_id(self.env_id)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _attr(key: str) -> str:
    return key.replace("-", "_")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, "one of " + ", ".join(f'"{a}"' for a in allowed))


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a TOML value to the field's type, refusing lossy or surprising conversions."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, value, "an integer")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(key, value, "a finite number")
            return value
        raise ConfigError(key, value, "a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a quoted string (TOML), e.g. " + f'{key}="..."')
    raise TypeError(f"unsupported config field type {kind} for {key}")
