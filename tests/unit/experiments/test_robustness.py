"""The robustness grid: cell configs, honest-only R̄_end, the per-cell lock and the report."""

from __future__ import annotations

import csv
import fcntl
import json

from experiments import robustness


def test_cell_configs_attack_the_first_partitions_and_put_robust_rules_on_baseline_avg():
    rc = robustness.cell_config("CartPole-v1", "sign-flip", "krum", 2, 10, 3)
    assert rc["aggregator"] == "baseline-avg" and rc["robust-rule"] == "krum" and rc["robust-f"] == 3
    assert rc["byzantine-clients"] == "0,1,2" and rc["attack"] == "sign-flip" and rc["seed"] == 2
    clean = robustness.cell_config("CartPole-v1", "none", "lweighted", 1, 10, 3)
    assert clean["aggregator"] == "lweighted" and "attack" not in clean and "robust-rule" not in clean


def write_run(run_dir, rounds, returns):
    run_dir.mkdir(parents=True)
    with open(run_dir / "rounds.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["round", "env_steps", "rejected_replies", "screened_replies", "skipped_steps",
                               "wall_time_s"])
        w.writeheader()
        w.writerows({"round": r, "env_steps": 100 * r, "rejected_replies": 0, "screened_replies": 2,
                     "skipped_steps": 0, "wall_time_s": r} for r in range(1, rounds + 1))
    with open(run_dir / "clients.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["round", "exchange", "partition_id", "episodic_return"])
        w.writeheader()
        w.writerows({"round": r, "exchange": 0, "partition_id": p, "episodic_return": returns(r, p)}
                    for r in range(1, rounds + 1) for p in range(3))


def test_r_end_counts_only_the_honest_clients_over_the_last_tenth_of_rounds(tmp_path):
    # 20 rounds: the last 2 count; partition 0 lies about its reward.
    write_run(tmp_path / "run", 20, lambda r, p: 1e6 if p == 0 else 10.0 * r + p)
    summary = robustness.summarise(tmp_path / "run", {"byzantine-clients": "0"})
    assert summary["r_end"] == (191 + 192 + 201 + 202) / 4
    assert summary["left_out"] == 40 and summary["rounds"] == 20 and summary["env_steps"] == 2000


def test_a_locked_cell_is_skipped_and_a_finished_one_read(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    with open(cell / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert robustness.run_cell(cell, {}, 10) is None
    (cell / "cell.json").write_text(json.dumps({"r_end": 5.0}))
    assert robustness.run_cell(cell, {}, 10) == {"r_end": 5.0}


def test_report_gives_each_rule_and_attack_as_a_share_of_the_clean_baseline_avg(tmp_path):
    for attack, rule, seed, r_end in [("none", "baseline-avg", 1, 400.0), ("none", "baseline-avg", 2, 600.0),
                                      ("sign-flip", "krum", 1, 250.0)]:
        cell = tmp_path / "CartPole-v1" / attack / rule / f"seed{seed}"
        cell.mkdir(parents=True)
        (cell / "cell.json").write_text(json.dumps({"r_end": r_end, "left_out": 3}))
    text = robustness.report(tmp_path)
    assert "clean Baseline-Avg (500.0)" in text
    assert "| baseline-avg | 500.0 ± 100.0 (100%, n=2) | — |" in text
    assert "| krum | — | 250.0 ± 0.0 (50%, n=1) |" in text
    assert "- sign-flip: best krum, 50%: missed" in text
