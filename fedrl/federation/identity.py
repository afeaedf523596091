"""Which partition each node serves, learnt once and then enforced.

A reply names its partition in its ``partition-id`` metric, but the server knows which
node it sent the instruction to. The first valid reply of a node binds the node to the
partition it claims; from then on every reply of that node must claim that partition,
and no other node may claim it. A claim that breaks this is refused (the reply is
dropped with a WARNING that names the node, what it claimed and what it holds), so a
client cannot pass its gradient off under another partition's weight. Two new nodes
that claim the same partition in the same exchange cannot be told apart: that is two
SuperNodes started with the same ``partition-id``, and it stops the run.
"""

from __future__ import annotations

from collections.abc import Iterable


class PartitionConflict(RuntimeError):
    """Two nodes are configured with the same partition; the message names both."""


class Identities:
    """The node -> partition binding of one run."""

    def __init__(self) -> None:
        self.partition_of: dict[int, int] = {}
        self.node_of: dict[int, int] = {}
        self.num_partitions: int | None = None
        """Partition ids must be below this: the most nodes connected at once so far (None: not checked)."""

    def who(self, node: int) -> str:
        """"partition P (node N)" for a bound node, else "node N"."""
        pid = self.partition_of.get(node)
        return f"partition {pid} (node {node})" if pid is not None else f"node {node}"

    def refusal(self, node: int, claimed: int) -> str:
        """Why ``node`` may not claim partition ``claimed`` ("" if it may); nothing is bound here."""
        held = self.partition_of.get(node)
        if held is not None:
            return "" if claimed == held else f"node {node} claimed partition {claimed}, but it holds partition {held}"
        if self.num_partitions is not None and not 0 <= claimed < self.num_partitions:
            return (f"node {node} claimed partition {claimed}, outside the run's partitions "
                    f"0..{self.num_partitions - 1}; it holds none")
        owner = self.node_of.get(claimed)
        if owner is not None and owner != node:
            return f"node {node} claimed partition {claimed}, which node {owner} holds; node {node} holds none"
        return ""

    def bind(self, claims: Iterable[tuple[int, int]]) -> None:
        """Bind the (node, partition) claims of one exchange's accepted replies.

        Raises :class:`PartitionConflict` when two unbound nodes claim the same partition.
        """
        new: dict[int, int] = {}
        for node, pid in claims:
            if node in self.partition_of:
                continue
            if pid in new and new[pid] != node:
                first, second = sorted((new[pid], node))
                raise PartitionConflict(
                    f"nodes {first} and {second} both serve partition {pid}: two SuperNodes were started with the "
                    f"same partition-id; give each its own --node-config 'partition-id=I num-partitions=N'")
            new[pid] = node
        for pid, node in new.items():
            self.partition_of[node] = pid
            self.node_of[pid] = node

    def connected(self, nodes: Iterable[int]) -> None:
        """The nodes connected now: those that left are forgotten, and the id range grows to their number."""
        nodes = set(nodes)
        for node in [n for n in self.partition_of if n not in nodes]:
            self.forget(node)
        self.num_partitions = max(self.num_partitions or 0, len(nodes))

    def forget(self, node: int) -> None:
        """Drop a node that left (a restarted SuperNode comes back under a new node id)."""
        pid = self.partition_of.pop(node, None)
        if pid is not None:
            self.node_of.pop(pid, None)
