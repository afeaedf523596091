"""Resumable grid sweeps: envs × aggregators × model sizes × seeds, each cell a normal simulation run.

    python -m experiments.sweep --runs-dir ~/fedrl-sweeps/paper \\
        --envs CartPole-v1 LunarLander-v3 --aggregators baseline-sum lweighted \\
        --seeds 1 2 3 --model-sizes small [--set 'num-server-rounds=20'] [--clients 4]

Every cell runs ``flwr run`` on one private simulation SuperLink with the env's preset
(``experiments/presets/<env>.toml``) plus the cell's values and any ``--set``
overrides, and writes into ``<runs-dir>/<env>/<variant>/<model-size>/seed<k>/``.
A cell counts as complete once Flower reports the run ``finished:completed``, its
``rounds.csv`` has every round and ``cell.json`` is written (atomically); complete
cells are skipped, so the sweep can be killed at any moment and started again. An
unfinished cell is resumed from its run's last ``checkpoint.pt`` (same config); what
cannot be resumed is moved under ``<cell>/incomplete/``, never deleted.
``rweighted-norm`` and ``lweighted-norm`` are the normalised-weights variants.
With ``--archive experiments/results/cells`` the cells whose records the report has
archived there (and that were committed) are skipped as well, so a sweep started on a
fresh machine only runs what is missing.
A cell is only skipped when it ran with the config this sweep asks for. One that
completed with another config (say a shorter ``--set 'num-server-rounds=...'``) stops
the sweep before anything runs, naming the cell and the keys that differ: its results
are kept, and mixing two budgets in one table would go unnoticed.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from experiments.common import ROOT
from fedrl.config import AGGREGATORS, MODEL_SIZES, ConfigError, FedRLConfig
from fedrl.federation.resume import latest_resumable
from fedrl.tools.launch import flwr_run, to_overrides
from fedrl.tools.simulation import CONNECTION, simulation_superlink

PRESETS = {
    "CartPole-v1": "cartpole",
    "LunarLander-v3": "lunarlander",
    "BipedalWalker-v3": "bipedalwalker",
    "HalfCheetah-v5": "halfcheetah",
    "HumanoidStandup-v5": "humanoidstandup",
}
NORMALISED = {"rweighted-norm": "rweighted", "lweighted-norm": "lweighted"}
VARIANTS = tuple(AGGREGATORS) + tuple(NORMALISED)


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    env_id: str
    variant: str
    model_size: str
    seed: int

    @property
    def relpath(self) -> Path:
        """Where the cell lives under the runs dir."""
        return Path(self.env_id) / self.variant / self.model_size / f"seed{self.seed}"

    def run_config(self, overrides: dict) -> dict:
        """The cell's full run config (preset, cell values, overrides)."""
        preset_file = ROOT / "experiments" / "presets" / f"{PRESETS[self.env_id]}.toml"
        preset = tomllib.loads(preset_file.read_text()) if preset_file.exists() else {"env-id": self.env_id}
        config = {**preset, "env-id": self.env_id, "aggregator": NORMALISED.get(self.variant, self.variant),
                  "normalize-weights": self.variant in NORMALISED, "model-size": self.model_size, "seed": self.seed,
                  **overrides}
        if config["aggregator"] == "fedprox" and config.get("mu", 0) == 0:
            config["mu"] = 0.01
        return config


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings (TOML values) into a dict, validated against the config."""
    out: dict = {}
    for item in items:
        out.update(tomllib.loads(item.replace(" ", "\n")))
    FedRLConfig.from_run_config(out, check_env=False)
    return out


def is_complete(cell_dir: Path, need_model: bool = True) -> bool:
    """True when the cell finished and its results are intact.

    ``need_model=False`` accepts a cell without ``model.pt``, as the report archives them.
    """
    marker = cell_dir / "cell.json"
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
        run_dir = cell_dir / info["run_dir"]
        with open(run_dir / "rounds.csv", newline="") as f:
            rows = sum(1 for _ in csv.DictReader(f))
    except (OSError, ValueError, KeyError):
        return False
    return (info.get("status") == "finished:completed" and rows == info["rounds"]
            and (not need_model or (run_dir / "model.pt").is_file()))


def config_differences(cell_dir: Path, wanted: dict) -> dict[str, tuple]:
    """Keys on which a complete cell's recorded run config differs from ``wanted``: (recorded, wanted)."""
    recorded = json.loads((cell_dir / "cell.json").read_text())["config"]
    keys = (set(recorded) | set(wanted)) - {"outdir"}
    return {k: (recorded.get(k), wanted.get(k)) for k in sorted(keys) if recorded.get(k) != wanted.get(k)}


def set_aside_incomplete(cell_dir: Path) -> None:
    """Move whatever an unfinished attempt left under ``incomplete/`` (kept, not deleted)."""
    if not cell_dir.exists():
        return
    leftovers = [p for p in cell_dir.iterdir() if p.name != "incomplete"]
    if not leftovers:
        return
    dest = cell_dir / "incomplete" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for p in leftovers:
        shutil.move(str(p), dest / p.name)


def run_cell(cell: Cell, runs_dir: Path, overrides: dict, clients: int, env: dict) -> dict:
    """Run one cell to completion; returns what cell.json records."""
    cell_dir = runs_dir / cell.relpath
    config = {**cell.run_config(overrides), "outdir": str(cell_dir)}
    cfg = FedRLConfig.from_run_config(config)
    previous = latest_resumable(cell_dir, cfg) if cell_dir.is_dir() else None
    if previous is None:
        set_aside_incomplete(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    resume = {"resume-from": str(previous)} if previous else {}
    run_id, status, results = flwr_run(str(ROOT), [to_overrides({**config, **resume})],
                                       [f"num-supernodes={clients} client-resources-num-cpus=1"],
                                       CONNECTION, env, echo=False)
    info = {"status": status, "run_id": run_id, "rounds": cfg.num_server_rounds, "clients": clients,
            "seconds": round(time.time() - start, 1), "config": config,
            "run_dir": Path(results).name if results else None}
    if status == "finished:completed" and results:
        tmp = cell_dir / "cell.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, cell_dir / "cell.json")
    return info


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1"], choices=sorted(PRESETS))
    parser.add_argument("--aggregators", nargs="+", default=["baseline-sum"], choices=VARIANTS)
    parser.add_argument("--model-sizes", nargs="+", default=["small"], choices=MODEL_SIZES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra run-config overrides, TOML values: --set 'num-server-rounds=20'")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--archive", type=Path, action="append", default=[],
                        help="a report's archive of cells (experiments/results/cells): cells complete there "
                             "are skipped too, so a fresh runs dir does not redo committed results")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and which are complete")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"--set: {exc}")
    runs_dir = args.runs_dir.expanduser().resolve()
    cells = [Cell(*c) for c in itertools.product(args.envs, args.aggregators, args.model_sizes, args.seeds)]
    archives = [a.expanduser().resolve() for a in args.archive]
    for a in archives:
        if not a.is_dir():
            print(f"sweep: --archive {a} does not exist (yet): no archived cells there")
    todo, conflicts = [], []
    for c in cells:
        found = [d / c.relpath for d in [runs_dir, *archives]
                 if is_complete(d / c.relpath, need_model=d == runs_dir)]
        if not found:
            todo.append(c)
            continue
        diff = config_differences(found[0], c.run_config(overrides))
        if diff:
            conflicts.append(f"  {found[0]}: " + ", ".join(f"{k} = {r!r} there, {w!r} asked"
                                                         for k, (r, w) in diff.items()))
    if conflicts:
        print("sweep: these cells are complete with another config; their results are kept and nothing ran.\n"
              + "\n".join(conflicts) + "\nAsk for the config they ran with (the same --set), or use another "
              "--runs-dir (without that --archive) for this one.", file=sys.stderr)
        return 2
    print(f"sweep: {len(cells)} cells, {len(cells) - len(todo)} already complete, {len(todo)} to run -> {runs_dir}")
    if args.dry_run:
        for c in cells:
            print(f"  {'done' if c not in todo else 'todo'}  {c.relpath}")
        return 0
    if not todo:
        return 0
    failed, start, done = 0, time.time(), len(cells) - len(todo)
    with tempfile.TemporaryDirectory(prefix="fedrl-sweep-") as tmp, simulation_superlink(Path(tmp)) as env:
        for i, cell in enumerate(todo, 1):
            info = run_cell(cell, runs_dir, overrides, args.clients, env)
            ok = info["status"] == "finished:completed"
            done += ok
            failed += not ok
            elapsed = time.time() - start
            eta = elapsed / i * (len(todo) - i)
            print(f"[{done}/{len(cells)} done] {cell.relpath}: {info['status']} in {info['seconds']:.0f} s; "
                  f"elapsed {_fmt(elapsed)}, ETA {_fmt(eta)}", flush=True)
    if failed:
        print(f"sweep: {failed} cells failed; run the same command again to retry them")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
