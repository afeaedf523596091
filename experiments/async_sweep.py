"""The asynchronous experiments of experiments/results/ASYNC.md, as resumable cells.

    python -m experiments.async_sweep figure4 [--seeds 1 2 ...] [--jobs 2]
    python -m experiments.async_sweep nigt [--seeds 1 2] [--panels a b c] [--methods ...] [--jobs 2]

``figure4``: the core paper's Figure 4 on CartPole (preset experiments/presets/cartpole.toml,
4 clients): Baseline-Sum for 200 updates (5 rounds of 40), then A3C and IMPALA for the
simulated time those took. ``nigt``: the NIGT paper's Figure 1 pattern on Reacher-v4 with
n = 10 and three (h, κ) panels; every method gets the simulated time of
``--sync-rounds`` synchronous NIGT rounds in that panel.

Every cell runs the real ServerApp scheduler and ClientApp in one process
(:class:`fedrl.tools.local_grid.LocalGrid`) on the simulated clock, which orders events by
simulated time, so a cell's results are the ones ``flwr run`` gives for the same config.
A finished cell has ``cell.json`` (written last, atomically) and is skipped when the
sweep is started again; an unfinished one is moved to ``<cell>/incomplete-<n>`` first.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import sys
import tomllib
from pathlib import Path

from experiments.common import ROOT

RESULTS = ROOT / "experiments" / "results" / "async"
CARTPOLE_CLIENTS = 4
NIGT_CLIENTS = 10
NIGT_ENV = "Reacher-v4"
PANELS = {"a": ("equal", "zero"), "b": ("sqrt", "sqrt"), "c": ("sqrt", "sqrt-d4")}
NIGT_METHODS = ("rennala-nigt", "sync-nigt", "a3c", "impala", "baseline-sum", "lweighted")
# One setting for every method on Reacher: jobs of 2 episodes, M = n, the paper's η for Humanoid.
NIGT_SETTINGS = {"env-id": NIGT_ENV, "job-steps": 100, "steps-per-unit": 100, "nigt-batch": 10, "nigt-init-batch": 10,
                 "nigt-lr": 0.02,
                 "nigt-momentum": 0.1, "server-lr": 3e-4, "min-steps": 100, "min-episodes": 2, "update-epochs": 4,
                 "num-minibatches": 4, "eval-every": 0.05, "eval-episodes": 5, "impala-batch": 4}


def preset(name: str) -> dict:
    """An experiment preset's run config."""
    return tomllib.loads((ROOT / "experiments" / "presets" / f"{name}.toml").read_text())


def run_cell(cell: Path, rc: dict, clients: int) -> dict:
    """Run one cell (unless it is complete) and return its cell.json."""
    done = cell / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    if cell.exists():
        n = 1
        while (cell.parent / f"{cell.name}.incomplete-{n}").exists():
            n += 1
        shutil.move(str(cell), str(cell.parent / f"{cell.name}.incomplete-{n}"))
    cell.mkdir(parents=True)
    from client_app import app
    from fedrl.config import FedRLConfig
    from fedrl.runtime import set_torch_threads
    from fedrl.tools.local_grid import LocalGrid
    from server_app import build_scheduler

    set_torch_threads()
    rc = {**rc, "outdir": str(cell)}
    server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, clients, rc), run_id=0)
    server.run()
    assert server.recorder.path is not None
    summary = {"config": rc, "clients": clients, "run_dir": server.recorder.path.name,
               "sim_time": getattr(server, "sim_time", None) or rc.get("time-budget"),
               "evals": server.recorder.evaluations}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(done)
    return summary


def _run(args: tuple[Path, dict, int]) -> dict:
    return run_cell(*args)


def figure4(seeds: list[int], jobs: int) -> None:
    """Baseline-Sum 200 updates, then A3C and IMPALA for the same simulated time, per seed."""
    base = {**preset("cartpole"), "eval-every": 0.1, "eval-episodes": 5}
    sync = [(RESULTS / "figure4" / "baseline-sum" / f"seed{s}", {**base, "seed": s, "num-server-rounds": 5},
             CARTPOLE_CLIENTS) for s in seeds]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        done = pool.map(_run, sync)
        budget = max(c["sim_time"] for c in done)
        cells = [(RESULTS / "figure4" / m / f"seed{s}",
                  {**{k: v for k, v in base.items() if k not in ("num-server-rounds", "update-epochs",
                                                                  "num-minibatches", "min-steps", "min-episodes")},
                   "aggregator": m, "seed": s, "time-budget": round(budget, 3), "job-steps": 64},
                  CARTPOLE_CLIENTS) for m in ("a3c", "impala") for s in seeds]
        pool.map(_run, cells)


def sync_round_time(panel: str, num_parameters: int) -> float:
    """Simulated time of one synchronous NIGT round in a panel: max_i h_i + max_i κ_i."""
    compute, comm = PANELS[panel]
    h = 1.0 if compute == "equal" else math.sqrt(NIGT_CLIENTS)
    kappa = {"zero": 0.0, "sqrt": math.sqrt(NIGT_CLIENTS),
             "sqrt-d4": math.sqrt(NIGT_CLIENTS) * num_parameters ** 0.25}[comm]
    return h + kappa


def sync_kappa(panel: str, num_parameters: int) -> float:
    """max_i κ_i in a panel."""
    return sync_round_time(panel, num_parameters) - (1.0 if PANELS[panel][0] == "equal" else math.sqrt(NIGT_CLIENTS))


def nigt(seeds: list[int], panels: list[str], methods: list[str], sync_rounds: int, jobs: int) -> None:
    """Every method in every panel, with the simulated time of ``sync_rounds`` synchronous NIGT rounds."""
    from fedrl.rl.envs import env_spaces
    from fedrl.rl.model import build_model, count_parameters

    d = count_parameters(build_model(*env_spaces(NIGT_ENV), "small"))
    cells = []
    for panel in panels:
        compute, comm = PANELS[panel]
        budget = round(sync_rounds * sync_round_time(panel, d), 3)
        for method in methods:
            for s in seeds:
                rc = {**NIGT_SETTINGS, "aggregator": method, "seed": s, "compute-time": compute, "comm-time": comm,
                      "time-budget": budget}
                if method in ("baseline-sum", "lweighted"):
                    # Synchronous PPO runs rounds, each a 100-step rollout (one h) and 1 + 16 exchanges
                    # (17 κ): as many rounds as fit in the same simulated time.
                    h, kappa = sync_round_time(panel, d) - sync_kappa(panel, d), sync_kappa(panel, d)
                    rc["num-server-rounds"] = max(1, int(budget // (h + 17 * kappa)))
                cells.append((RESULTS / "nigt" / panel / method / f"seed{s}", rc, NIGT_CLIENTS))
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        pool.map(_run, cells)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m experiments.async_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["figure4", "nigt"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--panels", nargs="+", choices=list(PANELS), default=list(PANELS))
    parser.add_argument("--methods", nargs="+", choices=NIGT_METHODS, default=list(NIGT_METHODS))
    parser.add_argument("--sync-rounds", type=int, default=100, help="nigt: budget in synchronous NIGT rounds")
    parser.add_argument("--jobs", type=int, default=2, help="cells run at once (one core each)")
    args = parser.parse_args(argv)
    if args.experiment == "figure4":
        figure4(args.seeds or list(range(1, 11)), args.jobs)
    else:
        nigt(args.seeds or [1, 2], args.panels, args.methods, args.sync_rounds, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
