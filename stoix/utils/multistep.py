"""Multistep returns that know the difference between termination and truncation.

Time runs along axis 0. For each step t the caller gives
  r_t       reward received after acting at t,
  d_t       discount for bootstrapping: gamma * (0 if the episode terminated at t else 1),
  v_tm1     V(s_t), the value of the state acted in,
  v_t       V(s_{t+1}), the value of the true next state; on the last step of a truncated
            episode this is the value of its final observation, not of the reset state,
  done_t    whether the episode ended at t (terminated or truncated): no trace crosses it.
"""

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp


def truncated_gae(
    r_t: chex.Array,
    d_t: chex.Array,
    v_tm1: chex.Array,
    v_t: chex.Array,
    done_t: chex.Array,
    gae_lambda: float,
    unroll: int = 8,
) -> tuple[chex.Array, chex.Array]:
    """Generalised advantage estimates and value targets, shapes (T, ...)."""
    chex.assert_equal_shape([r_t, d_t, v_tm1, v_t, done_t])
    delta_t = r_t + d_t * v_t - v_tm1
    # NOTE: the trace decays with the bootstrap discount and is cut where an episode ends,
    # so a truncated episode still bootstraps from v_t but never borrows from the next one.
    decay_t = d_t * gae_lambda * (1.0 - done_t.astype(d_t.dtype))

    def _backward(acc: chex.Array, xs: tuple[chex.Array, chex.Array]) -> tuple[chex.Array, chex.Array]:
        delta, decay = xs
        acc = delta + decay * acc
        return acc, acc

    _, advantages = jax.lax.scan(
        _backward, jnp.zeros_like(delta_t[0]), (delta_t, decay_t), reverse=True, unroll=unroll
    )
    return advantages, advantages + v_tm1


def n_step_bootstrap(
    r_t: chex.Array, d_t: chex.Array, done_t: chex.Array, gamma: float
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """The n-step return of a sequence of transitions, stopping where the episode ends.

    Inputs are shaped (..., n), time on the last axis: rewards, termination discounts (0 where
    the episode terminated, else 1) and episode ends. Returns
      g          sum_k gamma^k r_k over the transitions up to and including the first end,
      discount   what multiplies the bootstrap value: gamma^(m+1) * d_m, zero after a
                 termination, gamma^(m+1) after a truncation or when no episode ended,
      index      m, the transition whose `next_obs` to bootstrap from (the first end, else n-1).
    With n = 1 this is the one-step target r + gamma * d * V(next_obs).
    """
    n = r_t.shape[-1]
    done = done_t.astype(r_t.dtype)
    # alive_k: no episode ended before transition k.
    alive = jnp.cumprod(jnp.concatenate([jnp.ones_like(done[..., :1]), 1.0 - done[..., :-1]], -1), -1)
    powers = gamma ** jnp.arange(n, dtype=r_t.dtype)
    g = jnp.sum(powers * alive * r_t, axis=-1)
    index = jnp.minimum(jnp.sum(alive, axis=-1).astype(jnp.int32) - 1, n - 1)
    d_m = jnp.take_along_axis(d_t, index[..., None], axis=-1)[..., 0]
    discount = gamma ** (index + 1).astype(r_t.dtype) * d_m
    return g, discount, index


def next_state_values(
    value_fn: Callable[[Any], chex.Array],
    v_tm1: chex.Array,
    next_obs: Any,
    done_t: chex.Array,
    chunk: int | None = None,
) -> chex.Array:
    """v_t = V(next_obs_t) for a rollout shaped (T, N, ...), without a critic pass over every
    `next_obs`: where no episode ended at t < T-1, the next observation is the one acted on at
    t+1, whose value v_tm1[t+1] is known. The critic runs on the last step's next observations
    and on the final observations of the steps that ended an episode (terminated or truncated,
    the latter the ones the bootstrap needs), `chunk` (default N) at a time, in a loop that
    runs as many chunks as there are ends: few for long episodes, one pass's worth at most.

    `value_fn` maps a batch of observations (B, ...) to values (B,); equals
    `value_fn(next_obs)` up to float rounding (tests/test_multistep.py)."""
    num_steps, num_envs = v_tm1.shape[:2]
    chunk = num_envs if chunk is None else int(chunk)
    v_last = value_fn(jax.tree.map(lambda x: x[-1], next_obs))
    v_t = jnp.concatenate([v_tm1[1:], v_last[None]], axis=0)
    if num_steps == 1:
        return v_t
    size = (num_steps - 1) * num_envs
    ends = done_t[:-1].reshape(size)
    flat_obs = jax.tree.map(lambda x: x[:-1].reshape(size, *x.shape[2:]), next_obs)
    # Positions of the ends first, padded with an out-of-range index to whole chunks.
    padded = -(-size // chunk) * chunk
    positions = jnp.nonzero(ends, size=padded, fill_value=size)[0]
    num_chunks = (jnp.sum(ends) + chunk - 1) // chunk

    def body(carry: tuple[chex.Array, chex.Array]) -> tuple[chex.Array, chex.Array]:
        i, values = carry
        index = jax.lax.dynamic_slice(positions, (i * chunk,), (chunk,))
        obs = jax.tree.map(lambda x: x.at[index].get(mode="clip"), flat_obs)
        # Padding entries compute a value for a clipped index and are dropped here.
        return i + 1, values.at[index].set(value_fn(obs), mode="drop")

    _, values = jax.lax.while_loop(lambda c: c[0] < num_chunks, body, (0, v_t[:-1].reshape(size)))
    return jnp.concatenate([values.reshape(num_steps - 1, num_envs), v_last[None]], axis=0)
