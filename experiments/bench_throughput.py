"""Throughput: env steps per second of a 2-client simulation against a single process, in one run.

For each env: (a) ``flwr run`` in Flower's simulation engine with 2 clients
(``client-resources-num-cpus=1``), (b) the single-process loop of the same learner
code (``python -m fedrl.single``) for the same number of iterations, each playing what
the 2 clients play in a round, with the same PPO epochs, (c) the raw env with random
actions. Both (a) and (b) are timed from launch to exit, so start-up counts in the
whole-run figures; steady state is the second half of the rounds. Per-round figures
show where start-up ends. The default rounds make each simulation run about 3 minutes
on a 2-core machine. ``--aggregator fedavg`` makes a round one exchange of local epochs
instead of 16 gradient exchanges; the single process is the same loop either way.

    python -m experiments.bench_throughput [--envs CartPole-v1 HalfCheetah-v5] [--rounds N] [--aggregator NAME]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from experiments.common import simulate
from fedrl.config import toml_value

CLIENTS = 2
# A rollout of 2,000 steps per client and 4 epochs x 4 minibatches (16 gradient exchanges a
# round): CleanRL's PPO shape, and the throughput workload of every earlier figure.
WORKLOAD = {"min-steps": 2000, "min-episodes": 2, "update-epochs": 4, "num-minibatches": 4, "eval-episodes": 0}
ROUNDS = {"CartPole-v1": 300, "HalfCheetah-v5": 220}
TARGETS = {"steady": 1.8, "whole": 1.5}


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


def single_process(env_id: str, iterations: int, aggregator: str) -> tuple[list[dict[str, float]], float]:
    """``python -m fedrl.single`` for ``iterations`` of the 2 clients' steps; its rows and seconds from launch to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        preset, rows_csv = Path(tmp) / "run.toml", Path(tmp) / "rows.csv"
        config = {"env-id": env_id, "aggregator": aggregator, **WORKLOAD}
        preset.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in config.items()))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedrl.single", "--run-config", str(preset), "--iterations",
                        str(iterations), "--steps-per-iteration", str(CLIENTS * WORKLOAD["min-steps"]),
                        "--csv", str(rows_csv)], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        with open(rows_csv, newline="") as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows, seconds


def steady(rows: list[dict[str, float]]) -> float:
    """Env steps per second over the second half of the rounds."""
    half = rows[len(rows) // 2 - 1], rows[-1]
    return (half[1]["env_steps"] - half[0]["env_steps"]) / (half[1]["wall_time_s"] - half[0]["wall_time_s"])


def per_round(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Each round's own wall time (ms) and steps per second, with its phases."""
    out, prev_wall, prev_steps = [], 0.0, 0.0
    for r in rows:
        wall = r["wall_time_s"] - prev_wall
        update = r["exchanges"] * r["exchange_ms_mean"]
        out.append({"round": r["round"], "wall_ms": 1e3 * wall, "sps": (r["env_steps"] - prev_steps) / wall,
                    "rollout_ms": r["rollout_ms"], "compute_ms": r["rollout_compute_ms"], "update_ms": update,
                    "other_ms": 1e3 * wall - r["rollout_ms"] - update})
        prev_wall, prev_steps = r["wall_time_s"], r["env_steps"]
    return out


def print_rounds(rows: list[dict[str, float]]) -> None:
    """Rounds 1-5 one by one, then the means of ten equal blocks."""
    rounds = per_round(rows)
    print("    round      wall ms   sps    rollout ms (slowest client)  updates ms  other ms")
    blocks = [(f"{int(r['round']):>9d}", [r]) for r in rounds[:5]]
    size = max(1, (len(rounds) - 5) // 10)
    for i in range(5, len(rounds), size):
        chunk = rounds[i:i + size]
        blocks.append((f"{int(chunk[0]['round'])}-{int(chunk[-1]['round'])}".rjust(9), chunk))
    for label, chunk in blocks:
        m = {k: float(np.mean([c[k] for c in chunk])) for k in chunk[0]}
        print(f"  {label} {m['wall_ms']:9.0f} {m['sps']:7.0f} {m['rollout_ms']:9.0f} ({m['compute_ms']:6.0f})"
              f"             {m['update_ms']:8.0f} {m['other_ms']:9.0f}")


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target:g}: {'met' if ratio >= target else f'missed by {target - ratio:.2f}'}"


def main() -> None:
    """Print per-round figures, steady-state and whole-run throughput and their ratios, per env."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ROUNDS))
    parser.add_argument("--rounds", type=int, default=None, help="rounds per env (default: about 3 minutes each)")
    parser.add_argument("--aggregator", default="baseline-sum")
    args = parser.parse_args()
    print(f"{CLIENTS} clients in Flower's simulation engine (client-resources-num-cpus=1) against the single-process "
          f"loop; aggregator {args.aggregator}; per round {CLIENTS} x {WORKLOAD['min-steps']} steps, "
          f"{WORKLOAD['update-epochs']} epochs x {WORKLOAD['num-minibatches']} minibatches")
    for env_id in args.envs:
        rounds = args.rounds or ROUNDS.get(env_id, 100)
        config = {"env-id": env_id, "aggregator": args.aggregator, "num-server-rounds": rounds, **WORKLOAD}
        start = time.perf_counter()
        (sim,) = simulate([config], clients=CLIENTS)
        sim_s = time.perf_counter() - start
        single, single_s = single_process(env_id, rounds, args.aggregator)
        raw = raw_env_sps(env_id)
        print(f"\n{env_id}, {rounds} rounds; raw random-action env {raw:,.0f} sps")
        print("  simulation, per round:")
        print_rounds(sim)
        rollout = np.mean([r["rollout_ms"] for r in single[len(single) // 2:]])
        iteration = 1e3 * (single[-1]["wall_time_s"] - single[len(single) // 2 - 1]["wall_time_s"]) / \
            (len(single) - len(single) // 2)
        print(f"  single process, steady iteration {iteration:.0f} ms = rollout {rollout:.0f} ms + updates "
              f"{iteration - rollout:.0f} ms")
        figures = {
            "steady": (steady(sim), steady(single)),
            "whole": (sim[-1]["env_steps"] / sim_s, single[-1]["env_steps"] / single_s),
        }
        print(f"  whole run, launch to exit: simulation {sim_s:.0f} s, single process {single_s:.0f} s")
        for name, (fed, one) in figures.items():
            label = "steady state (second half)" if name == "steady" else "whole run (start-up included)"
            print(f"  {label:30s} simulation {fed:7,.0f} sps  single {one:7,.0f} sps  ratio {fed / one:.2f} "
                  f"({verdict(fed / one, TARGETS[name])})  simulation/raw env {fed / raw:.3f}")


if __name__ == "__main__":
    main()
