"""What travels between the ServerApp and the ClientApps, and how replies are checked.

Round protocol (the paper's Algorithm 1):

* ``train.rollout``: server sends ``model`` + global ``obs-stats`` and ``return-stats``;
  the client plays, keeps its rollout in ``context.state`` and replies with ``metrics``
  (episode returns, steps) and the ``obs-stats``/``return-stats`` of what it saw.
* ``train.gradient``: server sends ``model`` and which epoch/minibatch; the client
  replies with ``grads`` (laid out like the model) and its loss parts in ``metrics``.
* ``train.local`` (FedAvg/FedProx): the client trains locally and replies ``model``.

Asynchronous jobs (one message each, self-contained, numbered by the server):

* ``train.pg`` (A3C, the NIGT family): server sends ``model``, ``obs-stats`` and the job
  number; the client plays ``job-steps`` steps and replies ``grads`` (the policy gradient
  at those parameters), its loss parts, returns and the ``obs-stats`` of what it saw.
* ``train.actor`` (IMPALA): the same instruction; the client replies its raw
  ``trajectory`` and the behaviour policy's log-probabilities, ``behaviour-logprobs``.

Every ArrayRecord that travels is packed (:func:`pack`): one flat float array in the
order of the model's ``state_dict`` (or mean, m2 for statistics, kept in float64).

This module is the only place that knows the wire names: clients build their replies
with :func:`rollout_reply` and :func:`update_reply` from typed values, and the server
reads every kind of reply through :func:`check_replies`, which turns them back into
:class:`RolloutResult` or :class:`ClientUpdate`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedrl.federation.identity import Identities
from fedrl.rl.normalizer import STATS_LIMIT, RunningStats
from fedrl.rl.ppo import LossParts, Rollout

if TYPE_CHECKING:
    import torch

log = logging.getLogger("fedrl")

ROLLOUT = "train.rollout"
GRADIENT = "train.gradient"
LOCAL = "train.local"
PG = "train.pg"
ACTOR = "train.actor"

MODEL = "model"
GRADS = "grads"
OBS_STATS = "obs-stats"
RETURN_STATS = "return-stats"
CONFIG = "config"
METRICS = "metrics"
ROLLOUT_STATE = "rollout"
ROLLOUT_META = "rollout-meta"
PACKED = "packed"
TRAJECTORY = "trajectory"
BEHAVIOUR = "behaviour-logprobs"

# The wire name of each LossParts field: snake_case in Python, kebab-case in a MetricRecord.
LOSS_METRICS = {name: name.replace("_", "-") for name in LossParts._fields}


# Far beyond any honest episode (and below where summing returns could overflow).
RETURN_LIMIT = 1e12
# Counts and ids above this are not exact in float64, the type metrics travel as.
INTEGER_LIMIT = 2**53


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
    explained_variance: float = float("nan")
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
    parts: LossParts
    num_examples: int
    compute_s: float = float("nan")

    @property
    def loss(self) -> float:
        """The client's total PPO loss in this exchange."""
        return self.parts.loss


@dataclass
class JobResult:
    """A validated reply to ``train.pg`` (``arrays`` = gradient) or ``train.actor`` (``arrays`` = trajectory)."""

    partition_id: int
    node_id: int
    job: int
    num_steps: int
    episode_returns: list[float]
    obs_stats: RunningStats
    arrays: dict[str, np.ndarray]
    parts: LossParts | None = None
    behaviour_logprobs: np.ndarray | None = None
    compute_s: float = float("nan")

    @property
    def episodic_return(self) -> float:
        """Mean return of the episodes finished in the job (NaN if none finished)."""
        return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")


class _FromPartition(Protocol):
    partition_id: int
    node_id: int


Reply = TypeVar("Reply", bound=_FromPartition)


@dataclass
class Checked(Generic[Reply]):
    """The replies of one exchange after :func:`check_replies`.

    ``accepted`` holds at most one reply per partition, sorted by partition, and
    ``arrival`` their partitions in the order the replies came; ``rejected`` lists
    (sender, reason) for every reply that was dropped.
    """

    accepted: list[Reply] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    arrival: list[int] = field(default_factory=list)

    def drop(self, reply: Reply, why: str, where: str) -> None:
        """Reject an accepted reply after all (what it would do to the global state is not acceptable)."""
        who = f"partition {reply.partition_id} (node {reply.node_id})"
        log.warning("%s: rejected reply from %s: %s", where, who, why)
        self.accepted.remove(reply)
        self.arrival.remove(reply.partition_id)
        self.rejected.append((who, why))


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord from a name -> ndarray dict (order kept); for ``context.state``, never sent."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


NPY_MAGIC = b"\x93NUMPY"


def to_numpy(array: Array) -> np.ndarray:
    """``array.numpy()``, without reading the .npy header through ``ast`` when the Array's own fields say it all.

    Flower stores a numpy Array as ``np.save`` bytes. ``np.load`` parses their header
    with ``ast.literal_eval``, which costs more than copying a small model's parameters,
    and a round decodes dozens of Arrays on each side. The header is only checked to
    agree with the Array's dtype (byte order included) and C order; anything else, or
    too few bytes for the shape, goes through ``np.load`` (which raises on bad data).
    """
    data = array.data
    if array.stype != "numpy.ndarray" or not isinstance(data, bytes) or data[:6] != NPY_MAGIC or data[6] not in (1, 2):
        return array.numpy()
    width = 2 if data[6] == 1 else 4
    start = 8 + width
    header = data[start:start + int.from_bytes(data[8:start], "little")]
    try:
        dtype = np.dtype(array.dtype)
    except TypeError:
        return array.numpy()
    count = math.prod(array.shape)
    offset = start + len(header)
    if dtype.hasobject or f"'descr': '{dtype.str}'".encode() not in header or b"'fortran_order': False" not in header \
            or len(data) - offset != count * dtype.itemsize:
        return array.numpy()
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(array.shape).copy()


def numpy_state(record: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord as a name -> ndarray dict."""
    return {k: to_numpy(v) for k, v in record.items()}


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
    flat = to_numpy(record[PACKED])
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
    if not stats.is_plausible():
        raise InvalidReply(f"{name} have a mean or standard deviation beyond ±{STATS_LIMIT:g}")
    return stats


def describe(msg: Message, identities: Identities | None = None) -> str:
    """Who sent ``msg``, for log lines: its node, and the partition that node holds once it is known.

    A node that holds no partition yet is named with what its reply claims, marked as a
    claim ("node 7 (claims partition 0)"): a partition is never named as the sender on a
    reply's word, so a client that claims another's partition does not get its victim blamed.
    """
    node = msg.metadata.src_node_id
    if identities is not None and node in identities.partition_of:
        return identities.who(node)
    metrics = msg.content.metric_records.get(METRICS) if msg.has_content() else None
    claimed = metrics.get("partition-id") if metrics is not None else None
    if isinstance(claimed, (int, float)) and not isinstance(claimed, bool):
        return f"node {node} (claims partition {claimed:g})"
    return f"node {node}"


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


def _check_returns(returns: list) -> None:
    for r in returns:
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r):
            raise InvalidReply(f"'episode-returns' holds {r!r}, not a finite number")
        if abs(r) > RETURN_LIMIT:
            raise InvalidReply(f"'episode-returns' holds {r:g}, beyond ±{RETURN_LIMIT:g}")


def _integer(metrics: Mapping[str, float], key: str, low: int = 0) -> int:
    """A metric that must be a whole number in [``low``, 2**53) (a count or an id): no truncation of 0.9 to 0."""
    value = metrics[key]
    if not float(value).is_integer() or not low <= value < INTEGER_LIMIT:
        raise InvalidReply(f"metric {key!r} must be an integer in [{low}, 2**53), got {value:g}")
    return int(value)


def _count_matches(name: str, count: float, num_steps: int) -> None:
    """Statistics of what a client saw this round must count exactly the steps it played."""
    if count != num_steps:
        raise InvalidReply(f"{name} count {count:g} does not match the {num_steps} steps played")


def _optional_number(msg: Message, key: str) -> float:
    """A metric that may be missing or NaN (timings, explained variance): NaN then."""
    value = msg.content.metric_records[METRICS].get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def parse_rollout_reply(msg: Message, obs_shape: tuple[int, ...]) -> RolloutResult:
    """Validate a ``train.rollout`` reply or raise :class:`InvalidReply`."""
    metrics = _finite_metrics(msg, ("partition-id", "num-steps", "episodes", "obs-count", "return-count"))
    record = msg.content.metric_records[METRICS]
    returns = record.get("episode-returns")
    if not isinstance(returns, list) or len(returns) == 0:
        raise InvalidReply("'episode-returns' must be a non-empty list of finite numbers")
    _check_returns(returns)
    pid, num_steps = _integer(metrics, "partition-id"), _integer(metrics, "num-steps", 1)
    if len(returns) != _integer(metrics, "episodes"):
        raise InvalidReply(f"inconsistent counts: {len(returns)} returns for {metrics['episodes']} episodes")
    _count_matches(OBS_STATS, metrics["obs-count"], num_steps)
    _count_matches(RETURN_STATS, metrics["return-count"], num_steps)
    stats = stats_from_records(msg.content.array_records.get(OBS_STATS), metrics["obs-count"], obs_shape)
    return_stats = stats_from_records(msg.content.array_records.get(RETURN_STATS), metrics["return-count"], (1,),
                                      RETURN_STATS)
    explained = _optional_number(msg, "explained-variance")
    compute = _optional_number(msg, "compute-s")
    return RolloutResult(pid, msg.metadata.src_node_id, [float(r) for r in returns], num_steps, stats, return_stats,
                         explained if math.isfinite(explained) else float("nan"),
                         compute if math.isfinite(compute) else float("nan"))


def parse_update_reply(msg: Message, record_name: str, reference: Mapping[str, tuple[int, ...]]) -> ClientUpdate:
    """Validate a ``train.gradient`` / ``train.local`` reply or raise :class:`InvalidReply`."""
    metrics = _finite_metrics(msg, ("partition-id", "num-examples", *LOSS_METRICS.values()))
    pid, num_examples = _integer(metrics, "partition-id"), _integer(metrics, "num-examples", 1)
    arrays = unpack(msg.content.array_records.get(record_name), record_name, reference)
    compute = _optional_number(msg, "compute-s")
    parts = LossParts(*(metrics[wire] for wire in LOSS_METRICS.values()))
    return ClientUpdate(pid, msg.metadata.src_node_id, arrays, parts, num_examples,
                        compute if math.isfinite(compute) else float("nan"))


def _job_common(msg: Message, expected_job: int, extra: tuple[str, ...], obs_shape: tuple[int, ...]
                ) -> tuple[dict[str, float], list[float], RunningStats, float]:
    metrics = _finite_metrics(msg, ("partition-id", "job", "num-steps", "episodes", "obs-count", *extra))
    if metrics["job"] != expected_job:
        raise InvalidReply(f"reply names job {metrics['job']:g}, but this message was job {expected_job}")
    returns = msg.content.metric_records[METRICS].get("episode-returns", [])
    if not isinstance(returns, list):
        raise InvalidReply("'episode-returns' must be a list of finite numbers")
    _check_returns(returns)
    _integer(metrics, "partition-id")
    num_steps = _integer(metrics, "num-steps", 1)
    if len(returns) != _integer(metrics, "episodes"):
        raise InvalidReply(f"inconsistent counts: {len(returns)} returns for {metrics['episodes']} episodes")
    _count_matches(OBS_STATS, metrics["obs-count"], num_steps)
    stats = stats_from_records(msg.content.array_records.get(OBS_STATS), metrics["obs-count"], obs_shape)
    compute = _optional_number(msg, "compute-s")
    return metrics, [float(r) for r in returns], stats, compute if math.isfinite(compute) else float("nan")


def parse_pg_reply(msg: Message, expected_job: int, reference: Mapping[str, tuple[int, ...]],
                   obs_shape: tuple[int, ...]) -> JobResult:
    """Validate a ``train.pg`` reply to job ``expected_job`` or raise :class:`InvalidReply`."""
    metrics, returns, stats, compute = _job_common(msg, expected_job, tuple(LOSS_METRICS.values()), obs_shape)
    arrays = unpack(msg.content.array_records.get(GRADS), GRADS, reference)
    parts = LossParts(*(metrics[wire] for wire in LOSS_METRICS.values()))
    return JobResult(int(metrics["partition-id"]), msg.metadata.src_node_id, expected_job, int(metrics["num-steps"]),
                     returns, stats, arrays, parts=parts, compute_s=compute)


def parse_actor_reply(msg: Message, expected_job: int, reference: Mapping[str, tuple[int, ...]],
                      obs_shape: tuple[int, ...], num_actions: int | None) -> JobResult:
    """Validate a ``train.actor`` reply to job ``expected_job`` or raise :class:`InvalidReply`.

    ``reference`` is the trajectory's layout; ``num_actions`` the size of a Discrete action
    space (actions must then be integers in range), ``None`` for Box actions.
    """
    metrics, returns, stats, compute = _job_common(msg, expected_job, (), obs_shape)
    arrays = unpack(msg.content.array_records.get(TRAJECTORY), TRAJECTORY, reference)
    behaviour = unpack(msg.content.array_records.get(BEHAVIOUR), BEHAVIOUR, {"logprobs": reference["rewards"]})
    for flag in ("terminated", "truncated"):
        if not np.all((arrays[flag] == 0) | (arrays[flag] == 1)):
            raise InvalidReply(f"trajectory {flag!r} must hold only 0 and 1")
    if num_actions is not None:
        actions = arrays["actions"]
        if not np.all((actions == np.round(actions)) & (actions >= 0) & (actions < num_actions)):
            raise InvalidReply(f"trajectory 'actions' must be integers in [0, {num_actions})")
    if int(metrics["num-steps"]) != arrays["rewards"].size:
        raise InvalidReply(f"num-steps {metrics['num-steps']:g} does not match the trajectory's "
                           f"{arrays['rewards'].size} steps")
    return JobResult(int(metrics["partition-id"]), msg.metadata.src_node_id, expected_job, int(metrics["num-steps"]),
                     returns, stats, arrays, behaviour_logprobs=behaviour["logprobs"], compute_s=compute)


def job_reply(instruction_msg: Message, kind: str, partition_id: int, job: int, num_steps: int,
              episode_returns: list[float], obs_stats: RunningStats, arrays: Mapping[str, np.ndarray],
              compute_s: float, parts: LossParts | None = None,
              behaviour_logprobs: np.ndarray | None = None) -> Message:
    """A client's reply to a ``train.pg`` (``arrays`` = gradient) or ``train.actor`` job (trajectory)."""
    seen_arrays, seen_count = stats_to_records(obs_stats)
    metrics: dict = {"partition-id": partition_id, "job": job, "num-steps": num_steps,
                     "episodes": len(episode_returns), "episode-returns": list(episode_returns),
                     "obs-count": seen_count, "compute-s": compute_s}
    records: dict = {OBS_STATS: seen_arrays}
    if kind == PG:
        assert parts is not None
        metrics.update({LOSS_METRICS[name]: value for name, value in parts._asdict().items()})
        records[GRADS] = pack(arrays)
    else:
        assert behaviour_logprobs is not None
        records[TRAJECTORY] = pack(arrays)
        records[BEHAVIOUR] = pack({"logprobs": behaviour_logprobs})
    return Message(RecordDict({**records, METRICS: MetricRecord(metrics)}), reply_to=instruction_msg)


def check_replies(replies: Iterable[Message], parse: Callable[[Message], Reply], where: str,
                  identities: Identities, partitions: Collection[int] | None = None,
                  check: Callable[[Reply], None] | None = None) -> Checked[Reply]:
    """The one check every reply goes through, whatever its kind.

    ``parse`` validates one reply (:func:`parse_rollout_reply`, :func:`parse_update_reply`),
    ``identities`` that its node may claim its partition (and learns the claims of new
    nodes), ``check`` (optional) anything the exchange knows to expect, e.g. its example
    count. A reply that fails, comes from a partition outside ``partitions`` (when given:
    the partitions with a valid rollout this round) or repeats a partition already accepted
    is dropped with a WARNING that names its node and says why (``where`` says which
    exchange). Raises :class:`~fedrl.federation.identity.PartitionConflict` when two new
    nodes claim the same partition.
    """
    checked: Checked[Reply] = Checked()
    seen: dict[int, int] = {}
    for msg in replies:
        try:
            reply = parse(msg)
            refused = identities.refusal(msg.metadata.src_node_id, reply.partition_id)
            if refused:
                raise InvalidReply(refused)
            if partitions is not None and reply.partition_id not in partitions:
                raise InvalidReply("no valid rollout from this partition in this round")
            if reply.partition_id in seen:
                if seen[reply.partition_id] != reply.node_id:  # two unbound nodes: neither is known to be right
                    identities.bind([(seen[reply.partition_id], reply.partition_id), (reply.node_id,
                                                                                      reply.partition_id)])
                raise InvalidReply(f"a second reply for partition {reply.partition_id} in this exchange")
            if check is not None:
                check(reply)
        except InvalidReply as exc:
            who = describe(msg, identities)
            log.warning("%s: rejected reply from %s: %s", where, who, exc)
            checked.rejected.append((who, str(exc)))
            continue
        seen[reply.partition_id] = reply.node_id
        checked.accepted.append(reply)
    identities.bind((r.node_id, r.partition_id) for r in checked.accepted)
    checked.arrival = [r.partition_id for r in checked.accepted]
    checked.accepted.sort(key=lambda r: r.partition_id)
    return checked


def rollout_reply(instruction_msg: Message, partition_id: int, rollout: Rollout, compute_s: float) -> Message:
    """A client's reply to ``train.rollout``: what it played and the statistics of what it saw."""
    seen_arrays, seen_count = stats_to_records(rollout.obs_stats)
    return_arrays, return_count = stats_to_records(rollout.return_stats)
    metrics = MetricRecord({
        "partition-id": partition_id,
        "num-steps": rollout.num_steps,
        "episodes": len(rollout.episode_returns),
        "episode-returns": rollout.episode_returns,
        "obs-count": seen_count,
        "return-count": return_count,
        "explained-variance": rollout.explained_variance,
        "compute-s": compute_s,
    })
    return Message(RecordDict({METRICS: metrics, OBS_STATS: seen_arrays, RETURN_STATS: return_arrays}),
                   reply_to=instruction_msg)


def update_reply(instruction_msg: Message, record_name: str, arrays: Mapping[str, np.ndarray], partition_id: int,
                 num_examples: int, parts: LossParts, compute_s: float) -> Message:
    """A client's reply to ``train.gradient`` (``grads``) or ``train.local`` (``model``)."""
    metrics = {"partition-id": partition_id, "num-examples": num_examples,
               **{LOSS_METRICS[name]: value for name, value in parts._asdict().items()}, "compute-s": compute_s}
    return Message(RecordDict({record_name: pack(arrays), METRICS: MetricRecord(metrics)}), reply_to=instruction_msg)


def instruction(model_state: ArrayRecord, config: dict, extra: dict[str, ArrayRecord] | None = None) -> RecordDict:
    """The content of a server instruction."""
    return RecordDict({MODEL: model_state, CONFIG: ConfigRecord(config), **(extra or {})})


def instructions(content: RecordDict, nodes: list[int], message_type: str, server_round: int,
                 reply_timeout: float) -> list[Message]:
    """One instruction per node, grouped by round.

    The TTL makes the SuperLink drop the instruction, and any reply, once the server stops waiting.
    """
    return [Message(content, node, message_type, ttl=reply_timeout + 1.0, group_id=str(server_round))
            for node in nodes]
