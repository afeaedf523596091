"""Exchange overhead: time per sync gradient exchange minus the clients' compute.

2 clients, small model, CartPole-v1, 16 exchanges a round. The same workload runs in
Flower's simulation engine with fedrl's poll (``sim-poll-max-ms`` 2 and 20) and with
Flower's stock 100 ms poll (``sim-poll-max-ms = 0``) in one run, and in-process
(LocalGrid, no transport) so the transport's share is visible. Round 1 (start-up) is
printed but not counted.
    python -m experiments.bench_exchange [--rounds 8]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from experiments.common import simulate
from fedrl.config import FedRLConfig
from fedrl.tools.local_grid import LocalGrid

TARGET_MS = 5.0
WORKLOAD = {"env-id": "CartPole-v1", "aggregator": "baseline-avg", "model-size": "small", "eval-episodes": 0, "min-steps": 256,
            "min-episodes": 1, "update-epochs": 4, "num-minibatches": 4}


def overhead(rows: list[dict]) -> tuple[float, float, float]:
    """Mean exchange ms, mean slowest-client compute ms and their difference, skipping round 1."""
    steady = rows[1:] if len(rows) > 1 else rows
    exchange = float(np.mean([r["exchange_ms_mean"] for r in steady]))
    compute = float(np.mean([r["client_compute_ms_mean"] for r in steady]))
    return exchange, compute, exchange - compute


def main() -> None:
    """Print both figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    config = {**WORKLOAD, "num-server-rounds": args.rounds}
    from client_app import app
    from server_app import build_scheduler

    with tempfile.TemporaryDirectory() as tmp:
        rc = {**config, "outdir": tmp}
        local = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, 2, rc), run_id=0, out=False).run()
    stock, sim, sim20 = simulate([{**config, "sim-poll-max-ms": 0}, config, {**config, "sim-poll-max-ms": 20}], clients=2)
    runs = (("simulation, stock poll", stock), ("simulation, poll <= 2 ms", sim),
            ("simulation, poll <= 20 ms", sim20), ("in-process LocalGrid*", local))
    print(f"exchanges per round: {int(sim[-1]['exchanges'])}, rounds: {args.rounds}; overhead per round, ms:")
    print("round " + "".join(f"{name:>27s}" for name, _ in runs))
    for i in range(args.rounds):
        print(f"{i + 1:5d} " + "".join(f"{rows[i]['exchange_ms_mean'] - rows[i]['client_compute_ms_mean']:27.2f}"
                                       for _, rows in runs) + ("   (start-up, not counted)" if i == 0 else ""))
    print(f"rounds 2-{args.rounds}:")
    for name, rows in runs:
        ex, comp, over = overhead(rows)
        print(f"{name:26s} exchange {ex:7.2f} ms  client compute {comp:6.2f} ms  overhead {over:7.2f} ms")
    print("* clients run one after the other in-process, so its overhead includes the second client's compute")
    over = overhead(sim)[2]
    print(f"target: overhead <= {TARGET_MS:g} ms in simulation -> {over:.2f} ms, "
          f"{'met' if over <= TARGET_MS else f'missed by {over - TARGET_MS:.2f} ms'}; "
          f"stock/fedrl exchange time ratio {overhead(stock)[0] / overhead(sim)[0]:.1f}x")


if __name__ == "__main__":
    main()
