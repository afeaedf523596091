"""Byzantine robustness (experiments/results/ROBUSTNESS.md), as resumable cells.

    python -m experiments.robustness run [--envs CartPole-v1] [--attacks ...] [--rules ...] [--seeds 1 2 3] \
        [--jobs 2] [--results DIR]
    python -m experiments.robustness report

Every cell trains ``--clients`` (10) clients of which partitions 0..``--byzantine``-1 (3)
carry out one ``attack`` (``none`` is the clean run), under one rule: a plain aggregator
(Baseline-Sum, Baseline-Avg, R-Weighted, L-Weighted) or a robust rule on Baseline-Avg.
Everything else is the env's preset with ``SETTINGS`` on top; the norm screen stays at
its default, as a user gets it.

A cell runs the real ServerApp scheduler and ClientApp in one process
(:class:`fedrl.tools.local_grid.LocalGrid`), writes ``cell.json`` last and atomically, and
is skipped when the sweep starts again; an unfinished cell is resumed from its last
checkpoint. A cell is locked while it runs, so two sweeps never run it at once.

R̄_end is the mean return of the *honest* clients' rollouts over the last 10% of rounds,
so a client that lies about its reward does not move it.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import multiprocessing
import sys
import tomllib
from pathlib import Path

import numpy as np

from experiments.common import ROOT

RESULTS = ROOT / "experiments" / "results" / "robustness"
PRESETS = {"CartPole-v1": "cartpole", "HalfCheetah-v5": "halfcheetah"}
ATTACKS = ("none", "sign-flip", "scale", "noise", "random-actions", "reward-lie", "loss-lie")
PLAIN = ("baseline-sum", "baseline-avg", "rweighted", "lweighted")
ROBUST = ("median", "trimmed-mean", "krum", "multi-krum", "fedpg-br")
RULES = PLAIN + ROBUST
# Per env: a budget that fits the sweep on 2 cores. CartPole: 10 clients × ≥200 steps a round.
SETTINGS = {
    "CartPole-v1": {"num-server-rounds": 25, "min-steps": 200, "min-episodes": 1, "eval-episodes": 0},
    "HalfCheetah-v5": {"num-server-rounds": 25, "min-steps": 1000, "min-episodes": 1, "eval-episodes": 0},
}


def cell_config(env_id: str, attack: str, rule: str, seed: int, clients: int, byzantine: int) -> dict:
    """The run config of one cell."""
    preset = tomllib.loads((ROOT / "experiments" / "presets" / f"{PRESETS[env_id]}.toml").read_text())
    rc = {**preset, **SETTINGS[env_id], "seed": seed}
    if rule in PLAIN:
        rc["aggregator"] = rule
    else:
        # f = the number of attackers, so Krum keeps n − f and the trimmed mean cuts f at each end.
        rc.update({"aggregator": "baseline-avg", "robust-rule": rule, "robust-f": byzantine})
    if attack != "none":
        rc.update({"attack": attack, "byzantine-clients": ",".join(str(p) for p in range(byzantine))})
    return rc


def run_cell(cell: Path, rc: dict, clients: int) -> dict | None:
    """Run one cell (resuming an unfinished one) and return its cell.json; None if another sweep is running it."""
    done = cell / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    cell.mkdir(parents=True, exist_ok=True)
    with open(cell / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return _run_locked(cell, rc, clients)


def _run_locked(cell: Path, rc: dict, clients: int) -> dict:
    done = cell / "cell.json"
    if done.exists():  # another sweep finished it since the check above
        return json.loads(done.read_text())
    from client_app import app
    from fedrl.config import FedRLConfig
    from fedrl.federation.resume import latest_resumable
    from fedrl.tools.local_grid import LocalGrid
    from server_app import build_scheduler

    rc = {**rc, "outdir": str(cell)}
    previous = latest_resumable(cell, FedRLConfig.from_run_config(rc))
    rc["resume-from"] = str(previous) if previous else ""
    server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, clients, rc), run_id=0)
    server.run()
    assert server.recorder.path is not None
    summary = {"config": {k: v for k, v in rc.items() if k != "resume-from"}, "clients": clients,
               "run_dir": server.recorder.path.name, **summarise(server.recorder.path, rc)}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(done)
    return summary


def summarise(run_dir: Path, rc: dict) -> dict:
    """R̄_end (honest clients, last 10% of rounds), the replies left out, and who they came from."""
    attackers = {int(p) for p in str(rc.get("byzantine-clients", "")).split(",") if p}
    with open(run_dir / "clients.csv", newline="") as f:
        rollouts = [r for r in csv.DictReader(f) if r["exchange"] == "0"]
    with open(run_dir / "rounds.csv", newline="") as f:
        rounds = list(csv.DictReader(f))
    last = len(rounds)
    tail = max(1, round(0.1 * last))
    honest = [float(r["episodic_return"]) for r in rollouts
              if int(r["round"]) > last - tail and int(r["partition_id"]) not in attackers]
    return {"r_end": float(np.mean(honest)), "rounds": last,
            "env_steps": int(rounds[-1]["env_steps"]),
            "left_out": sum(int(r["rejected_replies"]) + int(r["screened_replies"]) for r in rounds),
            "skipped_steps": sum(int(r["skipped_steps"]) for r in rounds),
            "wall_time_s": float(rounds[-1]["wall_time_s"])}


def _run(args: tuple[Path, dict, int]) -> dict | None:
    return run_cell(*args)


def cells(envs: list[str], attacks: list[str], rules: list[str], seeds: list[int], clients: int,
          byzantine: int, results: Path = RESULTS) -> list[tuple[Path, dict, int]]:
    """Every (env, attack, rule, seed) cell under ``results``; one seed's whole grid before the next seed's."""
    return [(results / env / attack / rule / f"seed{seed}", cell_config(env, attack, rule, seed, clients, byzantine),
             clients) for env in envs for seed in seeds for attack in attacks for rule in rules]


def _cells(results: Path) -> dict[tuple[str, str, str], list[dict]]:
    """(env, attack, rule) -> the cell.json of each finished seed, with the machine it ran on."""
    by: dict[tuple[str, str, str], list[dict]] = {}
    for done in sorted(results.glob("*/*/*/seed*/cell.json")):
        env, attack, rule = done.parts[-5:-2]
        cell = json.loads(done.read_text())
        config = done.parent / cell.get("run_dir", "") / "config.json"
        if config.is_file():
            info = json.loads(config.read_text())
            cell["machine"] = f"{info['machine']['cpu']} ({info['machine']['cpu_count']} cores), " \
                              f"torch {info['versions']['torch']}"
        by.setdefault((env, attack, rule), []).append(cell)
    return by


def report(results: Path = RESULTS) -> str:
    """The tables of ROBUSTNESS.md from every finished cell under ``results``, with the two targets checked."""
    by = _cells(results)
    lines = []
    for env in sorted({k[0] for k in by}):
        clean = [c["r_end"] for c in by.get((env, "none", "baseline-avg"), [])]
        base = float(np.mean(clean)) if clean else float("nan")
        attacks = [a for a in ATTACKS if any(k[:2] == (env, a) for k in by)]
        pct = {k: 100 * float(np.mean([c["r_end"] for c in v])) / base for k, v in by.items() if k[0] == env}
        lines += [f"### {env}", "",
                  f"R̄_end of the honest clients, mean ± std over seeds, and % of the clean Baseline-Avg "
                  f"({base:.1f}); n = seeds.", "",
                  "| rule | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
        for rule in RULES:
            row = []
            for attack in attacks:
                values = [c["r_end"] for c in by.get((env, attack, rule), [])]
                row.append(f"{np.mean(values):.1f} ± {np.std(values):.1f} ({pct[(env, attack, rule)]:.0f}%, "
                           f"n={len(values)})" if values else "—")
            lines.append(f"| {rule} | " + " | ".join(row) + " |")
        lines += ["", "Replies left out per run (norm screen, robust rule, non-finite result, refused), mean over "
                  "seeds:", "", "| rule | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
        for rule in RULES:
            row = [f"{np.mean([c['left_out'] for c in by[(env, a, rule)]]):.0f}" if (env, a, rule) in by else "—"
                   for a in attacks]
            lines.append(f"| {rule} | " + " | ".join(row) + " |")
        lines += ["", "Target: the best robust rule keeps ≥ 80% of the clean R̄_end under every attack.", ""]
        for attack in attacks[1:]:
            scored = [(pct[(env, attack, r)], r) for r in ROBUST if (env, attack, r) in pct]
            if scored:
                best, rule = max(scored)
                lines.append(f"- {attack}: best {rule}, {best:.0f}%: {'met' if best >= 80 else 'missed'}")
        lines += ["", "One rule for every attack: each robust rule's worst share across the attacks.", ""]
        for rule in ROBUST:
            scored = [(pct[(env, a, rule)], a) for a in attacks[1:] if (env, a, rule) in pct]
            if scored:
                worst, attack = min(scored)
                lines.append(f"- {rule}: {worst:.0f}% (under {attack}){': ≥ 80%' if worst >= 80 else ''}")
        lines += ["", "Target: with no attack, every robust rule stays within 5% of the clean Baseline-Avg.", ""]
        for rule in ROBUST:
            if (env, "none", rule) in pct:
                p = pct[(env, "none", rule)]
                lines.append(f"- {rule}: {p:.0f}%: {'met' if abs(p - 100) <= 5 else 'missed'}")
        machines: dict[str, int] = {}
        for (e, _, _), cells in by.items():
            for c in cells:
                if e == env:
                    machines[c.get("machine", "unknown")] = machines.get(c.get("machine", "unknown"), 0) + 1
        lines += ["", "Cells per machine: " + "; ".join(f"{m}: {n}" for m, n in sorted(machines.items())) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m experiments.robustness", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--envs", nargs="+", choices=list(PRESETS), default=["CartPole-v1"])
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--byzantine", type=int, default=3, help="partitions 0..B-1 attack")
    parser.add_argument("--jobs", type=int, default=2, help="cells run at once (one core each)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the cells live")
    args = parser.parse_args(argv)
    if args.command == "report":
        print(report(args.results))
        return 0
    todo = cells(args.envs, args.attacks, args.rules, args.seeds, args.clients, args.byzantine, args.results)
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for (cell, _, _), summary in zip(todo, pool.imap(_run, todo)):
            if summary is None:
                print(f"{cell}: another sweep is running it; skipped", flush=True)
                continue
            print(f"{summary['run_dir']}: R̄_end {summary['r_end']:.1f} left out {summary['left_out']} "
                  f"in {summary['wall_time_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
