"""One exchange on Flower's Grid: push the instructions, then poll for exactly their replies.

``Grid.send_and_receive`` sleeps 3 s between pulls on a deployment; RL sends many small
messages per round, so the poll starts at 0.5 ms and backs off to ``max_poll_s``, after
first sleeping most of the usual reply time (:mod:`fedrl.transport.waits`).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from flwr.app import Message
from flwr.serverapp import Grid

from fedrl.transport.waits import ExpectedWait

log = logging.getLogger("fedrl")

POLL_START_S = 0.0005
POLL_MAX_S = 0.002
ROLLOUT_POLL_MAX_S = 0.02
# A pull in the simulation engine costs CPU in proportion to the replies it asks for
# (Flower's state checks every id), so with a thousand clients, pulling at every reply
# took most of the ServerApp's CPU. After a pull, the next waits PULL_PACE times the CPU
# time it took, when that is more than PACE_FROM_S: pulls then take at most
# 1/(1 + PULL_PACE) of the CPU. CPU time, not wall time: on fedrl-superlink a pull is held
# until a reply comes, and that wait costs nothing.
PULL_PACE = 3.0
PACE_FROM_S = 0.001


class Wake(Protocol):
    """Something that says when a reply may have arrived (:class:`fedrl.transport.simpoll.StoreSignal`)."""

    def mark(self) -> int: ...

    def wait(self, mark: int, timeout: float) -> None: ...


def exchange(grid: Grid, messages: list[Message], max_poll_s: float = POLL_MAX_S,
             timeout_s: float | None = None, expected: ExpectedWait | None = None,
             wake: Wake | None = None) -> tuple[list[Message], list[int]]:
    """Push ``messages`` and pull their replies, polling briefly, for at most ``timeout_s``.

    Returns the replies and the destination nodes that did not reply in time. Only
    this exchange's message ids are pulled, so a late reply to an earlier exchange is
    never mistaken for a reply to this one. Gradient exchanges poll up to 2 ms apart;
    rollouts, which take seconds, use a longer ``max_poll_s`` so the server does not take
    CPU from the clients. With ``expected``, the first poll waits for most of the usual
    reply time, which this exchange then updates. With ``wake`` (the simulation engine's
    in-process state) there is no such sleep: each wait between pulls ends when a reply is
    stored. On ``fedrl-superlink`` a pull that finds nothing is held until a reply is pushed
    (:mod:`fedrl.transport.superlink`), so it may return up to 0.5 s past ``timeout_s``.
    """
    ids = list(grid.push_messages(messages))
    pushed = time.monotonic()
    node_of = {msg_id: msg.metadata.dst_node_id for msg_id, msg in zip(ids, messages) if msg_id}
    unsent = [msg.metadata.dst_node_id for msg_id, msg in zip(ids, messages) if not msg_id]
    pending = set(node_of)
    replies: list[Message] = []
    deadline = None if timeout_s is None else pushed + timeout_s
    delay = POLL_START_S
    nap = polls = 0
    if expected is not None and pending and wake is None:
        nap = expected.first_sleep() if timeout_s is None else min(expected.first_sleep(), timeout_s)
        time.sleep(nap)
    while pending:
        polled, cpu = time.monotonic(), time.thread_time()
        polls += 1
        mark = wake.mark() if wake is not None else 0
        got = list(grid.pull_messages(pending))
        pace = PULL_PACE * (time.thread_time() - cpu)
        for msg in got:
            msg_id = msg.metadata.reply_to_message_id
            if msg_id not in pending:
                continue
            if msg.metadata.src_node_id != node_of[msg_id]:
                # Flower's SuperLink stores a reply only from the node the instruction went to;
                # anything else is not this exchange's reply, whatever it carries.
                log.warning("dropped a reply from node %d to the instruction sent to node %d",
                            msg.metadata.src_node_id, node_of[msg_id])
                continue
            pending.discard(msg_id)
            replies.append(msg)
        if deadline is not None and time.monotonic() >= deadline:
            break
        if pending and pace > PACE_FROM_S:
            time.sleep(pace)
        if pending and not got:
            if wake is not None:
                wake.wait(mark, delay)
            else:
                time.sleep(delay)
            delay = min(2 * delay, max_poll_s)
        elif got:
            delay = POLL_START_S
    if expected is not None and node_of and not pending:
        expected.observe(polled - pushed, nap, polls == 1)
    return replies, sorted(unsent + [node_of[i] for i in pending])
