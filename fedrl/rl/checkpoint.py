"""Saved policies: ``model.pt`` holds the weights, the observation statistics and the run config."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.envs import env_spaces
from fedrl.rl.model import ActorCritic, build_model
from fedrl.rl.normalizer import RunningStats


def save_policy(path: Path, model: ActorCritic, stats: RunningStats, cfg: FedRLConfig) -> Path:
    """Save a policy with everything needed to run it: weights, observation statistics, config.

    Only tensors and plain values, so :func:`load_policy` can read it with
    ``weights_only=True``. Written to a temporary file and renamed, so a run killed
    mid-save keeps the last complete one.
    """
    atomic_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "obs_stats": stats.to_tensors(), "config": cfg.to_run_config()}, path)
    return path


def atomic_save(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def safe_load(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True``: a file that carries code is refused, not run.

    Policies saved before fedrl stored statistics as tensors hold numpy arrays; numpy's
    array reconstruction (which runs no code of the file's choosing) is allowed for them.
    """
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{path} was refused by torch.load(weights_only=True): it holds more than tensors "
                             f"and plain values ({str(exc).splitlines()[0]})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a fedrl file: it holds a {type(obj).__name__}, not a dict")
    return obj


def check_finite(path: str | Path, name: str, values: dict) -> None:
    """Raise ValueError naming the first tensor or array in ``values`` that is not finite."""
    for key, value in values.items():
        array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value, np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{path}: {name} {key!r} is not finite; refusing to load it")


def load_policy(path: str | Path) -> tuple[ActorCritic, RunningStats, FedRLConfig]:
    """Load what :func:`save_policy` wrote; the model is on the CPU in eval mode.

    Refuses (ValueError) a file with code in it, or with non-finite weights or statistics.
    """
    ckpt = safe_load(path)
    missing = {"state_dict", "obs_stats", "config"} - set(ckpt)
    if missing:
        raise ValueError(f"{path} is not a fedrl policy: missing {sorted(missing)}")
    check_finite(path, "weight", ckpt["state_dict"])
    check_finite(path, "observation statistic", ckpt["obs_stats"])
    cfg = FedRLConfig.from_run_config(ckpt["config"])
    obs_space, act_space = env_spaces(cfg.env_id)
    model = build_model(obs_space, act_space, cfg.model_size, cfg.log_std_init)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, RunningStats.from_dict(ckpt["obs_stats"]), cfg
