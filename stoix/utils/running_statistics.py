"""Running mean and variance of observations, shared across devices and update batches."""

from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class RunningStatistics(NamedTuple):
    count: chex.Array
    mean: chex.Array
    var: chex.Array


def init_statistics(shape: Sequence[int]) -> RunningStatistics:
    return RunningStatistics(
        count=jnp.zeros((), jnp.float32),
        mean=jnp.zeros(shape, jnp.float32),
        var=jnp.ones(shape, jnp.float32),
    )


def update_statistics(
    stats: RunningStatistics, batch: chex.Array, axis_names: Sequence[str] = ()
) -> RunningStatistics:
    """Fold a batch (leading axes are samples) into the statistics.

    `axis_names` are the mapped axes (e.g. ("batch", "device")) whose batches are pooled, so
    every replica ends with the same statistics.
    """
    feature_ndim = stats.mean.ndim
    batch = batch.reshape((-1, *batch.shape[batch.ndim - feature_ndim :]))
    n = jnp.asarray(batch.shape[0], jnp.float32)
    total = jnp.sum(batch, axis=0)
    total_sq = jnp.sum(jnp.square(batch), axis=0)
    for axis in axis_names:
        n, total, total_sq = jax.lax.psum((n, total, total_sq), axis)
    batch_mean = total / n
    batch_var = jnp.maximum(total_sq / n - jnp.square(batch_mean), 0.0)
    # Chan et al.'s parallel combination of two (count, mean, variance) summaries.
    count = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / count
    m2 = stats.var * stats.count + batch_var * n + jnp.square(delta) * stats.count * n / count
    return RunningStatistics(count=count, mean=mean, var=m2 / count)


def normalize(
    stats: RunningStatistics | None, x: chex.Array, clip: float = 10.0, eps: float = 1e-8
) -> chex.Array:
    """(x - mean) / std, clipped; the identity when `stats` is None."""
    if stats is None:
        return x
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.var + eps), -clip, clip)
