"""The asynchronous sweep's budgets and its resumable cells."""

from __future__ import annotations

import json
import math

import pytest

from experiments import async_sweep


def test_each_panel_budgets_the_time_of_a_synchronous_nigt_round():
    d = 10_000  # d^(1/4) = 10
    assert async_sweep.sync_round_time("a", d) == 1.0
    assert async_sweep.sync_round_time("b", d) == pytest.approx(2 * math.sqrt(10))
    assert async_sweep.sync_round_time("c", d) == pytest.approx(math.sqrt(10) + 10 * math.sqrt(10))
    assert async_sweep.sync_kappa("c", d) == pytest.approx(10 * math.sqrt(10))


def test_a_complete_cell_is_not_run_again_and_an_unfinished_one_is_kept_aside(tmp_path, monkeypatch):
    done = tmp_path / "done"
    done.mkdir()
    (done / "cell.json").write_text(json.dumps({"evals": [], "marker": 1}))
    assert async_sweep.run_cell(done, {}, 2)["marker"] == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "partial.csv").write_text("x\n")
    rc = {"aggregator": "a3c", "time-budget": 1.0, "job-steps": 16, "steps-per-unit": 16, "eval-episodes": 1,
          "eval-every": 1.0}
    summary = async_sweep.run_cell(broken, rc, 1)
    assert (tmp_path / "broken.incomplete-1" / "partial.csv").is_file()
    assert [e["sim_time"] for e in summary["evals"]] == [0.0, 1.0]
    assert json.loads((broken / "cell.json").read_text())["run_dir"] == summary["run_dir"]
