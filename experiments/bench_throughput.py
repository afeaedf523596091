"""Throughput: env steps per second of a 2-client simulation against a single process.

For each env, in one invocation: (a) ``flwr run`` in the simulation engine with 2
clients, (b) the single-process loop of the same learner code (:mod:`fedrl.rl.single`)
on the same budget (same steps per round, same PPO epochs), (c) the raw env with
random actions. Steps per second exclude round 1, which pays for start-up.
    python -m experiments.bench_throughput [--rounds 4] [--envs CartPole-v1 HalfCheetah-v5]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

from experiments.common import simulate, steady_sps
from fedrl.config import FedRLConfig
from fedrl.rl.single import train_single

CLIENTS = 2


def raw_env_sps(env_id: str, steps: int = 20_000, seed: int = 0) -> float:
    """Env steps per second with random actions (resets included)."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    """Print the figures and ratios per env."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "HalfCheetah-v5"])
    parser.add_argument("--sim-poll-max-ms", type=float, nargs="+", default=[2.0])
    args = parser.parse_args()
    configs = [{"env-id": env_id, "num-server-rounds": args.rounds, "sim-poll-max-ms": poll}
               for env_id in args.envs for poll in args.sim_poll_max_ms]
    sims = simulate(configs, clients=CLIENTS)
    print(f"{args.rounds} rounds, {CLIENTS} clients; defaults from pyproject.toml (min-steps 2000, "
          f"4 epochs x 4 minibatches)")
    for env_id in args.envs:
        cfg = FedRLConfig(env_id=env_id)
        single = train_single(cfg, args.rounds, steps_per_iteration=CLIENTS * cfg.min_steps)
        single_sps = steady_sps(single)
        raw = raw_env_sps(env_id)
        print(f"{env_id}: single process {single_sps:7.0f} sps; raw random-action env {raw:7.0f} sps")
        round_ms = 1e3 * (single[-1]["wall_time_s"] - single[0]["wall_time_s"]) / (len(single) - 1)
        rollout_ms = np.mean([r["rollout_ms"] for r in single[1:]])
        print(f"  single process: iteration {round_ms:6.0f} ms = rollout {rollout_ms:6.0f} ms "
              f"+ updates {round_ms - rollout_ms:6.0f} ms")
        for config, rows in zip(configs, sims):
            if config["env-id"] != env_id:
                continue
            sim_sps = steady_sps(rows)
            print(f"  simulation (sim-poll-max-ms={config['sim-poll-max-ms']:g}): {sim_sps:7.0f} sps  "
                  f"ratio to single {sim_sps / single_sps:.2f} (target >= 1.5)  ratio to raw env {sim_sps / raw:.3f}")
            steady = rows[1:]
            round_ms = 1e3 * (rows[-1]["wall_time_s"] - rows[0]["wall_time_s"]) / len(steady)
            rollout = np.mean([r["rollout_ms"] for r in steady])
            compute = np.mean([r["rollout_compute_ms"] for r in steady])
            updates = np.mean([r["exchanges"] * r["exchange_ms_mean"] for r in steady])
            print(f"  simulation: round {round_ms:6.0f} ms = rollout {rollout:6.0f} ms (slowest client {compute:6.0f} ms)"
                  f" + updates {updates:6.0f} ms + other {round_ms - rollout - updates:5.0f} ms")


if __name__ == "__main__":
    main()
