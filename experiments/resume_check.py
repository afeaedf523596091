"""Kill a run with SIGKILL at each kill point, resume it, and compare it with an uninterrupted run.

    python -m experiments.resume_check [--rounds 8] [--clients 4] [--out DIR]

The run is the CartPole preset with ``--clients`` clients. The in-process kill points run
the real scheduler and clients in a child process (LocalGrid), which SIGKILLs itself:
``mid-rollout`` (at a client's rollout in round 4), ``mid-exchange`` (at a gradient
exchange in round 4), ``checkpoint-write`` (half-way through writing round 4's
checkpoint) and ``after-rows`` (round 4's rows written, its checkpoint not yet). Each is
then resumed in a fresh process. ``superlink`` runs ``flwr run`` on a private simulation
SuperLink, SIGKILLs the SuperLink and all it started once round 4's rows are there, and
resumes with ``fedrl-run --resume`` on a new one; its reference is an uninterrupted
``flwr run``. Prints one line per kill point: the rounds the killed run had written,
whether every non-timing column of rounds.csv, all of clients.csv and every tensor of
model.pt match the reference.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from experiments.common import ROOT

KILL_ROUND = 4
TIMING = {"rollout_ms", "rollout_compute_ms", "exchange_ms_mean", "client_compute_ms_mean", "sps", "wall_time_s"}
# Summed in reply arrival order, which two simulation runs need not share (last bits only).
ARRIVAL_ORDER = {"episodic_return_mean", "episodic_return_std"}
IN_PROCESS = ("mid-rollout", "mid-exchange", "checkpoint-write", "after-rows")


def config(rounds: int, outdir: Path) -> dict:
    """The CartPole preset for ``rounds`` rounds, without evaluations, writing under ``outdir``."""
    preset = tomllib.loads((ROOT / "experiments" / "presets" / "cartpole.toml").read_text())
    return {**preset, "num-server-rounds": rounds, "eval-episodes": 0, "outdir": str(outdir)}


def _die(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def run_in_process(rc: dict, clients: int, kill_at: str = "") -> None:
    """Run ``rc`` on LocalGrid in this process; SIGKILL it at ``kill_at`` ("" runs to the end)."""
    from client_app import app
    from fedrl.config import FedRLConfig
    from fedrl.federation import resume, sync
    from fedrl.tools.local_grid import LocalGrid
    from server_app import build_scheduler

    def tamper(instruction, reply, partition_id):
        conf = instruction.content.config_records.get("config")
        kind = {"mid-rollout": "train.rollout", "mid-exchange": "train.gradient"}.get(kill_at)
        if kind and instruction.metadata.message_type == kind and conf.get("server-round") == KILL_ROUND:
            # A rollout: half-way through the clients. An exchange: one in the second epoch.
            if partition_id == clients // 2 and (kind == "train.rollout" or conf.get("epoch") == 1):
                _die()
        return reply

    if kill_at == "checkpoint-write":
        real = resume.atomic_save

        def half_then_die(obj: dict, path: Path) -> None:
            if obj["round"] == KILL_ROUND:
                with open(path.with_name(path.name + ".tmp"), "wb") as f:
                    f.write(b"\0" * 1000)
                    f.flush()
                _die()
            real(obj, path)
        resume.atomic_save = half_then_die
    if kill_at == "after-rows":
        real_save = sync.SyncScheduler._save_checkpoint

        def die_before_checkpoint(self: sync.SyncScheduler) -> None:
            if self.done_rounds == KILL_ROUND:
                _die()
            real_save(self)
        sync.SyncScheduler._save_checkpoint = die_before_checkpoint  # type: ignore[method-assign]
    server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, clients, rc, tamper=tamper), run_id=0)
    server.run()


def _child(rc: dict, clients: int, kill_at: str) -> int:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=run_in_process, args=(rc, clients, kill_at))
    proc.start()
    proc.join()
    return int(proc.exitcode or 0)


def rows(path: Path, drop: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """A CSV's rows, without the ``drop`` columns."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def compare(reference: Path, resumed: Path, arrival_order: bool = False) -> tuple[bool, bool, bool]:
    """(rounds.csv, clients.csv, model.pt) the same as the reference's."""
    import torch

    from fedrl.rl.checkpoint import load_policy

    drop = TIMING | (ARRIVAL_ORDER if arrival_order else set())
    same_rounds = rows(reference / "rounds.csv", drop) == rows(resumed / "rounds.csv", drop)
    if arrival_order:
        for a, b in zip(rows(reference / "rounds.csv"), rows(resumed / "rounds.csv")):
            same_rounds &= all(abs(float(a[k]) - float(b[k])) <= 1e-9 * max(1.0, abs(float(a[k])))
                               for k in ARRIVAL_ORDER)
    same_clients = rows(reference / "clients.csv") == rows(resumed / "clients.csv")
    ma, mb = load_policy(reference / "model.pt")[0].state_dict(), load_policy(resumed / "model.pt")[0].state_dict()
    return same_rounds, same_clients, all(torch.equal(v, mb[k]) for k, v in ma.items())


def superlink_kill(rc: dict, clients: int, tmp: Path) -> tuple[Path, Path, int]:
    """(uninterrupted run, killed-and-resumed run, rounds written when killed) on real SuperLinks."""
    from fedrl.tools.launch import flwr_run, to_overrides
    from fedrl.tools.simulation import CONNECTION, kill_superlink, simulation_superlink

    federation = [f"num-supernodes={clients} client-resources-num-cpus=1"]
    with simulation_superlink(tmp / "a") as env:
        _, status, whole = flwr_run(str(ROOT), [to_overrides({**rc, "outdir": str(tmp / "whole")})], federation,
                                    CONNECTION, env, echo=False)
    if status != "finished:completed" or whole is None:
        raise RuntimeError(f"the uninterrupted flwr run ended {status}")
    outdir = tmp / "killed"
    with simulation_superlink(tmp / "b") as env:
        cmd = [str(Path(sys.executable).parent / "flwr"), "run", str(ROOT), CONNECTION, "--stream",
               "--run-config", to_overrides({**rc, "outdir": str(outdir)}), "--federation-config", federation[0]]
        with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
            while not any(len(rows(p)) >= KILL_ROUND for p in outdir.glob("*/rounds.csv")):
                time.sleep(0.05)
            kill_superlink(env)
            proc.wait()
    (run_dir,) = [p.parent for p in outdir.glob("*/rounds.csv")]
    killed_rounds = len(rows(run_dir / "rounds.csv"))
    with simulation_superlink(tmp / "c") as env:
        subprocess.run([str(Path(sys.executable).parent / "fedrl-run"), "--app", str(ROOT), "--superlink",
                        CONNECTION, "--resume", str(run_dir)], env=env, check=True, capture_output=True)
    return Path(whole), run_dir, killed_rounds


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m experiments.resume_check", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--points", nargs="+", choices=[*IN_PROCESS, "superlink"], default=[*IN_PROCESS, "superlink"])
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    if args.rounds <= KILL_ROUND:
        parser.error(f"--rounds must be > {KILL_ROUND}, the round the kills happen in; got {args.rounds}")
    with tempfile.TemporaryDirectory(prefix="fedrl-resume-") as scratch:
        tmp = args.out.expanduser().resolve() if args.out else Path(scratch)
        print(f"CartPole preset, {args.clients} clients, {args.rounds} rounds; kills in round {KILL_ROUND}")
        print("| kill point | rounds written when killed | rounds.csv | clients.csv | model.pt |")
        print("|---|---|---|---|---|")
        reference = None
        for point in args.points:
            if point == "superlink":
                whole, run_dir, killed = superlink_kill(config(args.rounds, tmp / point), args.clients, tmp / point)
                same = compare(whole, run_dir, arrival_order=True)
            else:
                if reference is None:
                    _child(config(args.rounds, tmp / "whole"), args.clients, "")
                    (reference,) = (tmp / "whole").iterdir()
                rc = config(args.rounds, tmp / point)
                code = _child(rc, args.clients, point)
                if code != -signal.SIGKILL:
                    raise RuntimeError(f"{point}: the run was not killed (exit code {code})")
                (run_dir,) = (tmp / point).iterdir()
                killed = len(rows(run_dir / "rounds.csv"))
                _child({**rc, "resume-from": str(run_dir)}, args.clients, "")
                same = compare(reference, run_dir)
            print(f"| {point} | {killed} | " + " | ".join("same" if s else "DIFFERENT" for s in same) + " |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
