"""Packing arrays for the wire, and the checks on what comes back."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedrl.normalizer import RunningStats
from fedrl.protocol import PACKED, InvalidReply, layout, pack, stats_from_records, stats_to_records, unpack

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
