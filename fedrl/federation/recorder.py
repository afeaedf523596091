"""A run's bookkeeping: config.json, rounds.csv, clients.csv, model.pt and the progress line.

Schedulers note what happens in a round on a :class:`RoundRecord`; the
:class:`Recorder` turns it into the round's rows, writes them (flushing each, so a
killed run keeps every finished round), saves the policy and logs the progress line.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrl.config import FedRLConfig
from fedrl.federation.protocol import Checked, ClientUpdate, RolloutResult
from fedrl.rl.checkpoint import save_policy
from fedrl.rl.global_model import GlobalModel
from fedrl.rl.ppo import LossParts
from fedrl.runtime import machine, versions

log = logging.getLogger("fedrl")

ROUND_COLUMNS = ("round", "env_steps", "episodic_return_mean", "episodic_return_std", "episodes", "loss_mean",
                 "policy_loss_mean", "value_loss_mean", "entropy_mean", "approx_kl_mean", "clipfrac_mean",
                 "explained_variance", "clients", "rejected_replies", "timed_out", "skipped_steps", "rollout_ms",
                 "rollout_compute_ms", "exchanges", "exchange_ms_mean", "client_compute_ms_mean", "sps", "wall_time_s")
CLIENT_COLUMNS = ("round", "exchange", "partition_id", "episodic_return", "loss", "num_steps", "weight")


def run_name(cfg: FedRLConfig, run_id: int | str) -> str:
    """``<env>_<aggregator>_seed<seed>_run<id>``: what a run directory is called."""
    return f"{cfg.env_id}_{cfg.aggregator}_seed{cfg.seed}_run{run_id}"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclass
class RoundRecord:
    """What one round produced, noted by the scheduler as it goes."""

    server_round: int
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    rollouts: list[RolloutResult] = field(default_factory=list)
    arrival: list[int] = field(default_factory=list)
    losses: list[LossParts] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    skipped: int = 0
    client_rows: list[dict] = field(default_factory=list)
    exchange_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)
    rollout_s: float = 0.0

    def note_timeouts(self, who: list[str]) -> None:
        """Nodes that missed ``reply-timeout`` in one exchange."""
        self.timed_out += who

    def note_rollout(self, checked: Checked[RolloutResult], seconds: float) -> None:
        """One rollout attempt: the valid replies replace an earlier attempt's; their steps and rows add up."""
        self.rejected += checked.rejected
        self.rollout_s += seconds
        self.rollouts = checked.accepted
        self.arrival = checked.arrival
        # Steps of a retried attempt were played all the same, so they count.
        self.steps += sum(r.num_steps for r in checked.accepted)
        for r in checked.accepted:
            self.client_rows.append({"round": self.server_round, "exchange": 0, "partition_id": r.partition_id,
                                     "episodic_return": r.episodic_return, "loss": "", "num_steps": r.num_steps,
                                     "weight": ""})

    def note_exchange(self, exchange_no: int, checked: Checked[ClientUpdate], weights: np.ndarray,
                      rewards: list[float], seconds: float) -> None:
        """One update exchange: its replies, the weight each got and how long it took."""
        self.exchange_s.append(seconds)
        self.rejected += checked.rejected
        # Clients compute in parallel, so the exchange waits for the slowest one.
        times = [u.compute_s for u in checked.accepted if np.isfinite(u.compute_s)]
        if times:
            self.compute_s.append(max(times))
        for update, weight, reward in zip(checked.accepted, weights, rewards):
            self.losses.append(update.parts)
            self.client_rows.append({"round": self.server_round, "exchange": exchange_no,
                                     "partition_id": update.partition_id, "episodic_return": reward,
                                     "loss": update.loss, "num_steps": update.num_examples, "weight": float(weight)})
        log.debug("round %d exchange %d weights %s", self.server_round, exchange_no,
                  {u.partition_id: round(float(w), 6) for u, w in zip(checked.accepted, weights)})

    def failed(self) -> list[str]:
        """Senders of rejected replies, each once, in order."""
        return list(dict.fromkeys(who for who, _ in self.rejected))


class Recorder:
    """Writes one run's files as the run goes (see the module docstring); ``out=False`` writes nothing."""

    def __init__(self, cfg: FedRLConfig, run_id: int | str, extra: dict[str, Any] | None = None,
                 out: bool = True) -> None:
        self.cfg = cfg
        self.history: list[dict] = []
        self.env_steps = 0
        self._start: float | None = None
        self.path: Path | None = None
        if not out:
            return
        base = cfg.outdir_path / run_name(cfg, run_id)
        path, n = base, 1
        while path.exists():  # never overwrite an earlier run's results
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True)
        self.path = path
        config = {"config": cfg.to_run_config(), "run_id": run_id, "versions": versions(), "machine": machine(),
                  **(extra or {})}
        (path / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        self._rounds = open(path / "rounds.csv", "w", newline="")
        self._clients = open(path / "clients.csv", "w", newline="")
        self._round_writer = csv.DictWriter(self._rounds, ROUND_COLUMNS)
        self._client_writer = csv.DictWriter(self._clients, CLIENT_COLUMNS)
        self._round_writer.writeheader()
        self._client_writer.writeheader()

    def start_round(self, server_round: int) -> RoundRecord:
        """A fresh record for ``server_round``; the run's clock starts with the first."""
        record = RoundRecord(server_round)
        if self._start is None:
            self._start = record.started
        return record

    def row(self, record: RoundRecord) -> dict:
        """The rounds.csv row of a finished round."""
        now = time.perf_counter()
        # In arrival order, as fedrl always has: the last digit of the mean and std depends on it.
        by_partition = {r.partition_id: r for r in record.rollouts}
        returns = [x for pid in record.arrival for x in by_partition[pid].episode_returns]
        losses = {name: [getattr(p, name) for p in record.losses] for name in LossParts._fields}
        explained = [r.explained_variance for r in record.rollouts if np.isfinite(r.explained_variance)]
        compute = [r.compute_s for r in record.rollouts]
        return {
            "round": record.server_round,
            "env_steps": self.env_steps,
            "episodic_return_mean": _mean(returns),
            "episodic_return_std": float(np.std(returns)) if returns else float("nan"),
            "episodes": len(returns),
            **{f"{name}_mean": _mean(values) for name, values in losses.items()},
            "explained_variance": _mean(explained),
            "clients": len(record.rollouts),
            "rejected_replies": len(record.rejected),
            "timed_out": len(record.timed_out),
            "skipped_steps": record.skipped,
            "rollout_ms": 1e3 * record.rollout_s,
            "rollout_compute_ms": 1e3 * max(compute) if compute else float("nan"),
            "exchanges": len(record.exchange_s),
            "exchange_ms_mean": 1e3 * _mean(record.exchange_s),
            "client_compute_ms_mean": 1e3 * _mean(record.compute_s),
            "sps": record.steps / max(now - record.started, 1e-9),
            "wall_time_s": now - (self._start if self._start is not None else record.started),
        }

    def end_round(self, record: RoundRecord, state: GlobalModel) -> dict:
        """Write the round's rows and model.pt, log its progress line; returns its rounds.csv row."""
        self.env_steps += record.steps
        row = self.row(record)
        self.history.append(row)
        if self.path is not None:
            self._client_writer.writerows(record.client_rows)
            self._clients.flush()
            self._round_writer.writerow(row)
            self._rounds.flush()
            save_policy(self.path / "model.pt", state.model, state.obs_stats, self.cfg)
        log.info("[round %d/%d] env_steps=%d return=%.1f±%.1f episodes=%d loss=%.4f kl=%.4f sps=%.0f t=%.1fs "
                 "replied=[%s] timed_out=[%s] failed=[%s]", record.server_round, self.cfg.num_server_rounds,
                 self.env_steps, row["episodic_return_mean"], row["episodic_return_std"], row["episodes"],
                 row["loss_mean"], row["approx_kl_mean"], row["sps"], row["wall_time_s"],
                 ",".join(str(r.partition_id) for r in record.rollouts),
                 "; ".join(dict.fromkeys(record.timed_out)), "; ".join(record.failed()))
        return row

    def close(self) -> None:
        """Close the CSV files."""
        if self.path is not None:
            self._rounds.close()
            self._clients.close()
