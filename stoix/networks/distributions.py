"""A Gaussian squashed into an action box [minimum, maximum] with tanh.

distrax's `Transformed` cannot give the mode of a tanh-squashed Gaussian and its tanh inverse
overflows at the bounds, so the bijector here clips before `atanh`. In a policy-gradient ratio
the Jacobian term is the same for the old and new policy and cancels, so the clip never biases
PPO's ratio.
"""

import chex
import distrax
import jax.numpy as jnp


class AffineTanh(distrax.Bijector):
    """y = minimum + (maximum - minimum) * (tanh(x) + 1) / 2, elementwise."""

    def __init__(self, minimum: chex.Array, maximum: chex.Array, epsilon: float = 1e-6):
        super().__init__(event_ndims_in=0)
        self._minimum = minimum
        self._half_range = (maximum - minimum) / 2.0
        self._epsilon = epsilon

    def forward_and_log_det(self, x: chex.Array) -> tuple[chex.Array, chex.Array]:
        y = self._minimum + self._half_range * (jnp.tanh(x) + 1.0)
        # log|d tanh(x)/dx| = 2 (log 2 - x - softplus(-2x)), numerically stable form.
        log_det = jnp.log(self._half_range) + 2.0 * (jnp.log(2.0) - x - jnp.logaddexp(0.0, -2.0 * x))
        return y, log_det

    def inverse_and_log_det(self, y: chex.Array) -> tuple[chex.Array, chex.Array]:
        unit = (y - self._minimum) / self._half_range - 1.0
        unit = jnp.clip(unit, -1.0 + self._epsilon, 1.0 - self._epsilon)
        x = jnp.arctanh(unit)
        return x, -self.forward_and_log_det(x)[1]


class AffineTanhNormal(distrax.Transformed):
    """Diagonal Gaussian squashed into a box. `entropy` is the pre-squash Gaussian's entropy,
    the usual regulariser (the squashed entropy has no closed form)."""

    def __init__(self, loc: chex.Array, scale: chex.Array, minimum: chex.Array, maximum: chex.Array):
        base = distrax.Independent(distrax.Normal(loc, scale), reinterpreted_batch_ndims=1)
        super().__init__(base, distrax.Block(AffineTanh(minimum, maximum), ndims=1))

    def mode(self) -> chex.Array:
        return self.bijector.forward(self.distribution.mode())

    def entropy(self, input_hint: chex.Array = None) -> chex.Array:
        return self.distribution.entropy()
