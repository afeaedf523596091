"""ExpectedWait: the first-poll sleep learned from recent waits."""

from __future__ import annotations

import pytest

from fedrl.transport.waits import ExpectedWait


def test_nothing_learned_means_no_sleep():
    assert ExpectedWait().first_sleep() == 0.0


def test_first_sleep_is_a_fraction_of_the_shortest_recent_wait():
    w = ExpectedWait(fraction=0.5, window=3, warmup=0)
    for seconds in (0.3, 0.1, 0.2):
        w.observe(seconds)
    assert w.first_sleep() == pytest.approx(0.05)
    w.observe(0.4)  # 0.3 leaves the window; 0.1 is still the shortest
    assert w.first_sleep() == pytest.approx(0.05)
    w.observe(0.4)
    w.observe(0.4)  # now only slow waits remain
    assert w.first_sleep() == pytest.approx(0.2)


def test_a_message_found_at_the_first_poll_halves_the_guess():
    w = ExpectedWait(fraction=0.8, window=16, warmup=0)
    w.observe(1.0)
    sleeps = []
    for _ in range(3):
        nap = w.first_sleep()
        sleeps.append(nap)
        w.observe(nap + 0.001, slept=nap, first_poll=True)  # it was there all along
    assert sleeps == pytest.approx([0.8, 0.32, 0.128])
    w.observe(0.2, slept=0.1, first_poll=False)  # found after several polls: the wait itself counts
    assert w.waits[-1] == pytest.approx(0.2)


def test_the_first_wait_pays_for_start_up_and_is_not_learned_from():
    w = ExpectedWait(fraction=0.8)
    w.observe(9.0)  # round 1: the ClientApps import torch and build their envs
    assert w.first_sleep() == 0.0
    w.observe(0.3)
    assert w.first_sleep() == pytest.approx(0.24)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\), got 1.5"):
        ExpectedWait(fraction=1.5)
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        ExpectedWait(window=0)
    with pytest.raises(ValueError, match="warmup must be >= 0, got -1"):
        ExpectedWait(warmup=-1)
