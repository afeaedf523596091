"""Do two commits train to the same numbers? Fixed-seed runs at each, compared column by column.

    python scripts/compare_commits.py BASE [HEAD] [--cache DIR] [--rounds 3]

Each commit is checked out into a temporary git worktree, with an environment of its
own that sees this project's installed packages but imports fedrl, the ServerApp and
the ClientApp only from that worktree (the editable install would otherwise hand the
simulation's ClientApp actors the current checkout). Every config of
:data:`CONFIGS` (each aggregator on CartPole-v1 and on Pendulum-v1, a Box-action env)
runs there with a plain ``flwr run`` on one private simulation SuperLink, 2 SuperNodes.
That interface is the same at every commit, so the comparison does not depend on
internal names. ``rounds.csv`` and ``clients.csv`` of the two runs must then agree
exactly in every column both have, timing columns aside; columns only one of them has
are listed, not compared. HEAD defaults to the working tree (uncommitted changes
included). Runs are cached under ``--cache/<commit>/`` (the working tree is never
cached), so a killed comparison resumes, and a base run once made is reused.

``--base-twice`` runs the base a second time and sorts the differences: one that two runs
of the base also show is the base's own nondeterminism (for example a statistic whose last
digit depends on the order in which replies arrived), not something the change did.
``--configs PREFIX...`` keeps only the configs whose names start so.

Runs repeat to the last digit only on one kind of CPU: compare commits on one machine.
Exit status 0 when every shared column matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedrl.tools.launch import flwr_run, to_overrides  # noqa: E402
from fedrl.tools.simulation import CONNECTION, simulation_superlink  # noqa: E402

TIMING = {"rollout_ms", "rollout_compute_ms", "exchange_ms_mean", "client_compute_ms_mean", "sps", "wall_time_s"}
AGGREGATORS = ("baseline-sum", "baseline-avg", "rweighted", "lweighted", "fedavg", "fedprox")
ENVS = {"CartPole-v1": {}, "Pendulum-v1": {"normalize-reward": True}}
BUDGET = {"min-steps": 256, "min-episodes": 1, "update-epochs": 2, "num-minibatches": 2}


def configs(rounds: int) -> dict[str, dict]:
    """Name -> run config of every comparison run."""
    out = {}
    for env_id, extra in ENVS.items():
        for agg in AGGREGATORS:
            cfg = {"env-id": env_id, "aggregator": agg, "num-server-rounds": rounds, "seed": 7, **BUDGET, **extra}
            if agg == "fedprox":
                cfg["mu"] = 0.01
            out[f"{env_id}_{agg}"] = cfg
    out["CartPole-v1_lweighted-norm"] = {**out["CartPole-v1_lweighted"], "normalize-weights": True,
                                         "weight-floor-h": 4.0}
    return out


def resolve(rev: str | None) -> str | None:
    """The full sha of ``rev`` (None: the working tree)."""
    if rev is None:
        return None
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"compare_commits: {rev!r} is not a commit of {ROOT} (a sha, branch or e.g. main~1)")
    return done.stdout.strip()


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file as rows of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def isolated_env(tree: Path, where: Path) -> Path:
    """A venv in ``where`` whose Python imports the app from ``tree`` and everything else from ours; its bin dir.

    A ``.pth`` line puts our site-packages on its path without running that directory's
    own ``.pth`` files, so our editable install of fedrl is not seen there.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(where)], check=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = Path(subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; "
                                  "print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True,
                                 text=True).stdout.strip())
    (theirs / "fedrl-compare.pth").write_text(f"{tree}\n{ours}\n")
    python = where / "bin" / "python"
    for script in Path(sys.executable).parent.iterdir():
        if not script.name.startswith(("flwr", "flower-")):
            continue
        lines = script.read_text().splitlines(keepends=True)
        (where / "bin" / script.name).write_text(f"#!{python}\n" + "".join(lines[1:]))
        (where / "bin" / script.name).chmod(0o755)
    return where / "bin"


def run_all(app_dir: Path, out: Path, runs: dict[str, dict]) -> None:
    """Run every config of ``runs`` not yet in ``out`` from the app in ``app_dir``."""
    todo = {name: cfg for name, cfg in runs.items() if not (out / name / "done").is_file()}
    if not todo:
        return
    with tempfile.TemporaryDirectory() as tmp:
        bindir = isolated_env(app_dir, Path(tmp) / "venv")
        with simulation_superlink(Path(tmp), bindir) as env:
            for name, cfg in todo.items():
                run_one(app_dir, bindir, env, Path(tmp) / "runs" / name, out / name, cfg)


def run_one(app_dir: Path, bindir: Path, env: dict, scratch: Path, dest: Path, cfg: dict) -> None:
    """One ``flwr run`` of ``cfg``; its CSVs and config.json are copied to ``dest``."""
    log = scratch.parent / f"{dest.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, contextlib.redirect_stdout(f):
        run_id, status, results = flwr_run(str(app_dir), [to_overrides({**cfg, "outdir": str(scratch)})],
                                           ["num-supernodes=2 client-resources-num-cpus=1"], CONNECTION, env,
                                           bindir=bindir)
    if status != "finished:completed" or results is None:
        raise RuntimeError(f"{dest.name}: run {run_id} at {app_dir} ended {status}; its log:\n"
                           + log.read_text()[-4000:])
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for file in ("rounds.csv", "clients.csv", "config.json"):
        shutil.copy(Path(results) / file, dest / file)
    (dest / "done").write_text(json.dumps(cfg) + "\n")
    print(f"  {dest.name}: run {run_id} done", flush=True)


def runs_at(sha: str | None, cache: Path, runs: dict[str, dict]) -> Path:
    """The outputs of ``runs`` at commit ``sha`` (None: the working tree), made if missing."""
    if sha is None:
        out = Path(tempfile.mkdtemp(prefix="fedrl-compare-worktree-"))
        print(f"working tree: running {len(runs)} configs", flush=True)
        run_all(ROOT, out, runs)
        return out
    out = cache / sha
    print(f"{sha[:10]}: {sum((out / n / 'done').is_file() for n in runs)} of {len(runs)} configs cached", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), sha], check=True,
                       capture_output=True)
        try:
            run_all(tree, out, runs)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)
    return out


def compare(a: Path, b: Path, runs: dict[str, dict]) -> list[str]:
    """Every difference between the runs in ``a`` and ``b``; prints the columns compared."""
    problems: list[str] = []
    for name in runs:
        for file in ("rounds.csv", "clients.csv"):
            rows_a, rows_b = read_csv(a / name / file), read_csv(b / name / file)
            cols_a, cols_b = set(rows_a[0]) if rows_a else set(), set(rows_b[0]) if rows_b else set()
            shared = sorted((cols_a & cols_b) - TIMING)
            if len(rows_a) != len(rows_b):
                problems.append(f"{name}/{file}: {len(rows_a)} rows against {len(rows_b)}")
                continue
            for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
                diff = [c for c in shared if ra[c] != rb[c]]
                if diff:
                    problems.append(f"{name}/{file} row {i + 1}: " + ", ".join(f"{c} {ra[c]} != {rb[c]}" for c in diff))
            only = sorted(cols_a ^ cols_b)
            print(f"{name}/{file}: {len(rows_a)} rows, {len(shared)} columns compared"
                  + (f"; only in one: {', '.join(only)}" if only else ""))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare against (e.g. main~1)")
    parser.add_argument("head", nargs="?", default=None, help="the other commit (default: the working tree)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "fedrl-compare",
                        help="where runs of commits are kept between calls")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (default 3)")
    parser.add_argument("--only-base", action="store_true", help="make (or check) the base runs and stop")
    parser.add_argument("--base-twice", action="store_true",
                        help="run the base a second time and tell its own nondeterminism apart")
    parser.add_argument("--configs", nargs="+", default=None, metavar="PREFIX",
                        help="only the configs whose names start with one of these (e.g. CartPole-v1)")
    args = parser.parse_args(argv)
    # A killed comparison still stops the SuperLink it started (the with-blocks run on exit).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    runs = {name: cfg for name, cfg in configs(args.rounds).items()
            if args.configs is None or name.startswith(tuple(args.configs))}
    if not runs:
        parser.error(f"--configs {' '.join(args.configs)}: no config starts so; configs: {', '.join(configs(1))}")
    cache = args.cache.expanduser() / f"rounds{args.rounds}"
    base_sha = resolve(args.base)
    base = runs_at(base_sha, cache, runs)
    if args.only_base:
        return 0
    head = runs_at(resolve(args.head), cache, runs)
    problems = compare(base, head, runs)
    own: set[str] = set()
    if args.base_twice:
        again = runs_at(base_sha, cache / "again", runs)
        own = {line.split(": ", 1)[0] + ": " + part.split(" ", 1)[0]
               for line in compare(base, again, runs) for part in line.split(": ", 1)[1].split(", ")}
        print(f"the base against itself: {len(own)} differing (file row: column) cells")
    changed = 0
    for line in problems:
        where, parts = line.split(": ", 1)
        for part in parts.split(", "):
            mine = f"{where}: {part.split(' ', 1)[0]}" not in own
            changed += mine
            print(("DIFFERENT " if mine else "differs at the base too ") + f"{where}: {part}")
    verdict = "no difference" if not changed else f"{changed} differences"
    if args.base_twice and problems:
        verdict += f" that two runs of the base do not show ({len(problems)} rows differ in all)"
    print(f"{len(runs)} configs: {verdict}")
    return 0 if not changed else 1


if __name__ == "__main__":
    sys.exit(main())
