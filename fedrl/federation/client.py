"""ClientApp handlers: rollout, gradient and local-training steps of one client.

Everything that must outlive a message (the rollout) lives in ``context.state``,
because in deployment each message may start a fresh ClientApp process. The
module-level caches only save rebuilding envs and models inside one process.
"""

from __future__ import annotations

import functools
import json
import time

import gymnasium as gym
import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message

from fedrl.config import FedRLConfig
from fedrl.federation.attacks import corrupt, plays_randomly, reported_parts, reported_returns
from fedrl.federation.clock import emulated_delay
from fedrl.federation.protocol import (
    ACTOR,
    CONFIG,
    GRADS,
    MODEL,
    OBS_STATS,
    PG,
    RETURN_STATS,
    ROLLOUT_META,
    ROLLOUT_STATE,
    array_record,
    job_reply,
    layout,
    numpy_state,
    rollout_reply,
    stats_from_records,
    unpack,
    update_reply,
)
from fedrl.rl.envs import client_seed, env_spaces, make_vector_env
from fedrl.rl.jobs import TRAJECTORY_KEYS, actor_trajectory, job_seed, policy_gradient
from fedrl.rl.model import ActorCritic, build_model, count_parameters
from fedrl.rl.normalizer import RunningStats
from fedrl.rl.ppo import Minibatch, collect_rollout, epoch_rng, minibatch_indices, ppo_loss, train_epochs
from fedrl.runtime import resolve_device, set_torch_threads


@functools.lru_cache(maxsize=8)
def _config(run_config_json: str) -> FedRLConfig:
    return FedRLConfig.from_run_config(json.loads(run_config_json))


def client_config(context: Context) -> FedRLConfig:
    """The run's validated config (parsed once per process)."""
    return _config(json.dumps(dict(context.run_config), sort_keys=True))


@functools.lru_cache(maxsize=4)
def _model(env_id: str, model_size: str, log_std_init: float, device: str) -> ActorCritic:
    obs_space, act_space = env_spaces(env_id)
    return build_model(obs_space, act_space, model_size, log_std_init).to(device)


@functools.lru_cache(maxsize=4)
def _envs(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    return make_vector_env(env_id, num_envs)


def _setup(message: Message, context: Context) -> tuple[FedRLConfig, int, ActorCritic, torch.device]:
    cfg = client_config(context)
    set_torch_threads()
    device = resolve_device(cfg.device)
    model = _model(cfg.env_id, cfg.model_size, cfg.log_std_init, str(device))
    params = unpack(message.content.array_records.get(MODEL), MODEL, layout(model.state_dict()))
    model.load_state_dict({k: torch.as_tensor(v) for k, v in params.items()})
    return cfg, partition_id(context), model, device


def partition_id(context: Context) -> int:
    """This node's partition id (set by the simulation engine or ``--node-config``)."""
    if "partition-id" not in context.node_config:
        raise KeyError("node config has no 'partition-id'; start the SuperNode with "
                       "--node-config 'partition-id=I num-partitions=N'")
    return int(context.node_config["partition-id"])


def _stored_rollout(context: Context, server_round: int) -> dict[str, np.ndarray]:
    meta = context.state.config_records.get(ROLLOUT_META)
    if meta is None or int(meta["server-round"]) != server_round:
        have = None if meta is None else int(meta["server-round"])
        raise RuntimeError(f"no rollout stored for round {server_round} (have round {have})")
    return numpy_state(context.state.array_records[ROLLOUT_STATE])


def handle_rollout(message: Message, context: Context) -> Message:
    """Play this round's episodes with the global policy and keep them for the update exchanges."""
    start = time.perf_counter()
    cfg, pid, model, device = _setup(message, context)
    conf = message.content.config_records[CONFIG]
    server_round = int(conf["server-round"])
    envs = _envs(cfg.env_id, cfg.num_envs_per_client)
    obs_shape = (int(np.prod(envs.single_observation_space.shape)),)
    stats = stats_from_records(message.content.array_records.get(OBS_STATS), float(conf["obs-count"]), obs_shape)
    return_stats = stats_from_records(message.content.array_records.get(RETURN_STATS), float(conf["return-count"]),
                                      (1,), RETURN_STATS)
    rollout = collect_rollout(model, stats, envs, cfg,
                              client_seed(cfg.seed, pid, server_round), device,
                              return_stats if cfg.normalize_reward else None,
                              random_actions=plays_randomly(cfg, pid))
    context.state[ROLLOUT_STATE] = array_record(rollout.arrays())
    context.state[ROLLOUT_META] = ConfigRecord({"server-round": server_round})
    rollout.episode_returns = reported_returns(cfg, pid, rollout.episode_returns)
    return rollout_reply(message, pid, rollout, time.perf_counter() - start)


def _index(message: Message, key: str, bound: int) -> int:
    """A whole number in [0, bound) from the instruction's config, or a ValueError that names it."""
    value = message.content.config_records[CONFIG].get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
            or not 0 <= value < bound:
        raise ValueError(f"{message.metadata.message_type}: config {key!r} = {value!r}; allowed: an integer in "
                         f"[0, {bound})")
    return int(value)


def handle_gradient(message: Message, context: Context) -> Message:
    """Backpropagate the PPO loss of one minibatch of the stored rollout at the server's parameters."""
    start = time.perf_counter()
    cfg, pid, model, device = _setup(message, context)
    server_round = _index(message, "server-round", 2**31)
    epoch, minibatch = _index(message, "epoch", cfg.update_epochs), _index(message, "minibatch", cfg.num_minibatches)
    arrays = _stored_rollout(context, server_round)
    idx = minibatch_indices(len(arrays["obs"]), cfg.num_minibatches, epoch_rng(cfg.seed, pid, server_round, epoch))[minibatch]
    model.zero_grad(set_to_none=True)
    loss, parts = ppo_loss(model, Minibatch.take(arrays, idx, device), cfg)
    loss.backward()
    grads = {name: p.grad.detach().cpu().numpy() for name, p in model.named_parameters()}
    sent = corrupt(cfg, pid, {k: grads[k] for k in model.state_dict()}, [server_round, epoch, minibatch])
    return update_reply(message, GRADS, sent, pid, len(idx), reported_parts(cfg, pid, parts),
                        time.perf_counter() - start)


def handle_local(message: Message, context: Context) -> Message:
    """FedAvg/FedProx: run the round's PPO epochs locally from the global parameters."""
    start = time.perf_counter()
    cfg, pid, model, device = _setup(message, context)
    server_round = _index(message, "server-round", 2**31)
    arrays = _stored_rollout(context, server_round)
    received = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    anchor = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.client_lr, eps=1e-5)
    rngs = [epoch_rng(cfg.seed, pid, server_round, epoch) for epoch in range(cfg.update_epochs)]
    parts = train_epochs(model, optimizer, arrays, cfg, rngs, device, anchor)
    params = corrupt(cfg, pid, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
                     [server_round], center=received)
    return update_reply(message, MODEL, params, pid, len(arrays["obs"]), reported_parts(cfg, pid, parts),
                        time.perf_counter() - start)



def _job(message: Message, context: Context) -> tuple[FedRLConfig, int, ActorCritic, torch.device, int, int,
                                                      RunningStats, gym.vector.SyncVectorEnv]:
    cfg, pid, model, device = _setup(message, context)
    conf = message.content.config_records[CONFIG]
    envs = _envs(cfg.env_id, cfg.num_envs_per_client)
    obs_shape = (int(np.prod(envs.single_observation_space.shape)),)
    stats = stats_from_records(message.content.array_records.get(OBS_STATS), float(conf["obs-count"]), obs_shape)
    seed = job_seed(cfg.seed, pid, int(conf["round"]), int(conf["nth"]))
    return cfg, pid, model, device, int(conf["job"]), seed, stats, envs


def _emulate(cfg: FedRLConfig, pid: int, context: Context, model: ActorCritic, start: float) -> None:
    """Wall clock with time-unit-s: sleep so the job lasts h_i + κ_i units (a slow or distant node)."""
    num_partitions = int(context.node_config.get("num-partitions", pid + 1))
    time.sleep(emulated_delay(cfg, pid, num_partitions, count_parameters(model), time.perf_counter() - start))


def handle_pg(message: Message, context: Context) -> Message:
    """A3C and NIGT: play one fixed-length job at the parameters sent and return its policy gradient."""
    start = time.perf_counter()
    cfg, pid, model, device, job, seed, stats, envs = _job(message, context)
    grads, parts, rollout = policy_gradient(model, stats, envs, cfg, seed, device)
    _emulate(cfg, pid, context, model, start)
    assert rollout.obs_stats is not None
    return job_reply(message, PG, pid, job, rollout.num_steps, rollout.episode_returns, rollout.obs_stats, grads,
                     time.perf_counter() - start, parts=parts)


def handle_actor(message: Message, context: Context) -> Message:
    """IMPALA: play one fixed-length job with the (possibly stale) policy sent and return the trajectory."""
    start = time.perf_counter()
    cfg, pid, model, device, job, seed, stats, envs = _job(message, context)
    traj = actor_trajectory(model, stats, envs, cfg, seed, device)
    _emulate(cfg, pid, context, model, start)
    arrays = {k: getattr(traj, k).astype(np.float32) for k in TRAJECTORY_KEYS}
    return job_reply(message, ACTOR, pid, job, traj.num_steps, traj.episode_returns, traj.obs_stats(), arrays,
                     time.perf_counter() - start, behaviour_logprobs=traj.logprobs)
