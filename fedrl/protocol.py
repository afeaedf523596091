"""What travels between the ServerApp and the ClientApps, and how replies are checked.

Round protocol (the paper's Algorithm 1):

* ``train.rollout``: server sends ``model`` + global ``obs-stats`` and ``return-stats``;
  the client plays, keeps its rollout in ``context.state`` and replies with ``metrics``
  (episode returns, steps) and the ``obs-stats``/``return-stats`` of what it saw.
* ``train.gradient``: server sends ``model`` and which epoch/minibatch; the client
  replies with ``grads`` (laid out like the model) and its loss parts in ``metrics``.
* ``train.local`` (FedAvg/FedProx): the client trains locally and replies ``model``.

Every ArrayRecord that travels is packed (:func:`pack`): one flat float array in the
order of the model's ``state_dict`` (or mean, m2 for statistics, kept in float64).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedrl.normalizer import RunningStats

if TYPE_CHECKING:
    import torch

ROLLOUT = "train.rollout"
GRADIENT = "train.gradient"
LOCAL = "train.local"

MODEL = "model"
GRADS = "grads"
OBS_STATS = "obs-stats"
RETURN_STATS = "return-stats"
CONFIG = "config"
METRICS = "metrics"
ROLLOUT_STATE = "rollout"
ROLLOUT_META = "rollout-meta"
PACKED = "packed"

LOSS_KEYS = ("loss", "policy-loss", "value-loss", "entropy", "approx-kl", "clipfrac")


class InvalidReply(ValueError):
    """A client reply that must not reach the global model; the message says why."""


@dataclass
class RolloutResult:
    """A validated reply to ``train.rollout``."""

    partition_id: int
    node_id: int
    episode_returns: list[float]
    num_steps: int
    obs_stats: RunningStats
    return_stats: RunningStats
    compute_s: float = float("nan")

    @property
    def episodic_return(self) -> float:
        """Mean return of the episodes the client finished this round."""
        return float(np.mean(self.episode_returns))


@dataclass
class ClientUpdate:
    """A validated reply to ``train.gradient`` or ``train.local``."""

    partition_id: int
    node_id: int
    arrays: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def loss(self) -> float:
        """The client's total PPO loss in this exchange."""
        return float(self.metrics["loss"])

    @property
    def num_examples(self) -> int:
        """Transitions the client trained on."""
        return int(self.metrics["num-examples"])


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord from a name -> ndarray dict (order kept); for ``context.state``, never sent."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def numpy_state(record: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord as a name -> ndarray dict."""
    return {k: v.numpy() for k, v in record.items()}


def layout(arrays: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Names and shapes, in order: what :func:`unpack` needs to split a packed record."""
    return {k: tuple(v.shape) for k, v in arrays.items()}


def pack(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """All ``arrays`` raveled into one float Array under :data:`PACKED`, in order (float64 if any is).

    Flower sends every Array as an object of its own, and on a deployment each object
    costs a request per hop (server, SuperLink, SuperNode, ClientApp and back), so a
    model sent tensor by tensor multiplies the requests of every exchange by its
    number of tensors. Both sides know the layout from the model, so one Array does.
    """
    flat = [np.asarray(v).ravel() for v in arrays.values()]
    dtype = np.result_type(np.float32, *flat)
    return ArrayRecord({PACKED: Array(np.concatenate(flat).astype(dtype, copy=False) if flat else np.zeros(0, dtype))})


def unpack(record: ArrayRecord | None, name: str, reference: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Split a :func:`pack` ed record by ``reference``, if its size matches and all values are finite."""
    if record is None:
        raise InvalidReply(f"missing array record {name!r}")
    if set(record.keys()) != {PACKED}:
        raise InvalidReply(f"{name!r} must hold one packed array {PACKED!r}, got keys {sorted(record.keys())}")
    flat = record[PACKED].numpy()
    sizes = [int(np.prod(shape)) for shape in reference.values()]
    if flat.ndim != 1 or flat.size != sum(sizes):
        raise InvalidReply(f"{name!r} holds {flat.size} values (shape {tuple(flat.shape)}), expected {sum(sizes)} "
                           f"for {list(reference)}")
    if not np.issubdtype(flat.dtype, np.floating) or not np.all(np.isfinite(flat)):
        raise InvalidReply(f"{name!r} is not a finite float array")
    parts = np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []
    return {key: part.reshape(shape) for (key, shape), part in zip(reference.items(), parts, strict=True)}


def stats_to_records(stats: RunningStats) -> tuple[ArrayRecord, float]:
    """Observation statistics as a packed ArrayRecord (mean, m2) and a count."""
    return pack({"mean": stats.mean, "m2": stats.m2}), float(stats.count)


def stats_from_records(arrays: ArrayRecord | None, count: float, shape: tuple[int, ...],
                       name: str = OBS_STATS) -> RunningStats:
    """Inverse of :func:`stats_to_records`; raises :class:`InvalidReply` unless finite and non-negative."""
    parts = unpack(arrays, name, {"mean": shape, "m2": shape})
    stats = RunningStats(float(count), parts["mean"].astype(np.float64), parts["m2"].astype(np.float64))
    if not stats.is_finite():
        raise InvalidReply(f"{name} are not finite / non-negative")
    return stats


def describe(msg: Message) -> str:
    """Who sent ``msg``, for log lines ("partition 3", or "node 123" if it did not say)."""
    metrics = msg.content.metric_records.get(METRICS) if msg.has_content() else None
    pid = metrics.get("partition-id") if metrics is not None else None
    if isinstance(pid, int) and not isinstance(pid, bool):
        return f"partition {pid}"
    return f"node {msg.metadata.src_node_id}"


def _content(msg: Message) -> RecordDict:
    if msg.has_error():
        err = msg.error
        raise InvalidReply(f"client error {err.code}: {err.reason}")
    if not msg.has_content():
        raise InvalidReply("reply has no content")
    return msg.content


def _finite_metrics(msg: Message, required: tuple[str, ...]) -> dict[str, float]:
    content = _content(msg)
    if METRICS not in content.metric_records:
        raise InvalidReply(f"missing metric record {METRICS!r}")
    record = content.metric_records[METRICS]
    missing = [k for k in required if k not in record]
    if missing:
        raise InvalidReply(f"missing metrics {missing}")
    out: dict[str, float] = {}
    for key in required:
        value = record[key]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidReply(f"metric {key!r} is not a finite number: {value!r}")
        out[key] = float(value)
    return out


def parse_rollout_reply(msg: Message, obs_shape: tuple[int, ...]) -> RolloutResult:
    """Validate a ``train.rollout`` reply or raise :class:`InvalidReply`."""
    metrics = _finite_metrics(msg, ("partition-id", "num-steps", "episodes", "obs-count", "return-count"))
    record = msg.content.metric_records[METRICS]
    returns = record.get("episode-returns")
    if not isinstance(returns, list) or len(returns) == 0:
        raise InvalidReply("'episode-returns' must be a non-empty list of finite numbers")
    if not all(isinstance(r, (int, float)) and math.isfinite(r) for r in returns):
        raise InvalidReply("'episode-returns' holds a non-finite value")
    if len(returns) != int(metrics["episodes"]) or metrics["num-steps"] < 1:
        raise InvalidReply(f"inconsistent counts: {len(returns)} returns for {metrics['episodes']} episodes, "
                           f"{metrics['num-steps']} steps")
    stats = stats_from_records(msg.content.array_records.get(OBS_STATS), metrics["obs-count"], obs_shape)
    return_stats = stats_from_records(msg.content.array_records.get(RETURN_STATS), metrics["return-count"], (1,),
                                      RETURN_STATS)
    compute = record.get("compute-s")
    return RolloutResult(int(metrics["partition-id"]), msg.metadata.src_node_id, [float(r) for r in returns],
                         int(metrics["num-steps"]), stats, return_stats,
                         float(compute) if isinstance(compute, (int, float)) and math.isfinite(compute) else float("nan"))


def parse_update_reply(msg: Message, record_name: str, reference: dict[str, tuple[int, ...]]) -> ClientUpdate:
    """Validate a ``train.gradient`` / ``train.local`` reply or raise :class:`InvalidReply`."""
    metrics = _finite_metrics(msg, ("partition-id", "num-examples") + LOSS_KEYS)
    compute = msg.content.metric_records[METRICS].get("compute-s")
    if isinstance(compute, (int, float)) and math.isfinite(compute):
        metrics["compute-s"] = float(compute)
    if metrics["num-examples"] < 1:
        raise InvalidReply(f"num-examples must be >= 1, got {metrics['num-examples']}")
    arrays = unpack(msg.content.array_records.get(record_name), record_name, reference)
    return ClientUpdate(int(metrics["partition-id"]), msg.metadata.src_node_id, arrays, metrics)


def instruction(model_state: ArrayRecord, config: dict, extra: dict[str, ArrayRecord] | None = None) -> RecordDict:
    """The content of a server instruction."""
    return RecordDict({MODEL: model_state, CONFIG: ConfigRecord(config), **(extra or {})})
