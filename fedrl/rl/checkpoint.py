"""Saved policies: ``model.pt`` holds the weights, the observation statistics and the run config."""

from __future__ import annotations

from pathlib import Path

import torch

from fedrl.config import FedRLConfig
from fedrl.rl.envs import env_spaces
from fedrl.rl.model import ActorCritic, build_model
from fedrl.rl.normalizer import RunningStats


def save_policy(path: Path, model: ActorCritic, stats: RunningStats, cfg: FedRLConfig) -> Path:
    """Save a policy with everything needed to run it: weights, observation statistics, config.

    Written to a temporary file and renamed, so a run killed mid-save keeps the last complete one.
    """
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "obs_stats": stats.to_dict(), "config": cfg.to_run_config()}, tmp)
    tmp.replace(path)
    return path


def load_policy(path: str | Path) -> tuple[ActorCritic, RunningStats, FedRLConfig]:
    """Load what :func:`save_policy` wrote; the model is on the CPU in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    missing = {"state_dict", "obs_stats", "config"} - set(ckpt)
    if missing:
        raise ValueError(f"{path} is not a fedrl policy: missing {sorted(missing)}")
    cfg = FedRLConfig.from_run_config(ckpt["config"])
    obs_space, act_space = env_spaces(cfg.env_id)
    model = build_model(obs_space, act_space, cfg.model_size, cfg.log_std_init)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, RunningStats.from_dict(ckpt["obs_stats"]), cfg
