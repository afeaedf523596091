"""Experiment 4: a real deployment with one slow node, asynchronous against synchronous, in one run.

Two SuperNodes on loopback (TLS and node authentication unless ``--insecure``), the wall
clock, partition 1 three times slower than partition 0 (``compute-time = "1,3"``: each
job lasts at least 1 or 3 units of ``--unit-s`` seconds, the client sleeping for what its
compute does not fill). Each method gets the same wall-time budget on a fresh
deployment and prints, from its own events.csv and evals.csv:

- env steps per second, played (every job) and used (jobs that entered an update);
- updates, and the evaluation return (5 deterministic episodes) at the budget.

    python -m experiments.bench_async_deploy [--budget 120] [--unit-s 0.5] [--methods sync-nigt rennala-nigt a3c]

The ratio printed is each method's steps per second over the first method's (the
synchronous baseline), taken within this invocation. Per 20%-of-budget slices of the
wall time show start-up.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from experiments.common import ROOT
from fedrl.tools.deploy import CONNECTION, LocalDeployment
from fedrl.tools.launch import flwr_run, to_overrides

WORKLOAD = {"env-id": "CartPole-v1", "clock": "wall", "compute-time": "1,3", "job-steps": 256,
            "steps-per-unit": 256, "nigt-batch": 2, "nigt-init-batch": 2, "nigt-lr": 0.05, "server-lr": 0.0025,
            "eval-every": 1.0, "eval-episodes": 5, "reply-timeout": 60.0}


def read(path: Path) -> list[dict]:
    """A CSV file as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def measure(method: str, budget: float, unit_s: float, secure: bool) -> dict:
    """One method on a fresh 2-node deployment; returns its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(tmp) / "runs"
        config = {**WORKLOAD, "aggregator": method, "time-budget": budget, "time-unit-s": unit_s,
                  "outdir": str(outdir)}
        with LocalDeployment(Path(tmp) / "dep", nodes=2, secure=secure) as dep:
            run_id, status, results = flwr_run(str(ROOT), [to_overrides(config)], [], CONNECTION, dep.env, echo=False)
        if status != "finished:completed" or results is None:
            raise RuntimeError(f"{method}: run {run_id} ended {status}")
        events = read(Path(results) / "events.csv")
        evals = read(Path(results) / "evals.csv")
    seconds = budget * unit_s
    used = [e for e in events if e["outcome"] in ("applied", "batched")]
    slices = []
    for k in range(5):
        lo, hi = k * seconds / 5, (k + 1) * seconds / 5
        steps = sum(int(e["env_steps"]) for e in events if lo <= float(e["sim_time"]) * unit_s < hi)
        slices.append(steps / (hi - lo))
    return {"method": method, "played_sps": sum(int(e["env_steps"]) for e in events) / seconds,
            "used_sps": sum(int(e["env_steps"]) for e in used) / seconds,
            "steady_sps": sum(slices[1:]) / 4, "slices": slices,
            "updates": sum(e["outcome"] == "applied" for e in events),
            "discarded": sum(e["outcome"] in ("discarded", "aborted") for e in events),
            "slow_share": sum(e["partition_id"] == "1" for e in used) / max(len(used), 1),
            "return": float(evals[-1]["eval_return_mean"]), "return_std": float(evals[-1]["eval_return_std"])}


def main() -> None:
    """Print each method's figures and its ratio to the first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="time units per method (default 120)")
    parser.add_argument("--unit-s", type=float, default=0.5, help="seconds per time unit (default 0.5)")
    parser.add_argument("--methods", nargs="+", default=["sync-nigt", "rennala-nigt", "a3c"])
    parser.add_argument("--insecure", action="store_true", help="no TLS or node authentication")
    args = parser.parse_args()
    rows = [measure(m, args.budget, args.unit_s, not args.insecure) for m in args.methods]
    base = rows[0]
    print(f"2 SuperNodes ({'insecure' if args.insecure else 'TLS + node auth'}), partition 1 3x slower, "
          f"{args.budget:g} units of {args.unit_s:g} s = {args.budget * args.unit_s:g} s per method")
    print(f"{'method':<14} {'played sps':>10} {'used sps':>9} {'steady sps':>10} {'x played':>8} {'x used':>7} "
          f"{'updates':>7} {'discarded':>9} {'slow share':>10} {'return':>13}  sps per 20% of the budget")
    for r in rows:
        print(f"{r['method']:<14} {r['played_sps']:>10.0f} {r['used_sps']:>9.0f} {r['steady_sps']:>10.0f} "
              f"{r['played_sps'] / base['played_sps']:>8.2f} {r['used_sps'] / base['used_sps']:>7.2f} "
              f"{r['updates']:>7} {r['discarded']:>9} {r['slow_share']:>10.2f} "
              f"{r['return']:>7.1f} ± {r['return_std']:<5.1f} {' '.join(f'{s:.0f}' for s in r['slices'])}")


if __name__ == "__main__":
    main()
