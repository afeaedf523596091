"""The sweep report on small synthetic result folders with hand-computed values."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from experiments.report import Run, ci95, first_crossing, load, main, percent_of_baseline, write_report


def make_cell(runs_dir, env, variant, size, seed, returns, steps_per_round=100):
    cell = runs_dir / env / variant / size / f"seed{seed}"
    run_dir = cell / f"{env}_{variant}_seed{seed}_run1"
    run_dir.mkdir(parents=True)
    with open(run_dir / "rounds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "env_steps", "episodic_return_mean"])
        for i, r in enumerate(returns, 1):
            w.writerow([i, i * steps_per_round, r])
    (run_dir / "model.pt").write_bytes(b"x")
    info = {"status": "finished:completed", "rounds": len(returns), "run_dir": run_dir.name,
            "config": {"seed": seed}, "seconds": 5.0}
    (cell / "cell.json").write_text(json.dumps(info))
    return cell


def test_percent_rule_mirrors_the_papers_table_2():
    # LunarLander R̄ column: most negative -> shift by the most negative value.
    values = {"rweighted": -52.69, "lweighted": -6.41, "baseline-sum": -53.94, "baseline-avg": -132.84,
              "fedavg": -121.93}
    pct, rule = percent_of_baseline(values)
    assert "shifted" in rule
    assert pct["rweighted"] == pytest.approx(101.58, abs=0.01)
    assert pct["lweighted"] == pytest.approx(160.24, abs=0.01)
    assert pct["fedavg"] == pytest.approx(13.82, abs=0.01)
    assert pct["baseline-avg"] == 0.0 and pct["baseline-sum"] == 100.0
    # R̄_end column: only two negative -> those are 0%, the rest plain ratios.
    values = {"rweighted": 84.55, "lweighted": 108.01, "baseline-sum": 78.39, "baseline-avg": -36.45,
              "fedavg": -30.28}
    pct, rule = percent_of_baseline(values)
    assert "written as 0%" in rule
    assert pct["rweighted"] == pytest.approx(107.86, abs=0.01)
    assert pct["lweighted"] == pytest.approx(137.79, abs=0.01)
    assert pct["baseline-avg"] == 0.0 and pct["fedavg"] == 0.0


def test_threshold_crossing_uses_running_score():
    run = Run(1, np.arange(1, 6), np.array([10.0, 20, 30, 40, 50]), np.array([100.0, 500, 500, 500, 500]))
    # scores: 100, 140, 176, 208.4, 237.56
    assert first_crossing(run, 200.0) == (4, 40.0)
    assert first_crossing(run, 100.0) == (1, 10.0)
    assert first_crossing(run, 300.0) is None


def test_ci95_hand_computed():
    x = np.array([1.0, 2.0, 3.0])
    assert ci95(x) == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(ci95(np.array([1.0])))


def test_report_tables_and_files(tmp_path):
    runs = tmp_path / "runs"
    # 10 rounds each, so R̄_end is the last round.
    make_cell(runs, "CartPole-v1", "baseline-sum", "small", 1, [100] * 9 + [200])
    make_cell(runs, "CartPole-v1", "baseline-sum", "small", 2, [300] * 9 + [400])
    make_cell(runs, "CartPole-v1", "lweighted", "small", 1, [150] * 9 + [450])
    make_cell(runs, "CartPole-v1", "lweighted", "small", 2, [250] * 9 + [450])
    make_cell(runs, "CartPole-v1", "lweighted-norm", "small", 1, [50] * 10)
    incomplete = make_cell(runs, "CartPole-v1", "rweighted", "small", 1, [1000] * 10)
    (incomplete / "cell.json").unlink()
    groups = load(runs)
    assert set(groups) == {("CartPole-v1", v, "small") for v in ("baseline-sum", "lweighted", "lweighted-norm")}
    rows = write_report(runs, tmp_path / "out")
    by = {r["variant"]: r for r in rows}
    # baseline-sum: R̄ per seed 110 and 310 -> 210; R̄_end 200 and 400 -> 300
    assert by["baseline-sum"]["r_mean"] == pytest.approx(210.0)
    assert by["baseline-sum"]["r_end"] == pytest.approx(300.0)
    # lweighted: R̄ per seed 180 and 270 -> 225 = 107.14%; R̄_end 450 = 150%
    assert by["lweighted"]["r_mean_pct"] == pytest.approx(225 / 210 * 100)
    assert by["lweighted"]["r_end_pct"] == pytest.approx(150.0)
    assert by["baseline-sum"]["r_mean_var"] == pytest.approx(20000.0)
    # threshold 400: seed 2 of baseline-sum scores 300.. then 0.9*300+0.1*400 = 310 -> never
    assert by["baseline-sum"]["threshold_rounds"] == "10+ 10+"
    assert by["baseline-sum"]["threshold_steps"] == "1000+ 1000+"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "no negative values" in report and "| lweighted | 2 | 225.00 | 107.14% |" in report
    assert "Budget: 10 rounds a run, median 1,000 total env steps." in report
    for png in ("curve_CartPole-v1_small.png", "normalised_CartPole-v1_small.png", "percent_of_baseline_sum.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000
    assert (tmp_path / "out" / "summary.csv").is_file()


def test_unequal_seeds_are_also_compared_pairwise(tmp_path):
    runs = tmp_path / "runs"
    make_cell(runs, "CartPole-v1", "baseline-sum", "small", 1, [100] * 10)
    make_cell(runs, "CartPole-v1", "baseline-sum", "small", 2, [300] * 10)
    make_cell(runs, "CartPole-v1", "baseline-sum", "small", 3, [500] * 9 + [50])
    make_cell(runs, "CartPole-v1", "baseline-avg", "small", 1, [100] * 10)
    make_cell(runs, "CartPole-v1", "baseline-avg", "small", 2, [300] * 10)
    make_cell(runs, "CartPole-v1", "baseline-avg", "small", 3, [500] * 10)
    make_cell(runs, "CartPole-v1", "rweighted", "small", 2, [150] * 9 + [600])
    make_cell(runs, "CartPole-v1", "rweighted", "small", 3, [200] * 10)
    rows = write_report(runs, tmp_path / "out")
    by = {r["variant"]: r for r in rows}
    # unpaired: sum R̄ = (100 + 300 + 455) / 3 = 285; rweighted (195 + 200) / 2 = 197.5
    assert by["rweighted"]["r_mean_pct"] == pytest.approx(197.5 / 285 * 100)
    # paired on seeds 2 and 3: sum R̄ (300 + 455) / 2 = 377.5, R̄_end (300 + 50) / 2 = 175
    assert by["rweighted"]["paired_seeds"] == "2 3"
    assert by["rweighted"]["r_mean_pct_paired"] == pytest.approx(197.5 / 377.5 * 100)
    assert by["rweighted"]["r_end_pct_paired"] == pytest.approx((600 + 200) / 2 / 175 * 100)
    # same seeds as the baseline: nothing to pair
    assert by["baseline-avg"]["paired_seeds"] == "" and math.isnan(by["baseline-avg"]["r_mean_pct_paired"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| rweighted | 2 3 | 52.32% | 228.57% |" in report


def test_mixed_budgets_are_flagged(tmp_path):
    runs = tmp_path / "runs"
    make_cell(runs, "CartPole-v1", "baseline-sum", "small", 1, [100] * 10)
    make_cell(runs, "CartPole-v1", "rweighted", "small", 1, [100] * 20)
    write_report(runs, tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Budgets differ between runs (10, 20 rounds): compare with care." in report and "Budget:" not in report


def test_report_without_results_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no complete sweep cells"):
        write_report(tmp_path, tmp_path / "out")


def test_final_models_are_played_once_and_reported(tmp_path):
    import gymnasium as gym
    import torch

    from fedrl.config import FedRLConfig
    from fedrl.rl.checkpoint import save_policy
    from fedrl.rl.evaluate import evaluate
    from fedrl.rl.model import build_model
    from fedrl.rl.normalizer import RunningStats

    runs = tmp_path / "runs"
    env = gym.make("CartPole-v1")
    expected = []
    for seed in (1, 2):
        cell = make_cell(runs, "CartPole-v1", "baseline-sum", "small", seed, [100] * 10)
        run_dir = next(p for p in cell.iterdir() if p.is_dir())
        torch.manual_seed(seed)
        model = build_model(env.observation_space, env.action_space, "small")
        stats = RunningStats.empty((4,))
        save_policy(run_dir / "model.pt", model, stats, FedRLConfig(seed=seed))
        expected.append(np.mean(evaluate(model, stats, "CartPole-v1", 3)))
    rows = write_report(runs, tmp_path / "out", eval_episodes=3)
    assert rows[0]["final_eval_mean"] == pytest.approx(np.mean(expected))
    assert rows[0]["final_eval_ci95"] == pytest.approx(ci95(np.array(expected)))
    assert "Final model, deterministic policy (3 episodes" in (tmp_path / "out" / "report.md").read_text()
    # The returns are cached per run: a changed cache is read back instead of playing again.
    for cache in runs.rglob("eval.json"):
        cache.write_text(json.dumps({"3 episodes from seed 0": [7.0, 8.0, 9.0]}))
    assert [r.final_eval for r in load(runs, 3)[("CartPole-v1", "baseline-sum", "small")].runs] == [8.0, 8.0]
    assert math.isnan(load(runs)[("CartPole-v1", "baseline-sum", "small")].runs[0].final_eval)


def test_archived_cells_reproduce_the_tables_without_models(tmp_path):
    runs = tmp_path / "runs"
    for seed, returns in ((1, [100] * 10), (2, [300] * 10)):
        cell = make_cell(runs, "CartPole-v1", "baseline-sum", "small", seed, returns)
        run_dir = next(p for p in cell.iterdir() if p.is_dir())
        (run_dir / "eval.json").write_text(json.dumps({"3 episodes from seed 0": [float(seed)] * 3}))
    rows = write_report(runs, tmp_path / "out", eval_episodes=3)
    cells = tmp_path / "out" / "cells"
    assert sorted(p.name for p in cells.rglob("*") if p.is_file()) == ["cell.json", "cell.json", "eval.json",
                                                                         "eval.json", "rounds.csv", "rounds.csv"]
    # The archive alone gives the same tables, final-model column included; a copy that was
    # cut off before its rename (seed1.tmp) is not read as a third run.
    seed1 = cells / "CartPole-v1" / "baseline-sum" / "small" / "seed1"
    shutil.copytree(seed1, seed1.with_name("seed1.tmp"))
    again = write_report(cells, tmp_path / "out2", eval_episodes=3)
    assert json.dumps(again) == json.dumps(rows)  # NaN-safe equality
    assert rows[0]["final_eval_mean"] == pytest.approx(1.5)
    # A fresh runs dir given first wins over the archive; cells only in the archive still count.
    fresh = tmp_path / "fresh"
    make_cell(fresh, "CartPole-v1", "baseline-sum", "small", 2, [500] * 10)
    merged = write_report([fresh, cells], tmp_path / "out3")
    assert merged[0]["r_mean"] == pytest.approx((100 + 500) / 2)
    # No model and no cached returns for that episode count: a clear error, not a silent NaN.
    with pytest.raises(SystemExit, match="no model.pt to play.*cached: 3 episodes from seed 0"):
        write_report(cells, tmp_path / "out4", eval_episodes=5)


def test_command_line_skips_a_missing_archive_but_not_every_dir(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_cell(runs, "CartPole-v1", "baseline-sum", "small", 1, [100] * 10)
    out = tmp_path / "results"
    assert main([str(runs), str(out / "cells"), "--out", str(out)]) == 0
    assert "no runs dir at" in capsys.readouterr().out
    assert (out / "cells" / "CartPole-v1" / "baseline-sum" / "small" / "seed1" / "cell.json").is_file()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    assert "runs dir not found" in capsys.readouterr().err
