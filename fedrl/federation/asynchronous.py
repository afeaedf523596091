"""The asynchronous scheduler: one outstanding job per node, on ``Grid.push_messages`` and ``pull_messages``.

Every node always has at most one job. When its result comes back the rule
(:class:`~fedrl.federation.aggregation.AsyncRule`) uses, batches or discards it, and the
node is sent the latest parameters at once. Each processed job is one row of
``events.csv``.

Two clocks (``clock`` in the run config):

* ``simulated``: job j of client i costs h_i (+ κ_i per job for A3C and IMPALA; the NIGT
  family pays κ once per round, when it closes). The server always processes the
  outstanding job that finishes first in simulated time, ties broken by partition, and
  waits in real time for that reply even if others came first; so a run is identical for
  a seed whatever order the replies arrive in and whatever the machine's load.
* ``wall``: results are processed in arrival order and time is real time, for
  deployments; a node that misses ``reply-timeout`` gets no more jobs and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fedrl.config import FedRLConfig
from fedrl.federation.aggregation import AsyncRule, Outcome
from fedrl.federation.clock import CostModel, WallClock
from fedrl.federation.evaluations import Evaluations
from fedrl.federation.identity import PartitionConflict
from fedrl.federation.messenger import Messenger
from fedrl.federation.protocol import (
    OBS_STATS,
    PG,
    InvalidReply,
    JobResult,
    describe,
    instruction,
    pack,
    parse_actor_reply,
    parse_pg_reply,
    stats_to_records,
)
from fedrl.federation.recorder import Recorder
from fedrl.rl.envs import env_spaces
from fedrl.rl.global_model import GlobalModel
from fedrl.rl.jobs import vector_steps
from fedrl.runtime import resolve_device

log = logging.getLogger("fedrl")

POLL_START_S = 0.0005
POLL_MAX_S = 0.01
NODE_CHECK_S = 2.0


@dataclass
class Job:
    """One outstanding message: where it went, what it carried and when it finishes in simulated time."""

    msg_id: str
    node: int
    seq: int
    version: int
    round: int
    sim_start: float
    sent_at: float
    sim_finish: float | None = None
    aborted: bool = False


class AsyncScheduler:
    """Runs an asynchronous method until the (simulated or wall) time reaches ``time-budget``."""

    def __init__(self, cfg: FedRLConfig, grid: Grid, make_rule: Callable[[FedRLConfig, GlobalModel], AsyncRule],
                 run_id: int | str, out: bool = True, extra: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.grid = grid
        self.state = GlobalModel(cfg, resolve_device(cfg.device))
        self.rule = make_rule(cfg, self.state)
        self.messenger = Messenger(grid, cfg.reply_timeout)
        self.recorder = Recorder(cfg, run_id, {"num_parameters": self.state.num_parameters, **(extra or {})}, out)
        self.evaluations = Evaluations(cfg, cfg.time_budget, self.recorder)
        self.simulated = cfg.clock == "simulated"
        self.wall = WallClock(cfg.time_unit_s)
        obs_space, act_space = env_spaces(cfg.env_id)
        steps, width = vector_steps(cfg), cfg.num_envs_per_client
        self.trajectory_layout = {
            "raw_obs": (steps, width, *self.state.obs_shape), "next_raw_obs": (steps, width, *self.state.obs_shape),
            "actions": (steps, width, *act_space.shape), "rewards": (steps, width), "terminated": (steps, width),
            "truncated": (steps, width)}
        self.num_actions = int(act_space.n) if hasattr(act_space, "n") else None
        self.pending: dict[str, Job] = {}
        self.arrived: dict[str, Message] = {}
        self.inactive: set[int] = set()
        self.nodes: list[int] = []
        self.costs: CostModel | None = None
        self.seq = 0
        self.sent_in_round: dict[int, int] = {}
        self.counted_round = 0
        self.now = 0.0
        self.env_steps = 0
        self.used_steps = 0
        self.behaviour: deque[float] = deque(maxlen=100)

    # What to send --------------------------------------------------------------------------------------------

    def send(self, node: int, start: float) -> None:
        """Push the rule's current parameters to ``node`` as a new job starting at simulated time ``start``."""
        self.seq += 1
        # The job's seed comes from (round, n-th job of this node in the round), not from the
        # global job number, so methods that differ only in aborted jobs play the same episodes.
        if self.rule.round != self.counted_round:  # rounds only grow: older counts are never needed again
            self.sent_in_round, self.counted_round = {}, self.rule.round
        nth = self.sent_in_round[node] = self.sent_in_round.get(node, -1) + 1
        stats_arrays, count = stats_to_records(self.state.obs_stats)
        content = instruction(pack(self.rule.parameters(node)),
                              {"job": self.seq, "version": self.rule.version, "round": self.rule.round,
                               "nth": nth, "obs-count": count},
                              {OBS_STATS: stats_arrays})
        msg = Message(content, node, self.rule.message_type, ttl=self.cfg.reply_timeout + 1.0, group_id=str(self.seq))
        ids = list(self.grid.push_messages([msg]))
        if not ids or not ids[0]:
            log.warning("job %d to %s could not be sent; it gets no more jobs", self.seq, self.messenger.who(node))
            self.inactive.add(node)
            return
        job = Job(ids[0], node, self.seq, self.rule.version, self.rule.round, start, time.monotonic())
        self.pending[job.msg_id] = job
        self._cost(job)

    def _cost(self, job: Job) -> None:
        """Its simulated finish time, once the node's partition is known."""
        pid = self.messenger.partition_of.get(job.node)
        if pid is None or self.costs is None:
            return
        comm = 0.0 if self.rule.per_round else self.rule.hops * self.costs.kappa(pid)
        job.sim_finish = job.sim_start + self.costs.h(pid) + comm

    # Waiting for replies ----------------------------------------------------------------------------------------

    def _pull(self) -> bool:
        # Only ids whose reply has not come: the SuperLink answers a second pull of a reply
        # already taken with an error reply of its own.
        wanted = [m for m in self.pending if m not in self.arrived]
        got = list(self.grid.pull_messages(wanted)) if wanted else []
        for msg in got:
            job = self.pending.get(msg.metadata.reply_to_message_id)
            if job is None:
                continue
            if msg.metadata.src_node_id != job.node:
                log.warning("job %d: dropped a reply from node %d to the job sent to node %d", job.seq,
                            msg.metadata.src_node_id, job.node)
                continue
            self.arrived.setdefault(job.msg_id, msg)
        now = time.monotonic()
        for msg_id, job in list(self.pending.items()):
            if msg_id not in self.arrived and now - job.sent_at > self.cfg.reply_timeout:
                del self.pending[msg_id]
                self.inactive.add(job.node)
                log.warning("job %d: no reply within reply-timeout=%gs from %s; it gets no more jobs",
                            job.seq, self.cfg.reply_timeout, self.messenger.who(job.node))
                self._row(job, "timed_out", None, Outcome("timed_out"))
        return bool(got)

    def _learn_partitions(self) -> None:
        """A first reply says which partition its node serves; only then is that job's cost known."""
        for msg_id, msg in self.arrived.items():
            job = self.pending[msg_id]
            if job.sim_finish is None and job.node not in self.messenger.partition_of:
                pid = self._claimed_partition(msg)
                identities = self.messenger.identities
                if pid is not None and not identities.refusal(job.node, pid):
                    identities.bind([(job.node, pid)])
                elif pid is not None and job.seq <= len(self.nodes) and pid in identities.node_of:
                    # Both nodes answered their very first job with this partition: a misconfiguration.
                    first, second = sorted((identities.node_of[pid], job.node))
                    raise PartitionConflict(
                        f"nodes {first} and {second} both serve partition {pid}: two SuperNodes were started with "
                        "the same partition-id; give each its own --node-config 'partition-id=I num-partitions=N'")
            if job.sim_finish is None:
                self._cost(job)

    def _claimed_partition(self, msg: Message) -> int | None:
        if not msg.has_content() or "metrics" not in msg.content.metric_records:
            return None
        pid = msg.content.metric_records["metrics"].get("partition-id")
        assert self.costs is not None
        if isinstance(pid, int) and not isinstance(pid, bool) and 0 <= pid < self.costs.num_partitions:
            return pid
        return None

    def _next_simulated(self) -> Job | None:
        """The job that finishes first in simulated time, once every outstanding job's finish is known."""
        self._learn_partitions()
        unknown = [j for j in self.pending.values() if j.sim_finish is None]
        if unknown:
            # A reply that never says a valid partition is processed (and rejected) as it is.
            bad = next((j for j in unknown if j.msg_id in self.arrived), None)
            if bad is not None:
                bad.sim_finish = bad.sim_start
                return bad
            return None
        if not self.pending:
            return None
        return min(self.pending.values(),
                   key=lambda j: (j.sim_finish, self.messenger.partition_of.get(j.node, -1), j.seq))

    def _active_partitions(self) -> set[int]:
        known = {self.messenger.partition_of[n] for n in self.nodes
                 if n not in self.inactive and n in self.messenger.partition_of}
        unknown = sum(1 for n in self.nodes if n not in self.inactive and n not in self.messenger.partition_of)
        # A node that has not replied yet counts, under a placeholder id no result ever has.
        return known | {-1 - k for k in range(unknown)}

    # Processing one result -------------------------------------------------------------------------------------

    def _parse(self, job: Job, msg: Message) -> JobResult:
        if self.rule.message_type == PG:
            result = parse_pg_reply(msg, job.seq, self.state.layout, self.state.obs_shape)
        else:
            result = parse_actor_reply(msg, job.seq, self.trajectory_layout, self.state.obs_shape, self.num_actions)
        refused = self.messenger.identities.refusal(job.node, result.partition_id)
        if refused:
            raise InvalidReply(refused)
        return result

    def process(self, job: Job, msg: Message, now: float) -> None:
        """Check one result, hand it to the rule, log its row and send the node its next job."""
        del self.pending[job.msg_id]
        self.now = max(self.now, now)
        try:
            result = self._parse(job, msg)
        except InvalidReply as exc:
            log.warning("job %d: rejected reply from %s: %s", job.seq, describe(msg, self.messenger.identities), exc)
            self._row(job, "rejected", None, Outcome("rejected"))
            if msg.has_error():
                # The ClientApp failed or the SuperLink reports the node gone: no more jobs
                # for it (a restarted SuperNode comes back as a new node).
                self.inactive.add(job.node)
                log.warning("%s gets no more jobs", self.messenger.who(job.node))
            elif not job.aborted:  # an aborted job's node is sent the next round's job when the round restarts
                self.send(job.node, self.now)
            return
        self.messenger.identities.bind([(job.node, result.partition_id)])
        self.env_steps += result.num_steps
        self.behaviour.extend(result.episode_returns)
        if job.aborted:
            self._row(job, "aborted", result, Outcome("aborted"))
            return
        applied_to = self.rule.version
        outcome = self.rule.on_result(result, job.round, job.version, self._active_partitions())
        if outcome.outcome in ("applied", "batched"):
            self.used_steps += result.num_steps
        elif outcome.outcome == "discarded":
            log.info("job %d from %s discarded: computed for round %d, the round is now %d", job.seq,
                     self.messenger.who(job.node), job.round, self.rule.round)
        self._row(job, outcome.outcome, result, outcome, applied_to)
        if outcome.closed:
            self._close_round(outcome)
        elif self.rule.wants_job(result.partition_id):
            self.send(job.node, self.now)

    def _close_round(self, outcome: Outcome) -> None:
        """A NIGT round closed: it ends κ later; jobs still running for it are aborted, and everyone restarts."""
        assert self.costs is not None and outcome.weights is not None
        end = self.now + max((self.costs.kappa(p) for p in outcome.weights), default=0.0)
        if self.simulated:
            for job in self.pending.values():
                job.aborted = True
            # One job per node: a node gets the next round's job only once its aborted one is back,
            # and the aborted ones are logged in job order, whatever order they come back in.
            while any(j.aborted and m not in self.arrived for m, j in self.pending.items()):
                if not self._pull():
                    time.sleep(POLL_START_S)
            for job in sorted((j for j in self.pending.values() if j.aborted), key=lambda j: j.seq):
                self.process(job, self.arrived.pop(job.msg_id), self.now)
            busy: set[int] = set()
        else:
            busy = {j.node for j in self.pending.values()}
        self.now = end if self.simulated else self.now
        for node in self.nodes:
            if node not in self.inactive and node not in busy:
                self.send(node, end)

    def _row(self, job: Job, name: str, result: JobResult | None, outcome: Outcome,
             applied_to: int | None = None) -> None:
        """Its events.csv row; ``applied_to`` is the version a used result met (staleness = that − sent)."""
        parts = result.parts if result is not None else None
        used = applied_to is not None and name in ("applied", "batched")
        self.recorder.event({
            "sim_time": self.now, "wall_time_s": self.recorder.wall_time(),
            "partition_id": result.partition_id if result is not None else self.messenger.partition_of.get(job.node, ""),
            "job": job.seq, "outcome": name, "version_sent": job.version,
            "version_applied": applied_to if used else "",
            "staleness": applied_to - job.version if used and applied_to is not None else "",
            "round": job.round, "env_steps": result.num_steps if result is not None else 0,
            "env_steps_total": self.env_steps, "env_steps_used": self.used_steps,
            "batch": outcome.batch, "batch_total": outcome.batch_total, "grad_norm": outcome.grad_norm,
            "direction_norm": outcome.direction_norm,
            "weights": ";".join(f"{p}:{w:.6g}" for p, w in sorted(outcome.weights.items())) if outcome.weights else "",
            "loss": parts.loss if parts is not None else "", "clipfrac": parts.clipfrac if parts is not None else "",
            "rho_clipfrac": outcome.rho_clipfrac, "consensus_error": outcome.consensus_error,
            "episodic_return": result.episodic_return if result is not None else ""})

    # The loop --------------------------------------------------------------------------------------------------

    def _evaluate_until(self, now: float) -> None:
        self.evaluations.run(self.evaluations.due(now), self.state, self.env_steps, self.rule.version,
                             list(self.behaviour))

    def _start(self) -> None:
        deadline = time.monotonic() + 120.0
        nodes = self.messenger.wait_for_nodes()
        while len(nodes) < self.cfg.min_replies and time.monotonic() < deadline:
            time.sleep(0.5)
            nodes = sorted(self.grid.get_node_ids())
        self.nodes = nodes
        listed = len(self.cfg.compute_time.split(",")) if "," in self.cfg.compute_time else 0
        self.costs = CostModel(self.cfg, max(len(nodes), listed), self.state.num_parameters)
        self.messenger.identities.num_partitions = self.costs.num_partitions
        for node in nodes:
            self.send(node, 0.0)

    def run(self) -> list[dict]:
        """Run until ``time-budget``; returns the rows of evals.csv."""
        cfg = self.cfg
        log.info("fedrl: %s, %s (asynchronous, %s clock), %d-parameter %s model, time budget %g; results -> %s",
                 cfg.env_id, cfg.aggregator, cfg.clock, self.state.num_parameters, cfg.model_size, cfg.time_budget,
                 self.recorder.path or "(not saved)")
        self.recorder.wall_time()
        self._start()
        delay = POLL_START_S
        last_check = time.monotonic()
        while True:
            got = self._pull()
            if self.simulated:
                job = self._next_simulated()
                if job is None and not self.pending:
                    raise RuntimeError("every node has stopped replying; stopping the run (results so far are "
                                       f"saved in {self.recorder.path or '(not saved)'})")
                if job is not None:
                    assert job.sim_finish is not None
                    if job.sim_finish > cfg.time_budget:
                        break
                    if job.msg_id in self.arrived:
                        self._evaluate_until(job.sim_finish)
                        self.process(job, self.arrived.pop(job.msg_id), job.sim_finish)
                        delay = POLL_START_S
                        continue
            else:
                now = self.wall.now()
                if now >= cfg.time_budget:
                    break
                self._evaluate_until(now)
                if self.arrived:
                    msg_id = next(iter(self.arrived))
                    self.process(self.pending[msg_id], self.arrived.pop(msg_id), self.wall.now())
                    continue
                if time.monotonic() - last_check > NODE_CHECK_S:
                    last_check = time.monotonic()
                    self._admit_new_nodes()
            if not got:
                time.sleep(delay)
                delay = min(2 * delay, POLL_MAX_S)
        self.now = cfg.time_budget
        self._evaluate_until(cfg.time_budget)
        self.recorder.save(self.state)
        self.recorder.close()
        log.info("fedrl: reached time %g after %d updates, %d env steps (%d used); results in %s", cfg.time_budget,
                 self.rule.version, self.env_steps, self.used_steps, self.recorder.path or "(not saved)")
        return self.recorder.evaluations

    def _admit_new_nodes(self) -> None:
        """Wall clock: a node that connects mid-run (a restarted SuperNode) gets a job."""
        for node in sorted(set(self.grid.get_node_ids()) - set(self.nodes)):
            log.info("new node %d connected; sending it a job", node)
            self.nodes.append(node)
            self.send(node, self.wall.now())
