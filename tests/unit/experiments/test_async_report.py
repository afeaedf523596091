"""The asynchronous report: curves, thresholds and tables from cells on disk."""

from __future__ import annotations

import csv
import json
import math

import numpy as np

from experiments.async_report import curve, load, summary, time_to, write
from fedrl.federation.recorder import EVAL_COLUMNS, EVENT_COLUMNS


def cell(root, group, method, seed, returns, staleness=(0, 1, 2)):
    run = root / group / method / f"seed{seed}" / "run"
    run.mkdir(parents=True)
    with open(run / "evals.csv", "w", newline="") as f:
        w = csv.DictWriter(f, EVAL_COLUMNS)
        w.writeheader()
        for t, r in enumerate(returns):
            w.writerow({"sim_time": t, "wall_time_s": 0.5 * t, "env_steps": 100 * t, "updates": t,
                        "eval_return_mean": r, "eval_return_std": 0.0, "behaviour_return": r})
    with open(run / "events.csv", "w", newline="") as f:
        w = csv.DictWriter(f, EVENT_COLUMNS, restval="")
        w.writeheader()
        for s in staleness:
            w.writerow({"outcome": "applied", "staleness": s, "partition_id": 0})
        w.writerow({"outcome": "discarded", "partition_id": 1})
    (run.parent / "cell.json").write_text(json.dumps({"run_dir": "run", "config": {}, "clients": 2}))


def test_threshold_times_tables_and_figures(tmp_path):
    root = tmp_path / "async"
    cell(root, "nigt/a", "rennala-nigt", 1, [-20, -10, -6, -5])
    cell(root, "nigt/a", "rennala-nigt", 2, [-20, -12, -9, -8])
    cell(root, "nigt/a", "sync-nigt", 1, [-20, -19, -18, -6])
    groups = load(root)
    assert sorted(groups["nigt/a"]) == ["rennala-nigt", "sync-nigt"]
    first = groups["nigt/a"]["rennala-nigt"][0]
    assert time_to(first, -7.0) == 2.0 and time_to(groups["nigt/a"]["rennala-nigt"][1], -7.0) == math.inf
    ys = curve([first], "sim_time", np.array([0.0, 1.5, 3.0, 4.0]))
    assert ys[0, :3].tolist() == [-20, -10, -5] and math.isnan(ys[0, 3])  # nothing past the run's end
    rows = {r["method"]: r for r in summary(groups["nigt/a"], -7.0)}
    assert rows["rennala-nigt"]["reached"] == "1/2" and rows["sync-nigt"]["time_median"] == 3.0
    assert rows["rennala-nigt"]["staleness_mean"] == 1.0 and rows["rennala-nigt"]["lost_share"] == 0.25
    report = write(root, tmp_path / "out").read_text()
    assert "| rennala-nigt | 2 | -6.5 ± 1.5 |" in report
    assert (tmp_path / "out" / "async_nigt_a.png").stat().st_size > 0
    assert (tmp_path / "out" / "async_staleness.png").stat().st_size > 0
