"""stoix.utils.distributional against rlax (values and gradients) and against hand-computed
projections, with a truncated step (bootstraps) and a terminated one (does not)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from stoix.utils import distributional as dist

B, A, K = 6, 3, 11
ATOMS = jnp.linspace(-2.0, 8.0, K)


def random_inputs(seed: int) -> dict:
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    return dict(
        logits_tm1=jax.random.normal(keys[0], (B, A, K)),
        a_tm1=jax.random.randint(keys[1], (B,), 0, A),
        # rewards that push the shifted atoms past both ends of the support (clipping)
        r_t=jax.random.uniform(keys[2], (B,), minval=-4.0, maxval=4.0),
        # sample 0 truncated (bootstraps at full discount), sample 1 terminated (0)
        discount_t=jnp.concatenate([jnp.array([0.9, 0.0]), jax.random.uniform(keys[3], (B - 2,))]),
        logits_t=jax.random.normal(keys[4], (B, A, K)) * 2.0,
        selector=jax.random.normal(keys[5], (B, A)),
    )


def check_against(fast, reference, argnum=1, *args):
    """Values and gradients w.r.t. args[argnum] of sum(fast(*args)) vs vmapped reference."""
    fast, reference = jax.jit(fast), jax.jit(reference)  # one compile each, not one per op
    np.testing.assert_allclose(fast(*args), reference(*args), atol=1e-5, rtol=1e-5)
    grad_fast = jax.grad(lambda x: jnp.sum(fast(*args[:argnum], x, *args[argnum + 1 :])))(args[argnum])
    grad_ref = jax.grad(lambda x: jnp.sum(reference(*args[:argnum], x, *args[argnum + 1 :])))(args[argnum])
    np.testing.assert_allclose(grad_fast, grad_ref, atol=1e-5, rtol=1e-5)


def test_projection_by_hand_truncated_and_terminated():
    # Atoms (0, 1, 2); next-state mass 1/4, 1/4, 1/2 on them; gamma-discount 0.5, reward 0.5.
    atoms = jnp.array([0.0, 1.0, 2.0])
    probs = jnp.array([[0.25, 0.25, 0.5], [0.25, 0.25, 0.5]])
    r = jnp.array([0.5, 0.5])
    d = jnp.array([0.5, 0.0])  # truncated (bootstraps), terminated
    projected = dist.categorical_l2_project(r[:, None] + d[:, None] * atoms, probs, atoms)
    # Truncated: shifted atoms 0.5, 1.0, 1.5 -> 0.25 splits 1/8 on atoms 0 and 1, 0.25 on atom 1,
    # 0.5 splits 1/4 on atoms 1 and 2. Terminated: all mass at 0.5 -> half on atoms 0 and 1.
    np.testing.assert_allclose(projected, [[0.125, 0.625, 0.25], [0.5, 0.5, 0.0]], atol=1e-6)


def test_projection_matches_rlax_including_clipping():
    x = random_inputs(0)
    target_z = x["r_t"][:, None] + x["discount_t"][:, None] * ATOMS * 1.5  # also beyond the ends
    probs = jax.nn.softmax(x["logits_t"][:, 0])
    ours = jax.jit(dist.categorical_l2_project)(target_z, probs, ATOMS)
    ref = jax.jit(jax.vmap(rlax.categorical_l2_project, in_axes=(0, 0, None)))(target_z, probs, ATOMS)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(ours.sum(-1), 1.0, atol=1e-6)


def test_categorical_q_learning_matches_rlax():
    x = random_inputs(0)
    ref = jax.vmap(rlax.categorical_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0))
    args = (ATOMS, x["logits_tm1"], x["a_tm1"], x["r_t"], x["discount_t"], ATOMS, x["logits_t"])
    check_against(dist.categorical_q_learning, ref, 1, *args)


def test_categorical_double_q_learning_matches_rlax():
    x = random_inputs(0)
    ref = jax.vmap(rlax.categorical_double_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0, 0))
    args = (
        ATOMS,
        x["logits_tm1"],
        x["a_tm1"],
        x["r_t"],
        x["discount_t"],
        ATOMS,
        x["logits_t"],
        x["selector"],
    )
    check_against(dist.categorical_double_q_learning, ref, 1, *args)


def test_categorical_td_learning_matches_rlax():
    x = random_inputs(2)
    ref = jax.vmap(rlax.categorical_td_learning, in_axes=(None, 0, 0, 0, None, 0))
    args = (ATOMS, x["logits_tm1"][:, 0], x["r_t"], x["discount_t"], ATOMS, x["logits_t"][:, 0])
    check_against(dist.categorical_td_learning, ref, 1, *args)


def test_terminated_step_targets_the_rewards_projection():
    # Discount 0: the target is the reward alone, 1.5 -> half on atoms 1 and 2 of (0, 1, 2, 3).
    atoms = jnp.array([0.0, 1.0, 2.0, 3.0])
    logits_tm1 = jnp.zeros((1, 2, 4))
    ce = dist.categorical_q_learning(
        atoms, logits_tm1, jnp.array([1]), jnp.array([1.5]), jnp.array([0.0]), atoms, jnp.ones((1, 2, 4))
    )
    np.testing.assert_allclose(ce, [-np.log(0.25)], rtol=1e-6)  # uniform online distribution
    grad = jax.grad(
        lambda lg: dist.categorical_q_learning(
            atoms, lg, jnp.array([1]), jnp.array([1.5]), jnp.array([0.0]), atoms, jnp.ones((1, 2, 4))
        )[0]
    )(logits_tm1)
    np.testing.assert_allclose(grad[0, 1], [0.25, -0.25, -0.25, 0.25], atol=1e-6)  # softmax - target
    np.testing.assert_allclose(grad[0, 0], 0.0)


@pytest.mark.parametrize("huber_param", [0.0, 1.0])
def test_quantile_q_learning_matches_rlax(huber_param):
    x = random_inputs(3)
    n = 5
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    dist_tm1 = jax.random.normal(keys[0], (B, A, n)) * 2.0  # (B, A, N): the networks' layout
    dist_t = jax.random.normal(keys[1], (B, A, n)) * 2.0
    selector = jax.random.normal(keys[2], (B, A, n))
    tau = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n

    def ref(d_tm1, tau, a, r, disc, sel, d_t):
        return jax.vmap(
            lambda *s: rlax.quantile_q_learning(*s, huber_param=huber_param), in_axes=(0, None, 0, 0, 0, 0, 0)
        )(jnp.swapaxes(d_tm1, 1, 2), tau, a, r, disc, jnp.swapaxes(sel, 1, 2), jnp.swapaxes(d_t, 1, 2))

    def fast(*args):
        return dist.quantile_q_learning(*args, huber_param=huber_param)

    args = (dist_tm1, tau, x["a_tm1"], x["r_t"], x["discount_t"], selector, dist_t)
    check_against(fast, ref, 0, *args)


def test_quantile_loss_truncated_bootstraps_terminated_does_not():
    # One quantile each, tau 0.5, no Huber: loss = 0.5 * |target - 0|.
    zeros = jnp.zeros((2, 1, 1))
    next_quantile = jnp.full((2, 1, 1), 4.0)
    loss = dist.quantile_q_learning(
        zeros,
        jnp.array([0.5]),
        jnp.array([0, 0]),
        jnp.array([1.0, 1.0]),
        jnp.array([0.5, 0.0]),
        next_quantile,
        next_quantile,
    )
    np.testing.assert_allclose(loss, [0.5 * (1.0 + 0.5 * 4.0), 0.5 * 1.0], rtol=1e-6)
