"""A run's bookkeeping: config.json, rounds.csv, clients.csv, events.csv, evals.csv, model.pt, the progress line.

The synchronous scheduler notes what happens in a round on a :class:`RoundRecord`; the
:class:`Recorder` turns it into the round's rows. The asynchronous scheduler writes one
``events.csv`` row per processed job instead (:meth:`Recorder.event`). Both write
``evals.csv`` (:meth:`Recorder.evaluation`). Every row is flushed as it is written, so a
killed run keeps everything it finished.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrl.config import ConfigError, FedRLConfig
from fedrl.federation.aggregation import Aggregate
from fedrl.federation.protocol import Checked, ClientUpdate, RolloutResult
from fedrl.federation.resume import truncate, write_resume_toml
from fedrl.rl.checkpoint import save_policy
from fedrl.rl.global_model import GlobalModel
from fedrl.rl.ppo import LossParts
from fedrl.runtime import machine, versions

log = logging.getLogger("fedrl")

ROUND_COLUMNS = ("round", "env_steps", "episodic_return_mean", "episodic_return_std", "episodes", "loss_mean",
                 "policy_loss_mean", "value_loss_mean", "entropy_mean", "approx_kl_mean", "clipfrac_mean",
                 "explained_variance", "clients", "rejected_replies", "screened_replies", "timed_out", "skipped_steps",
                 "rollout_ms", "rollout_compute_ms", "exchanges", "exchange_ms_mean", "client_compute_ms_mean", "sps",
                 "wall_time_s", "sim_time")
CLIENT_COLUMNS = ("round", "exchange", "partition_id", "episodic_return", "loss", "num_steps", "weight")
EVENT_COLUMNS = ("sim_time", "wall_time_s", "partition_id", "job", "outcome", "version_sent", "version_applied",
                 "staleness", "round", "env_steps", "env_steps_total", "env_steps_used", "batch", "batch_total",
                 "grad_norm", "direction_norm", "weights", "loss", "clipfrac", "rho_clipfrac", "consensus_error",
                 "episodic_return")
EVAL_COLUMNS = ("sim_time", "wall_time_s", "env_steps", "updates", "eval_return_mean", "eval_return_std",
                "behaviour_return")


def run_name(cfg: FedRLConfig, run_id: int | str) -> str:
    """``<env>_<aggregator>_seed<seed>_run<id>``: what a run directory is called."""
    return f"{cfg.env_id}_{cfg.aggregator}_seed{cfg.seed}_run{run_id}"


def _number_row(row: dict[str, str]) -> dict[str, float]:
    return {k: float(v) if v != "" else float("nan") for k, v in row.items()}


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
    screened: list[tuple[str, str]] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    skipped: int = 0
    client_rows: list[dict] = field(default_factory=list)
    exchange_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)
    rollout_s: float = 0.0
    sim_time: float = 0.0

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

    def note_exchange(self, exchange_no: int, checked: Checked[ClientUpdate], agg: Aggregate, seconds: float) -> None:
        """One update exchange: its replies, those the rule left out, the weight each got and how long it took."""
        self.exchange_s.append(seconds)
        self.rejected += checked.rejected
        self.screened += agg.screened
        # Clients compute in parallel, so the exchange waits for the slowest one.
        times = [u.compute_s for u in checked.accepted if np.isfinite(u.compute_s)]
        if times:
            self.compute_s.append(max(times))
        for update, weight, reward in zip(agg.updates, agg.weights, agg.rewards):
            self.losses.append(update.parts)
            self.client_rows.append({"round": self.server_round, "exchange": exchange_no,
                                     "partition_id": update.partition_id, "episodic_return": reward,
                                     "loss": update.loss, "num_steps": update.num_examples, "weight": float(weight)})
        log.debug("round %d exchange %d weights %s", self.server_round, exchange_no,
                  {u.partition_id: round(float(w), 6) for u, w in zip(agg.updates, agg.weights)})

    def failed(self) -> list[str]:
        """Senders of rejected or left-out replies, each once, in order."""
        return list(dict.fromkeys(who for who, _ in self.rejected + self.screened))


class Recorder:
    """Writes one run's files as the run goes (see the module docstring); ``out=False`` writes nothing."""

    def __init__(self, cfg: FedRLConfig, run_id: int | str, extra: dict[str, Any] | None = None,
                 out: bool = True, resume: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.history: list[dict] = []
        self.events: list[dict] = []
        self.evaluations: list[dict] = []
        self.env_steps = 0
        self._start: float | None = None
        self.path: Path | None = None
        self._writers: dict[str, tuple[Any, csv.DictWriter]] = {}
        self._tensorboard: Any = None
        if not out:
            return
        tables = {"events": EVENT_COLUMNS} if cfg.is_async else {"rounds": ROUND_COLUMNS, "clients": CLIENT_COLUMNS}
        tables = {**tables, "evals": EVAL_COLUMNS}
        if resume is not None:
            self._reopen(Path(os.path.expanduser(cfg.resume_from)), resume, tables)
            self._open_tensorboard()
            return
        base = cfg.outdir_path / run_name(cfg, run_id)
        path, n = base, 1
        while path.exists():  # never overwrite an earlier run's results
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError("outdir", cfg.outdir, f"a directory that can be created and written ({exc})") from exc
        self.path = path
        config = {"config": cfg.to_run_config(), "run_id": run_id, "versions": versions(), "machine": machine(),
                  **(extra or {})}
        (path / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        if not cfg.is_async:
            write_resume_toml(path, cfg)
        for name, columns in tables.items():
            f = open(path / f"{name}.csv", "w", newline="")
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            self._writers[name] = (f, writer)
        self._open_tensorboard()

    def _open_tensorboard(self) -> None:
        if not self.cfg.tensorboard or self.path is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError("tensorboard", True, "false, or true with the tensorboard package installed "
                              "(pip install 'fedrl[tensorboard]')") from exc
        self._tensorboard = SummaryWriter(str(self.path / "tensorboard"))

    def _scalars(self, step: int, values: dict[str, Any]) -> None:
        """CleanRL-named scalars at ``step`` env steps (the finite ones), when TensorBoard is on."""
        if self._tensorboard is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()

    def _reopen(self, path: Path, resume: dict[str, Any], tables: dict[str, tuple[str, ...]]) -> None:
        """Take up ``path`` at a checkpoint: cut each CSV back to the rows it covers, then append."""
        self.path = path
        for name in tables:
            csv_path, size = path / f"{name}.csv", resume["csv_sizes"][name]
            have = csv_path.stat().st_size if csv_path.is_file() else -1
            if have < size:
                raise ConfigError("resume-from", str(path), f"a run directory whose {name}.csv holds at least the "
                                  f"{size} bytes its checkpoint covers (it has {max(have, 0)}; was it edited or "
                                  "replaced?)")
        for name, columns in tables.items():
            truncate(path / f"{name}.csv", resume["csv_sizes"][name])
            f = open(path / f"{name}.csv", "a", newline="")
            self._writers[name] = (f, csv.DictWriter(f, columns))
        with open(path / "rounds.csv", newline="") as f:
            self.history = [_number_row(r) for r in csv.DictReader(f)]
        with open(path / "evals.csv", newline="") as f:
            self.evaluations = [_number_row(r) for r in csv.DictReader(f)]
        self.env_steps = int(resume["env_steps"])
        self._start = time.perf_counter() - float(resume["wall_time_s"])
        config = json.loads((path / "config.json").read_text())
        config.setdefault("resumed", []).append({"after_round": int(resume["round"]), "versions": versions(),
                                                 "machine": machine()})
        tmp = path / "config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2, default=str) + "\n")
        tmp.replace(path / "config.json")
        log.info("fedrl: resuming %s after round %d (%d env steps)", path, resume["round"], self.env_steps)

    def csv_sizes(self) -> dict[str, int]:
        """The byte length of each CSV written so far (every row is flushed as it is written)."""
        return {name: f.tell() for name, (f, _) in self._writers.items()}

    def _write(self, table: str, rows: list[dict]) -> None:
        if table in self._writers:
            f, writer = self._writers[table]
            writer.writerows(rows)
            f.flush()

    def wall_time(self) -> float:
        """Seconds since the run's clock started (it starts on the first call)."""
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        return now - self._start

    def event(self, row: dict) -> None:
        """One processed asynchronous job (:data:`EVENT_COLUMNS`)."""
        self.events.append(row)
        self._write("events", [row])
        self._scalars(int(row.get("env_steps_total") or 0), {"charts/episodic_return": row.get("episodic_return"),
                                                              "losses/loss": row.get("loss"),
                                                              "losses/clipfrac": row.get("clipfrac"),
                                                              "charts/staleness": row.get("staleness")})

    def evaluation(self, row: dict, state: GlobalModel) -> None:
        """One evaluation of the current parameters (:data:`EVAL_COLUMNS`); model.pt is saved with it."""
        self.evaluations.append(row)
        self._write("evals", [row])
        self._scalars(int(row["env_steps"]), {"charts/eval_return": row["eval_return_mean"]})
        self.save(state)

    def save(self, state: GlobalModel) -> None:
        """Write model.pt (atomically) with the current policy and observation statistics."""
        if self.path is not None:
            save_policy(self.path / "model.pt", state.model, state.obs_stats, self.cfg)

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
            "screened_replies": len(record.screened),
            "timed_out": len(record.timed_out),
            "skipped_steps": record.skipped,
            "rollout_ms": 1e3 * record.rollout_s,
            "rollout_compute_ms": 1e3 * max(compute) if compute else float("nan"),
            "exchanges": len(record.exchange_s),
            "exchange_ms_mean": 1e3 * _mean(record.exchange_s),
            "client_compute_ms_mean": 1e3 * _mean(record.compute_s),
            "sps": record.steps / max(now - record.started, 1e-9),
            "wall_time_s": now - (self._start if self._start is not None else record.started),
            "sim_time": record.sim_time,
        }

    def end_round(self, record: RoundRecord, state: GlobalModel) -> dict:
        """Write the round's rows and model.pt, log its progress line; returns its rounds.csv row."""
        self.env_steps += record.steps
        row = self.row(record)
        self.history.append(row)
        self._write("clients", record.client_rows)
        self._write("rounds", [row])
        self._scalars(self.env_steps, {
            "charts/episodic_return": row["episodic_return_mean"], "charts/SPS": row["sps"],
            **{f"losses/{name}": row[f"{name}_mean"] for name in LossParts._fields},
            "losses/explained_variance": row["explained_variance"], "charts/rejected_replies": row["rejected_replies"],
            "charts/screened_replies": row["screened_replies"], "charts/skipped_steps": row["skipped_steps"]})
        self.save(state)
        log.info("[round %d/%d] env_steps=%d return=%.1f±%.1f episodes=%d loss=%.4f kl=%.4f sps=%.0f t=%.1fs "
                 "replied=[%s] timed_out=[%s] failed=[%s]", record.server_round, self.cfg.num_server_rounds,
                 self.env_steps, row["episodic_return_mean"], row["episodic_return_std"], row["episodes"],
                 row["loss_mean"], row["approx_kl_mean"], row["sps"], row["wall_time_s"],
                 ",".join(str(r.partition_id) for r in record.rollouts),
                 "; ".join(dict.fromkeys(record.timed_out)), "; ".join(record.failed()))
        return row

    def close(self) -> None:
        """Close the CSV files (and the TensorBoard writer)."""
        for f, _ in self._writers.values():
            f.close()
        self._writers = {}
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
