"""The server side of federated PPO: the paper's Algorithm 1 on Flower's Message API."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid

from fedrl.config import FedRLConfig
from fedrl.envs import env_spaces
from fedrl.model import ActorCritic, build_model, count_parameters
from fedrl.normalizer import RunningStats
from fedrl.outputs import RunWriter
from fedrl.protocol import (
    GRADIENT,
    LOCAL,
    LOSS_KEYS,
    OBS_STATS,
    RETURN_STATS,
    ROLLOUT,
    InvalidReply,
    RolloutResult,
    describe,
    instruction,
    pack,
    parse_rollout_reply,
    stats_to_records,
)
from fedrl.runtime import resolve_device
from fedrl.waits import ExpectedWait
from strategies import Aggregate, make_aggregator

log = logging.getLogger("fedrl")

POLL_START_S = 0.0005
POLL_MAX_S = 0.002
ROLLOUT_POLL_MAX_S = 0.02
MAX_ROUND_ATTEMPTS = 3


def exchange(grid: Grid, messages: list[Message], max_poll_s: float = POLL_MAX_S,
             timeout_s: float | None = None, expected: ExpectedWait | None = None) -> tuple[list[Message], list[int]]:
    """Push ``messages`` and pull their replies, polling briefly, for at most ``timeout_s``.

    Returns the replies and the destination nodes that did not reply in time. Only
    this exchange's message ids are pulled, so a late reply to an earlier exchange is
    never mistaken for a reply to this one.

    ``Grid.send_and_receive`` sleeps 3 s between pulls on a deployment; RL sends
    many small messages per round, so the poll starts at 0.5 ms and backs off to
    ``max_poll_s`` (2 ms for gradient exchanges; rollouts, which take seconds, use a
    longer one so the server does not take CPU from the clients). With ``expected``,
    the first poll waits for most of the usual reply time, which this exchange then
    updates (:mod:`fedrl.waits`). On ``fedrl-superlink`` a pull that finds nothing is held
    until a reply is pushed (:mod:`fedrl.fastlink`), so it may return up to 0.5 s past
    ``timeout_s``.
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
    if expected is not None and pending:
        nap = expected.first_sleep() if timeout_s is None else min(expected.first_sleep(), timeout_s)
        time.sleep(nap)
    while pending:
        polled = time.monotonic()
        polls += 1
        got = list(grid.pull_messages(pending))
        for msg in got:
            if msg.metadata.reply_to_message_id in pending:
                pending.discard(msg.metadata.reply_to_message_id)
                replies.append(msg)
        if deadline is not None and time.monotonic() >= deadline:
            break
        if pending and not got:
            time.sleep(delay)
            delay = min(2 * delay, max_poll_s)
        elif got:
            delay = POLL_START_S
    if expected is not None and node_of and not pending:
        expected.observe(polled - pushed, nap, polls == 1)
    return replies, sorted(unsent + [node_of[i] for i in pending])


@dataclass
class RoundLog:
    """What one round produced, for rounds.csv and the progress line."""

    losses: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LOSS_KEYS})
    rejected: int = 0
    timed_out: int = 0
    skipped: int = 0
    replied_partitions: list[int] = field(default_factory=list)
    timed_out_partitions: list[str] = field(default_factory=list)
    failed_partitions: list[str] = field(default_factory=list)
    client_rows: list[dict] = field(default_factory=list)
    exchange_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)
    rollout_s: float = 0.0
    rollout_compute_s: float = float("nan")


class FederatedPPO:
    """Runs the rounds: rollout phase, then ``update-epochs`` × ``num-minibatches`` exchanges.

    Gradient aggregators combine the clients' gradients each exchange and step a
    torch optimizer whose state lives for the whole run; FedAvg/FedProx do one
    local-training exchange per round and average parameters.
    """

    def __init__(self, cfg: FedRLConfig, grid: Grid, run_id: int | str, out: bool = True) -> None:
        self.cfg = cfg
        self.grid = grid
        self.run_id = run_id
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        obs_space, act_space = env_spaces(cfg.env_id)
        self.obs_shape = (int(np.prod(obs_space.shape)),)
        self.model: ActorCritic = build_model(obs_space, act_space, cfg.model_size, cfg.log_std_init).to(self.device)
        self.reference = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        if cfg.server_optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.server_lr, eps=1e-5)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.server_lr)
        self.aggregator = make_aggregator(cfg)
        self.stats = RunningStats.empty(self.obs_shape)
        self.return_stats = RunningStats.empty((1,))
        self.num_parameters = count_parameters(self.model)
        self.writer = RunWriter(cfg, run_id, {"num_parameters": self.num_parameters}) if out else None
        self.env_steps = 0
        self.partition_of: dict[int, int] = {}
        # Reply times differ by kind (a rollout takes seconds, a gradient milliseconds).
        self.reply_waits: dict[str, ExpectedWait] = {}
        self.history: list[dict] = []
        self._start: float | None = None

    # -- messages ---------------------------------------------------------------------------
    def _state(self) -> ArrayRecord:
        return pack({k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()})

    def _send(self, rlog: RoundLog, nodes: Iterable[int], message_type: str, config: dict,
              extra: dict | None = None) -> list[Message]:
        """One exchange; nodes that miss ``reply-timeout`` are counted and logged."""
        content = instruction(self._state(), config, extra)
        group = str(config["server-round"])
        # The TTL makes the SuperLink drop the instruction, and any reply, once we stop waiting.
        msgs = [Message(content, node, message_type, ttl=self.cfg.reply_timeout + 1.0, group_id=group)
                for node in nodes]
        poll = ROLLOUT_POLL_MAX_S if message_type == ROLLOUT else POLL_MAX_S
        replies, missing = exchange(self.grid, msgs, poll, self.cfg.reply_timeout,
                                    self.reply_waits.setdefault(message_type, ExpectedWait()))
        if missing:
            who = [self._who(node) for node in missing]
            rlog.timed_out += len(missing)
            rlog.timed_out_partitions += [w for w in who if w not in rlog.timed_out_partitions]
            log.warning("round %s %s: no reply within reply-timeout=%gs from %s", config["server-round"],
                        message_type, self.cfg.reply_timeout, ", ".join(who))
        return replies

    def _who(self, node_id: int) -> str:
        pid = self.partition_of.get(node_id)
        return f"partition {pid}" if pid is not None else f"node {node_id}"

    def _wait_for_nodes(self, timeout_s: float = 120.0) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if nodes:
                return nodes
            if time.monotonic() > deadline:
                raise RuntimeError(f"no SuperNode connected within {timeout_s:.0f} s")
            time.sleep(0.5)

    # -- phases -----------------------------------------------------------------------------
    def rollout_phase(self, server_round: int, rlog: RoundLog) -> dict[int, RolloutResult]:
        """Every client plays with the global policy; returns the valid replies by partition."""
        stats_arrays, count = stats_to_records(self.stats)
        return_arrays, return_count = stats_to_records(self.return_stats)
        start = time.perf_counter()
        replies = self._send(rlog, self._wait_for_nodes(), ROLLOUT,
                             {"server-round": server_round, "obs-count": count, "return-count": return_count},
                             {OBS_STATS: stats_arrays, RETURN_STATS: return_arrays})
        rlog.rollout_s += time.perf_counter() - start
        results: dict[int, RolloutResult] = {}
        for msg in replies:
            try:
                res = parse_rollout_reply(msg, self.obs_shape)
                if res.partition_id in results:
                    raise InvalidReply("duplicate reply for this partition")
            except InvalidReply as exc:
                log.warning("round %d rollout: rejected reply from %s: %s", server_round, describe(msg), exc)
                rlog.rejected += 1
                if describe(msg) not in rlog.failed_partitions:
                    rlog.failed_partitions.append(describe(msg))
                continue
            results[res.partition_id] = res
            self.partition_of[res.node_id] = res.partition_id
        rlog.replied_partitions = sorted(results)
        if results:
            rlog.rollout_compute_s = max(r.compute_s for r in results.values())
        for pid in sorted(results):
            if self.cfg.normalize_obs:
                self.stats = self.stats.merge(results[pid].obs_stats)
            if self.cfg.normalize_reward:
                self.return_stats = self.return_stats.merge(results[pid].return_stats)
            rlog.client_rows.append({"round": server_round, "exchange": 0, "partition_id": pid,
                                     "episodic_return": results[pid].episodic_return, "loss": "",
                                     "num_steps": results[pid].num_steps, "weight": ""})
        return results

    def _record(self, server_round: int, exchange_no: int, agg: Aggregate, rlog: RoundLog) -> None:
        rlog.rejected += len(agg.rejected)
        rlog.failed_partitions += [who for who in agg.rejected if who not in rlog.failed_partitions]
        for update, weight, reward in zip(agg.updates, agg.weights, agg.rewards):
            for key in LOSS_KEYS:
                rlog.losses[key].append(update.metrics[key])
            rlog.client_rows.append({"round": server_round, "exchange": exchange_no, "partition_id": update.partition_id,
                                     "episodic_return": reward, "loss": update.loss,
                                     "num_steps": update.num_examples, "weight": float(weight)})
        log.debug("round %d exchange %d weights %s", server_round, exchange_no,
                  {u.partition_id: round(float(w), 6) for u, w in zip(agg.updates, agg.weights)})

    def apply_gradient(self, grads: dict[str, np.ndarray]) -> bool:
        """Set ``.grad``, clip the global norm and step the optimizer; False if the step was skipped."""
        for name, param in self.model.named_parameters():
            param.grad = torch.as_tensor(grads[name], device=self.device).clone()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if not torch.isfinite(norm):
            log.warning("skipped an optimizer step: combined gradient norm is %s", float(norm))
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def set_parameters(self, params: dict[str, np.ndarray]) -> bool:
        """Load averaged parameters (FedAvg/FedProx); False (and unchanged) if any is non-finite."""
        if not all(np.all(np.isfinite(v)) for v in params.values()):
            log.warning("skipped a parameter update: averaged parameters are not finite")
            return False
        self.model.load_state_dict({k: torch.as_tensor(v, device=self.device) for k, v in params.items()})
        return True

    def _timed_send(self, rlog: RoundLog, nodes: list[int], message_type: str, config: dict) -> list[Message]:
        start = time.perf_counter()
        replies = self._send(rlog, nodes, message_type, config)
        rlog.exchange_s.append(time.perf_counter() - start)
        return replies

    @staticmethod
    def _note_compute(agg: Aggregate, rlog: RoundLog) -> None:
        # Clients compute in parallel, so the exchange waits for the slowest one.
        times = [u.metrics["compute-s"] for u in agg.updates if "compute-s" in u.metrics]
        if times:
            rlog.compute_s.append(max(times))

    def update_phase(self, server_round: int, results: dict[int, RolloutResult], rlog: RoundLog) -> None:
        """The gradient exchanges (or the one local-training exchange) of a round."""
        nodes = sorted(r.node_id for r in results.values())
        rewards = {pid: r.episodic_return for pid, r in results.items()}
        if not self.cfg.is_gradient_aggregator:
            replies = self._timed_send(rlog, nodes, LOCAL, {"server-round": server_round})
            agg = self.aggregator.aggregate(replies, self.reference, rewards)
            self._note_compute(agg, rlog)
            self._record(server_round, 1, agg, rlog)
            if not self._enough(agg, server_round, 1) or not self.set_parameters(agg.arrays):
                rlog.skipped += 1
            return
        exchange_no = 0
        for epoch in range(self.cfg.update_epochs):
            for minibatch in range(self.cfg.num_minibatches):
                exchange_no += 1
                replies = self._timed_send(rlog, nodes, GRADIENT, {"server-round": server_round, "epoch": epoch,
                                                                   "minibatch": minibatch})
                agg = self.aggregator.aggregate(replies, self.reference, rewards)
                self._note_compute(agg, rlog)
                self._record(server_round, exchange_no, agg, rlog)
                if not self._enough(agg, server_round, exchange_no) or not self.apply_gradient(agg.arrays):
                    rlog.skipped += 1

    def _enough(self, agg: Aggregate, server_round: int, exchange_no: int) -> bool:
        if agg.arrays is not None and len(agg.updates) >= self.cfg.min_replies:
            return True
        log.warning("round %d exchange %d: %d valid replies, fewer than min-replies=%d; step skipped",
                    server_round, exchange_no, len(agg.updates), self.cfg.min_replies)
        return False

    # -- the run ----------------------------------------------------------------------------
    def run_round(self, server_round: int) -> dict:
        """One round: rollout phase, update phase, outputs; returns its rounds.csv row."""
        round_start = time.perf_counter()
        if self._start is None:
            self._start = round_start
        rlog = RoundLog()
        round_steps = 0
        for attempt in range(1, MAX_ROUND_ATTEMPTS + 1):
            results = self.rollout_phase(server_round, rlog)
            # Steps of a retried attempt were played all the same, so they count.
            round_steps += sum(r.num_steps for r in results.values())
            if len(results) >= self.cfg.min_replies:
                break
            log.warning("round %d: %d valid rollout replies, fewer than min-replies=%d (attempt %d of %d)",
                        server_round, len(results), self.cfg.min_replies, attempt, MAX_ROUND_ATTEMPTS)
        else:
            raise RuntimeError(f"round {server_round}: fewer than min-replies={self.cfg.min_replies} valid rollout "
                               f"replies in {MAX_ROUND_ATTEMPTS} attempts; stopping the run (results so far are "
                               f"saved{' in ' + str(self.writer.path) if self.writer else ''})")
        self.update_phase(server_round, results, rlog)
        self.env_steps += round_steps
        returns = [x for r in results.values() for x in r.episode_returns]
        now = time.perf_counter()
        row = {
            "round": server_round,
            "env_steps": self.env_steps,
            "episodic_return_mean": float(np.mean(returns)) if returns else float("nan"),
            "episodic_return_std": float(np.std(returns)) if returns else float("nan"),
            "episodes": len(returns),
            **{f"{k.replace('-', '_')}_mean": (float(np.mean(v)) if v else float("nan"))
               for k, v in rlog.losses.items() if k != "clipfrac"},
            "clients": len(results),
            "rejected_replies": rlog.rejected,
            "timed_out": rlog.timed_out,
            "skipped_steps": rlog.skipped,
            "rollout_ms": 1e3 * rlog.rollout_s,
            "rollout_compute_ms": 1e3 * rlog.rollout_compute_s,
            "exchanges": len(rlog.exchange_s),
            "exchange_ms_mean": 1e3 * float(np.mean(rlog.exchange_s)) if rlog.exchange_s else float("nan"),
            "client_compute_ms_mean": 1e3 * float(np.mean(rlog.compute_s)) if rlog.compute_s else float("nan"),
            "sps": round_steps / max(now - round_start, 1e-9),
            "wall_time_s": now - self._start,
        }
        self.history.append(row)
        if self.writer:
            self.writer.clients(rlog.client_rows)
            self.writer.round(row)
            self.writer.save_model(self.model, self.stats)
        log.info("[round %d/%d] env_steps=%d return=%.1f±%.1f episodes=%d loss=%.4f kl=%.4f sps=%.0f t=%.1fs "
                 "replied=[%s] timed_out=[%s] failed=[%s]", server_round, self.cfg.num_server_rounds,
                 self.env_steps, row["episodic_return_mean"], row["episodic_return_std"], row["episodes"],
                 row["loss_mean"], row["approx_kl_mean"], row["sps"], row["wall_time_s"],
                 ",".join(map(str, rlog.replied_partitions)), "; ".join(rlog.timed_out_partitions),
                 "; ".join(rlog.failed_partitions))
        return row

    def run(self) -> list[dict]:
        """Train for ``num-server-rounds`` rounds; returns the rows of rounds.csv."""
        cfg = self.cfg
        where = self.writer.path if self.writer else "(not saved)"
        log.info("fedrl: %s, aggregator %s, %d-parameter %s model, %d rounds; results -> %s",
                 cfg.env_id, cfg.aggregator, self.num_parameters, cfg.model_size, cfg.num_server_rounds, where)
        for server_round in range(1, cfg.num_server_rounds + 1):
            self.run_round(server_round)
        if self.writer:
            self.writer.close()
            log.info("fedrl: finished %d rounds in %.1f s; results in %s", cfg.num_server_rounds,
                     self.history[-1]["wall_time_s"], self.writer.path)
        return self.history
