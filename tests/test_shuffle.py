"""stoix.utils.shuffle.permutation: a permutation, uniform, and the rounds it takes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.utils.shuffle import num_rounds, permutation


@pytest.mark.parametrize("n", [1, 2, 5, 512, 513, 32768])
def test_is_a_permutation_of_arange(n):
    perm = jax.jit(permutation, static_argnums=1)(jax.random.PRNGKey(3), n)
    assert perm.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(np.asarray(perm)), np.arange(n))


def test_rounds_follow_jax_criterion_with_the_bits_left_after_the_index():
    # 32 - 9 index bits = 23 random bits: ceil(3 ln 512 / (23 ln 2)) = 2.
    assert num_rounds(512) == 2
    assert num_rounds(5) == 1
    assert num_rounds(32768) == 3  # 17 random bits
    assert num_rounds(2**20) == 5  # 12 random bits
    assert num_rounds(2**24 + 1) == 0  # 7 random bits: jax.random.permutation instead


def test_every_ordering_of_four_is_equally_likely():
    draws = 24_000
    perms = jax.vmap(lambda k: permutation(k, 4))(jax.random.split(jax.random.PRNGKey(0), draws))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(p)] for p in np.asarray(perms)], minlength=24)
    assert counts.min() > 0
    expected = draws / 24
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 49.7  # the 0.999 quantile of chi-square with 23 degrees of freedom


def test_a_large_permutation_looks_uniform():
    # Three rounds at n = 32,768. Under a uniform permutation each element's position has mean
    # (n - 1) / 2 and no correlation with the element, and a draw has one fixed point on average.
    n, draws = 32768, 64
    perms = np.asarray(jax.vmap(lambda k: permutation(k, n))(jax.random.split(jax.random.PRNGKey(1), draws)))
    positions = np.argsort(perms, axis=1)
    correlation = np.corrcoef(np.tile(np.arange(n), draws), positions.ravel())[0, 1]
    assert abs(correlation) < 0.01
    assert 0.5 < np.mean(np.sum(perms == np.arange(n), axis=1)) < 1.6
    # Each element lands in the first half about half the time, over all elements and draws.
    assert abs(np.mean(positions[:, : n // 2] < n // 2) - 0.5) < 0.01
