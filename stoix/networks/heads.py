"""Output heads: each maps torso features to a distribution, an action or a value."""

from collections.abc import Sequence

import chex
import distrax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import constant, orthogonal

from stoix.networks.distributions import AffineTanhNormal


class CategoricalHead(nn.Module):
    """Logits over `action_dim` actions; illegal actions (mask 0) get probability 0."""

    action_dim: int
    discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> distrax.Categorical:
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        logits = jnp.where(action_mask > 0, logits, jnp.finfo(logits.dtype).min)
        return distrax.Categorical(logits=logits)


class NormalAffineTanhHead(nn.Module):
    """A Gaussian squashed into [minimum, maximum]. With `state_dependent_std=False` the log
    standard deviation is a learned vector, as in most PPO implementations."""

    action_dim: int
    minimum: float | Sequence[float]
    maximum: float | Sequence[float]
    discrete_actions = False
    state_dependent_std: bool = False
    init_log_std: float = 0.0
    min_scale: float = 1e-3

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> AffineTanhNormal:
        loc = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        if self.state_dependent_std:
            log_std = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x) + self.init_log_std
        else:
            log_std = self.param("log_std", constant(self.init_log_std), (self.action_dim,))
            log_std = jnp.broadcast_to(log_std, loc.shape)
        scale = jnp.exp(log_std) + self.min_scale
        minimum = jnp.asarray(self.minimum, jnp.float32)
        maximum = jnp.asarray(self.maximum, jnp.float32)
        return AffineTanhNormal(loc, scale, minimum, maximum)


class DeterministicHead(nn.Module):
    """An action in [minimum, maximum] through tanh (for DDPG-style actors)."""

    action_dim: int
    minimum: float | Sequence[float] = -1.0
    maximum: float | Sequence[float] = 1.0
    discrete_actions = False

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> chex.Array:
        y = jnp.tanh(nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x))
        minimum = jnp.asarray(self.minimum, jnp.float32)
        maximum = jnp.asarray(self.maximum, jnp.float32)
        return minimum + (maximum - minimum) * (y + 1.0) / 2.0


class ScalarCriticHead(nn.Module):
    """One value per input."""

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        return jnp.squeeze(nn.Dense(1, kernel_init=orthogonal(1.0))(x), axis=-1)


class DiscreteQNetworkHead(nn.Module):
    """One Q-value per action."""

    action_dim: int
    discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> chex.Array:
        return nn.Dense(self.action_dim, kernel_init=orthogonal(1.0))(x)


class DuelingQNetworkHead(nn.Module):
    """Q = V + A - mean(A) (Wang et al., 2016), each stream with its own hidden layer."""

    action_dim: int
    hidden_size: int = 64
    discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> chex.Array:
        value_hidden = nn.relu(nn.Dense(self.hidden_size, kernel_init=orthogonal(np.sqrt(2.0)))(x))
        value = nn.Dense(1, kernel_init=orthogonal(1.0))(value_hidden)
        adv_hidden = nn.relu(nn.Dense(self.hidden_size, kernel_init=orthogonal(np.sqrt(2.0)))(x))
        advantage = nn.Dense(self.action_dim, kernel_init=orthogonal(1.0))(adv_hidden)
        return value + advantage - jnp.mean(advantage, axis=-1, keepdims=True)
