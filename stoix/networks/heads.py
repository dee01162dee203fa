"""Output heads: each maps torso features to a distribution, an action or a value."""

from collections.abc import Sequence
from typing import NamedTuple

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import constant, orthogonal

from stoix.networks.distributions import AffineTanhNormal
from stoix.networks.layers import NoisyDense


class CategoricalHead(nn.Module):
    """Logits over `action_dim` actions; illegal actions (mask 0) get probability 0."""

    action_dim: int
    discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> distrax.Categorical:
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        logits = jnp.where(action_mask > 0, logits, jnp.finfo(logits.dtype).min)
        return distrax.Categorical(logits=logits)


class MultiCategoricalHead(nn.Module):
    """One categorical per sub-action (a multi-discrete action: one choice per agent in
    Jumanji's Connector or RobotWarehouse), independent given the features. The joint
    log-probability and entropy are sums over sub-actions. `action_mask` is
    (..., sub-actions, max choices): each sub-action's illegal choices get probability 0.

    `action_dims` may differ per sub-action: logits are padded to the largest and the padding
    masked out. distrax.Independent over a batched distrax.Categorical does the sums."""

    action_dims: Sequence[int]
    discrete_actions = True
    multi_discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> distrax.Independent:
        dims = tuple(int(d) for d in self.action_dims)
        width = max(dims)
        logits = nn.Dense(len(dims) * width, kernel_init=orthogonal(0.01))(x)
        logits = logits.reshape(*x.shape[:-1], len(dims), width)
        legal = (action_mask > 0) & (jnp.arange(width) < jnp.asarray(dims)[:, None])
        logits = jnp.where(legal, logits, jnp.finfo(logits.dtype).min)
        return distrax.Independent(distrax.Categorical(logits=logits), reinterpreted_batch_ndims=1)


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
    # With both set, a state-dependent log std is squashed into [log_std_min, log_std_max]
    # (SAC's usual bounds), so an early large output cannot blow the scale up.
    log_std_min: float | None = None
    log_std_max: float | None = None

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> AffineTanhNormal:
        loc = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        if self.state_dependent_std:
            log_std = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x) + self.init_log_std
            if self.log_std_min is not None and self.log_std_max is not None:
                low, high = self.log_std_min, self.log_std_max
                log_std = low + 0.5 * (high - low) * (jnp.tanh(log_std) + 1.0)
        else:
            log_std = self.param("log_std", constant(self.init_log_std), (self.action_dim,))
            log_std = jnp.broadcast_to(log_std, loc.shape)
        scale = jnp.exp(log_std) + self.min_scale
        minimum = jnp.asarray(self.minimum, jnp.float32)
        maximum = jnp.asarray(self.maximum, jnp.float32)
        return AffineTanhNormal(loc, scale, minimum, maximum)


class NormalHead(nn.Module):
    """An unsquashed diagonal Gaussian around a learned mean, with a learned log standard
    deviation vector (at least `min_scale`). Its samples can leave the action bounds: the
    environment wrapper clips what the environment sees (ClipAction), the system learns from
    the sample itself, so log-probabilities stay exact where a squash would saturate."""

    action_dim: int
    minimum: float | Sequence[float]
    maximum: float | Sequence[float]
    discrete_actions = False
    init_log_std: float = 0.0
    min_scale: float = 1e-3

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> distrax.MultivariateNormalDiag:
        loc = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        log_std = self.param("log_std", constant(self.init_log_std), (self.action_dim,))
        scale = jnp.broadcast_to(jnp.exp(log_std) + self.min_scale, loc.shape)
        return distrax.MultivariateNormalDiag(loc, scale)


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


class DistributionalQ(NamedTuple):
    """A distributional Q-network's output: expected values plus the distribution."""

    q_values: chex.Array  # (..., actions)
    logits: chex.Array  # C51: (..., actions, atoms); QR-DQN: unused (zeros)
    atoms: chex.Array  # C51: (atoms,) support; QR-DQN: (..., actions, quantiles) values


class CategoricalQNetworkHead(nn.Module):
    """C51 (Bellemare et al., 2017): a categorical distribution over `num_atoms` fixed returns
    between v_min and v_max for each action."""

    action_dim: int
    num_atoms: int = 51
    v_min: float = 0.0
    v_max: float = 500.0
    discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> DistributionalQ:
        logits = nn.Dense(self.action_dim * self.num_atoms, kernel_init=orthogonal(1.0))(x)
        return _categorical_q(logits.reshape(*x.shape[:-1], self.action_dim, self.num_atoms), self)


class DuelingCategoricalQNetworkHead(nn.Module):
    """Dueling C51: value and advantage streams over atom logits."""

    action_dim: int
    num_atoms: int = 51
    v_min: float = 0.0
    v_max: float = 500.0
    hidden_size: int = 64
    noisy: bool = False  # NoisyDense streams (Rainbow): exploration from learned noise
    discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> DistributionalQ:
        def stream(out: int) -> chex.Array:
            if self.noisy:
                return NoisyDense(out)(nn.relu(NoisyDense(self.hidden_size)(x)))
            h = nn.relu(nn.Dense(self.hidden_size, kernel_init=orthogonal(np.sqrt(2.0)))(x))
            return nn.Dense(out, kernel_init=orthogonal(1.0))(h)

        value = stream(self.num_atoms).reshape(*x.shape[:-1], 1, self.num_atoms)
        advantage = stream(self.action_dim * self.num_atoms).reshape(
            *x.shape[:-1], self.action_dim, self.num_atoms
        )
        logits = value + advantage - jnp.mean(advantage, axis=-2, keepdims=True)
        return _categorical_q(logits, self)


def _categorical_q(logits: chex.Array, head: nn.Module) -> DistributionalQ:
    atoms = jnp.linspace(head.v_min, head.v_max, head.num_atoms)
    q_values = jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)
    return DistributionalQ(q_values=q_values, logits=logits, atoms=atoms)


class QuantileQNetworkHead(nn.Module):
    """QR-DQN (Dabney et al., 2018): `num_quantiles` return quantiles per action."""

    action_dim: int
    num_quantiles: int = 200
    discrete_actions = True

    @nn.compact
    def __call__(self, x: chex.Array, action_mask: chex.Array) -> DistributionalQ:
        out = nn.Dense(self.action_dim * self.num_quantiles, kernel_init=orthogonal(1.0))(x)
        quantiles = out.reshape(*x.shape[:-1], self.action_dim, self.num_quantiles)
        return DistributionalQ(q_values=jnp.mean(quantiles, axis=-1), logits=jnp.zeros(()), atoms=quantiles)


class DistributionalValue(NamedTuple):
    """A distributional critic's output: the expected value and the distribution."""

    value: chex.Array  # (...,)
    logits: chex.Array  # (..., atoms)
    atoms: chex.Array  # (atoms,) fixed support


class CategoricalCriticHead(nn.Module):
    """A categorical distribution over `num_atoms` fixed values in [v_min, v_max] (D4PG's
    critic); set the range to cover the task's discounted returns."""

    num_atoms: int = 51
    v_min: float = -1000.0
    v_max: float = 0.0

    @nn.compact
    def __call__(self, x: chex.Array) -> DistributionalValue:
        logits = nn.Dense(self.num_atoms, kernel_init=orthogonal(1.0))(x)
        atoms = jnp.linspace(self.v_min, self.v_max, self.num_atoms)
        value = jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)
        return DistributionalValue(value=value, logits=logits, atoms=atoms)
