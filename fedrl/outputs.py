"""Run outputs: config.json, rounds.csv, clients.csv and model.pt under ``<outdir>/<run-name>/``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from fedrl.config import FedRLConfig
from fedrl.model import ActorCritic, build_model
from fedrl.normalizer import RunningStats
from fedrl.runtime import machine, versions

ROUND_COLUMNS = ("round", "env_steps", "episodic_return_mean", "episodic_return_std", "episodes", "loss_mean",
                 "policy_loss_mean", "value_loss_mean", "entropy_mean", "approx_kl_mean", "clients",
                 "rejected_replies", "timed_out", "skipped_steps", "rollout_ms", "rollout_compute_ms", "exchanges",
                 "exchange_ms_mean",
                 "client_compute_ms_mean", "sps", "wall_time_s")
CLIENT_COLUMNS = ("round", "exchange", "partition_id", "episodic_return", "loss", "num_steps", "weight")


def run_name(cfg: FedRLConfig, run_id: int | str) -> str:
    """``<env>_<aggregator>_seed<seed>_run<id>``: what a run directory is called."""
    return f"{cfg.env_id}_{cfg.aggregator}_seed{cfg.seed}_run{run_id}"


class RunWriter:
    """Writes one run's files as the run goes, flushing every row so a killed run keeps its rows."""

    def __init__(self, cfg: FedRLConfig, run_id: int | str, extra: dict[str, Any] | None = None) -> None:
        base = cfg.outdir_path / run_name(cfg, run_id)
        path, n = base, 1
        while path.exists():  # never overwrite an earlier run's results
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True)
        self.path = path
        self.cfg = cfg
        config = {"config": cfg.to_run_config(), "run_id": run_id, "versions": versions(), "machine": machine(),
                  **(extra or {})}
        (path / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        self._rounds = open(path / "rounds.csv", "w", newline="")
        self._clients = open(path / "clients.csv", "w", newline="")
        self._round_writer = csv.DictWriter(self._rounds, ROUND_COLUMNS)
        self._client_writer = csv.DictWriter(self._clients, CLIENT_COLUMNS)
        self._round_writer.writeheader()
        self._client_writer.writeheader()

    def round(self, row: dict[str, Any]) -> None:
        """Append one row to rounds.csv."""
        self._round_writer.writerow(row)
        self._rounds.flush()

    def clients(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to clients.csv."""
        self._client_writer.writerows(rows)
        self._clients.flush()

    def save_model(self, model: ActorCritic, stats: RunningStats) -> Path:
        """Write model.pt (see :func:`save_policy`)."""
        return save_policy(self.path / "model.pt", model, stats, self.cfg)

    def close(self) -> None:
        """Close the CSV files."""
        self._rounds.close()
        self._clients.close()


def save_policy(path: Path, model: ActorCritic, stats: RunningStats, cfg: FedRLConfig) -> Path:
    """Save a policy with everything needed to run it: weights, observation statistics, config."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "obs_stats": stats.to_dict(), "config": cfg.to_run_config()}, tmp)
    tmp.replace(path)
    return path


def load_policy(path: str | Path) -> tuple[ActorCritic, RunningStats, FedRLConfig]:
    """Load what :func:`save_policy` wrote; the model is on the CPU in eval mode."""
    from fedrl.envs import env_spaces

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
