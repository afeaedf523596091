"""Resuming a synchronous run: ``checkpoint.pt``, what it holds, and how a run directory is taken up again.

After every round (its rows, ``model.pt`` and any evaluation written) the scheduler
writes ``checkpoint.pt`` atomically. It holds everything the rest of the run depends on:
the global model, its optimizer and statistics, the round, env steps, wall and simulated
time, the aggregator's state (the norm screen's history), the learned waits, the next
evaluation point, the server's RNG states, and the byte length of each CSV. A resumed
run cuts each CSV back to that length, so a row written after the checkpoint, or half
written when the run was killed, is gone, and appends from there.

A run directory also gets ``resume.toml``: its run config with ``resume-from`` set, so
``flwr run . --run-config RUN_DIR/resume.toml`` (or ``fedrl-run --resume RUN_DIR``)
continues it with the config its clients were started with.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedrl.config import ConfigError, FedRLConfig, toml_value
from fedrl.rl.checkpoint import atomic_save, check_finite, safe_load

CHECKPOINT = "checkpoint.pt"
RESUME_TOML = "resume.toml"
FORMAT = 1
# Keys a resumed run may change: where and how long to wait, and the device. Anything else
# would make the rest of the run a different experiment from its first part.
MUTABLE = ("resume-from", "outdir", "reply-timeout", "sim-poll-max-ms", "device", "min-replies")


def rng_state() -> dict[str, Any]:
    """The server process's torch, numpy and Python RNG states, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": list(random.getstate()[1])}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((3, tuple(state["python"]), None))


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``run_dir/checkpoint.pt`` atomically (a kill mid-write leaves the previous one)."""
    atomic_save({"format": FORMAT, **state}, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/checkpoint.pt`` safely; ConfigError (key ``resume-from``) if it cannot be resumed."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError("resume-from", str(run_dir), f"a run directory with {CHECKPOINT} (none found: the run "
                          "did not finish its set-up, or this is not a fedrl run directory)")
    try:
        ckpt = safe_load(path)
        if ckpt.get("format") != FORMAT:
            raise ValueError(f"{path} has format {ckpt.get('format')!r}; this fedrl reads format {FORMAT}")
        check_finite(path, "weight", ckpt["global"]["model"])
        check_finite(path, "observation statistic", ckpt["global"]["obs_stats"])
        check_finite(path, "return statistic", ckpt["global"]["return_stats"])
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise ConfigError("resume-from", str(run_dir), f"a run directory whose {CHECKPOINT} loads ({exc})") from exc
    return ckpt


def differences(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """"key = given (the run has saved)" for each key, :data:`MUTABLE` aside, where the configs differ."""
    return [f"{k} = {given.get(k)!r} (the run has {v!r})" for k, v in saved.items()
            if k not in MUTABLE and given.get(k) != v]


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The run config recorded in ``run_dir/config.json``."""
    return dict(json.loads((run_dir / "config.json").read_text())["config"])


def latest_resumable(directory: Path, cfg: FedRLConfig) -> Path | None:
    """The run directory under ``directory`` with the newest checkpoint of a run with ``cfg``'s config, if any."""
    found = []
    for ckpt in directory.glob(f"*/{CHECKPOINT}"):
        try:
            if not differences(saved_config(ckpt.parent), cfg.to_run_config()):
                found.append((ckpt.stat().st_mtime, ckpt.parent))
        except (OSError, ValueError, KeyError):
            continue
    return max(found)[1] if found else None


def check_config(cfg: FedRLConfig, saved: dict[str, Any], run_dir: Path) -> None:
    """The run config of a resumed run must be the saved one, except for :data:`MUTABLE` keys."""
    differ = differences(saved, cfg.to_run_config())
    if differ:
        raise ConfigError("resume-from", str(run_dir),
                          f"a run config equal to the run's own, but {'; '.join(differ)}. Resume with "
                          f"`flwr run . --run-config {run_dir / RESUME_TOML}` or `fedrl-run --resume {run_dir}`, "
                          f"which pass the run's config")


def write_resume_toml(run_dir: Path, cfg: FedRLConfig) -> None:
    """``resume.toml``: the run's config with ``resume-from`` set to ``run_dir``."""
    config = {**cfg.to_run_config(), "resume-from": str(run_dir)}
    lines = ["# Continue this run from its last checkpoint: flwr run . --run-config THIS_FILE"]
    lines += [f"{k} = {toml_value(v)}" for k, v in config.items()]
    tmp = run_dir / (RESUME_TOML + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(run_dir / RESUME_TOML)


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (the rows a checkpoint covers)."""
    with open(path, "r+b") as f:
        f.truncate(size)
