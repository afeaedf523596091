"""The one typed configuration object of a fedrl run, and the one list of aggregator names.

Every key lives in ``[tool.flwr.app.config]`` of ``pyproject.toml`` (kebab-case).
:func:`FedRLConfig.from_run_config` is the single place where a run config is
parsed and validated; both the ServerApp and the ClientApp go through it, so a
bad value stops the run before any training starts.

    python -m fedrl.config     # prints the [tool.flwr.app.config] section of pyproject.toml
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrl.rl.envs import UnsupportedEnv, check_env_id

# The aggregator names: strategies/registry.py gives each its class and refuses to load
# unless its names are exactly these.
GRADIENT_AGGREGATORS = ("baseline-sum", "baseline-avg", "rweighted", "lweighted")
PARAMETER_AGGREGATORS = ("fedavg", "fedprox")
AGGREGATORS = GRADIENT_AGGREGATORS + PARAMETER_AGGREGATORS
# The asynchronous methods: strategies/asynchronous.py gives each its rule, and the
# asynchronous scheduler (fedrl/federation/asynchronous.py) runs them.
NIGT_METHODS = ("rennala-nigt", "malenia-nigt", "sync-nigt", "malenia-rweighted", "malenia-lweighted")
ASYNC_METHODS = ("a3c", "impala") + NIGT_METHODS + ("gala",)
METHODS = AGGREGATORS + ASYNC_METHODS
CLOCKS = ("simulated", "wall")
COMPUTE_TIMES = ("equal", "sqrt")
COMM_TIMES = ("zero", "sqrt", "sqrt-d4")
MODEL_SIZES = ("small", "medium", "large")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_OUTDIR = "~/fedrl-runs"
# strategies/robust.py gives each its class and strategies/registry.py checks the names.
ROBUST_RULES = ("none", "median", "trimmed-mean", "krum", "multi-krum", "fedpg-br")
# fedrl/federation/attacks.py implements each.
ATTACKS = ("none", "sign-flip", "scale", "noise", "random-actions", "reward-lie", "loss-lie")


class ConfigError(ValueError):
    """A run-config value is invalid; the message names the key, value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid run config: {key} = {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class FedRLConfig:
    """Resolved, validated settings of one federated PPO run.

    Each field's default and its one-line description (the string below it, as in
    CleanRL's ``Args``) are the only ones; ``[tool.flwr.app.config]`` in pyproject.toml
    is :func:`pyproject_section`'s output, and a test keeps the two equal.
    """

    env_id: str = "CartPole-v1"
    """Task: a gymnasium id (Box observations; Discrete or Box actions); "pkg.module:Env-v0" imports pkg.module first."""
    aggregator: str = "baseline-sum"
    """Rule: "baseline-sum", "baseline-avg", "rweighted", "lweighted", "fedavg", "fedprox", or async (README)."""
    # The defaults below are the CartPole preset's learning settings (short rollouts, many
    # small Adam steps), so a plain `flwr run .` learns: see the README's Quickstart.
    num_server_rounds: int = 80
    """Rounds; each is one rollout phase followed by the update exchanges."""
    min_steps: int = 500
    """Each client plays until it has at least min-episodes finished episodes AND min-steps steps."""
    min_episodes: int = 1
    """Finished episodes each client plays per round, at least (see min-steps)."""
    num_envs_per_client: int = 1
    """Environments per client, stepped together so one batched policy forward serves them all."""
    update_epochs: int = 10
    """PPO epochs over the round's rollout; each epoch is num-minibatches gradient exchanges."""
    num_minibatches: int = 4
    """Minibatches each client splits its rollout into, per epoch."""
    server_optimizer: str = "adam"
    """Optimizer the server applies the combined gradient with: "adam" or "sgd"."""
    server_lr: float = 2.5e-3
    """Learning rate of the server optimizer."""
    client_lr: float = 2.5e-3
    """Learning rate of the clients' local Adam (fedavg/fedprox only)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO clipping coefficient of the surrogate objective."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value-loss coefficient."""
    max_grad_norm: float = 0.5
    """Global norm the combined gradient is clipped to before the optimizer step."""
    norm_adv: bool = True
    """Standardise advantages per minibatch."""
    normalize_obs: bool = True
    """Federated observation normalisation (the server merges the clients' statistics)."""
    normalize_reward: bool = False
    """Divide rewards by the std of the discounted return (merged like the observations'), clipped to +-10."""
    model_size: str = "small"
    """Network size: "small" (~9k parameters), "medium" (~45k) or "large" (~750k)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box action spaces only)."""
    weight_floor_h: float = 0.0
    """h in the weight floor 1/h of rweighted/lweighted; 0 means the number of replies."""
    normalize_weights: bool = False
    """Divide weights by their sum so they total 1 instead of 2 (the paper's Figure 11 variant)."""
    mu: float = 0.0
    """FedProx proximal coefficient (only with aggregator = "fedprox")."""
    seed: int = 1
    """Base seed; each client derives its own from (seed, partition-id, round)."""
    outdir: str = DEFAULT_OUTDIR
    """Results go to <outdir>/<env>_<aggregator>_seed<seed>_run<id>/; absolute or ~-relative."""
    device: str = "cpu"
    """Torch device for server and clients: "cpu", "cuda" or "auto"."""
    sim_poll_max_ms: float = 2.0
    """Simulation only: longest idle wait (ms) of the engine's message poll (Flower's is 100 ms); 0 keeps Flower's."""
    reply_timeout: float = 600.0
    """Seconds the server waits for the replies of one exchange; later replies are dropped."""
    min_replies: int = 1
    """Fewest valid replies an exchange needs: fewer skips the step; a rollout phase is retried 3 times."""
    fraction_train: float = 1.0
    """Fraction of the connected clients sampled for each round (Flower's fraction-train); at least min-replies."""
    clock: str = "simulated"
    """"simulated": events ordered by simulated finish time (reproducible); "wall": arrival order, for deployments."""
    compute_time: str = "equal"
    """h_i, time units per job of client i = partition + 1: "equal" (1), "sqrt" (sqrt(i)) or a list, e.g. "1,3"."""
    comm_time: str = "zero"
    """kappa_i, units per communication: "zero", "sqrt", "sqrt-d4" (sqrt(i)*d^(1/4), d = parameters) or a list."""
    time_unit_s: float = 0.0
    """Wall clock only: seconds per time unit, and clients sleep to h_i and kappa_i; 0: no sleeps, time in seconds."""
    time_budget: float = 200.0
    """Asynchronous methods stop when the (simulated or wall) time reaches this many units."""
    job_steps: int = 512
    """Env steps of one asynchronous job (a fixed length, so its cost is known when it is sent)."""
    steps_per_unit: int = 512
    """Env steps client i plays in h_i time units: a job costs h_i*job-steps/steps-per-unit, a rollout pro rata."""
    eval_every: float = 0.05
    """Evaluate the current parameters every this fraction of the budget (time-budget or num-server-rounds)."""
    eval_episodes: int = 5
    """Deterministic episodes per evaluation (not charged to simulated time); 0 disables evaluations."""
    tensorboard: bool = False
    """Also write TensorBoard scalars (CleanRL's names) to <run dir>/tensorboard; needs pip install 'fedrl[tensorboard]'."""
    nigt_lr: float = 0.01
    """NIGT step length alpha: each outer step moves the actor by exactly this much (L2)."""
    nigt_momentum: float = 0.1
    """NIGT momentum weight eta in (0, 1]: d = (1 - eta) d + eta g, extrapolation (1 - eta)/eta."""
    nigt_batch: int = 10
    """NIGT batch M: gradients per outer step (Rennala: the first M to finish; Malenia: M/n as a harmonic mean)."""
    nigt_init_batch: int = 10
    """NIGT initial batch M_init at theta_0."""
    vtrace_rho_bar: float = 1.0
    """IMPALA: V-trace clip rho-bar of the importance weights in the value targets and the policy gradient."""
    vtrace_c_bar: float = 1.0
    """IMPALA: V-trace trace-cutting clip c-bar."""
    impala_batch: int = 2
    """IMPALA: trajectories per learner step."""
    grad_norm_screen: float = 10.0
    """Drop a reply whose gradient norm (fedavg: of theta_i - theta) exceeds this many medians of recent norms; 0: off."""
    robust_rule: str = "none"
    """Byzantine-robust rule: "none", "median", "trimmed-mean", "krum", "multi-krum", "fedpg-br" (not with fedavg/fedprox)."""
    robust_f: int = 1
    """Byzantine replies the robust rule tolerates: Krum's f, the trimmed mean's cut at each end, FedPG-BR's alpha = f/n."""
    fedpg_sigma: float = 0.0
    """FedPG-BR: bound sigma on an honest gradient's error; 0 estimates it from each exchange's replies."""
    fedpg_delta: float = 0.6
    """FedPG-BR: confidence delta in V = 2 log(2K/delta)."""
    byzantine_clients: str = ""
    """Experiments only: partitions that attack, e.g. "0,1,2"; "" = none (see attack)."""
    attack: str = "none"
    """Experiments only: "none", "sign-flip", "scale", "noise", "random-actions", "reward-lie" or "loss-lie" (README)."""
    attack_scale: float = 0.0
    """Experiments only: the attack's strength; 0 takes its default (sign-flip 1, scale 100, noise 10, lies 10)."""
    resume_from: str = ""
    """A run directory to continue from its last checkpoint.pt (synchronous methods); "" starts a new run."""

    @property
    def attackers(self) -> tuple[int, ...]:
        """The partitions of byzantine-clients."""
        return tuple(int(x) for x in self.byzantine_clients.split(",")) if self.byzantine_clients else ()

    @property
    def is_gradient_aggregator(self) -> bool:
        """True when clients send gradients; False for the parameter baselines (FedAvg, FedProx)."""
        return self.aggregator in GRADIENT_AGGREGATORS

    @property
    def is_async(self) -> bool:
        """True for the methods the asynchronous scheduler runs (A3C, IMPALA, the NIGT family)."""
        return self.aggregator in ASYNC_METHODS

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
        _choice("aggregator", self.aggregator, METHODS)
        _choice("clock", self.clock, CLOCKS)
        _times("compute-time", self.compute_time, COMPUTE_TIMES)
        _times("comm-time", self.comm_time, COMM_TIMES)
        _choice("model-size", self.model_size, MODEL_SIZES)
        _choice("server-optimizer", self.server_optimizer, OPTIMIZERS)
        _choice("device", self.device, DEVICES)
        for key in ("num-server-rounds", "min-steps", "min-episodes", "num-envs-per-client",
                    "update-epochs", "num-minibatches", "min-replies", "job-steps", "steps-per-unit", "nigt-batch",
                    "nigt-init-batch", "impala-batch"):
            if getattr(self, _attr(key)) < 1:
                raise ConfigError(key, getattr(self, _attr(key)), "an integer >= 1")
        for key in ("server-lr", "client-lr", "max-grad-norm", "reply-timeout", "time-budget", "nigt-lr",
                    "vtrace-rho-bar", "vtrace-c-bar"):
            if not getattr(self, _attr(key)) > 0:
                raise ConfigError(key, getattr(self, _attr(key)), "a number > 0")
        for key in ("gamma", "gae-lambda"):
            if not 0.0 <= getattr(self, _attr(key)) <= 1.0:
                raise ConfigError(key, getattr(self, _attr(key)), "a number in [0, 1]")
        if not 0.0 < self.nigt_momentum <= 1.0:
            raise ConfigError("nigt-momentum", self.nigt_momentum, "a number in (0, 1]")
        if not 0.0 < self.fraction_train <= 1.0:
            raise ConfigError("fraction-train", self.fraction_train, "a fraction in (0, 1]")
        if not 0.0 < self.eval_every <= 1.0:
            raise ConfigError("eval-every", self.eval_every, "a fraction in (0, 1]")
        for key in ("ent-coef", "vf-coef", "mu", "sim-poll-max-ms", "time-unit-s", "eval-episodes", "robust-f",
                    "fedpg-sigma", "attack-scale"):
            if not getattr(self, _attr(key)) >= 0:
                raise ConfigError(key, getattr(self, _attr(key)), "a number >= 0")
        if not self.clip_coef > 0:
            raise ConfigError("clip-coef", self.clip_coef, "a number > 0 (0 would freeze the policy)")
        if not (self.weight_floor_h == 0 or self.weight_floor_h >= 1):
            raise ConfigError("weight-floor-h", self.weight_floor_h,
                              "0 (the number of replies) or a number >= 1 (the floor 1/h is at most 1)")
        if not (self.grad_norm_screen == 0 or self.grad_norm_screen >= 1):
            raise ConfigError("grad-norm-screen", self.grad_norm_screen, "0 (off) or a number >= 1")
        if not 0 < self.fedpg_delta < 1:
            raise ConfigError("fedpg-delta", self.fedpg_delta, "a number in (0, 1)")
        if self.num_minibatches > self.min_steps:
            raise ConfigError("num-minibatches", self.num_minibatches,
                              f"at most min-steps = {self.min_steps}, so no minibatch is empty")
        _choice("robust-rule", self.robust_rule, ROBUST_RULES)
        _choice("attack", self.attack, ATTACKS)
        self._validate_trust()
        if self.seed < 0:
            raise ConfigError("seed", self.seed, "an integer >= 0")
        if self.mu > 0 and self.aggregator != "fedprox":
            raise ConfigError("mu", self.mu, "0 unless aggregator = \"fedprox\"")
        if not (self.outdir.startswith("~") or os.path.isabs(self.outdir)):
            raise ConfigError("outdir", self.outdir,
                              "an absolute path or one starting with ~ (the ServerApp runs in the "
                              "SuperLink's working directory, so relative paths are ambiguous)")
        if self.resume_from and not (self.resume_from.startswith("~") or os.path.isabs(self.resume_from)):
            raise ConfigError("resume-from", self.resume_from, "an absolute run directory, or one starting with ~")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("device", self.device, "\"cpu\" or \"auto\" (no CUDA device is visible)")
        if check_env:
            try:
                check_env_id(self.env_id)
            except UnsupportedEnv as exc:
                raise ConfigError("env-id", self.env_id, exc.allowed) from exc


    def check_outdir(self) -> None:
        """On the server only (a client's machine need not have it): outdir can be created and written."""
        blocked = _not_creatable(self.outdir_path)
        if blocked:
            raise ConfigError("outdir", self.outdir, f"a directory that can be created and written ({blocked})")

    def _validate_trust(self) -> None:
        try:
            attackers = self.attackers
        except ValueError:
            attackers = (-1,)
        if any(p < 0 for p in attackers) or len(set(attackers)) != len(attackers):
            raise ConfigError("byzantine-clients", self.byzantine_clients,
                              'distinct partition ids >= 0 separated by commas, e.g. "0,1,2", or ""')
        if attackers and self.attack == "none":
            raise ConfigError("attack", self.attack, "one of " + ", ".join(f'"{a}"' for a in ATTACKS[1:])
                              + " when byzantine-clients is set")
        if self.attack != "none" and not attackers:
            raise ConfigError("byzantine-clients", self.byzantine_clients,
                              f'at least one partition id when attack = "{self.attack}"')
        if self.robust_rule == "fedpg-br" and self.aggregator in PARAMETER_AGGREGATORS:
            raise ConfigError("robust-rule", self.robust_rule,
                              'a gradient aggregator: FedPG-BR filters gradients, not fedavg/fedprox parameters')
        if self.is_async:
            for key, value, default in (("robust-rule", self.robust_rule, "none"), ("attack", self.attack, "none"),
                                        ("resume-from", self.resume_from, "")):
                if value != default:
                    raise ConfigError(key, value, f'"{default}" with the asynchronous aggregator '
                                      f'"{self.aggregator}" (synchronous aggregators only)')
            if self.fraction_train != 1.0:
                raise ConfigError("fraction-train", self.fraction_train, f'1.0 with the asynchronous aggregator '
                                  f'"{self.aggregator}", which sends jobs to whichever clients are free')


def _not_creatable(path: Path) -> str:
    """Why ``path`` cannot be made a writable directory ("" if it can), without creating anything."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"no part of {path} exists"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file"
    if str(probe.resolve()).startswith(("/proc", "/sys")) or not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return ""


def descriptions() -> dict[str, str]:
    """Each run-config key's one-line description: the string under its field in :class:`FedRLConfig`."""
    tree = ast.parse(inspect.getsource(FedRLConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for field_node, doc in zip(body, body[1:]):
        if isinstance(field_node, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
            out[_key(field_node.target.id)] = str(doc.value.value)  # type: ignore[union-attr]
    return out


def toml_value(value: Any) -> str:
    """``value`` as a TOML value: what a run-config file or ``--run-config`` item holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def pyproject_section() -> str:
    """The ``[tool.flwr.app.config]`` section of pyproject.toml: every key, its default and its description."""
    help_of = descriptions()
    lines = ["[tool.flwr.app.config]",
             "# Generated by `python -m fedrl.config` from fedrl/config.py, where each key is defined."]
    for key, value in FedRLConfig().to_run_config().items():
        lines += [f"# {help_of[key]}", f"{key} = {toml_value(value)}"]
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name.replace("_", "-")


def _attr(key: str) -> str:
    return key.replace("-", "_")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, "one of " + ", ".join(f'"{a}"' for a in allowed))


def _times(key: str, value: str, named: tuple[str, ...]) -> None:
    if value in named:
        return
    try:
        times = [float(x) for x in value.split(",")]
    except ValueError:
        times = []
    if not times or not all(t >= 0 and t < float("inf") for t in times):
        raise ConfigError(key, value, "one of " + ", ".join(f'"{a}"' for a in named)
                          + ', or one number >= 0 per partition, e.g. "1,3"')


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


if __name__ == "__main__":
    print(pyproject_section(), end="")
