"""``fedrl-plot RUN_DIR...``: return against env steps and against wall time, one line per run, in one PNG.

A synchronous run is drawn from ``rounds.csv`` (the clients' mean episodic return each
round); an asynchronous one, which has no rounds, from ``evals.csv`` (the evaluations).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def read_curve(run_dir: Path) -> tuple[str, list[float], list[float], list[float]]:
    """(what is drawn, env steps, wall seconds, returns) of one run directory; ValueError if it has neither CSV."""
    for name, column, label in (("rounds.csv", "episodic_return_mean", "training return"),
                                ("evals.csv", "eval_return_mean", "evaluation return")):
        path = run_dir / name
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get(column) not in (None, "")]
        points = [(float(r["env_steps"]), float(r["wall_time_s"]), float(r[column])) for r in rows]
        points = [p for p in points if all(math.isfinite(x) for x in p)]
        if points:
            steps, wall, returns = (list(x) for x in zip(*points))
            return label, steps, wall, returns
    raise ValueError(f"{run_dir}: no rounds.csv or evals.csv with a finite return in it; allowed: a fedrl run "
                     "directory (<outdir>/<env>_<aggregator>_seed<seed>_run<id>)")


def plot(run_dirs: list[Path], out: Path) -> Path:
    """Draw every run of ``run_dirs`` into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(d, *read_curve(d)) for d in run_dirs]
    fig, (by_steps, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run_dir, label, steps, wall, returns in curves:
        by_steps.plot(steps, returns, label=f"{run_dir.name} ({label})")
        by_time.plot(wall, returns, label=run_dir.name)
    by_steps.set(xlabel="env steps", ylabel="return", title="return against env steps")
    by_time.set(xlabel="wall time (s)", ylabel="return", title="return against wall time")
    for ax in (by_steps, by_time):
        ax.grid(alpha=0.3)
    by_steps.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="fedrl-plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", "-o", type=Path, default=Path("fedrl-plot.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    for d in args.run_dirs:
        if not d.expanduser().is_dir():
            parser.error(f"{d}: not a directory; allowed: fedrl run directories")
    try:
        out = plot([d.expanduser() for d in args.run_dirs], args.out)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"fedrl-plot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
