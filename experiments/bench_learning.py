"""Learning speed: total env steps until CartPole-v1's running mean return reaches 475.

Each aggregator trains the CartPole preset with 4 clients. The running score is the
paper's: s = 0.9·s + 0.1·(round's mean return), starting at round 1's mean. Runs use
the in-process grid (the same ServerApp loop and ClientApp code without Flower's
transport, which does not change what is learned) so the sweep fits on a laptop.
    python -m experiments.bench_learning [--seeds 1 2] [--aggregators lweighted ...] [--max-steps 200000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tomllib
from pathlib import Path

from fedrl.config import FedRLConfig
from fedrl.tools.local_grid import LocalGrid

ROOT = Path(__file__).resolve().parents[1]
AGGREGATORS = ["baseline-sum", "baseline-avg", "rweighted", "lweighted", "fedavg", "fedprox"]
THRESHOLD = 475.0
CLIENTS = 4


def steps_to_threshold(aggregator: str, seed: int, max_steps: int) -> tuple[int | None, int, float, float]:
    """(steps when the running score first reached 475 or None, steps run, last round mean, seconds)."""
    from client_app import app
    from server_app import build_scheduler

    preset = tomllib.loads((ROOT / "experiments" / "presets" / "cartpole.toml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        rc = {**preset, "aggregator": aggregator, "seed": seed, "outdir": tmp, "num-server-rounds": 10_000,
              **({"mu": 0.01} if aggregator == "fedprox" else {})}
        server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, CLIENTS, rc), run_id=0, out=False)
        start, score, server_round = time.perf_counter(), None, 0
        while server.recorder.env_steps < max_steps:
            server_round += 1
            row = server.run_round(server_round)
            ret = row["episodic_return_mean"]
            score = ret if score is None else 0.9 * score + 0.1 * ret
            if score >= THRESHOLD:
                return server.recorder.env_steps, server.recorder.env_steps, ret, time.perf_counter() - start
        return None, server.recorder.env_steps, ret, time.perf_counter() - start


def main() -> None:
    """Print one line per (aggregator, seed) and the best aggregator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--aggregators", nargs="+", default=AGGREGATORS)
    parser.add_argument("--max-steps", type=int, default=200_000)
    args = parser.parse_args()
    import logging

    logging.getLogger("fedrl").setLevel(logging.WARNING)
    best: dict[str, list[float]] = {}
    print(f"CartPole-v1, {CLIENTS} clients, preset experiments/presets/cartpole.toml, threshold {THRESHOLD:g}")
    for aggregator in args.aggregators:
        for seed in args.seeds:
            reached, steps, last, secs = steps_to_threshold(aggregator, seed, args.max_steps)
            shown = f"{reached}" if reached is not None else f"{steps}+"
            print(f"{aggregator:13s} seed {seed}: steps to 475 = {shown:>8s}  last round mean {last:6.1f}  "
                  f"{secs:5.0f} s", flush=True)
            best.setdefault(aggregator, []).append(reached if reached is not None else float("inf"))
    mean = {a: sum(v) / len(v) for a, v in best.items()}
    winner = min(mean, key=mean.get)
    print(f"best: {winner} with {mean[winner]:.0f} steps on average (target <= 100000)")


if __name__ == "__main__":
    main()
