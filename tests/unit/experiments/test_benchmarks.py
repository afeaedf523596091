"""The benchmark scripts' own arithmetic: per-round figures, steady state, and the memory of a process tree."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from experiments.bench_scale import tree_pss
from experiments.bench_throughput import per_round, steady


def rows(walls: list[float], steps_per_round: int = 4000) -> list[dict[str, float]]:
    """rounds.csv rows whose cumulative wall times are ``walls`` (round 1 slow: start-up)."""
    return [{"round": i + 1, "env_steps": steps_per_round * (i + 1), "wall_time_s": w, "rollout_ms": 300.0,
             "rollout_compute_ms": 290.0, "exchanges": 16, "exchange_ms_mean": 10.0}
            for i, w in enumerate(walls)]


def test_per_round_figures_show_start_up_and_split_each_round():
    out = per_round(rows([5.0, 5.5, 6.0, 6.5]))
    assert out[0]["wall_ms"] == pytest.approx(5000) and out[0]["sps"] == pytest.approx(800)
    assert out[1]["wall_ms"] == pytest.approx(500) and out[1]["sps"] == pytest.approx(8000)
    assert out[1]["update_ms"] == pytest.approx(160) and out[1]["other_ms"] == pytest.approx(40)


def test_steady_state_is_the_second_half_of_the_rounds():
    # Rounds 1-2 slow (start-up), rounds 3-6 at 0.5 s: the second half (rounds 4-6) gives 8,000 sps.
    assert steady(rows([5.0, 7.0, 7.5, 8.0, 8.5, 9.0])) == pytest.approx(8000)


def test_tree_memory_counts_a_child_process():
    alone = tree_pss(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * "
                              "len(b[::4096]); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while tree_pss(os.getpid()) < alone + 150 * 2**20:
            assert time.monotonic() < deadline, "the child's 200 MiB never showed in the tree's memory"
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()


def test_gpu_checks_reference_run_repeats_on_the_cpu():
    from experiments.gpu_check import train

    rows, params, seconds = train("cpu", 2, "CartPole-v1")
    again, params_again, _ = train("cpu", 2, "CartPole-v1")
    assert [r["episodic_return_mean"] for r in rows] == [r["episodic_return_mean"] for r in again]
    assert all(torch.equal(params[k], params_again[k]) for k in params) and len(seconds) == 2
