"""Truncation-aware GAE against rlax and against a plain Python loop."""

import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from stoix.utils.multistep import truncated_gae


def loop_gae(r, d, v_tm1, v_t, done, lam):
    """The textbook recursion, one step at a time."""
    adv = np.zeros_like(r)
    acc = 0.0
    for t in reversed(range(len(r))):
        delta = r[t] + d[t] * v_t[t] - v_tm1[t]
        acc = delta + d[t] * lam * (1.0 - done[t]) * acc
        adv[t] = acc
    return adv


def test_matches_rlax_without_episode_ends():
    rng = np.random.default_rng(0)
    T = 9
    r = rng.normal(size=T).astype(np.float32)
    values = rng.normal(size=T + 1).astype(np.float32)
    discount = np.full(T, 0.97, np.float32)
    expected = rlax.truncated_generalized_advantage_estimation(r, discount, 0.9, values)
    adv, target = truncated_gae(
        jnp.asarray(r), jnp.asarray(discount), values[:-1], values[1:], jnp.zeros(T), 0.9
    )
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target, expected + values[:-1], rtol=1e-5, atol=1e-6)


def test_termination_matches_rlax_with_zero_discount():
    # With termination (discount 0) and no truncation, rlax's recursion is the same.
    r = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    values = np.array([0.5, 1.0, -1.0, 2.0, 3.0], np.float32)
    discount = np.array([0.9, 0.0, 0.9, 0.9], np.float32)
    done = np.array([0, 1, 0, 0], np.float32)
    expected = rlax.truncated_generalized_advantage_estimation(r, discount, 0.8, values)
    adv, _ = truncated_gae(r, discount, values[:-1], values[1:], done, 0.8)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)


def test_truncation_bootstraps_from_final_observation_by_hand():
    # Step 1 is truncated: its next value is the final observation's (10), not the next
    # episode's first (v_tm1[2] = 7), and the trace does not cross into step 2.
    gamma, lam = 0.5, 0.5
    r = np.array([1.0, 1.0, 1.0], np.float32)
    v_tm1 = np.array([2.0, 4.0, 7.0], np.float32)
    v_t = np.array([4.0, 10.0, 6.0], np.float32)
    d = np.array([gamma, gamma, gamma], np.float32)
    done = np.array([0.0, 1.0, 0.0], np.float32)
    adv, target = truncated_gae(r, d, v_tm1, v_t, done, lam)
    a2 = 1.0 + 0.5 * 6.0 - 7.0  # -3
    a1 = 1.0 + 0.5 * 10.0 - 4.0  # 2, cut: no a2 term
    a0 = (1.0 + 0.5 * 4.0 - 2.0) + 0.5 * 0.5 * a1  # 1 + 0.5
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(target, np.array([a0, a1, a2]) + v_tm1, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_with_random_ends_and_batch_axis(seed):
    rng = np.random.default_rng(seed)
    T, N = 17, 3
    r = rng.normal(size=(T, N)).astype(np.float32)
    v_tm1 = rng.normal(size=(T, N)).astype(np.float32)
    v_t = rng.normal(size=(T, N)).astype(np.float32)
    done = (rng.random((T, N)) < 0.2).astype(np.float32)
    terminated = done * (rng.random((T, N)) < 0.5)
    d = 0.99 * (1.0 - terminated)
    adv, _ = truncated_gae(r, d.astype(np.float32), v_tm1, v_t, done, 0.95)
    for n in range(N):
        expected = loop_gae(r[:, n], d[:, n], v_tm1[:, n], v_t[:, n], done[:, n], 0.95)
        np.testing.assert_allclose(adv[:, n], expected, rtol=1e-4, atol=1e-5)


def test_n_step_bootstrap_by_hand():
    from stoix.utils.multistep import n_step_bootstrap

    gamma = 0.5
    r = np.array(
        [
            [1.0, 2.0, 4.0],  # no end: 1 + 1 + 1, bootstrap from step 2 with gamma^3
            [1.0, 2.0, 4.0],  # terminated at step 1: 1 + 1, no bootstrap
            [1.0, 2.0, 4.0],  # truncated at step 0: 1, bootstrap gamma^1 from step 0's final obs
        ],
        np.float32,
    )
    d = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32)
    done = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    g, discount, index = n_step_bootstrap(r, d, done, gamma)
    np.testing.assert_allclose(g, [3.0, 2.0, 1.0])
    np.testing.assert_allclose(discount, [0.125, 0.0, 0.5])
    np.testing.assert_array_equal(index, [2, 1, 0])


def test_one_step_bootstrap_matches_rlax_q_learning_target():
    from stoix.utils.multistep import n_step_bootstrap

    rng = np.random.default_rng(0)
    r = rng.normal(size=(8, 1)).astype(np.float32)
    d = (rng.random((8, 1)) < 0.7).astype(np.float32)
    g, discount, index = n_step_bootstrap(r, d, 1.0 - d, 0.9)
    q_t = rng.normal(size=(8, 3)).astype(np.float32)
    q_tm1 = rng.normal(size=(8, 3)).astype(np.float32)
    a = rng.integers(0, 3, size=8)
    ours = g + discount * q_t.max(-1) - q_tm1[np.arange(8), a]
    expected = [rlax.q_learning(q_tm1[i], a[i], r[i, 0], 0.9 * d[i, 0], q_t[i]) for i in range(8)]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(index, 0)
