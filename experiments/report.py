"""Tables and plots of a sweep, in the paper's form.

    python -m experiments.report <runs-dir> [<runs-dir> ...] --out <dir> [--eval-episodes 20]
    python -m experiments.report async [experiments/results/async] [--out experiments/results]

The ``async`` form reports the asynchronous experiments (:mod:`experiments.async_report`):
return against simulated time, wall time and env steps, and staleness histograms.

Reads every complete cell of ``experiments.sweep`` and writes ``report.md`` (Tables
1-7 and 95% confidence intervals), ``summary.csv`` and PNG plots (return against env
steps per environment, model sizes on LunarLander, normalised against un-normalised
weights, and % of Baseline-Sum per environment). With ``--eval-episodes N`` it also
plays each run's final model deterministically (as ``fedrl.evaluate``, episodes
seeded 0..N-1) and reports the mean over seeds; the returns are kept in the run's
``eval.json``, so each model is played once.

Sweep output lives on scratch disks that do not outlast a machine, so the report also
archives what it read: ``<out>/cells/`` gets each cell's ``cell.json``, ``config.json``,
``rounds.csv`` and ``eval.json`` (no model), laid out like a runs dir. Passing that folder
back in as a runs dir (after the fresh ones, which win for a cell found in both)
reproduces the tables without the original runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiments.sweep import Cell, is_complete

BASELINE = "baseline-sum"
# The paper's Table 6 thresholds for the running score (factor 0.9).
THRESHOLDS = {"LunarLander-v3": 80.0, "CartPole-v1": 400.0, "BipedalWalker-v3": 200.0,
              "HalfCheetah-v5": 2500.0, "HumanoidStandup-v5": 1.3e5}
VARIANT_ORDER = ["rweighted", "lweighted", "baseline-sum", "baseline-avg", "fedavg", "fedprox",
                 "rweighted-norm", "lweighted-norm"]
# Two-sided 95% Student-t critical values by degrees of freedom (normal beyond 30).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 25: 2.060, 30: 2.042}


@dataclass
class Run:
    """One seed's result: its rounds as (round, env_steps, return) arrays."""

    seed: int
    rounds: np.ndarray
    env_steps: np.ndarray
    returns: np.ndarray
    seconds: float = 0.0
    final_eval: float = float("nan")
    source: Path | None = None

    @property
    def r_mean(self) -> float:
        """R̄ of this run: mean return over all rounds."""
        return float(self.returns.mean())

    @property
    def r_end(self) -> float:
        """R̄_end of this run: mean return over the last 10% of rounds (at least one)."""
        k = max(1, math.ceil(0.1 * len(self.returns)))
        return float(self.returns[-k:].mean())


@dataclass
class Group:
    """All seeds of one (env, variant, model size)."""

    env_id: str
    variant: str
    model_size: str
    runs: list[Run] = field(default_factory=list)

    def values(self, attr: str, seeds: set[int] | None = None) -> np.ndarray:
        """Per-seed values of ``r_mean``, ``r_end`` or ``final_eval`` (only ``seeds`` if given)."""
        return np.array([getattr(r, attr) for r in self.runs if seeds is None or r.seed in seeds])

    @property
    def seeds(self) -> set[int]:
        """The seeds this group has run."""
        return {r.seed for r in self.runs}


def final_policy_returns(run_dir: Path, episodes: int) -> list[float]:
    """Deterministic returns of the run's ``model.pt`` over ``episodes`` episodes, cached in ``eval.json``."""
    cache = run_dir / "eval.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    key = f"{episodes} episodes from seed 0"
    if key not in done:
        from fedrl.rl.checkpoint import load_policy
        from fedrl.rl.evaluate import evaluate

        if not (run_dir / "model.pt").is_file():
            cached = ", ".join(done) or "none"
            raise SystemExit(f"{run_dir}: no model.pt to play and no cached '{key}' in eval.json "
                             f"(cached: {cached}); use a matching --eval-episodes or 0")
        model, stats, cfg = load_policy(run_dir / "model.pt")
        done[key] = evaluate(model, stats, cfg.env_id, episodes)
        tmp = cache.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(done, indent=1) + "\n")
        os.replace(tmp, cache)
    return done[key]


def load(runs_dirs: Path | list[Path], eval_episodes: int = 0) -> dict[tuple[str, str, str], Group]:
    """Every complete cell under the runs dirs, grouped by (env, variant, model size).

    A cell found in several dirs is read from the first. With ``eval_episodes`` > 0 each
    run's final model is also evaluated (see the module docstring).
    """
    groups: dict[tuple[str, str, str], Group] = {}
    seen: set[Path] = set()
    for runs_dir in [runs_dirs] if isinstance(runs_dirs, Path) else runs_dirs:
        for marker in sorted(runs_dir.rglob("cell.json")):
            cell_dir = marker.parent
            relpath = cell_dir.relative_to(runs_dir)
            # Only <env>/<variant>/<size>/seed<k>: not a set-aside attempt nor a half-copied archive cell.
            if (len(relpath.parts) != 4 or not re.fullmatch(r"seed\d+", relpath.name) or relpath in seen
                    or not is_complete(cell_dir, need_model=False)):
                continue
            seen.add(relpath)
            run = _read_run(cell_dir, eval_episodes)
            groups.setdefault(relpath.parts[-4:-1], Group(*relpath.parts[-4:-1])).runs.append(run)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.seed)
    return groups


def _read_run(cell_dir: Path, eval_episodes: int) -> Run:
    info = json.loads((cell_dir / "cell.json").read_text())
    with open(cell_dir / info["run_dir"] / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    run = Run(int(info["config"]["seed"]), np.array([int(r["round"]) for r in rows]),
              np.array([float(r["env_steps"]) for r in rows]),
              np.array([float(r["episodic_return_mean"]) for r in rows]), float(info.get("seconds", 0.0)),
              source=cell_dir)
    if eval_episodes > 0:
        run.final_eval = float(np.mean(final_policy_returns(cell_dir / info["run_dir"], eval_episodes)))
    return run


def archive(groups: dict[tuple[str, str, str], Group], dest: Path) -> None:
    """Copy each run's records (not its model) to ``dest/<env>/<variant>/<size>/seed<k>/``."""
    for (env_id, variant, size), g in groups.items():
        for run in g.runs:
            target = dest / Cell(env_id, variant, size, run.seed).relpath
            if run.source is None or run.source.resolve() == target.resolve():
                continue
            info = json.loads((run.source / "cell.json").read_text())
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / info["run_dir"]).mkdir(parents=True)
            for name in ("config.json", "rounds.csv", "eval.json"):
                src = run.source / info["run_dir"] / name
                if src.is_file():
                    shutil.copy2(src, tmp / info["run_dir"] / name)
            shutil.copy2(run.source / "cell.json", tmp / "cell.json")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)


def percent_of_baseline(values: dict[str, float], baseline: str = BASELINE) -> tuple[dict[str, float], str]:
    """Each value as a % of the baseline's, with the paper's rule for negative rewards.

    When most values are negative, every value is shifted by the most negative one
    before dividing; when only some are, the negative ones are written as 0%.
    Returns the percentages (NaN where undefined) and which case applied.
    """
    if baseline not in values:
        return {k: float("nan") for k in values}, f"no {baseline} result"
    negatives = sum(v < 0 for v in values.values())
    if negatives * 2 > len(values):
        shift = min(values.values())
        denom = values[baseline] - shift
        pct = {k: (v - shift) / denom * 100 if denom > 0 else float("nan") for k, v in values.items()}
        return pct, f"most values negative: all shifted by the most negative ({shift:.2f})"
    base = values[baseline]
    if base <= 0:
        return {k: float("nan") for k in values}, f"{baseline} is not positive while most others are: % undefined"
    pct = {k: (v / base * 100 if v >= 0 else 0.0) for k, v in values.items()}
    rule = "no negative values" if negatives == 0 else f"{negatives} negative value(s) written as 0%"
    return pct, rule


def ci95(x: np.ndarray) -> float:
    """Half-width of the 95% confidence interval of the mean (t distribution); NaN for one value."""
    n = len(x)
    if n < 2:
        return float("nan")
    df = n - 1
    t = T95.get(df) or (T95[max(k for k in T95 if k <= df)] if df < 30 else 1.96)
    return float(t * x.std(ddof=1) / math.sqrt(n))


def first_crossing(run: Run, threshold: float, factor: float = 0.9) -> tuple[int, float] | None:
    """(round, env steps) where the running score s = factor·s + (1-factor)·r first reaches ``threshold``."""
    score = None
    for rnd, steps, ret in zip(run.rounds, run.env_steps, run.returns):
        score = ret if score is None else factor * score + (1 - factor) * ret
        if score >= threshold:
            return int(rnd), float(steps)
    return None


def _order(variants) -> list[str]:
    return sorted(variants, key=lambda v: (VARIANT_ORDER.index(v) if v in VARIANT_ORDER else 99, v))


def _f(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def env_table(groups: list[Group], eval_episodes: int = 0) -> tuple[list[str], list[dict]]:
    """Markdown lines of one environment's Tables 1-5 / 6 / 7 and CI, and the summary rows."""
    by_variant = {g.variant: g for g in groups}
    variants = _order(by_variant)
    r_mean = {v: float(by_variant[v].values("r_mean").mean()) for v in variants}
    r_end = {v: float(by_variant[v].values("r_end").mean()) for v in variants}
    pct_mean, rule_mean = percent_of_baseline(r_mean)
    pct_end, rule_end = percent_of_baseline(r_end)
    env_id, size = groups[0].env_id, groups[0].model_size
    threshold = THRESHOLDS.get(env_id)
    budgets = sorted({len(r.rounds) for g in groups for r in g.runs})
    steps = np.median([r.env_steps[-1] for g in groups for r in g.runs])
    budget = (f"Budget: {budgets[0]} rounds a run, median {steps:,.0f} total env steps." if len(budgets) == 1 else
              f"Budgets differ between runs ({', '.join(map(str, budgets))} rounds): compare with care.")
    lines = [f"### {env_id} ({size} model)", "", budget, "",
             "| algorithm | seeds | R̄ | R̄ % | R̄ 95% CI | R̄_end | R̄_end % | R̄_end 95% CI | var(R̄) | var(R̄_end) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for v in variants:
        g = by_variant[v]
        m, e = g.values("r_mean"), g.values("r_end")
        var_m = float(m.var(ddof=1)) if len(m) > 1 else float("nan")
        var_e = float(e.var(ddof=1)) if len(e) > 1 else float("nan")
        lines.append(f"| {v} | {len(m)} | {_f(r_mean[v])} | {_f(pct_mean[v])}% | ±{_f(ci95(m))} | {_f(r_end[v])} | "
                     f"{_f(pct_end[v])}% | ±{_f(ci95(e))} | {_f(var_m)} | {_f(var_e)} |")
        crossings = [first_crossing(r, threshold) if threshold is not None else None for r in g.runs]
        final = g.values("final_eval")
        rows.append({"env": env_id, "variant": v, "model_size": size, "seeds": len(m),
                     "rounds": int(np.median([len(r.rounds) for r in g.runs])),
                     "env_steps": int(np.median([r.env_steps[-1] for r in g.runs])),
                     "r_mean": r_mean[v], "r_mean_pct": pct_mean[v], "r_mean_ci95": ci95(m), "r_mean_var": var_m,
                     "r_end": r_end[v], "r_end_pct": pct_end[v], "r_end_ci95": ci95(e), "r_end_var": var_e,
                     "threshold": threshold,
                     "threshold_rounds": " ".join(str(c[0]) if c else f"{len(r.rounds)}+" for c, r in zip(crossings, g.runs)),
                     "threshold_steps": " ".join(str(int(c[1])) if c else f"{int(r.env_steps[-1])}+"
                                                 for c, r in zip(crossings, g.runs)),
                     "wall_time_s_mean": float(np.mean([r.seconds for r in g.runs])),
                     "final_eval_mean": float(final.mean()), "final_eval_ci95": ci95(final),
                     "final_eval_per_seed": " ".join(_f(x) for x in final)})
    lines += ["", f"Negative-reward rule: R̄: {rule_mean}; R̄_end: {rule_end}.", ""]
    paired_lines, paired = paired_table(by_variant, variants)
    lines += paired_lines
    for r in rows:
        seeds, pm, pe = paired.get(r["variant"], ([], float("nan"), float("nan")))
        r.update(paired_seeds=" ".join(map(str, seeds)), r_mean_pct_paired=pm, r_end_pct_paired=pe)
    if threshold is not None:
        lines += [f"Table 6: first round / total env steps at which the running score (factor 0.9) reaches "
                  f"{threshold:g} (per seed; N+ = not reached in N):", "",
                  "| algorithm | rounds | env steps |", "|---|---|---|"]
        lines += [f"| {r['variant']} | {r['threshold_rounds']} | {r['threshold_steps']} |" for r in rows]
        lines.append("")
    if eval_episodes > 0:
        lines += [f"Final model, deterministic policy ({eval_episodes} episodes seeded 0-{eval_episodes - 1} per "
                  "seed; mean over seeds):", "",
                  "| algorithm | seeds | return | 95% CI | per seed |", "|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['seeds']} | {_f(r['final_eval_mean'])} | ±{_f(r['final_eval_ci95'])} | "
                  f"{r['final_eval_per_seed']} |" for r in rows]
        lines.append("")
    return lines, rows


def paired_table(by_variant: dict[str, Group], variants: list[str]) -> tuple[list[str], dict[str, tuple]]:
    """% of Baseline-Sum on the seeds both ran, for variants whose seeds differ from Baseline-Sum's.

    While a sweep is incomplete the main table compares means over different seeds;
    this one pairs each such variant with Baseline-Sum's runs of the same seeds (the
    negative-reward rule applied to the pair). Returns Markdown lines (none when every
    variant has Baseline-Sum's seeds) and ``{variant: (seeds, R̄ %, R̄_end %)}``.
    """
    base = by_variant.get(BASELINE)
    if base is None:
        return [], {}
    out: dict[str, tuple] = {}
    for v in variants:
        shared = by_variant[v].seeds & base.seeds
        if v == BASELINE or by_variant[v].seeds == base.seeds or not shared:
            continue
        pcts = []
        for attr in ("r_mean", "r_end"):
            pair = {v: float(by_variant[v].values(attr, shared).mean()), BASELINE: float(base.values(attr, shared).mean())}
            pcts.append(percent_of_baseline(pair)[0][v])
        out[v] = (sorted(shared), *pcts)
    if not out:
        return [], out
    lines = [f"Paired with {BASELINE} on the seeds both ran (the seed counts above differ):", "",
             "| algorithm | seeds | R̄ % | R̄_end % |", "|---|---|---|---|"]
    lines += [f"| {v} | {' '.join(map(str, seeds))} | {_f(pm)}% | {_f(pe)}% |" for v, (seeds, pm, pe) in out.items()]
    return lines + [""], out


def _curve(runs: list[Run], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ys = np.array([np.interp(grid, r.env_steps, r.returns) for r in runs])
    mean = ys.mean(axis=0)
    half = np.array([ci95(ys[:, i]) for i in range(len(grid))]) if len(runs) > 1 else np.zeros_like(mean)
    return mean, half


def plot_curves(groups: list[Group], title: str, path: Path) -> None:
    """Mean return against env steps with a 95% CI band, one line per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in groups:
        end = min(r.env_steps[-1] for r in g.runs)
        start = max(r.env_steps[0] for r in g.runs)
        grid = np.linspace(start, end, 100)
        mean, half = _curve(g.runs, grid)
        label = g.variant if len({x.model_size for x in groups}) == 1 else f"{g.variant} ({g.model_size})"
        ax.plot(grid, mean, label=f"{label} (n={len(g.runs)})")
        ax.fill_between(grid, mean - np.nan_to_num(half), mean + np.nan_to_num(half), alpha=0.2)
    ax.set_xlabel("total env steps")
    ax.set_ylabel("mean episodic return")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_percent_bars(rows: list[dict], path: Path) -> None:
    """% of Baseline-Sum (R̄) per environment, one bar per algorithm (Figure 12)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in rows})
    variants = _order({r["variant"] for r in rows})
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, v in enumerate(variants):
        vals = [next((r["r_mean_pct"] for r in rows if r["env"] == e and r["variant"] == v), float("nan")) for e in envs]
        ax.bar(np.arange(len(envs)) + i * width, np.nan_to_num(vals), width, label=v)
    ax.axhline(100, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(envs)) + width * (len(variants) - 1) / 2, envs)
    ax.set_ylabel("R̄ as % of Baseline-Sum")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs_dirs: Path | list[Path], out: Path, eval_episodes: int = 0) -> list[dict]:
    """Write report.md, summary.csv, the plots and the ``cells/`` archive; returns the summary rows."""
    runs_dirs = [runs_dirs] if isinstance(runs_dirs, Path) else runs_dirs
    groups = load(runs_dirs, eval_episodes)
    if not groups:
        raise SystemExit(f"no complete sweep cells under {', '.join(map(str, runs_dirs))}")
    out.mkdir(parents=True, exist_ok=True)
    archive(groups, out / "cells")
    by_env: dict[str, dict[str, list[Group]]] = defaultdict(lambda: defaultdict(list))
    for (env_id, _variant, size), g in sorted(groups.items()):
        by_env[env_id][size].append(g)
    lines = ["# fedrl sweep report", "", "Runs: `cells/` (archived from "
             f"{', '.join(f'`{d}`' for d in runs_dirs)}). R̄ is the mean return over all rounds and seeds; "
             "R̄_end over the last 10% of rounds. % is of Baseline-Sum. CIs are 95% t-intervals over seeds; "
             "var is the sample variance across seeds (Table 7).", ""]
    rows: list[dict] = []
    for env_id, sizes in by_env.items():
        for size, gs in sorted(sizes.items(), key=lambda kv: ["small", "medium", "large"].index(kv[0])):
            plain = [g for g in gs if not g.variant.endswith("-norm")]
            table, env_rows = env_table(gs, eval_episodes)
            lines += table
            rows += env_rows
            name = f"{env_id}_{size}"
            plot_curves(_sorted(plain), f"{env_id} ({size})", out / f"curve_{name}.png")
            lines += [f"![{name}](curve_{name}.png)", ""]
            normed = [g for g in gs if g.variant in ("rweighted", "lweighted", "rweighted-norm", "lweighted-norm")]
            if any(g.variant.endswith("-norm") for g in normed):
                plot_curves(_sorted(normed), f"{env_id} ({size}): normalised vs un-normalised weights",
                            out / f"normalised_{name}.png")
                lines += [f"![normalised {name}](normalised_{name}.png)", ""]
        if len(sizes) > 1:
            all_sizes = [g for gs in sizes.values() for g in gs if not g.variant.endswith("-norm")]
            plot_curves(all_sizes, f"{env_id}: model sizes", out / f"sizes_{env_id}.png")
            lines += [f"![sizes {env_id}](sizes_{env_id}.png)", ""]
    small = [r for r in rows if r["model_size"] == "small"] or rows
    plot_percent_bars(small, out / "percent_of_baseline_sum.png")
    lines += ["![% of Baseline-Sum](percent_of_baseline_sum.png)", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _sorted(groups: list[Group]) -> list[Group]:
    order = _order({g.variant for g in groups})
    return sorted(groups, key=lambda g: (order.index(g.variant), g.model_size))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["async"]:
        from experiments.async_report import main as async_main

        return async_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs_dirs", type=Path, nargs="+", metavar="runs_dir",
                        help="sweep runs dirs; for a cell found in several, the first wins")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval-episodes", type=int, default=0,
                        help="also play each final model deterministically for N episodes (default 0: off)")
    args = parser.parse_args(argv)
    if args.eval_episodes < 0:
        parser.error(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    # A missing dir is normal for the archive before its first report, so only all missing is an error.
    found = [d.expanduser() for d in args.runs_dirs if d.expanduser().is_dir()]
    if not found:
        parser.error(f"runs dir not found: {', '.join(map(str, args.runs_dirs))}")
    for d in args.runs_dirs:
        if d.expanduser() not in found:
            print(f"report: no runs dir at {d}, skipped")
    rows = write_report(found, args.out, args.eval_episodes)
    print(f"report: {len(rows)} groups -> {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
