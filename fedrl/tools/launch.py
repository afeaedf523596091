"""``fedrl-run``: ``flwr run`` in the simulation engine, with the outcome checked.

``flwr run --stream`` exits 0 even when the run failed, and a SuperLink started
without ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` installs the app's
dependencies (torch included) into a fresh venv for every run. Without
``--superlink``, this wrapper starts a simulation SuperLink of its own (its own
FLWR_HOME, a free port, no dependency installs) and stops it when the run ends; it
streams the run, asks the SuperLink for the run's real status and exits non-zero
unless it completed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

RUN_ID = re.compile(r"Successfully started run (\d+)")
RESULTS = re.compile(r"results in (\S+)")
# Flower's own pattern for `--run-config 'k1=v1 k2="v 2"'` items.
PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def to_overrides(config: dict) -> str:
    """A ``--run-config`` string for ``config`` (strings quoted, as TOML wants)."""
    from fedrl.config import toml_value

    return " ".join(f"{k}={toml_value(v)}" for k, v in config.items())


def merge_run_config(items: list[str]) -> list[str]:
    """Merge ``--run-config`` items, later ones winning, into what ``flwr run`` accepts.

    ``flwr run`` refuses a .toml preset next to key=value pairs; a preset plus
    overrides is what users want, so the preset is read here and everything is passed
    as one key=value string.
    """
    if len(items) < 2 or not any(item.endswith(".toml") for item in items):
        return items
    merged: dict = {}
    for item in items:
        if item.endswith(".toml"):
            with open(Path(item).expanduser(), "rb") as f:
                merged.update(tomllib.load(f))
        else:
            merged.update(tomllib.loads("\n".join(f"{k} = {v}" for k, v in PAIR.findall(item))))
    return [to_overrides(merged)]


def _flwr(bindir: Path | None = None) -> str:
    """The ``flwr`` command: in ``bindir`` (default: this interpreter's), else on PATH."""
    path = str(bindir or Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    exe = shutil.which("flwr", path=path)
    if exe is None:
        raise SystemExit("fedrl-run: the `flwr` command was not found; install the project first (pip install -e .)")
    return exe


def superlinks_installing_dependencies() -> list[int]:
    """PIDs of running ``flower-superlink`` processes that will install app dependencies per run (Linux)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(arg.endswith(b"flower-superlink") for arg in cmdline[:2]):
            continue
        if b"--disable-runtime-dependency-installation" in cmdline:
            continue
        if b"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" not in environ:
            pids.append(int(proc.name))
    return pids


def run_status(run_id: str, superlink: str | None = None, env: dict | None = None,
               bindir: Path | None = None) -> str:
    """The status Flower records for ``run_id`` (e.g. ``finished:completed``)."""
    cmd = [_flwr(bindir), "ls", *([superlink] if superlink else []), "--run-id", run_id, "--format", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False).stdout
    try:
        runs = json.loads(out[out.index("{"):])["runs"]
    except (ValueError, KeyError) as exc:
        raise RuntimeError(f"could not read the status of run {run_id} from `flwr ls`: {out.strip()}") from exc
    return str(runs[0]["status"])


def flwr_run(app_dir: str, run_config: list[str], federation_config: list[str], superlink: str | None = None,
             env: dict | None = None, echo: bool = True,
             bindir: Path | None = None) -> tuple[str | None, str, str | None]:
    """Run ``flwr run --stream`` (echoing its output); returns (run id, status, results dir).

    ``bindir`` holds the Flower commands to use (default: this interpreter's).
    """
    env = dict(os.environ if env is None else env)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    # flwr starts `flower-superlink` from PATH; an unactivated venv's bin is not on it.
    env["PATH"] = str(bindir or Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [_flwr(bindir), "run", app_dir, *([superlink] if superlink else []), "--stream"]
    for item in merge_run_config(run_config):
        cmd += ["--run-config", item]
    for item in federation_config:
        cmd += ["--federation-config", item]
    run_id = results = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            if run_id is None and (m := RUN_ID.search(line)):
                run_id = m.group(1)
            if m := RESULTS.search(line):
                results = m.group(1)
    if run_id is None:
        return None, f"not started (flwr run exited {proc.returncode})", None
    return run_id, run_status(run_id, superlink, env, bindir), results


def resume_run_config(parser: argparse.ArgumentParser, run_dir: Path, extra: list[str]) -> tuple[list[str], int]:
    """``--resume``: the run's resume.toml first, then ``extra``; and how many clients the run had."""
    from fedrl.federation.resume import CHECKPOINT, RESUME_TOML
    from fedrl.rl.checkpoint import safe_load

    run_dir = run_dir.expanduser().resolve()
    for name in (RESUME_TOML, CHECKPOINT):
        if not (run_dir / name).is_file():
            parser.error(f"--resume {run_dir}: no {name} there; allowed: the directory of a synchronous fedrl run "
                         "that finished at least its set-up")
    try:
        clients = int(safe_load(run_dir / CHECKPOINT).get("num_nodes", 0))
    except ValueError as exc:
        parser.error(f"--resume {run_dir}: {exc}")
    return [str(run_dir / RESUME_TOML), *extra], clients


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="fedrl-run", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default=".", help="the Flower app directory (default: .)")
    parser.add_argument("--clients", type=int, default=None,
                        help="simulated SuperNodes (default: 4, or as many as the resumed run had)")
    parser.add_argument("--run-config", "-c", action="append", default=[],
                        help="overrides or a .toml preset, as for `flwr run` (strings quoted: 'aggregator=\"rweighted\"')")
    parser.add_argument("--superlink", default=None, help="a SuperLink connection from $FLWR_HOME/config.toml")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue a killed run from its last checkpoint, with its own config "
                             "(RUN_DIR/resume.toml); --run-config may still change reply-timeout and the like")
    args = parser.parse_args(argv)
    if args.resume is not None:
        args.run_config, clients = resume_run_config(parser, Path(args.resume), args.run_config)
        args.clients = args.clients or clients
    args.clients = args.clients or 4
    if args.clients < 1:
        parser.error(f"--clients must be >= 1, got {args.clients}")
    if args.superlink is not None and (pids := superlinks_installing_dependencies()):
        print(f"fedrl-run: warning: a local SuperLink (pid {', '.join(map(str, pids))}) was started without "
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 and will install the app's dependencies into a new "
              "venv for every run; stop it (kill PID), or leave out --superlink and fedrl-run starts its own.")
    # One CPU per simulated client lets Ray run as many clients at once as there are cores.
    federation = [f"num-supernodes={args.clients} client-resources-num-cpus=1"]
    for item in args.run_config:
        if item.endswith(".toml") and not Path(item).expanduser().is_file():
            parser.error(f"--run-config: no such preset file: {item}")
    try:
        merge_run_config(args.run_config)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"--run-config: {exc}")
    if args.superlink is not None:
        run_id, status, results = flwr_run(args.app, args.run_config, federation, args.superlink)
    else:
        # A SuperLink of its own on a free port, stopped (with all it started) when the run ends: nothing is
        # left running, and a SuperLink someone else left on Flower's default port is never used.
        from fedrl.tools.simulation import CONNECTION, simulation_superlink

        with tempfile.TemporaryDirectory(prefix="fedrl-run-") as tmp, simulation_superlink(Path(tmp)) as env:
            run_id, status, results = flwr_run(args.app, args.run_config, federation, CONNECTION, env)
    print(f"fedrl-run: run {run_id} status {status}")
    if results:
        print(f"fedrl-run: results in {results}")
    return 0 if status == "finished:completed" else 1


if __name__ == "__main__":
    sys.exit(main())
