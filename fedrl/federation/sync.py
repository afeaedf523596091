"""The synchronous rounds: the paper's Algorithm 1 on Flower's Message API.

Each phase is a pair, as a Flower strategy's ``configure_train`` and ``aggregate_train``
are: ``configure`` builds what every node is sent, ``aggregate`` takes in the replies,
which the protocol checks first (:func:`~fedrl.federation.protocol.check_replies`).
:meth:`SyncScheduler.run_round` drives them; what a round leaves behind (CSV rows, the
progress line, ``model.pt``) goes through the :class:`~fedrl.federation.recorder.Recorder`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid

from fedrl.config import FedRLConfig
from fedrl.federation.aggregation import Aggregate, Aggregator, Exchange
from fedrl.federation.clock import CostModel
from fedrl.federation.evaluations import Evaluations
from fedrl.federation.identity import Identities
from fedrl.federation.messenger import Messenger
from fedrl.federation.protocol import (
    GRADIENT,
    GRADS,
    LOCAL,
    OBS_STATS,
    RETURN_STATS,
    ROLLOUT,
    ClientUpdate,
    InvalidReply,
    RolloutResult,
    check_replies,
    instruction,
    instructions,
    pack,
    parse_rollout_reply,
    parse_update_reply,
    stats_to_records,
)
from fedrl.federation.recorder import Recorder, RoundRecord
from fedrl.federation.resume import (
    check_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    saved_config,
    set_rng_state,
)
from fedrl.rl.global_model import GlobalModel
from fedrl.runtime import resolve_device
from fedrl.transport import simpoll

log = logging.getLogger("fedrl")

MAX_ROUND_ATTEMPTS = 3
# Clients whose rollouts overlapped less than this (their summed compute over the phase's
# wall time) ran one at a time.
SERIAL_PARALLELISM = 1.3


def serial_clients_warning(rollouts: list[RolloutResult], seconds: float, cpus: int | None,
                           supernodes: int | None = None) -> str | None:
    """A warning if ``rollouts``, played in one phase of ``seconds``, ran one at a time on a machine that has the CPUs.

    Flower's simulation engine gives every ClientApp 2 CPUs unless the federation says
    otherwise, so on a 2-core machine its clients take turns. The remedy is named exactly,
    for the federation's ``supernodes`` (default: one per rollout).
    """
    n, cpus = len(rollouts), cpus or 1
    compute = sum(r.compute_s for r in rollouts if np.isfinite(r.compute_s))
    if n < 2 or cpus < 2 or seconds <= 0 or compute / seconds >= SERIAL_PARALLELISM:
        return None
    return (f"the {n} clients ran one at a time: their rollouts took {compute:.2f} s of compute in a "
            f"{seconds:.2f} s phase, on a machine with {cpus} CPUs. In Flower's simulation engine every "
            f"ClientApp gets 2 CPUs unless the federation says otherwise; run with --federation-config "
            f"'num-supernodes={supernodes or n} client-resources-num-cpus=1' (one client per core)")


class RolloutPhase:
    """Every client plays with the global policy; the server pools their observation statistics."""

    def __init__(self, cfg: FedRLConfig, state: GlobalModel) -> None:
        self.cfg = cfg
        self.state = state

    def configure(self, server_round: int, nodes: list[int]) -> list[Message]:
        """The global parameters and statistics, to every node."""
        stats_arrays, count = stats_to_records(self.state.obs_stats)
        return_arrays, return_count = stats_to_records(self.state.return_stats)
        content = instruction(pack(self.state.numpy_state()),
                              {"server-round": server_round, "obs-count": count, "return-count": return_count},
                              {OBS_STATS: stats_arrays, RETURN_STATS: return_arrays})
        return instructions(content, nodes, ROLLOUT, server_round, self.cfg.reply_timeout)

    def aggregate(self, server_round: int, replies: list[Message], record: RoundRecord, seconds: float,
                  messenger: Messenger) -> list[RolloutResult]:
        """The valid rollouts, sorted by partition; their statistics are merged in that order."""
        where = f"round {server_round} rollout"
        checked = check_replies(replies, lambda m: parse_rollout_reply(m, self.state.obs_shape), where,
                                messenger.identities)
        for result in list(checked.accepted):
            if not self.state.merge_stats(result.obs_stats, result.return_stats):
                checked.drop(result, "its statistics would make the global statistics non-finite or implausible",
                             where)
        record.note_rollout(checked, seconds)
        return checked.accepted


class UpdatePhase:
    """``update-epochs`` × ``num-minibatches`` gradient exchanges, or one local-training exchange (FedAvg/FedProx)."""

    def __init__(self, cfg: FedRLConfig, state: GlobalModel, aggregator: Aggregator) -> None:
        self.cfg = cfg
        self.state = state
        self.aggregator = aggregator

    @property
    def message_type(self) -> str:
        """``train.gradient`` for gradient rules, ``train.local`` for parameter averaging."""
        return GRADIENT if self.aggregator.reply_record == GRADS else LOCAL

    def exchanges(self) -> list[dict[str, Any]]:
        """What distinguishes each exchange of a round, in order."""
        if self.aggregator.reply_record != GRADS:
            return [{}]
        return [{"epoch": epoch, "minibatch": minibatch}
                for epoch in range(self.cfg.update_epochs) for minibatch in range(self.cfg.num_minibatches)]

    def configure(self, server_round: int, settings: dict[str, Any], rollouts: list[RolloutResult]) -> list[Message]:
        """The current parameters, to every node with a valid rollout this round."""
        content = instruction(pack(self.state.numpy_state()), {"server-round": server_round, **settings})
        nodes = sorted(r.node_id for r in rollouts)
        return instructions(content, nodes, self.message_type, server_round, self.cfg.reply_timeout)

    def aggregate(self, server_round: int, exchange_no: int, settings: dict[str, Any], replies: list[Message],
                  rollouts: list[RolloutResult], record: RoundRecord, seconds: float, identities: Identities) -> None:
        """Combine the valid replies and step the global model (or skip the step, counted and logged)."""
        rewards = {r.partition_id: r.episodic_return for r in rollouts}
        steps = {r.partition_id: r.num_steps for r in rollouts}

        def examples(update: ClientUpdate) -> None:
            # A minibatch of np.array_split(range(steps), num-minibatches), or the whole rollout.
            n = steps[update.partition_id]
            if "minibatch" in settings:
                n = n // self.cfg.num_minibatches + (settings["minibatch"] < n % self.cfg.num_minibatches)
            if update.num_examples != n:
                raise InvalidReply(f"num-examples {update.num_examples} is not the {n} steps this exchange covers")

        checked = check_replies(replies, lambda m: parse_update_reply(m, self.aggregator.reply_record,
                                                                      self.state.layout),
                                f"round {server_round} exchange {exchange_no}", identities, partitions=rewards,
                                check=examples)
        parameters = self.aggregator.reply_record != GRADS
        context = Exchange(episodes={r.partition_id: len(r.episode_returns) for r in rollouts},
                           center=self.state.numpy_state() if parameters else None,
                           acceptable=self.state.accepts_parameters if parameters else None)
        agg = self.aggregator.aggregate(checked.accepted, self.state.layout, rewards, context)
        record.note_exchange(exchange_no, checked, agg, seconds)
        if not self._enough(agg, server_round, exchange_no) or not self._apply(agg):
            record.skipped += 1

    def _apply(self, agg: Aggregate) -> bool:
        assert agg.arrays is not None
        if self.aggregator.reply_record == GRADS:
            return self.state.apply_gradient(agg.arrays)
        return self.state.set_parameters(agg.arrays)

    def _enough(self, agg: Aggregate, server_round: int, exchange_no: int) -> bool:
        if agg.arrays is not None and len(agg.updates) >= self.cfg.min_replies:
            return True
        log.warning("round %d exchange %d: %d valid replies, fewer than min-replies=%d; step skipped",
                    server_round, exchange_no, len(agg.updates), self.cfg.min_replies)
        return False


class SyncScheduler:
    """Runs the rounds: a rollout phase, then the update phase, every client in every exchange."""

    def __init__(self, cfg: FedRLConfig, grid: Grid, aggregator: Aggregator, run_id: int | str,
                 out: bool = True, extra: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.state = GlobalModel(cfg, resolve_device(cfg.device))
        self.messenger = Messenger(grid, cfg.reply_timeout)
        self.rollout = RolloutPhase(cfg, self.state)
        self.update = UpdatePhase(cfg, self.state, aggregator)
        resume = self._resume_point() if out and cfg.resume_from else None
        self.recorder = Recorder(cfg, run_id, {"num_parameters": self.state.num_parameters, **(extra or {})}, out,
                                 resume=resume)
        self.evaluations = Evaluations(cfg, cfg.num_server_rounds, self.recorder)
        self.costs: CostModel | None = None
        self.sim_time = 0.0
        self.done_rounds = 0
        self.resumed_nodes = 0
        self.rounds_here = 0
        if resume is not None:
            self._restore(resume)

    def _resume_point(self) -> dict[str, Any]:
        run_dir = Path(os.path.expanduser(self.cfg.resume_from))
        checkpoint = load_checkpoint(run_dir)
        check_config(self.cfg, saved_config(run_dir), run_dir)
        return checkpoint

    def checkpoint(self) -> dict[str, Any]:
        """Everything the rest of the run depends on, after ``done_rounds`` rounds (see fedrl.federation.resume)."""
        return {"round": self.done_rounds, "num_nodes": self.costs.num_partitions if self.costs else 0,
                "env_steps": self.recorder.env_steps,
                "wall_time_s": self.recorder.wall_time(), "sim_time": self.sim_time, "global": self.state.state(),
                "aggregator": self.update.aggregator.state(), "waits": self.messenger.waits(),
                "next_eval": self.evaluations.next_at, "rng": rng_state(), "csv_sizes": self.recorder.csv_sizes()}

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.done_rounds = int(ckpt["round"])
        self.resumed_nodes = int(ckpt["num_nodes"])
        self.sim_time = float(ckpt["sim_time"])
        self.state.load_state(ckpt["global"])
        self.update.aggregator.load_state(ckpt["aggregator"])
        self.messenger.restore_waits(ckpt["waits"])
        self.evaluations.next_at = float(ckpt["next_eval"])
        set_rng_state(ckpt["rng"])

    def _save_checkpoint(self) -> None:
        if self.recorder.path is not None:
            save_checkpoint(self.recorder.path, self.checkpoint())

    def _charge(self, partitions: list[int], steps: dict[int, int] | None = None) -> None:
        """The shared time axis: an exchange costs its slowest client's compute (a rollout) plus its κ."""
        if self.costs is None or not partitions:
            return
        costs = self.costs
        self.sim_time += max(costs.kappa(p) + (costs.rollout(p, steps[p]) if steps else 0.0)
                             for p in partitions if p < costs.num_partitions)

    def sample(self, server_round: int, attempt: int, nodes: list[int]) -> list[int]:
        """The nodes this round's attempt trains: all, or ``ceil(fraction-train × n)`` (at least min-replies) at random.

        The draw is seeded by (seed, round, attempt) over the nodes ordered by the partition
        they hold (nodes not heard from yet last, by id), so it repeats between runs once
        every node has replied once; Flower gives simulated nodes random ids.
        """
        if self.cfg.fraction_train >= 1.0:
            return nodes
        k = min(len(nodes), max(self.cfg.min_replies, math.ceil(self.cfg.fraction_train * len(nodes))))
        known = self.messenger.partition_of
        ordered = sorted(nodes, key=lambda n: (0, known[n]) if n in known else (1, n))
        rng = np.random.default_rng([self.cfg.seed, server_round, attempt, 0x5A])
        return sorted(ordered[i] for i in rng.choice(len(ordered), size=k, replace=False))

    def _check_parallel(self, rollouts: list[RolloutResult], seconds: float) -> None:
        """Once, at the second rollout phase of this process (the first pays for start-up): did the clients overlap?"""
        self.rounds_here += 1
        # Only the simulation engine decides how many clients run at once; the in-process
        # grid runs them one after the other by design, a deployment one per SuperNode.
        if self.rounds_here == 2 and simpoll.in_simulation_engine(self.messenger.grid):
            warning = serial_clients_warning(rollouts, seconds, os.cpu_count(),
                                             self.costs.num_partitions if self.costs else None)
            if warning:
                log.warning(warning)

    def run_round(self, server_round: int) -> dict:
        """One round: rollout phase (retried if too few clients replied), update phase; returns its rounds.csv row."""
        record = self.recorder.start_round(server_round)
        for attempt in range(1, MAX_ROUND_ATTEMPTS + 1):
            nodes = self.messenger.wait_for_nodes()
            if self.costs is None:
                self.costs = CostModel(self.cfg, len(nodes), self.state.num_parameters)
                if self.resumed_nodes and self.resumed_nodes != len(nodes):
                    log.warning("round %d: %d nodes are connected, but the run was checkpointed with %d; the rest "
                                "of the run will not match an uninterrupted one", server_round, len(nodes),
                                self.resumed_nodes)
            nodes = self.sample(server_round, attempt, nodes)
            messages = self.rollout.configure(server_round, nodes)
            replies, missed, seconds = self.messenger.send(messages, f"round {server_round} {ROLLOUT}")
            record.note_timeouts(missed)
            rollouts = self.rollout.aggregate(server_round, replies, record, seconds, self.messenger)
            self._check_parallel(rollouts, seconds)
            self._charge([r.partition_id for r in rollouts], {r.partition_id: r.num_steps for r in rollouts})
            if len(rollouts) >= self.cfg.min_replies:
                break
            log.warning("round %d: %d valid rollout replies, fewer than min-replies=%d (attempt %d of %d)",
                        server_round, len(rollouts), self.cfg.min_replies, attempt, MAX_ROUND_ATTEMPTS)
        else:
            where = f" in {self.recorder.path}" if self.recorder.path else ""
            raise RuntimeError(f"round {server_round}: fewer than min-replies={self.cfg.min_replies} valid rollout "
                               f"replies in {MAX_ROUND_ATTEMPTS} attempts; stopping the run (results so far are "
                               f"saved{where})")
        for exchange_no, settings in enumerate(self.update.exchanges(), start=1):
            messages = self.update.configure(server_round, settings, rollouts)
            replies, missed, seconds = self.messenger.send(messages, f"round {server_round} {self.update.message_type}")
            record.note_timeouts(missed)
            self.update.aggregate(server_round, exchange_no, settings, replies, rollouts, record, seconds,
                                  self.messenger.identities)
            self._charge(sorted({r.partition_id for r in rollouts}))
        record.sim_time = self.sim_time
        row = self.recorder.end_round(record, self.state)
        self._evaluate(server_round, record)
        self.done_rounds = server_round
        self._save_checkpoint()
        return row

    def _evaluate(self, server_round: int, record: RoundRecord | None) -> None:
        behaviour = [x for r in record.rollouts for x in r.episode_returns] if record is not None else []
        if self.evaluations.due(server_round):
            self.evaluations.run([self.sim_time], self.state, self.recorder.env_steps,
                                 server_round * len(self.update.exchanges()), behaviour)

    def run(self) -> list[dict]:
        """Train for ``num-server-rounds`` rounds; returns the rows of rounds.csv."""
        cfg, where = self.cfg, self.recorder.path or "(not saved)"
        log.info("fedrl: %s, aggregator %s, %d-parameter %s model, %d rounds; results -> %s",
                 cfg.env_id, cfg.aggregator, self.state.num_parameters, cfg.model_size, cfg.num_server_rounds, where)
        if self.done_rounds == 0:
            self._evaluate(0, None)
            self._save_checkpoint()
        for server_round in range(self.done_rounds + 1, cfg.num_server_rounds + 1):
            self.run_round(server_round)
        self.recorder.close()
        if self.recorder.path:
            log.info("fedrl: finished %d rounds in %.1f s; results in %s", cfg.num_server_rounds,
                     self.recorder.history[-1]["wall_time_s"], self.recorder.path)
        return self.recorder.history
