"""The simulation engine's shorter message poll, driven through Flower's own ``run_api``."""

from __future__ import annotations

import threading
import time
from queue import Queue
from types import SimpleNamespace

import pytest
from flwr.server.superlink.fleet.vce import vce_api

from fedrl.transport import simpoll


class FakeState:
    def __init__(self, pending: dict[int, list[str]]) -> None:
        self.pending = pending
        self.calls = 0

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        self.calls += 1
        out, self.pending[node_id] = self.pending[node_id][:limit], self.pending[node_id][limit:]
        return out


class RecordingStop:
    """The engine's stop event: records every wait the poll loop asks for, and returns at once.

    It is set once a reply reached the state and ``waits`` polls have waited.
    """

    def __init__(self, state: FlowerState, waits: int) -> None:
        self.state, self.limit, self.waits, self._set = state, waits, [], threading.Event()

    def is_set(self) -> bool:
        if self.state.stored and len(self.waits) >= self.limit or len(self.waits) > 5000:
            self._set.set()
        return self._set.is_set()

    def set(self) -> None:
        self._set.set()

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        time.sleep(0.0002)  # let the worker threads run; the recorded wait is what counts
        return self.is_set()


class FlowerState(FakeState):
    """A LinkState whose one instruction appears at the third poll, and which keeps the replies."""

    def __init__(self) -> None:
        super().__init__({1: []})
        self.stored: list = []

    def get_message_ins(self, node_id: int, limit: int) -> list:
        if self.calls == 2:
            self.pending[node_id] = [SimpleNamespace(metadata=SimpleNamespace(dst_node_id=1, run_id=1))]
        return super().get_message_ins(node_id, limit)

    def store_message_res(self, message) -> None:
        self.stored.append(message)


class RecordingSignal(simpoll.StoreSignal):
    """The instruction signal, its waits recorded by the stop event instead of waited."""

    def __init__(self, stop: RecordingStop) -> None:
        super().__init__()
        self.stop = stop

    def wait(self, mark: int, timeout: float) -> None:
        self.stop.wait(timeout)


def drive_flowers_engine(monkeypatch) -> tuple[FlowerState, list[float]]:
    """Flower's ``run_api`` with one node, a backend that answers at once, and a recording stop event."""
    state = FlowerState()
    stop = RecordingStop(state, waits=8)
    monkeypatch.setattr(simpoll, "instructions", RecordingSignal(stop))
    backend = SimpleNamespace(num_workers=1, build=lambda app_fn: None, terminate=lambda: None,
                              process_message=lambda msg, ctx: (SimpleNamespace(metadata=SimpleNamespace()), ctx))
    store = SimpleNamespace(retrieve_context=lambda run_id: "ctx", update_context=lambda run_id, context: None)
    vce_api.run_api(lambda: None, lambda: backend, {1: 0}, SimpleNamespace(state=lambda: state), {1: store}, stop,
                    SimpleNamespace(add_clientapp_runtime=lambda seconds: None))
    return state, stop.waits


def test_install_replaces_the_engines_poll_loop(monkeypatch):
    # Flower's own loop, even if importing the ServerApp elsewhere in this process replaced it.
    monkeypatch.setattr(vce_api, "add_messages_to_queue", simpoll.flower_loop or vce_api.add_messages_to_queue)
    state, stock = drive_flowers_engine(monkeypatch)
    assert len(state.stored) == 1 and set(stock) == {0.1}  # Flower's loop: 100 ms between polls

    simpoll.install()
    simpoll.set_max_wait(0.002)
    state, waits = drive_flowers_engine(monkeypatch)
    # The instruction went through Flower's worker and back into the state, with short waits:
    # doubling from 0.5 ms while idle, back to 0.5 ms once a message moved, never above 2 ms.
    assert len(state.stored) == 1
    assert waits[:3] == [0.001, 0.002, 0.0005] and max(waits) <= 0.002


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


def test_a_stored_instruction_ends_the_wait_at_once():
    simpoll.set_max_wait(1.0)  # a poll a second at most, were it not woken
    state, queue, stop = FakeState({1: []}), Queue(), threading.Event()
    th = threading.Thread(target=simpoll._add_messages_to_queue, args=(state, queue, {1: 0}, stop))
    th.start()
    try:
        time.sleep(0.1)  # the loop is idle, waiting
        state.pending[1].append("a")
        stored = time.monotonic()
        simpoll.instructions.bump()  # what the patched state does when an instruction is stored
        assert queue.get(timeout=0.5) == "a"
        assert time.monotonic() - stored < 0.1
    finally:
        stop.set()
        simpoll.instructions.bump()
        th.join(timeout=2)
        simpoll.set_max_wait(0.002)
    assert not th.is_alive()


def test_zero_keeps_flowers_fixed_100ms_wait():
    state, queue = run_loop(0.0, 0.05)
    assert queue.qsize() == 2  # one poll so far: one message per node, "b" waits for the next
    assert state.calls == 2


@pytest.fixture
def link_state(monkeypatch):
    """Flower's in-memory LinkState with a run, 3 simulated nodes and a Grid on it, as the simulation engine builds them."""
    from dataclasses import replace

    from flwr.proto.task_pb2 import Task
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    run = replace(Run.create_empty(7), primary_task_id=70, federation_id=NOOP_FEDERATION_ID)
    state.run_ids[7] = RunRecord(run=run)
    state.task_store[70] = Task(task_id=70, run_id=7)
    for key, value in (("_run_id", 7), ("_task_id", 70), ("_node_id", 1)):
        monkeypatch.setattr(TaskIdentity, key, value)
    nodes = vce_api._register_nodes(3, factory)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return state, nodes, grid


def test_one_pass_hands_out_one_instruction_per_node_as_flower_does(link_state):
    from flwr.app import Message, RecordDict

    state, nodes, grid = link_state
    first, second, third = nodes
    ids = list(grid.push_messages([Message(RecordDict(), dst_node_id=n, message_type="train")
                                   for n in (first, second, third, first)]))
    expired = ids[2]
    state.message_ins_store[expired].metadata.__dict__["_created_at"] -= 10 * state.message_ins_store[expired].metadata.ttl

    taken = simpoll.take_undelivered(state, nodes)
    # One per node (the expired one dropped, as Flower's get_message_ins drops it), each marked delivered.
    assert sorted(m.metadata.message_id for m in taken) == sorted([ids[0], ids[1]])
    assert all(m.metadata.delivered_at for m in taken) and expired not in state.message_ins_store
    assert [m.metadata.message_id for m in simpoll.take_undelivered(state, nodes)] == [ids[3]]
    assert simpoll.take_undelivered(state, nodes) == []
    assert all(state.get_message_ins(node_id=n, limit=1) == [] for n in nodes)  # Flower agrees: all delivered


def test_the_engines_state_signals_each_stored_instruction_and_reply(link_state):
    from flwr.app import Message, RecordDict

    simpoll.install()
    state, nodes, grid = link_state
    assert simpoll.reply_signal(grid) is simpoll.replies
    assert simpoll.reply_signal(SimpleNamespace()) is None  # a deployment's grid: sleep between pulls
    before = simpoll.instructions.mark()
    grid.push_messages([Message(RecordDict(), dst_node_id=next(iter(nodes)), message_type="train")])
    assert simpoll.instructions.mark() == before + 1
    (instruction,) = simpoll.take_undelivered(state, nodes)
    reply = Message(RecordDict(), reply_to=instruction)
    reply.metadata.__dict__["_message_id"] = reply.object_id
    before = simpoll.replies.mark()
    state.store_message_res(reply)
    assert simpoll.replies.mark() == before + 1
