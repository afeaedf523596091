"""ClientApp handlers called directly with a Message and a Context."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import context
from flwr.app import ConfigRecord, Message, RecordDict

from fedrl.federation.protocol import (
    CONFIG,
    GRADS,
    MODEL,
    OBS_STATS,
    RETURN_STATS,
    pack,
    parse_rollout_reply,
    parse_update_reply,
    stats_to_records,
)
from fedrl.rl.model import build_model
from fedrl.rl.normalizer import RunningStats

RUN_CONFIG = {"min-steps": 64, "min-episodes": 1, "num-minibatches": 2, "update-epochs": 1}


def model_record(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    model = build_model(env.observation_space, env.action_space, "small")
    return model, pack({k: v.numpy() for k, v in model.state_dict().items()})


def message(kind: str, config: dict, with_stats: bool = False) -> Message:
    _, params = model_record()
    content = RecordDict({MODEL: params, CONFIG: ConfigRecord(config)})
    if with_stats:
        arrays, count = stats_to_records(RunningStats.empty((4,)))
        content[OBS_STATS] = arrays
        config["obs-count"] = count
        content[RETURN_STATS], config["return-count"] = stats_to_records(RunningStats.empty((1,)))
        content[CONFIG] = ConfigRecord(config)
    return Message(content, 101, kind, group_id="1")


def do_rollout(ctx, server_round: int = 1):
    from client_app import app

    return app(message("train.rollout", {"server-round": server_round}, with_stats=True), ctx)


def test_rollout_reply_and_state():
    ctx = context(1, RUN_CONFIG)
    reply = do_rollout(ctx)
    res = parse_rollout_reply(reply, (4,))
    assert res.partition_id == 1 and res.num_steps >= 64 and len(res.episode_returns) >= 1
    assert res.obs_stats.count == res.num_steps
    assert "rollout" in ctx.state.array_records
    assert int(ctx.state.config_records["rollout-meta"]["server-round"]) == 1


def test_gradient_reply_matches_model_and_is_deterministic():
    from client_app import app

    model, _ = model_record()
    reference = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ctx = context(0, RUN_CONFIG)
    do_rollout(ctx)
    msg = lambda: message("train.gradient", {"server-round": 1, "epoch": 0, "minibatch": 1})  # noqa: E731
    a = parse_update_reply(app(msg(), ctx), GRADS, reference)
    b = parse_update_reply(app(msg(), ctx), GRADS, reference)
    assert a.partition_id == 0
    assert np.isfinite(a.loss)
    for key in reference:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    assert any(np.abs(v).sum() > 0 for v in a.arrays.values())


def test_gradient_without_rollout_of_that_round_fails():
    from client_app import app

    ctx = context(0, RUN_CONFIG)
    do_rollout(ctx, server_round=1)
    with pytest.raises(RuntimeError, match="no rollout stored for round 2"):
        app(message("train.gradient", {"server-round": 2, "epoch": 0, "minibatch": 0}), ctx)


def test_local_training_moves_parameters():
    from client_app import app

    model, _ = model_record()
    reference = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ctx = context(0, {**RUN_CONFIG, "aggregator": "fedprox", "mu": 0.01})
    do_rollout(ctx)
    upd = parse_update_reply(app(message("train.local", {"server-round": 1}), ctx), MODEL, reference)
    assert upd.num_examples >= 64
    before = {k: v.numpy() for k, v in model.state_dict().items()}
    assert any(not np.allclose(upd.arrays[k], before[k]) for k in reference)


def test_missing_partition_id_is_explained():
    from client_app import app

    ctx = context(0, RUN_CONFIG)
    ctx.node_config = {}
    with pytest.raises(KeyError, match="partition-id"):
        app(message("train.rollout", {"server-round": 1}, with_stats=True), ctx)


@pytest.mark.parametrize(("config", "match"), [
    ({"epoch": 0, "minibatch": 2}, r"'minibatch' = 2; allowed: an integer in \[0, 2\)"),
    ({"epoch": 0, "minibatch": -1}, r"'minibatch' = -1; allowed: an integer in \[0, 2\)"),
    ({"epoch": 0.5, "minibatch": 0}, r"'epoch' = 0.5; allowed: an integer in \[0, 1\)"),
])
def test_an_out_of_range_or_fractional_index_names_the_key_and_what_is_allowed(config, match):
    from client_app import app

    ctx = context(0, RUN_CONFIG)
    do_rollout(ctx)
    with pytest.raises(ValueError, match=match):
        app(message("train.gradient", {"server-round": 1, **config}), ctx)


def test_a_rollout_reply_with_implausible_returns_statistics_or_counts_is_refused():
    from fedrl.federation.protocol import InvalidReply

    def mutated(change):
        reply = do_rollout(context(1, RUN_CONFIG))
        change(reply.content)
        return reply

    def returns(content):
        content.metric_records["metrics"]["episode-returns"] = [1e308]

    def mean(content):
        stats, count = stats_to_records(RunningStats(content.metric_records["metrics"]["obs-count"],
                                                     np.full(4, 1e200), np.ones(4)))
        content[OBS_STATS] = stats

    def return_count(content):
        content.metric_records["metrics"]["return-count"] = 3.0

    for change, match in [(returns, "holds 1e\\+308, beyond ±1e\\+12"),
                          (mean, "obs-stats have a mean or standard deviation beyond ±1e\\+08"),
                          (return_count, "return-stats count 3 does not match the [0-9]+ steps played")]:
        with pytest.raises(InvalidReply, match=match):
            parse_rollout_reply(mutated(change), (4,))
