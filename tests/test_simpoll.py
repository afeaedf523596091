"""The simulation engine's shorter message poll."""

from __future__ import annotations

import threading
import time
from queue import Queue

from flwr.server.superlink.fleet.vce import vce_api

from fedrl import simpoll


class FakeState:
    def __init__(self, pending: dict[int, list[str]]) -> None:
        self.pending = pending
        self.calls = 0

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        self.calls += 1
        out, self.pending[node_id] = self.pending[node_id][:limit], self.pending[node_id][limit:]
        return out


def test_install_replaces_the_engines_poll_loop():
    original = vce_api.add_messages_to_queue
    try:
        assert simpoll.install()
        assert vce_api.add_messages_to_queue is simpoll._add_messages_to_queue
    finally:
        vce_api.add_messages_to_queue = original


def run_loop(max_wait_s: float, seconds: float) -> tuple[FakeState, Queue]:
    simpoll.set_max_wait(max_wait_s)
    state, queue, stop = FakeState({1: ["a", "b"], 2: ["c"]}), Queue(), threading.Event()
    th = threading.Thread(target=simpoll._add_messages_to_queue, args=(state, queue, {1: 0, 2: 1}, stop))
    th.start()
    time.sleep(seconds)
    stop.set()
    th.join(timeout=2)
    simpoll.set_max_wait(0.002)
    assert not th.is_alive()
    return state, queue


def test_moves_every_message_quickly():
    state, queue = run_loop(0.002, 0.05)
    assert sorted(queue.get_nowait() for _ in range(3)) == ["a", "b", "c"]
    assert state.calls > 20  # polled many times in 50 ms


def test_zero_keeps_flowers_fixed_100ms_wait():
    state, queue = run_loop(0.0, 0.05)
    assert queue.qsize() == 2  # one poll so far: one message per node, "b" waits for the next
    assert state.calls == 2
