"""Shared helpers: hand-made Flower Messages and Contexts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from fedrl.federation.protocol import pack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its layer (its folder), so `-m unit` runs the fast layer alone."""
    for item in items:
        item.add_marker(getattr(pytest.mark, item.path.resolve().relative_to(TESTS).parts[0]))

# Messages built outside Flower's runtime take their run and sender from here.
TaskIdentity.run_id = 1
TaskIdentity.node_id = 0
TaskIdentity.task_id = 1

TESTS = Path(__file__).resolve().parent
LOSS_PARTS = {"policy-loss": 0.1, "value-loss": 0.2, "entropy": 0.6, "approx-kl": 0.0, "clipfrac": 0.0}


def instruction(node_id: int, message_type: str = "train.gradient") -> Message:
    """A server instruction addressed to ``node_id``."""
    return Message(RecordDict(), node_id, message_type, group_id="1")


def arrays(d: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord from numpy arrays."""
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in d.items()})


def update_reply(pid: int, grads: dict[str, np.ndarray], loss: float = 1.0, record: str = "grads",
                 num_examples: int = 10, **metrics: float) -> Message:
    """A client's reply to a gradient (or, with record="model", local-training) exchange."""
    values = {"partition-id": pid, "num-examples": num_examples, "loss": loss, **LOSS_PARTS, **metrics}
    content = RecordDict({"metrics": MetricRecord(values), record: pack(grads)})
    return Message(content, reply_to=instruction(100 + pid))


def error_reply(pid: int) -> Message:
    """A reply carrying an error instead of content."""
    return Message(Error(code=1, reason="boom"), reply_to=instruction(100 + pid))


def context(pid: int, run_config: dict | None = None, num_partitions: int = 2) -> Context:
    """A node Context as a SuperNode would hold it."""
    return Context(run_id=1, node_id=100 + pid, node_config={"partition-id": pid, "num-partitions": num_partitions},
                   state=RecordDict(), run_config=dict(run_config or {}))


@pytest.fixture
def tmp_outdir(tmp_path):
    """An absolute output directory for runs."""
    return str(tmp_path / "runs")
