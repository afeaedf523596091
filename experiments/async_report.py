"""Tables and figures of the asynchronous experiments (experiments/results/ASYNC.md).

    python -m experiments.report async [experiments/results/async] [--out experiments/results]

Reads the cells of :mod:`experiments.async_sweep` and writes ``async_report.md`` and PNG
figures: evaluation return against simulated time, wall time and env steps per method
(median and 20-80% band over seeds), the simulated time each method needed to reach a
fixed return, R̄ (a run's mean evaluation return) and its sample variance across seeds
(the core paper's Table 7), and histograms of staleness and of discarded or aborted jobs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from experiments.common import ROOT

DEFAULT_IN = ROOT / "experiments" / "results" / "async"
# Evaluation returns a method must reach (mean of 5 deterministic episodes).
THRESHOLDS = {"figure4": 195.0, "nigt": -7.0}
AXES = (("sim_time", "simulated time (units)"), ("wall_time_s", "wall time (s)"), ("env_steps", "env steps"))


def read_csv(path: Path) -> list[dict]:
    """A CSV file as dicts of text."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load(root: Path) -> dict[str, dict[str, list[dict]]]:
    """{group: {method: [cell, ...]}} for every complete cell; a group is an experiment (and panel)."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for done in sorted(root.glob("**/cell.json")):
        if any(".incomplete-" in part for part in done.parts):
            continue
        cell = json.loads(done.read_text())
        rel = done.parent.relative_to(root).parts  # figure4/<method>/seedK or nigt/<panel>/<method>/seedK
        group = "/".join(rel[:-2])
        run_dir = done.parent / cell["run_dir"]
        cell["evals"] = [{k: float(v) for k, v in row.items()} for row in read_csv(run_dir / "evals.csv")]
        cell["events"] = read_csv(run_dir / "events.csv") if (run_dir / "events.csv").exists() else []
        groups[group][rel[-2]].append(cell)
    return groups


def curve(cells: list[dict], axis: str, grid: np.ndarray) -> np.ndarray:
    """Each cell's evaluation return as a step function of ``axis`` on ``grid`` (rows: cells)."""
    out = []
    for cell in cells:
        xs = np.array([e[axis] for e in cell["evals"]])
        ys = np.array([e["eval_return_mean"] for e in cell["evals"]])
        idx = np.searchsorted(xs, grid, side="right") - 1
        out.append(np.where((idx >= 0) & (grid <= xs[-1]), ys[np.clip(idx, 0, None)], np.nan))
    return np.array(out)


def time_to(cell: dict, threshold: float) -> float:
    """Simulated time of the first evaluation at or above ``threshold`` (inf if never)."""
    return next((e["sim_time"] for e in cell["evals"] if e["eval_return_mean"] >= threshold), math.inf)


def summary(methods: dict[str, list[dict]], threshold: float) -> list[dict]:
    """One table row per method."""
    rows = []
    for method, cells in methods.items():
        final = np.array([c["evals"][-1]["eval_return_mean"] for c in cells])
        # R̄: a run's mean evaluation return over the run; its variance across seeds is the paper's Table 7.
        rbar = np.array([np.mean([e["eval_return_mean"] for e in c["evals"]]) for c in cells])
        half = [np.std([e["eval_return_mean"] for e in c["evals"][len(c["evals"]) // 2:]]) for c in cells]
        times = np.array([time_to(c, threshold) for c in cells])
        reached = times[np.isfinite(times)]
        events = [e for c in cells for e in c["events"]]
        used = [e for e in events if e["outcome"] in ("applied", "batched")]
        stale = [int(e["staleness"]) for e in used if e["staleness"] != ""]
        lost = sum(e["outcome"] in ("discarded", "aborted") for e in events)
        rows.append({
            "method": method, "seeds": len(cells), "final_mean": float(final.mean()),
            "final_std": float(final.std()), "rbar": float(rbar.mean()),
            "rbar_var": float(rbar.var(ddof=1)) if len(rbar) > 1 else math.nan,
            "within_std": float(np.mean(half)), "reached": f"{len(reached)}/{len(cells)}",
            "time_median": float(np.median(times)) if len(times) else math.nan,
            "budget": cells[0]["evals"][-1]["sim_time"],
            "env_steps": float(np.mean([c["evals"][-1]["env_steps"] for c in cells])),
            "updates": float(np.mean([c["evals"][-1]["updates"] for c in cells])),
            "staleness_mean": float(np.mean(stale)) if stale else math.nan,
            "lost_share": lost / len(events) if events else math.nan})
    return rows


def plot_group(group: str, methods: dict[str, list[dict]], out: Path) -> Path:
    """Return against simulated time, wall time and env steps, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, (axis, label) in zip(axes, AXES):
        top = max(c["evals"][-1][axis] for cells in methods.values() for c in cells)
        grid = np.linspace(0, top, 200)
        for method, cells in sorted(methods.items()):
            ys = curve(cells, axis, grid)
            med = np.nanmedian(ys, axis=0)
            ax.plot(grid, med, label=f"{method} (n={len(cells)})")
            ax.fill_between(grid, np.nanpercentile(ys, 20, axis=0), np.nanpercentile(ys, 80, axis=0), alpha=0.15)
        ax.set_xlabel(label)
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{group}: median and 20-80% band over seeds")
    fig.tight_layout()
    path = out / f"async_{group.replace('/', '_')}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_staleness(groups: dict[str, dict[str, list[dict]]], out: Path) -> Path:
    """Staleness of the results each method used, and the share of its jobs it threw away."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [(g, m) for g, methods in sorted(groups.items()) for m in sorted(methods)
             if any(c["events"] for c in methods[m])]
    cols = 4
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (group, method) in zip(axes.ravel(), names):
        events = [e for c in groups[group][method] for e in c["events"]]
        stale = [int(e["staleness"]) for e in events if e["outcome"] in ("applied", "batched") and e["staleness"] != ""]
        lost = sum(e["outcome"] in ("discarded", "aborted") for e in events)
        if stale:
            ax.hist(stale, bins=range(0, max(stale) + 2), color="tab:blue")
        ax.set_title(f"{group} {method}\n{lost}/{len(events)} jobs discarded or aborted", fontsize=8)
        ax.set_xlabel("staleness (updates)", fontsize=8)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    path = out / "async_staleness.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(x: float) -> str:
    return "not reached" if x == math.inf else ("—" if isinstance(x, float) and math.isnan(x) else f"{x:.4g}")


def write(root: Path, out: Path) -> Path:
    """Write async_report.md and the figures; returns the report's path."""
    groups = load(root)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Asynchronous experiments: generated tables", "",
             f"Generated by `python -m experiments.report async {root.relative_to(ROOT) if root.is_relative_to(ROOT) else root}`"
             " from the cells of `experiments.async_sweep`. Returns are evaluation returns (5 deterministic episodes, "
             "the same seeds each time) of the current parameters, every 5% (NIGT) or 10% (figure4) of the budget.", ""]
    for group, methods in sorted(groups.items()):
        threshold = THRESHOLDS[group.split("/")[0]]
        plot = plot_group(group, methods, out)
        lines += [f"## {group}", "", f"![{group}]({plot.name})", "",
                  f"| method | seeds | final return (mean ± std over seeds) | R̄ | var(R̄) across seeds | "
                  f"within-run std, last half | reached {threshold:g} | median sim time to {threshold:g} | budget | env steps | "
                  f"updates | mean staleness | jobs discarded/aborted |", "|" + "---|" * 13]
        for r in summary(methods, threshold):
            lines.append(f"| {r['method']} | {r['seeds']} | {r['final_mean']:.1f} ± {r['final_std']:.1f} | "
                         f"{r['rbar']:.1f} | {_fmt(r['rbar_var'])} | {r['within_std']:.1f} | {r['reached']} | "
                         f"{_fmt(r['time_median'])} | "
                         f"{r['budget']:.4g} | {r['env_steps']:.0f} | {r['updates']:.0f} | {_fmt(r['staleness_mean'])} | "
                         f"{_fmt(100 * r['lost_share'])}% |")
        lines.append("")
    lines += ["## Staleness and discards", "", f"![staleness]({plot_staleness(groups, out).name})", ""]
    path = out / "async_report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m experiments.report async``)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.report async", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=DEFAULT_IN)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"no such directory: {args.results}")
    print(write(args.results.resolve(), args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
