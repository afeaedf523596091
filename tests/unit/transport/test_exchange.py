"""The exchange loop on a fake clock: it sleeps most of the usual reply time, never past the timeout."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedrl.transport import exchange as exchange_module
from fedrl.transport.exchange import exchange
from fedrl.transport.waits import ExpectedWait


class _Clock:
    """Fake ``time`` for :func:`fedrl.transport.exchange.exchange`: sleeping advances it, and so does each pull."""

    def __init__(self, pull_s: float) -> None:
        self.now, self.pull_s = 0.0, pull_s

    def monotonic(self) -> float:
        return self.now

    def thread_time(self) -> float:  # a pull here is all CPU
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Grid:
    """Two nodes whose replies can be pulled from ``ready_at`` seconds after the push."""

    def __init__(self, clock: _Clock, ready_at: float) -> None:
        self.clock, self.ready_at, self.pulls = clock, ready_at, []

    def push_messages(self, messages):
        return [f"m{m.metadata.dst_node_id}" for m in messages]

    def pull_messages(self, ids):
        self.pulls.append(self.clock.now)
        ready = self.clock.now >= self.ready_at
        self.clock.now += self.clock.pull_s
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i, src_node_id=int(i[1:])))
                for i in sorted(ids)] if ready else []


def _messages():
    return [SimpleNamespace(metadata=SimpleNamespace(dst_node_id=n)) for n in (1, 2)]


def test_exchange_sleeps_most_of_the_usual_reply_time_before_polling(monkeypatch):
    clock = _Clock(pull_s=0.0002)
    monkeypatch.setattr(exchange_module, "time", clock)
    expected = ExpectedWait(fraction=0.8, warmup=0)
    grid = _Grid(clock, ready_at=0.1)

    replies, missing = exchange(grid, _messages())  # nothing learned: polls from the start
    assert len(replies) == 2 and missing == []
    assert grid.pulls[0] == 0.0 and len(grid.pulls) > 5
    first = len(grid.pulls)

    for _ in range(2):
        clock.now, grid.pulls = 0.0, []
        replies, missing = exchange(grid, _messages(), expected=expected)
        assert len(replies) == 2 and missing == []
    # The second exchange slept 0.8 x the first's wait, then needed only a few polls.
    assert grid.pulls[0] == pytest.approx(0.8 * expected.waits[0])
    assert 0.08 <= grid.pulls[0] < 0.1 and len(grid.pulls) <= first / 4


def test_slow_pulls_are_paced_so_they_take_a_quarter_of_the_time_at_most(monkeypatch):
    clock = _Clock(pull_s=0.005)  # a pull over a thousand pending replies
    monkeypatch.setattr(exchange_module, "time", clock)
    grid = _Grid(clock, ready_at=0.2)
    replies, missing = exchange(grid, _messages())
    assert len(replies) == 2 and missing == []
    gaps = [b - a for a, b in zip(grid.pulls, grid.pulls[1:])]
    assert min(gaps) >= 4 * 0.005  # each pull, then three times its length before the next
    assert len(grid.pulls) * 0.005 <= 0.25 * grid.pulls[-1] + 0.005


def test_exchange_nap_never_outlasts_the_reply_timeout(monkeypatch):
    clock = _Clock(pull_s=0.01)
    monkeypatch.setattr(exchange_module, "time", clock)
    expected = ExpectedWait(warmup=0)
    expected.observe(10.0)
    replies, missing = exchange(_Grid(clock, ready_at=100.0), _messages(), timeout_s=0.5, expected=expected)
    assert replies == [] and missing == [1, 2]
    assert clock.now < 0.6


class _Wake:
    """A reply signal on the fake clock: a wait ends when the replies are stored (``ready_at``), or at its timeout."""

    def __init__(self, clock: _Clock, ready_at: float) -> None:
        self.clock, self.ready_at, self.waits = clock, ready_at, []

    def mark(self) -> int:
        return int(self.clock.now >= self.ready_at)

    def wait(self, mark: int, timeout: float) -> None:
        self.waits.append(timeout)
        stored = self.ready_at if mark == 0 else float("inf")
        self.clock.now = min(self.clock.now + timeout, max(self.clock.now, stored))


def test_with_a_reply_signal_the_exchange_never_sleeps_blind_and_pulls_when_replies_are_stored(monkeypatch):
    clock = _Clock(pull_s=0.0)
    monkeypatch.setattr(exchange_module, "time", clock)
    expected = ExpectedWait(warmup=0)
    expected.observe(1.0)  # without the signal it would sleep 0.8 s before its first pull
    grid = _Grid(clock, ready_at=0.0103)
    wake = _Wake(clock, ready_at=0.0103)
    replies, missing = exchange(grid, _messages(), expected=expected, wake=wake)
    assert len(replies) == 2 and missing == []
    assert grid.pulls[0] == 0.0  # no blind sleep
    assert grid.pulls[-1] == pytest.approx(0.0103)  # pulled the moment the replies were stored
