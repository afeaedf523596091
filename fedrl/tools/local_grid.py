"""An in-process Grid: the real ServerApp loop and ClientApp, with no transport in between.

Used by tests that exercise the whole protocol in seconds, and to separate the cost of
Flower's transport from the learner's in benchmarks. Each partition keeps its own
``Context`` (node state) exactly as a SuperNode does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class LocalGrid(Grid):
    """Delivers each message to ``client_app`` in this process, one node per partition.

    ``tamper(instruction, reply, partition_id)`` (optional) may replace a reply before
    the server sees it, or return ``None`` for a node that never answers, which is how
    tests inject malformed and missing replies. ``reply_delay`` maps a partition to the
    seconds before its replies can be pulled (a slow node).
    """

    def __init__(self, client_app: ClientApp, num_partitions: int, run_config: dict,
                 tamper: Callable[[Message, Message, int], Message | None] | None = None,
                 reply_delay: dict[int, float] | None = None) -> None:
        self.client_app = client_app
        self.run_config = dict(run_config)
        self.tamper = tamper
        self.reply_delay = dict(reply_delay or {})
        self.node_ids = [1000 + i for i in range(num_partitions)]
        self.contexts = {
            node: Context(run_id=1, node_id=node,
                          node_config={"partition-id": i, "num-partitions": num_partitions},
                          state=RecordDict(), run_config=self.run_config)
            for i, node in enumerate(self.node_ids)
        }
        self._replies: dict[str, tuple[float, Message]] = {}
        self._run = Run.create_empty(run_id=1)
        # Messages built outside Flower's runtime take their sender and run from here.
        TaskIdentity.run_id = 1
        TaskIdentity.node_id = 0
        TaskIdentity.task_id = 1
        self.client_seconds = 0.0

    def set_run(self, run: Run) -> None:
        """Set the run this grid serves."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run this grid serves."""
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        """A message to ``dst_node_id``."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """All partitions' node ids."""
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run the ClientApp on each message now and keep the replies for :meth:`pull_messages`."""
        ids = []
        for msg in messages:
            msg_id = str(uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            node = msg.metadata.dst_node_id
            start = time.perf_counter()
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as exc:  # the engine turns ClientApp exceptions into error replies too
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            self.client_seconds += time.perf_counter() - start
            pid = int(self.contexts[node].node_config["partition-id"])
            if self.tamper is not None:
                reply = self.tamper(msg, reply, pid)
            if reply is not None:
                self._replies[msg_id] = (time.monotonic() + self.reply_delay.get(pid, 0.0), reply)
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The stored replies to ``message_ids`` that are ready."""
        now = time.monotonic()
        ready = [i for i in message_ids if i in self._replies and self._replies[i][0] <= now]
        return [self._replies.pop(i)[1] for i in ready]

    def unpulled(self) -> int:
        """Replies that arrived but were never pulled (late replies the server ignored)."""
        return len(self._replies)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull everything (replies are ready at once)."""
        return self.pull_messages(self.push_messages(messages))
