"""Packing arrays for the wire, the wire names, and the one check every reply goes through."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import arrays, error_reply, instruction, update_reply
from flwr.app import Array, ArrayRecord, Message, RecordDict

from fedrl.federation.identity import Identities, PartitionConflict
from fedrl.federation.protocol import (
    GRADS,
    LOSS_METRICS,
    PACKED,
    InvalidReply,
    check_replies,
    layout,
    pack,
    parse_update_reply,
    stats_from_records,
    stats_to_records,
    to_numpy,
    unpack,
)
from fedrl.federation.protocol import update_reply as update_reply_of
from fedrl.rl.normalizer import RunningStats
from fedrl.rl.ppo import LossParts

ARRAYS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([6.0], np.float32),
          "s": np.array(7.0, np.float32)}


def test_pack_is_one_array_and_unpack_restores_names_shapes_and_values():
    record = pack(ARRAYS)
    assert list(record.keys()) == [PACKED]
    np.testing.assert_array_equal(record[PACKED].numpy(), np.arange(8, dtype=np.float32))
    assert record[PACKED].numpy().dtype == np.float32
    out = unpack(record, "grads", layout(ARRAYS))
    assert list(out) == ["w", "b", "s"]
    for key, value in ARRAYS.items():
        assert out[key].shape == value.shape
        np.testing.assert_array_equal(out[key], value)


@pytest.mark.parametrize(("record", "match"), [
    (None, "missing array record 'grads'"),
    (ArrayRecord({"w": Array(np.zeros(6, np.float32))}), "one packed array 'packed'"),
    (ArrayRecord({PACKED: Array(np.zeros(9, np.float32))}), "holds 9 values .* expected 8"),
    (ArrayRecord({PACKED: Array(np.zeros((2, 4), np.float32))}), r"shape \(2, 4\)"),
    (ArrayRecord({PACKED: Array(np.full(8, np.inf, np.float32))}), "not a finite float array"),
    (ArrayRecord({PACKED: Array(np.zeros(8, np.int64))}), "not a finite float array"),
])
def test_unpack_rejects_what_does_not_match_the_model(record, match):
    with pytest.raises(InvalidReply, match=match):
        unpack(record, "grads", layout(ARRAYS))


@pytest.mark.parametrize("value", [
    np.random.default_rng(0).standard_normal(9155).astype(np.float32),
    np.arange(12, dtype=np.int64).reshape(3, 4), np.zeros((0, 4)), np.array(3.5), np.array([True, False]),
    np.asfortranarray(np.arange(12.0).reshape(3, 4)), np.arange(4, dtype=">f8"),
])
def test_to_numpy_reads_what_array_numpy_reads(value):
    out = to_numpy(Array(value))
    assert out.dtype == Array(value).numpy().dtype and out.shape == value.shape and np.array_equal(out, value)
    assert out.flags.writeable


def test_to_numpy_refuses_bytes_that_do_not_fit_the_shape():
    array = Array(np.arange(6.0))
    array.data = array.data[:-8]  # one float64 short
    with pytest.raises(ValueError):
        to_numpy(array)


def test_stats_round_trip_and_negative_m2_is_rejected():
    stats = RunningStats(5.0, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    record, count = stats_to_records(stats)
    assert record[PACKED].numpy().dtype == np.float64  # statistics keep their precision
    back = stats_from_records(record, count, (2,))
    assert back.count == 5.0
    np.testing.assert_allclose(back.mean, stats.mean)
    np.testing.assert_allclose(back.m2, stats.m2)
    bad, _ = stats_to_records(RunningStats(5.0, np.array([1.0, 2.0]), np.array([-3.0, 4.0])))
    with pytest.raises(InvalidReply, match="obs-stats are not finite"):
        stats_from_records(bad, count, (2,))


REF = {"w": (2,), "b": (1,)}


def grads(x: float) -> dict[str, np.ndarray]:
    return {"w": np.array([x, 2 * x], np.float32), "b": np.array([x], np.float32)}


BAD = {
    "error": lambda: error_reply(1),
    "nan-grad": lambda: update_reply(1, {"w": np.array([np.nan, 1.0], np.float32), "b": np.array([1.0], np.float32)}),
    "inf-loss": lambda: update_reply(1, grads(1.0), loss=float("inf")),
    "missing-key": lambda: update_reply(1, {"w": np.array([1.0, 1.0], np.float32)}),
    "extra-key": lambda: update_reply(1, {**grads(1.0), "x": np.array([1.0], np.float32)}),
    "wrong-shape": lambda: update_reply(1, {"w": np.array([1.0, 1.0, 1.0], np.float32), "b": np.array([1.0], np.float32)}),
    "wrong-record": lambda: update_reply(1, grads(1.0), record="model"),
    "no-rollout": lambda: update_reply(5, grads(1.0)),
    "duplicate": lambda: update_reply(0, grads(9.0)),
    "not-packed": lambda: Message(RecordDict({"metrics": update_reply(1, grads(1.0)).content["metrics"],
                                              "grads": arrays(grads(1.0))}), reply_to=instruction(101)),
}


def check(replies, identities=None):
    return check_replies(replies, lambda m: parse_update_reply(m, GRADS, REF), "round 1 exchange 1",
                         identities if identities is not None else Identities(), partitions={0: 1.0, 1: 1.0})


def reply_from(node: int, claimed, grads_: dict[str, np.ndarray] | None = None) -> Message:
    """A gradient reply from ``node`` that claims partition ``claimed``."""
    return update_reply_of(instruction(node), GRADS, grads_ or grads(1.0), claimed, 10,
                           LossParts(1.0, 0.1, 0.2, 0.6, 0.0, 0.0), 0.01)


def test_first_valid_reply_binds_the_node_and_a_later_claim_of_another_partition_is_refused(caplog):
    identities = Identities()
    first = check([reply_from(100, 0), reply_from(101, 1)], identities)
    assert [u.partition_id for u in first.accepted] == [0, 1]
    assert identities.partition_of == {100: 0, 101: 1}
    with caplog.at_level("WARNING", logger="fedrl"):
        # Node 101 now claims partition 0; the honest node 100 is not blamed and its reply stays.
        second = check([reply_from(101, 0, grads(50.0)), reply_from(100, 0)], identities)
    assert [(u.partition_id, u.node_id) for u in second.accepted] == [(0, 100)]
    assert second.rejected == [("partition 1 (node 101)", "node 101 claimed partition 0, but it holds partition 1")]
    assert "rejected reply from partition 1 (node 101): node 101 claimed partition 0, but it holds partition 1" \
        in caplog.text


def test_a_new_node_that_claims_a_taken_partition_is_refused():
    identities = Identities()
    check([reply_from(100, 0)], identities)
    later = check([reply_from(102, 0)], identities)
    assert later.accepted == []
    assert later.rejected == [("node 102 (claims partition 0)",
                               "node 102 claimed partition 0, which node 100 holds; node 102 holds none")]


def test_two_new_nodes_with_the_same_partition_stop_the_run_naming_both():
    with pytest.raises(PartitionConflict, match="nodes 100 and 103 both serve partition 1"):
        check([reply_from(103, 1), reply_from(100, 1)])


@pytest.mark.parametrize(("claimed", "match"), [(0.9, "'partition-id' must be an integer in [0, 2**53), got 0.9"),
                                                (-1, "'partition-id' must be an integer in [0, 2**53), got -1"),
                                                (2.0**60, "'partition-id' must be an integer in [0, 2**53)"),
                                                (7, "node 100 claimed partition 7, outside the run's partitions 0..1")])
def test_non_integer_and_out_of_range_partition_ids_are_refused(claimed, match):
    identities = Identities()
    identities.connected([100, 101])
    checked = check([reply_from(100, claimed)], identities)
    assert checked.accepted == [] and match in checked.rejected[0][1]
    assert identities.partition_of == {}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_reply_is_dropped_named_and_the_rest_kept(case, caplog):
    with caplog.at_level("WARNING", logger="fedrl"):
        checked = check([update_reply(0, grads(2.0)), BAD[case]()])
    assert [u.partition_id for u in checked.accepted] == [0]
    np.testing.assert_array_equal(checked.accepted[0].arrays["w"], [2.0, 4.0])
    assert len(checked.rejected) == 1
    who, why = checked.rejected[0]
    assert who.startswith(("partition ", "node "))
    assert any(r.message.startswith("round 1 exchange 1: rejected reply from " + who) and why in r.message
               for r in caplog.records)


def test_replies_come_back_typed_and_sorted_by_partition():
    checked = check([update_reply(1, grads(1.0), loss=3.0, **{"compute-s": 0.25}), update_reply(0, grads(2.0), loss=1.0)])
    assert [u.partition_id for u in checked.accepted] == [0, 1] and checked.rejected == []
    one = checked.accepted[1]
    assert one.parts == LossParts(3.0, 0.1, 0.2, 0.6, 0.0, 0.0) and one.loss == 3.0
    assert one.num_examples == 10 and one.compute_s == 0.25
    assert np.isnan(checked.accepted[0].compute_s)


def test_update_reply_writes_every_loss_part_under_its_wire_name():
    parts = LossParts(1.0, 2.0, 3.0, 4.0, 5.0, 0.5)
    msg = update_reply_of(instruction(100), GRADS, grads(1.0), 0, 32, parts, 0.1)
    metrics = msg.content.metric_records["metrics"]
    assert {k: metrics[k] for k in LOSS_METRICS.values()} == {
        "loss": 1.0, "policy-loss": 2.0, "value-loss": 3.0, "entropy": 4.0, "approx-kl": 5.0, "clipfrac": 0.5}
    back = parse_update_reply(msg, GRADS, REF)
    assert back.parts == parts and back.num_examples == 32 and back.compute_s == pytest.approx(0.1)


def actor_reply(job: int = 5, **changes: np.ndarray) -> Message:
    from fedrl.federation.protocol import ACTOR, job_reply

    steps = 3
    traj = {"raw_obs": np.zeros((steps, 1, 2), np.float32), "next_raw_obs": np.zeros((steps, 1, 2), np.float32),
            "actions": np.array([[0.0], [1.0], [1.0]], np.float32), "rewards": np.ones((steps, 1), np.float32),
            "terminated": np.array([[0.0], [0.0], [1.0]], np.float32), "truncated": np.zeros((steps, 1), np.float32)}
    traj.update(changes)
    return job_reply(instruction(101, ACTOR), ACTOR, 1, job, steps, [3.0], RunningStats.from_batch(np.zeros((3, 2))),
                     traj, 0.01, behaviour_logprobs=np.full((steps, 1), -0.7, np.float32))


TRAJ_LAYOUT = {"raw_obs": (3, 1, 2), "next_raw_obs": (3, 1, 2), "actions": (3, 1), "rewards": (3, 1),
               "terminated": (3, 1), "truncated": (3, 1)}


def test_an_actor_reply_round_trips_and_its_bad_forms_are_named():
    from fedrl.federation.protocol import parse_actor_reply

    ok = parse_actor_reply(actor_reply(), 5, TRAJ_LAYOUT, (2,), num_actions=2)
    assert ok.partition_id == 1 and ok.num_steps == 3 and ok.behaviour_logprobs.shape == (3, 1)
    assert ok.episode_returns == [3.0] and ok.arrays["terminated"][2, 0] == 1.0
    cases = [
        (actor_reply(job=6), "reply names job 6, but this message was job 5"),
        (actor_reply(terminated=np.full((3, 1), 0.5, np.float32)), "'terminated' must hold only 0 and 1"),
        (actor_reply(actions=np.array([[0.0], [2.0], [1.0]], np.float32)), r"integers in \[0, 2\)"),
        (actor_reply(rewards=np.ones((2, 1), np.float32)), "'trajectory' holds"),
    ]
    for msg, why in cases:
        with pytest.raises(InvalidReply, match=why):
            parse_actor_reply(msg, 5, TRAJ_LAYOUT, (2,), num_actions=2)
