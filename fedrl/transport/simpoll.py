"""Shorter message polling in Flower's simulation engine.

Flower 1.42's simulation runtime moves instructions from its state to the ClientApp
workers in a thread that polls every 100 ms (``vce_api.add_messages_to_queue``).
A PPO round makes dozens of small exchanges, so that poll alone costs ~90 ms per
exchange. The ServerApp module is imported before the runtime starts that thread,
so :func:`install` swaps in the same loop with an adaptive wait: 0.5 ms after it
moved a message, doubling while idle up to ``max_wait_s`` (default 2 ms,
``sim-poll-max-ms``). After 50 ms without messages (a rollout phase, say) the wait
may grow to 20 ms, so the poll does not steal the CPU the clients are using.
``sim-poll-max-ms = 0`` restores Flower's fixed 100 ms.

A wait also ends as soon as a message is stored: :func:`install` makes the in-memory
state count every instruction and reply it stores (:class:`StoreSignal`), the poll loop
waits for the next instruction, and the ServerApp, which runs in the same process, waits
for the next reply (:func:`reply_signal`) instead of sleeping between pulls.

Flower's loop also asks the state for each node in turn, and the in-memory state answers
each question by checking every stored instruction (its TTL and federation), so one
pass costs nodes × instructions checks: with 1,000 clients a million per poll.
:func:`take_undelivered` does the pass once: it checks the
undelivered instructions together and hands out at most one per node, as Flower's
``limit=1`` does, marking them delivered under the state's lock. A state without the
in-memory state's attributes is asked node by node, as Flower does. Applied through
:mod:`fedrl.transport.compat` (patch ``sim-poll``), on the Flower release it names only.
"""

from __future__ import annotations

import logging
import threading
import time
from queue import Queue
from typing import Any

log = logging.getLogger("fedrl")

MIN_WAIT_S = 0.0005
STOCK_WAIT_S = 0.1
LONG_IDLE_S = 0.05
LONG_IDLE_WAIT_S = 0.02
_settings = {"max_wait_s": 0.002}
# Flower's own loop, kept when it is replaced (tests run both).
flower_loop: Any = None


class StoreSignal:
    """A count of the messages of one kind stored in the engine's state; a thread can wait for the next."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def bump(self) -> None:
        """One more message stored: wake every waiter."""
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def mark(self) -> int:
        """The count now; :meth:`wait` returns once it has moved past it."""
        return self.count

    def wait(self, mark: int, timeout: float) -> None:
        """Wait until a message was stored after :meth:`mark` returned ``mark``, or ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self.count != mark, timeout)


instructions = StoreSignal()
replies = StoreSignal()


def _signalling(store: Any, signal: str) -> Any:
    def stored(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
        message_id = store(self, message, *args, **kwargs)
        if message_id is not None:
            globals()[signal].bump()
        return message_id

    stored.__wrapped__ = store  # type: ignore[attr-defined]
    return stored


def in_simulation_engine(grid: Any) -> bool:
    """Whether ``grid`` is the simulation engine's (in this process, on its in-memory state)."""
    from flwr.superlink.grid import InMemoryGrid

    return isinstance(grid, InMemoryGrid)


def reply_signal(grid: Any) -> StoreSignal | None:
    """The signal of replies stored in ``grid``'s state, if it is the simulation engine's in-process state."""
    if not in_simulation_engine(grid):
        return None
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    return replies if hasattr(InMemoryLinkState.store_message_res, "__wrapped__") else None


def set_max_wait(seconds: float) -> None:
    """Longest idle wait between polls; 0 means Flower's stock fixed 100 ms wait."""
    _settings["max_wait_s"] = seconds


def take_undelivered(state: Any, nodes: Any) -> list[Any]:
    """The next undelivered instruction of each node in ``nodes`` (at most one each), marked delivered."""
    store, lock = getattr(state, "message_ins_store", None), getattr(state, "lock", None)
    if store is None or lock is None or not hasattr(state, "_check_stored_messages"):
        return [msg for node_id in nodes for msg in state.get_message_ins(node_id=node_id, limit=1)]
    from flwr.supercore.date import now

    with lock:
        pending = [msg_id for msg_id, msg in list(store.items())
                   if msg.metadata.delivered_at == "" and msg.metadata.dst_node_id in nodes]
        if not pending:
            return []
        # Drops expired instructions and those whose nodes left the federation, as get_message_ins does.
        state._check_stored_messages(set(pending))
        taken, served = [], set()
        for msg_id in pending:
            msg = store.get(msg_id)
            if msg is not None and msg.metadata.dst_node_id not in served:
                served.add(msg.metadata.dst_node_id)
                taken.append(msg)
        delivered_at = now().isoformat()
        for msg in taken:
            msg.metadata.delivered_at = delivered_at
    return taken


def _add_messages_to_queue(state: Any, queue: Queue, nodes_mapping: Any, f_stop: threading.Event) -> None:
    wait = MIN_WAIT_S
    last_moved = time.monotonic()
    while not f_stop.is_set():
        moved = False
        mark = instructions.mark()
        for msg in take_undelivered(state, nodes_mapping):
            queue.put(msg)
            moved = True
        if _settings["max_wait_s"] <= 0:
            f_stop.wait(STOCK_WAIT_S)
            continue
        now = time.monotonic()
        if moved:
            last_moved, wait = now, MIN_WAIT_S
        else:
            cap = _settings["max_wait_s"]
            if now - last_moved > LONG_IDLE_S:
                cap = max(cap, LONG_IDLE_WAIT_S)
            wait = min(2 * wait, cap)
        instructions.wait(mark, wait)


def install() -> None:
    """Replace the simulation engine's poll loop (it must run before the engine starts its thread)."""
    global flower_loop
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    if vce_api.add_messages_to_queue is not _add_messages_to_queue:
        flower_loop = vce_api.add_messages_to_queue
    vce_api.add_messages_to_queue = _add_messages_to_queue
    for name, signal in (("store_message_ins", "instructions"), ("store_message_res", "replies")):
        if not hasattr(getattr(InMemoryLinkState, name), "__wrapped__"):
            setattr(InMemoryLinkState, name, _signalling(getattr(InMemoryLinkState, name), signal))
