"""Distributional Q-learning losses on a whole batch, equal to rlax's per-sample ones.

NOTE: why not rlax directly. rlax's categorical and quantile losses take one sample and are
vmapped; on this 2-core CPU (jax 0.10.2, batch 128, 51 atoms, 2 actions) one ff_c51 gradient step
took 532 us, of which the vmapped projection was ~300 us, against 83 us for ff_dqn's whole step
(measured by timing jitted gradient steps with the projection swapped out). Here:
- the projection scatters each source atom's mass onto its two neighbouring target atoms
  (O(B K)) instead of building rlax's (B, K, K) hat-function matrix;
- the taken and greedy actions are picked with one-hot sums over the (few) actions instead of
  per-sample gathers, whose gradients are scatters;
- the quantile Huber loss computes its gradient beside its value in the forward pass (a custom
  VJP), so nothing of size (B, N, N) is kept for the backward pass (XLA still evaluates the
  pairwise errors once for each of the two reductions).
tests/test_distributional.py checks values and gradients against rlax's, truncation included.
ff_c51, ff_rainbow and ff_d4pg use the categorical losses, ff_qr_dqn `quantile_q_learning`
(with YNNPACK's CPU reductions off, stoix/utils/xla_flags.py; docs/benchmarks.md, row (g)).

Shapes: B samples, A actions, K atoms (C51) or N quantiles (QR-DQN); the networks' layout,
actions before atoms: (B, A, K). rlax's quantile functions take (N, A) per sample instead.
"""

import functools

import chex
import jax
import jax.numpy as jnp


def categorical_l2_project(z_p: chex.Array, probs: chex.Array, z_q: chex.Array) -> chex.Array:
    """Cramer projection of the distributions (z_p[b], probs[b]) onto the support z_q, as
    rlax.categorical_l2_project per sample: shapes (B, Kp), (B, Kp), (Kq,) -> (B, Kq).

    z_q must be evenly spaced (the heads' linspace(v_min, v_max, K)): each source atom, clipped
    into [z_q[0], z_q[-1]], splits its mass between the two target atoms around it in
    proportion to its distance from each.
    """
    num_atoms = z_q.shape[-1]
    batch = z_p.shape[0]
    spacing = (z_q[-1] - z_q[0]) / (num_atoms - 1)
    position = (jnp.clip(z_p, z_q[0], z_q[-1]) - z_q[0]) / spacing  # in [0, K-1]
    lower = jnp.clip(jnp.floor(position), 0, num_atoms - 2)
    upper_share = position - lower
    index = lower.astype(jnp.int32) + jnp.arange(batch, dtype=jnp.int32)[:, None] * num_atoms
    projected = jnp.zeros((batch * num_atoms,), probs.dtype)
    projected = projected.at[index.ravel()].add((probs * (1.0 - upper_share)).ravel())
    projected = projected.at[(index + 1).ravel()].add((probs * upper_share).ravel())
    return projected.reshape(batch, num_atoms)


def _pick(values: chex.Array, action: chex.Array) -> chex.Array:
    """values[b, action[b]] for values shaped (B, A, ...), as a one-hot sum (no gather)."""
    one_hot = jax.nn.one_hot(action, values.shape[1], dtype=values.dtype)
    return jnp.einsum("ba,ba...->b...", one_hot, values)


def _cross_entropy(labels: chex.Array, logits: chex.Array) -> chex.Array:
    return -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _categorical_target(
    r_t: chex.Array, discount_t: chex.Array, atoms_t: chex.Array, probs_t: chex.Array, atoms_tm1: chex.Array
) -> chex.Array:
    """The projected distribution of r_t + discount_t * Z_t; no gradient flows into it."""
    target_z = r_t[:, None] + discount_t[:, None] * atoms_t[None, :]
    return jax.lax.stop_gradient(categorical_l2_project(target_z, probs_t, atoms_tm1))


def categorical_q_learning(
    q_atoms_tm1: chex.Array,
    q_logits_tm1: chex.Array,
    a_tm1: chex.Array,
    r_t: chex.Array,
    discount_t: chex.Array,
    q_atoms_t: chex.Array,
    q_logits_t: chex.Array,
) -> chex.Array:
    """Per-sample cross-entropy, shape (B,), as vmapped rlax.categorical_q_learning: the
    target is the greedy (by mean) action's distribution under q_logits_t."""
    probs_t = jax.nn.softmax(q_logits_t, axis=-1)
    greedy = jnp.argmax(jnp.sum(probs_t * q_atoms_t, axis=-1), axis=-1)
    target = _categorical_target(r_t, discount_t, q_atoms_t, _pick(probs_t, greedy), q_atoms_tm1)
    return _cross_entropy(target, _pick(q_logits_tm1, a_tm1))


def categorical_double_q_learning(
    q_atoms_tm1: chex.Array,
    q_logits_tm1: chex.Array,
    a_tm1: chex.Array,
    r_t: chex.Array,
    discount_t: chex.Array,
    q_atoms_t: chex.Array,
    q_logits_t: chex.Array,
    q_t_selector: chex.Array,
) -> chex.Array:
    """As categorical_q_learning, but the next action is argmax of q_t_selector (B, A), as
    vmapped rlax.categorical_double_q_learning."""
    selected = jnp.argmax(q_t_selector, axis=-1)
    probs_t = jax.nn.softmax(_pick(q_logits_t, selected), axis=-1)
    target = _categorical_target(r_t, discount_t, q_atoms_t, probs_t, q_atoms_tm1)
    return _cross_entropy(target, _pick(q_logits_tm1, a_tm1))


def categorical_td_learning(
    v_atoms_tm1: chex.Array,
    v_logits_tm1: chex.Array,
    r_t: chex.Array,
    discount_t: chex.Array,
    v_atoms_t: chex.Array,
    v_logits_t: chex.Array,
) -> chex.Array:
    """Per-sample cross-entropy of V(s_tm1) (B, K) to the projected r_t + discount_t V(s_t),
    as vmapped rlax.categorical_td_learning."""
    target = _categorical_target(r_t, discount_t, v_atoms_t, jax.nn.softmax(v_logits_t, axis=-1), v_atoms_tm1)
    return _cross_entropy(target, v_logits_tm1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def quantile_huber_loss(
    dist_src: chex.Array, tau_src: chex.Array, dist_target: chex.Array, huber_param: float
) -> chex.Array:
    """Per-sample quantile (Huber) regression loss, (B, N), (N,), (B, M) -> (B,), as vmapped
    rlax.quantile_regression_loss: sum over source quantiles of the mean over targets of
    |tau_i - 1{delta_ij < 0}| * huber(delta_ij), delta_ij = target_j - src_i. Gradients flow
    into dist_src only (rlax stops them at the target too)."""
    return _quantile_huber_fwd(dist_src, tau_src, dist_target, huber_param)[0]


def _quantile_huber_fwd(
    dist_src: chex.Array, tau_src: chex.Array, dist_target: chex.Array, huber_param: float
) -> tuple[chex.Array, chex.Array]:
    delta = dist_target[:, None, :] - dist_src[:, :, None]  # (B, N, M)
    weight = jnp.abs(tau_src[None, :, None] - (delta < 0.0).astype(delta.dtype))
    if huber_param > 0.0:
        quadratic = jnp.minimum(jnp.abs(delta), huber_param)
        loss = 0.5 * quadratic**2 + huber_param * (jnp.abs(delta) - quadratic)
        slope = jnp.clip(delta, -huber_param, huber_param)
    else:
        loss, slope = jnp.abs(delta), jnp.sign(delta)
    value = jnp.sum(jnp.mean(weight * loss, axis=-1), axis=-1)
    grad_src = -jnp.mean(weight * slope, axis=-1)  # d value / d dist_src, (B, N)
    return value, grad_src


def _quantile_huber_bwd(huber_param: float, grad_src: chex.Array, cotangent: chex.Array) -> tuple:
    del huber_param
    return cotangent[:, None] * grad_src, None, None


quantile_huber_loss.defvjp(_quantile_huber_fwd, _quantile_huber_bwd)


def quantile_q_learning(
    dist_q_tm1: chex.Array,
    tau_q_tm1: chex.Array,
    a_tm1: chex.Array,
    r_t: chex.Array,
    discount_t: chex.Array,
    dist_q_t_selector: chex.Array,
    dist_q_t: chex.Array,
    huber_param: float = 0.0,
) -> chex.Array:
    """Per-sample QR-DQN loss, (B,), as vmapped rlax.quantile_q_learning but with quantiles
    last: dist_q_* shaped (B, A, N). The next action is greedy by dist_q_t_selector's means."""
    greedy = jnp.argmax(jnp.mean(dist_q_t_selector, axis=-1), axis=-1)
    dist_target = jax.lax.stop_gradient(r_t[:, None] + discount_t[:, None] * _pick(dist_q_t, greedy))
    return quantile_huber_loss(_pick(dist_q_tm1, a_tm1), tau_q_tm1, dist_target, huber_param)
