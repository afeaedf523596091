"""Helpers shared by the benchmark scripts: run a simulation and read its rounds.csv."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from fedrl.tools.launch import flwr_run, to_overrides
from fedrl.tools.simulation import CONNECTION, simulation_superlink

ROOT = Path(__file__).resolve().parents[1]


def read_rounds(run_dir: str | Path) -> list[dict[str, float]]:
    """rounds.csv as floats."""
    with open(Path(run_dir) / "rounds.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def simulate(configs: list[dict], clients: int,
             resources: str = "client-resources-num-cpus=1") -> list[list[dict[str, float]]]:
    """Run each config with ``flwr run`` on one private simulation SuperLink; returns their rounds.

    ``resources``: the federation's ``client-resources-*`` settings (one CPU per client by default).
    """
    out = []
    with tempfile.TemporaryDirectory() as tmp, simulation_superlink(Path(tmp)) as env:
        for config in configs:
            # Benchmarks time training: no evaluations between rounds unless a config asks.
            config = {"eval-episodes": 0, **config, "outdir": str(Path(tmp) / "runs")}
            run_id, status, results = flwr_run(str(ROOT), [to_overrides(config)],
                                               [f"num-supernodes={clients} {resources}"],
                                               CONNECTION, env, echo=False)
            if status != "finished:completed" or results is None:
                raise RuntimeError(f"simulation run {run_id} ended {status}")
            out.append(read_rounds(results))
    return out


def steady_sps(rows: list[dict[str, float]], steps_key: str = "env_steps") -> float:
    """Env steps per second after the first round (which pays for start-up)."""
    first, last = rows[0], rows[-1]
    return (last[steps_key] - first[steps_key]) / (last["wall_time_s"] - first["wall_time_s"])
