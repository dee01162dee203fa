"""Observation statistics against numpy, pooled across a mapped axis."""

import jax
import numpy as np

from stoix.utils.running_statistics import init_statistics, normalize, update_statistics


def test_running_statistics_match_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4, 3)).astype(np.float32) for n in (5, 17, 2)]
    stats = init_statistics((3,))
    for batch in batches:
        stats = update_statistics(stats, batch)
    everything = np.concatenate([b.reshape(-1, 3) for b in batches])
    np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-3)
    assert float(stats.count) == len(everything)


def test_statistics_are_pooled_across_a_mapped_axis():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(3, 10, 2)).astype(np.float32)  # 3 replicas of 10 samples
    stats = jax.vmap(lambda b: update_statistics(init_statistics((2,)), b, ("batch",)), axis_name="batch")(
        data
    )
    for replica in range(3):  # every replica holds the pooled statistics
        np.testing.assert_allclose(stats.mean[replica], data.reshape(-1, 2).mean(0), rtol=1e-4)


def test_normalize_is_identity_without_statistics_and_clips():
    x = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_array_equal(normalize(None, x), x)
    stats = init_statistics((2,))._replace(var=np.full(2, 1e-6, np.float32))
    assert float(np.max(np.abs(normalize(stats, x)))) == 10.0
