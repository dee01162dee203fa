"""Layers beyond flax's own."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class NoisyDense(nn.Module):
    """A dense layer with learned, factorised Gaussian weight noise (Fortunato et al., 2018).

    Noise is drawn from the "noise" RNG stream when the caller provides one
    (`apply(..., rngs={"noise": key})`); without it the layer uses its mean weights, which is
    how a trained agent is evaluated.
    """

    features: int
    sigma_zero: float = 0.5

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        fan_in = x.shape[-1]
        bound = 1.0 / np.sqrt(fan_in)
        uniform = lambda key, shape: jax.random.uniform(key, shape, minval=-bound, maxval=bound)  # noqa: E731
        sigma = self.sigma_zero / np.sqrt(fan_in)
        mu_w = self.param("mu_w", uniform, (fan_in, self.features))
        mu_b = self.param("mu_b", uniform, (self.features,))
        sigma_w = self.param("sigma_w", nn.initializers.constant(sigma), (fan_in, self.features))
        sigma_b = self.param("sigma_b", nn.initializers.constant(sigma), (self.features,))
        if not self.has_rng("noise"):
            return x @ mu_w + mu_b
        in_key, out_key = jax.random.split(self.make_rng("noise"))

        def scaled(key: chex.PRNGKey, size: int) -> chex.Array:
            noise = jax.random.normal(key, (size,))
            return jnp.sign(noise) * jnp.sqrt(jnp.abs(noise))

        eps_in, eps_out = scaled(in_key, fan_in), scaled(out_key, self.features)
        weight = mu_w + sigma_w * jnp.outer(eps_in, eps_out)
        return x @ weight + mu_b + sigma_b * eps_out
