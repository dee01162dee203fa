"""Multistep returns that know the difference between termination and truncation.

Time runs along axis 0. For each step t the caller gives
  r_t       reward received after acting at t,
  d_t       discount for bootstrapping: gamma * (0 if the episode terminated at t else 1),
  v_tm1     V(s_t), the value of the state acted in,
  v_t       V(s_{t+1}), the value of the true next state; on the last step of a truncated
            episode this is the value of its final observation, not of the reset state,
  done_t    whether the episode ended at t (terminated or truncated): no trace crosses it.
"""

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
