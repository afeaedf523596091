"""The asynchronous methods: one class per rule, its update in the docstring.

The asynchronous scheduler (:mod:`fedrl.federation.asynchronous`) sends the jobs and
keeps the clock; a rule says what a job computes at and what to do with each checked
result. A3C and IMPALA step the server's Adam (``server-lr``, ``max-grad-norm``) as
the synchronous gradient rules do; the NIGT family moves the actor by a fixed step
length (:mod:`fedrl.rl.nigt`).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.federation.aggregation import Outcome
from fedrl.federation.protocol import ACTOR, PG, ClientUpdate, JobResult
from fedrl.rl.global_model import GlobalModel
from fedrl.rl.jobs import impala_loss
from fedrl.rl.model import ActorCritic
from fedrl.rl.nigt import NIGT
from fedrl.rl.normalizer import RunningStats
from fedrl.rl.ppo import LossParts
from strategies.gradient import LossWeighted, RewardWeighted


def _norm(arrays: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in arrays.values())))


class _Rule:
    """What every asynchronous rule has (:class:`fedrl.federation.aggregation.AsyncRule` lists it)."""

    name = ""
    message_type = PG
    per_round = False
    hops = 1

    def __init__(self, cfg: FedRLConfig, state: GlobalModel) -> None:
        self.cfg = cfg
        self.state = state
        self.version = 0

    def wants_job(self, partition_id: int) -> bool:
        """Every worker is always busy."""
        return True


class _OnArrival(_Rule):
    """What A3C, IMPALA and GALA share: the latest θ goes out, statistics merge on arrival, one Adam step per update."""

    @property
    def round(self) -> int:
        """Jobs are not grouped in rounds; the version stands in."""
        return self.version

    def parameters(self, node: int) -> dict[str, np.ndarray]:
        """The latest global parameters."""
        return self.state.numpy_state()

    def _step(self, grads: dict[str, np.ndarray]) -> Outcome:
        applied = self.state.apply_gradient(grads)
        if applied:
            self.version += 1
        return Outcome("applied" if applied else "discarded", grad_norm=_norm(grads))


class A3C(_OnArrival):
    """A3C (Mnih et al., 2016), with a parameter server.

        g_j = ∇L(θ_{v_j}) on a fresh job played at θ_{v_j}       (v_j: the version job j was sent)
        θ ← Adam(θ, clip(g_j))  on arrival;  staleness τ_j = v − v_j

    L is the PPO loss at ratio 1: the advantage actor-critic loss with GAE.
    """

    name = "a3c"

    def on_result(self, result: JobResult, job_round: int, job_version: int, active: set[int]) -> Outcome:
        """Apply the gradient now, whatever its staleness (logged)."""
        self.state.merge_stats(result.obs_stats, RunningStats.empty((1,)))
        outcome = self._step(result.arrays)
        outcome.batch = outcome.batch_total = 1
        return outcome


class IMPALA(_OnArrival):
    """IMPALA (Espeholt et al., 2018): actors ship trajectories of a possibly stale behaviour policy μ.

    Every ``impala-batch`` trajectories the learner takes one step on the V-trace loss
    (:func:`fedrl.rl.jobs.impala_loss`) at its current θ:
        θ ← Adam(θ, clip(∇[−mean(A_t log π) + vf_coef·½·mean((v_t − V)²) − ent_coef·H]))
    with v_t and A_t from :mod:`fedrl.rl.vtrace` (ρ̄ = ``vtrace-rho-bar``, c̄ = ``vtrace-c-bar``).
    """

    name = "impala"
    message_type = ACTOR

    def __init__(self, cfg: FedRLConfig, state: GlobalModel) -> None:
        super().__init__(cfg, state)
        self.buffer: list[JobResult] = []
        self.last_parts: LossParts | None = None

    def on_result(self, result: JobResult, job_round: int, job_version: int, active: set[int]) -> Outcome:
        """Buffer the trajectory; the one that fills the batch triggers a learner step."""
        self.state.merge_stats(result.obs_stats, RunningStats.empty((1,)))
        self.buffer.append(result)
        if len(self.buffer) < self.cfg.impala_batch:
            return Outcome("batched", batch=len(self.buffer), batch_total=len(self.buffer))
        batch = {k: torch.as_tensor(np.concatenate([r.arrays[k] for r in self.buffer], axis=1))
                 for k in self.buffer[0].arrays}
        behaviour = torch.as_tensor(np.concatenate([r.behaviour_logprobs for r in self.buffer], axis=1))  # type: ignore[misc]
        model = self.state.model
        model.zero_grad(set_to_none=True)
        loss, parts, rho_clipfrac = impala_loss(model, self.state.obs_stats, batch, behaviour, self.cfg)
        loss.backward()
        grads = {name: p.grad.detach().cpu().numpy() for name, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        size = len(self.buffer)
        self.buffer = []
        self.last_parts = parts
        outcome = self._step(grads)
        outcome.batch = outcome.batch_total = size
        outcome.rho_clipfrac = rho_clipfrac
        return outcome


class _NIGTRound(_Rule):
    """The NIGT outer loop shared by Rennala, Malenia and synchronous NIGT (:mod:`fedrl.rl.nigt`).

    Round k sends θ̃_k and the observation statistics of its start (merged only when it
    closes, so all of its gradients see the same inputs). Worker i's results of round k
    sum to G_i over B_i gradients; a result computed for an earlier round is discarded.
    When :meth:`complete` holds, g_k = Σ_i w_i·G_i (:meth:`weights`) makes one NIGT step.
    The first round is filled to ``nigt-init-batch``, later ones to ``nigt-batch`` (M).
    """

    per_round = True

    def __init__(self, cfg: FedRLConfig, state: GlobalModel) -> None:
        super().__init__(cfg, state)
        self.nigt = NIGT(state.model, cfg.nigt_lr, cfg.nigt_momentum, cfg.server_lr, cfg.max_grad_norm)
        self.round = 0
        self.query = self.nigt.query_point()
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[int, dict[str, np.ndarray]] = {}
        self.counts: dict[int, int] = {}
        self.returns: dict[int, list[float]] = {}
        self.losses: dict[int, list[float]] = {}
        self.stats: list[RunningStats] = []

    @property
    def target(self) -> int:
        """M_init in the first round, M after."""
        return self.cfg.nigt_init_batch if self.round == 0 else self.cfg.nigt_batch

    def parameters(self, node: int) -> dict[str, np.ndarray]:
        """θ̃_k (θ_k for the critic), the same for every worker."""
        return self.query

    def complete(self, active: set[int]) -> bool:
        """Whether the round's batch is full."""
        raise NotImplementedError

    def weights(self, partitions: list[int]) -> dict[int, float]:
        """w_i on each contributing worker's sum G_i."""
        raise NotImplementedError

    def on_result(self, result: JobResult, job_round: int, job_version: int, active: set[int]) -> Outcome:
        """Batch a result of the current round (discard an older one); a full batch makes the NIGT step."""
        if job_round != self.round:
            return Outcome("discarded")
        pid = result.partition_id
        total = self.sums.setdefault(pid, {k: np.zeros(v.shape, np.float64) for k, v in result.arrays.items()})
        for key, value in result.arrays.items():
            total[key] += value
        self.counts[pid] = self.counts.get(pid, 0) + 1
        self.returns.setdefault(pid, []).extend(result.episode_returns)
        assert result.parts is not None
        self.losses.setdefault(pid, []).append(result.parts.loss)
        self.stats.append(result.obs_stats)
        batch, batch_total = self.counts[pid], sum(self.counts.values())
        if not self.complete(active):
            return Outcome("batched", batch=batch, batch_total=batch_total)
        partitions = sorted(self.sums)
        weights = self.weights(partitions)
        combined = {key: sum(weights[p] * self.sums[p][key] for p in partitions) for key in self.state.layout}
        g_norm, d_norm = self.nigt.step(combined)
        for stats in self.stats:
            self.state.merge_stats(stats, RunningStats.empty((1,)))
        self.round += 1
        self.version += 1
        self.query = self.nigt.query_point()
        self._reset()
        return Outcome("applied", batch=batch, batch_total=batch_total, grad_norm=g_norm, direction_norm=d_norm,
                       weights=weights, closed=True)


class RennalaNIGT(_NIGTRound):
    """Rennala NIGT: the round's batch is the first M gradients to finish, whoever computed them.

        stop when Σ_i B_i ≥ M;   g = (1/Σ_i B_i)·Σ_i G_i
    """

    name = "rennala-nigt"

    def complete(self, active: set[int]) -> bool:
        """Σ B_i ≥ M."""
        return sum(self.counts.values()) >= self.target

    def weights(self, partitions: list[int]) -> dict[int, float]:
        """1/Σ B_i for every gradient."""
        total = sum(self.counts.values())
        return {p: 1.0 / total for p in partitions}


class MaleniaNIGT(_NIGTRound):
    """Malenia NIGT: every worker contributes, as a mean of local means.

        stop when every B_i ≥ 1 and (1/n·Σ_i 1/B_i)^{-1} ≥ M/n;   g = (1/n)·Σ_i G_i/B_i
    """

    name = "malenia-nigt"

    def complete(self, active: set[int]) -> bool:
        """All active workers have a gradient, and the harmonic mean of the B_i reaches M/n."""
        if any(self.counts.get(p, 0) < 1 for p in active):
            return False
        n = len(active)
        return n / sum(1.0 / self.counts[p] for p in active) >= self.target / n

    def weights(self, partitions: list[int]) -> dict[int, float]:
        """1/(n·B_i)."""
        return {p: 1.0 / (len(partitions) * self.counts[p]) for p in partitions}


class SyncNIGT(_NIGTRound):
    """Synchronous NIGT: each worker computes exactly one gradient per round and everyone waits for the slowest.

        B_i = 1;   g = (1/n)·Σ_i G_i
    """

    name = "sync-nigt"

    def wants_job(self, partition_id: int) -> bool:
        """One job per worker per round."""
        return self.counts.get(partition_id, 0) == 0

    def complete(self, active: set[int]) -> bool:
        """Every active worker has its gradient."""
        return all(self.counts.get(p, 0) >= 1 for p in active)

    def weights(self, partitions: list[int]) -> dict[int, float]:
        """1/n."""
        return {p: 1.0 / len(partitions) for p in partitions}


class _MaleniaWeighted(MaleniaNIGT):
    """Malenia's batch, with the core paper's R/L weight ω_i on each worker's local mean.

        g = Σ_i ω̂_i·G_i/B_i,   ω̂_i = ω_i/Σ_j ω_j,   ω_i from strategies/gradient.py
    ω is normalised so g keeps Malenia's scale (the momentum mixes g with d, so its scale
    matters). Every gradient of a round is taken at θ̃_k, so rewards and losses compare.
    """

    rule: RewardWeighted | LossWeighted

    def weights(self, partitions: list[int]) -> dict[int, float]:
        """ω̂_i / B_i."""
        updates = [ClientUpdate(p, -1, {}, LossParts(float(np.mean(self.losses[p])), 0, 0, 0, 0, 0), self.counts[p])
                   for p in partitions]
        omega = np.asarray(self.rule.weights(updates, self._rewards(partitions)), np.float64)
        omega = omega / omega.sum()
        return {p: float(w) / self.counts[p] for p, w in zip(partitions, omega)}

    def _rewards(self, partitions: list[int]) -> np.ndarray:
        """Each worker's mean return this round; one that finished no episode gets the others' mean (or 0)."""
        means = {p: float(np.mean(self.returns[p])) for p in partitions if self.returns.get(p)}
        fallback = float(np.mean(list(means.values()))) if means else 0.0
        return np.asarray([means.get(p, fallback) for p in partitions], np.float64)


class MaleniaRWeighted(_MaleniaWeighted):
    """Malenia NIGT with R-Weighted ω_i = r'_i/Σ_j r'_j + 1/h (r' = r − min r), normalised; see the base class."""

    name = "malenia-rweighted"

    def __init__(self, cfg: FedRLConfig, state: GlobalModel) -> None:
        super().__init__(cfg, state)
        self.rule = RewardWeighted(cfg.weight_floor_h)


class MaleniaLWeighted(_MaleniaWeighted):
    """Malenia NIGT with L-Weighted ω_i = l_i/Σ_j l_j + 1/h (l: the mean job loss, offset if negative), normalised."""

    name = "malenia-lweighted"

    def __init__(self, cfg: FedRLConfig, state: GlobalModel) -> None:
        super().__init__(cfg, state)
        self.rule = LossWeighted(cfg.weight_floor_h)


class GALA(_OnArrival):
    """GALA (Assran et al., 2019), gossip relayed by the server: n agents, each with its own θ_i and Adam.

    Agent i's job k starts from the mix with its in-peer's latest copy, then takes one
    local step with the gradient it computed there:
        θ_i^mix = ½(θ_i + θ_p),   p = ring peer (i + 2^(k mod ⌊log2 n⌋)) mod n   (time-varying exponential graph)
        θ_i ← Adam_i(θ_i^mix, clip(∇L(θ_i^mix)))
    The server only relays: it keeps every agent's latest θ_j (and, since a ClientApp
    keeps no state between messages on a deployment, its Adam moments) and puts the
    peer's copy in the agent's next job. A job therefore pays two hops (2κ_i), all
    models cross one link, and there is no global model: the mean θ̄ is evaluated and
    saved, and the consensus error mean_i ‖θ_i − θ̄‖ is logged.
    """

    name = "gala"
    hops = 2

    def __init__(self, cfg: FedRLConfig, state: GlobalModel) -> None:
        super().__init__(cfg, state)
        self.agents: dict[int, ActorCritic] = {}
        self.optimizers: dict[int, torch.optim.Optimizer] = {}
        self.steps: dict[int, int] = {}
        self.mixes: dict[int, dict[str, np.ndarray]] = {}

    def _agent(self, node: int) -> ActorCritic:
        if node not in self.agents:
            self.agents[node] = copy.deepcopy(self.state.model)
            self.optimizers[node] = torch.optim.Adam(self.agents[node].parameters(), lr=self.cfg.server_lr, eps=1e-5)
            self.steps[node] = 0
        return self.agents[node]

    def _peer(self, node: int) -> int:
        ring = sorted(self.agents)
        hops = max(1, int(math.log2(len(ring)))) if len(ring) > 1 else 1
        return ring[(ring.index(node) + 2 ** (self.steps[node] % hops)) % len(ring)]

    def parameters(self, node: int) -> dict[str, np.ndarray]:
        """Agent ``node``'s mix with its current in-peer's latest copy (kept until its result comes)."""
        own = {k: v.detach().cpu().numpy() for k, v in self._agent(node).state_dict().items()}
        peer = {k: v.detach().cpu().numpy() for k, v in self.agents[self._peer(node)].state_dict().items()}
        self.mixes[node] = {k: 0.5 * (own[k] + peer[k]) for k in own}
        return self.mixes[node]

    def on_result(self, result: JobResult, job_round: int, job_version: int, active: set[int]) -> Outcome:
        """Step the agent from its mix with its gradient; the server's model becomes the agents' mean."""
        self.state.merge_stats(result.obs_stats, RunningStats.empty((1,)))
        node = result.node_id
        agent = self._agent(node)
        agent.load_state_dict({k: torch.as_tensor(v) for k, v in self.mixes.pop(node).items()})
        for name, param in agent.named_parameters():
            param.grad = torch.as_tensor(result.arrays[name]).clone()
        norm = torch.nn.utils.clip_grad_norm_(agent.parameters(), self.cfg.max_grad_norm)
        optimizer = self.optimizers[node]
        if torch.isfinite(norm):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.steps[node] += 1
        self.version += 1
        states = [a.state_dict() for a in self.agents.values()]
        mean = {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}
        self.state.model.load_state_dict(mean)
        error = float(np.mean([math.sqrt(sum(float(((s[k] - mean[k]) ** 2).sum()) for k in mean)) for s in states]))
        return Outcome("applied", batch=1, batch_total=1, grad_norm=_norm(result.arrays), consensus_error=error)
