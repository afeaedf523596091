"""Scale: seconds per round, env steps per second and peak memory at 10, 100 and 1,000 simulated clients.

Every client plays ``--steps`` steps a round (200 by default) and the round makes
``update-epochs`` × ``num-minibatches`` gradient exchanges with all of them. Each size
runs ``flwr run`` in Flower's simulation engine (``client-resources-num-cpus=1``, so one
ClientApp worker per core). Peak memory is the largest sum, over every process the run's
SuperLink started (engine, workers, Ray's own) and ``flwr run`` itself, of the
proportional set size (PSS: a page shared by n processes counts 1/n in each), sampled
every second. A straight line fitted to the steady rounds' seconds against their total env
steps (relative errors) gives the fixed cost of a round (its intercept) and the cost per
env step.

    python -m experiments.bench_scale [--clients 10 100 1000] [--rounds 4] [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from experiments.common import ROOT, read_rounds
from fedrl.tools.launch import flwr_run, to_overrides
from fedrl.tools.simulation import CONNECTION, simulation_superlink

WORKLOAD = {"env-id": "CartPole-v1", "min-episodes": 1, "update-epochs": 2, "num-minibatches": 2, "eval-episodes": 0}
TARGETS = {"fixed_s": 0.5, "peak_gib": 4.0}
# Per-step costs within this factor of each other across sizes count as linear growth.
LINEAR_SPREAD = 1.25
MAX_RESIDUAL = 0.25


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return 1024 * int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss(root: int) -> int:
    """Summed PSS of ``root`` and all its descendants, in bytes."""
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        total += _pss_bytes(pid)
        todo.extend(tree.get(pid, []))
    return total


class PeakMemory:
    """Samples the summed PSS of a process tree (this process's) in a thread; ``peak`` is the largest sample."""

    def __init__(self, root: int, every_s: float = 1.0) -> None:
        self.root, self.every_s, self.peak = root, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_pss(self.root))
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_size(clients: int, rounds: int, steps: int, tmp: Path) -> tuple[list[dict[str, float]], float, float]:
    """One run at ``clients`` clients on a fresh SuperLink; its rounds, seconds from launch to exit, peak bytes."""
    config = {**WORKLOAD, "min-steps": steps, "num-server-rounds": rounds, "outdir": str(tmp / "runs")}
    with simulation_superlink(tmp / f"superlink-{clients}") as env, PeakMemory(os.getpid()) as memory:
        start = time.perf_counter()
        run_id, status, results = flwr_run(str(ROOT), [to_overrides(config)],
                                           [f"num-supernodes={clients} client-resources-num-cpus=1"],
                                           CONNECTION, env, echo=False)
        seconds = time.perf_counter() - start
    if status != "finished:completed" or results is None:
        raise RuntimeError(f"{clients} clients: run {run_id} ended {status}")
    return read_rounds(results), seconds, memory.peak


def main() -> None:
    """Print one line per round and size, the fitted fixed cost per round and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200, help="env steps each client plays a round")
    args = parser.parse_args()
    print(f"CartPole-v1, {args.steps} steps per client a round, {WORKLOAD['update-epochs']} x "
          f"{WORKLOAD['num-minibatches']} gradient exchanges, {args.rounds} rounds (round 1 pays for start-up)")
    points: list[tuple[float, float]] = []
    per_step: dict[int, list[float]] = {}
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clients in args.clients:
            rows, seconds, peak = run_size(clients, args.rounds, args.steps, Path(tmp))
            peaks[clients] = peak
            prev_wall, prev_steps = 0.0, 0.0
            for r in rows:
                wall, steps = r["wall_time_s"] - prev_wall, r["env_steps"] - prev_steps
                print(f"{clients:5d} clients  round {int(r['round'])}: {wall:7.2f} s  {steps:8,.0f} env steps  "
                      f"{steps / wall:7,.0f} sps  rollout phase {r['rollout_ms'] / 1e3:6.2f} s  updates "
                      f"{r['exchanges'] * r['exchange_ms_mean'] / 1e3:6.2f} s", flush=True)
                if r["round"] > 1:
                    points.append((steps, wall))
                    per_step.setdefault(clients, []).append(wall / steps)
                prev_wall, prev_steps = r["wall_time_s"], r["env_steps"]
            print(f"{clients:5d} clients  whole run {seconds:.1f} s from launch to exit "
                  f"({rows[-1]['env_steps'] / seconds:,.0f} sps); peak memory {peak / 2**30:.2f} GiB", flush=True)
    costs = {clients: 1e6 * float(np.median(v)) for clients, v in per_step.items()}
    print("seconds per env step in the steady rounds (median): " +
          ", ".join(f"{clients} clients {us:.0f} us" for clients, us in costs.items()))
    if len(costs) > 1:
        spread = max(costs.values()) / min(costs.values())
        print(f"target: cost linear in env steps -> per-step cost varies {spread:.2f}x across sizes, "
              f"{'met' if spread <= LINEAR_SPREAD else 'missed'} (within {LINEAR_SPREAD}x counts as linear)")
    steps, secs = np.array(points).T
    if len(set(steps)) > 1:
        # Weighted by 1/seconds: a round's noise grows with its length, so the fit minimises relative errors.
        slope, intercept = np.polyfit(steps, secs, 1, w=1 / secs)
        residual = float(np.max(np.abs(secs - (slope * steps + intercept)) / secs))
        print(f"fit over the steady rounds: seconds per round = {intercept:.3f} + {slope * 1e6:.1f} us x env steps "
              f"(largest relative residual {residual:.1%})")
        verdict = "met" if intercept < TARGETS["fixed_s"] else "missed"
        if residual > MAX_RESIDUAL:
            verdict = f"not established: the line does not fit (residual above {MAX_RESIDUAL:.0%})"
        print(f"target: fixed cost per round < {TARGETS['fixed_s']} s -> {intercept:.3f} s, {verdict}")
    largest = max(peaks)
    print(f"target: peak memory at {largest} clients < {TARGETS['peak_gib']:g} GiB -> {peaks[largest] / 2**30:.2f} GiB, "
          f"{'met' if peaks[largest] / 2**30 < TARGETS['peak_gib'] else 'missed'}")


if __name__ == "__main__":
    main()
