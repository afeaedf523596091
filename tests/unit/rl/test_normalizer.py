"""Federated observation statistics."""

from __future__ import annotations

import numpy as np

from fedrl.rl.normalizer import RunningStats


def test_merge_equals_pooled_statistics():
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, size=(137, 4))
    b = rng.normal(-1.0, 0.5, size=(59, 4))
    merged = RunningStats.from_batch(a).merge(RunningStats.from_batch(b))
    pooled = RunningStats.from_batch(np.concatenate([a, b]))
    assert merged.count == pooled.count == 196
    np.testing.assert_allclose(merged.mean, pooled.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, pooled.m2, rtol=1e-10)
    np.testing.assert_allclose(merged.var, np.concatenate([a, b]).var(axis=0), rtol=1e-10)


def test_merge_with_empty_is_identity_and_order_free():
    s = RunningStats.from_batch(np.arange(12.0).reshape(6, 2))
    e = RunningStats.empty((2,))
    for m in (s.merge(e), e.merge(s)):
        assert m.count == s.count
        np.testing.assert_array_equal(m.mean, s.mean)
        np.testing.assert_array_equal(m.m2, s.m2)


def test_normalize_standardises_and_clips():
    x = np.random.default_rng(1).normal(5.0, 3.0, size=(5000, 3))
    s = RunningStats.from_batch(x)
    z = s.normalize(x)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-3)
    assert s.normalize(np.full((1, 3), 1e6)).max() == 10.0


def test_without_data_observations_pass_unchanged():
    obs = np.array([[250.0, -3.0]])
    np.testing.assert_array_equal(RunningStats.empty((2,)).normalize(obs), obs.astype(np.float32))


def test_dict_roundtrip():
    s = RunningStats.from_batch(np.random.default_rng(2).normal(size=(10, 3)))
    t = RunningStats.from_dict(s.to_dict())
    assert t.count == s.count and np.array_equal(t.mean, s.mean) and np.array_equal(t.m2, s.m2)
