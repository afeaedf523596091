"""A single-process PPO loop built from the same learner code as the federated clients.

It is the reference the benchmarks compare against: one process plays as many env
steps per iteration as a federation does per round, then runs the same PPO epochs
with a local Adam. ``python -m fedrl.single --run-config preset.toml --iterations N``
(``python -m fedrl.rl.single`` is the same).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import tomllib

import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.envs import client_seed, env_spaces, make_vector_env
from fedrl.rl.model import build_model
from fedrl.rl.normalizer import RunningStats
from fedrl.rl.ppo import collect_rollout, epoch_rng, train_epochs
from fedrl.runtime import resolve_device, set_torch_threads


def train_single(cfg: FedRLConfig, iterations: int, steps_per_iteration: int | None = None,
                 verbose: bool = False) -> list[dict]:
    """Train for ``iterations`` rollout/update cycles; returns one row per iteration.

    ``steps_per_iteration`` defaults to ``min-steps``; the episode rule
    (``min-episodes``) applies as for a client.
    """
    set_torch_threads()
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    obs_space, act_space = env_spaces(cfg.env_id)
    model = build_model(obs_space, act_space, cfg.model_size, cfg.log_std_init).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.server_lr, eps=1e-5)
    stats = RunningStats.empty((int(np.prod(obs_space.shape)),))
    return_stats = RunningStats.empty((1,))
    envs = make_vector_env(cfg.env_id, cfg.num_envs_per_client)
    rollout_cfg = cfg.replace(min_steps=steps_per_iteration or cfg.min_steps)
    rows, env_steps, start = [], 0, time.perf_counter()
    for it in range(1, iterations + 1):
        t0 = time.perf_counter()
        rollout = collect_rollout(model, stats, envs, rollout_cfg, client_seed(cfg.seed, 0, it), device,
                                  return_stats if cfg.normalize_reward else None)
        rollout_s = time.perf_counter() - t0
        if cfg.normalize_obs:
            stats = stats.merge(rollout.obs_stats)
        if cfg.normalize_reward:
            return_stats = return_stats.merge(rollout.return_stats)
        rngs = [epoch_rng(cfg.seed, 0, it, epoch) for epoch in range(cfg.update_epochs)]
        parts = train_epochs(model, optimizer, rollout.arrays(), cfg, rngs, device)
        env_steps += rollout.num_steps
        rows.append({"iteration": it, "env_steps": env_steps,
                     "episodic_return_mean": float(np.mean(rollout.episode_returns)),
                     "loss_mean": parts.loss, "rollout_ms": 1e3 * rollout_s,
                     "wall_time_s": time.perf_counter() - start})
        if verbose:
            print(f"[iteration {it}/{iterations}] env_steps={env_steps} "
                  f"return={rows[-1]['episodic_return_mean']:.1f} loss={parts.loss:.4f} "
                  f"sps={env_steps / rows[-1]['wall_time_s']:.0f}", flush=True)
    envs.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m fedrl.single", description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", default=None, help="a .toml preset (same keys as pyproject.toml)")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--steps-per-iteration", type=int, default=None)
    parser.add_argument("--csv", default=None, help="also write one row per iteration to this CSV file")
    args = parser.parse_args(argv)
    overrides = tomllib.load(open(args.run_config, "rb")) if args.run_config else {}
    rows = train_single(FedRLConfig.from_run_config(overrides), args.iterations, args.steps_per_iteration,
                        verbose=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
