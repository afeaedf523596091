"""fedrl-plot draws one line per run from rounds.csv or evals.csv, and names a directory it cannot draw."""

from __future__ import annotations

import csv

import pytest

from fedrl.tools import plot


def write(path, columns, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)


def test_sync_and_async_runs_go_into_one_png(tmp_path):
    sync = tmp_path / "CartPole-v1_baseline-sum_seed1_run1"
    sync.mkdir()
    write(sync / "rounds.csv", ["round", "env_steps", "wall_time_s", "episodic_return_mean"],
          [{"round": i, "env_steps": 100 * i, "wall_time_s": i, "episodic_return_mean": 10 * i} for i in range(1, 4)])
    asynchronous = tmp_path / "CartPole-v1_a3c_seed1_run2"
    asynchronous.mkdir()
    write(asynchronous / "evals.csv", ["env_steps", "wall_time_s", "eval_return_mean"],
          [{"env_steps": 0, "wall_time_s": 0.5, "eval_return_mean": 9.0},
           {"env_steps": 200, "wall_time_s": 2.0, "eval_return_mean": "nan"}])
    assert plot.read_curve(sync) == ("training return", [100.0, 200.0, 300.0], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    assert plot.read_curve(asynchronous)[3] == [9.0]  # a NaN evaluation is left out
    out = tmp_path / "curves.png"
    assert plot.main([str(sync), str(asynchronous), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_directory_without_results_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        plot.main([str(tmp_path)])
    assert f"{tmp_path}: no rounds.csv or evals.csv" in capsys.readouterr().err
