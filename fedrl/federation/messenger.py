"""How a scheduler talks to the nodes: discovery, one timed exchange, and names for log lines."""

from __future__ import annotations

import logging
import time

from flwr.app import Message
from flwr.serverapp import Grid

from fedrl.federation.identity import Identities
from fedrl.federation.protocol import ROLLOUT
from fedrl.transport import simpoll
from fedrl.transport.exchange import POLL_MAX_S, ROLLOUT_POLL_MAX_S, exchange
from fedrl.transport.waits import ExpectedWait

log = logging.getLogger("fedrl")


class Messenger:
    """Sends one exchange at a time on ``grid`` and waits at most ``reply_timeout`` s for its replies."""

    def __init__(self, grid: Grid, reply_timeout: float) -> None:
        self.grid = grid
        self.reply_timeout = reply_timeout
        self.identities = Identities()
        # Reply times differ by kind (a rollout takes seconds, a gradient milliseconds).
        self.reply_waits: dict[str, ExpectedWait] = {}
        self.wake = simpoll.reply_signal(grid)

    def wait_for_nodes(self, timeout_s: float = 120.0) -> list[int]:
        """The connected nodes, sorted; waits for the first to connect."""
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if nodes:
                self.identities.connected(nodes)
                return nodes
            if time.monotonic() > deadline:
                raise RuntimeError(f"no SuperNode connected within {timeout_s:.0f} s")
            time.sleep(0.5)

    @property
    def partition_of(self) -> dict[int, int]:
        """node -> the partition it holds (bound by its first valid reply)."""
        return self.identities.partition_of

    def who(self, node_id: int) -> str:
        """"partition P (node N)" for a node whose partition is known, else "node N"."""
        return self.identities.who(node_id)

    def waits(self) -> dict[str, list[float]]:
        """The learned reply waits of each message kind (for a checkpoint)."""
        return {kind: list(wait.waits) for kind, wait in self.reply_waits.items()}

    def restore_waits(self, waits: dict[str, list[float]]) -> None:
        """Restore :meth:`waits`."""
        for kind, seconds in waits.items():
            self.reply_waits.setdefault(kind, ExpectedWait()).waits.extend(float(x) for x in seconds)

    def send(self, messages: list[Message], where: str) -> tuple[list[Message], list[str], float]:
        """One exchange; returns the replies, who missed ``reply-timeout`` (logged) and the seconds it took."""
        kind = messages[0].metadata.message_type if messages else ""
        start = time.perf_counter()
        poll = ROLLOUT_POLL_MAX_S if kind == ROLLOUT else POLL_MAX_S
        replies, missing = exchange(self.grid, messages, poll, self.reply_timeout,
                                    self.reply_waits.setdefault(kind, ExpectedWait()), self.wake)
        seconds = time.perf_counter() - start
        who = [self.who(node) for node in missing]
        if who:
            log.warning("%s: no reply within reply-timeout=%gs from %s", where, self.reply_timeout, ", ".join(who))
        return replies, who, seconds
