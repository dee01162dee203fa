"""Heads and torsos: bounds, masks, shapes, and config-driven construction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.base_types import Observation
from stoix.networks.distributions import AffineTanhNormal
from stoix.networks.heads import CategoricalHead, NormalAffineTanhHead, NormalHead
from stoix.networks.torso import CNNTorso, MLPTorso, VisualResNetTorso, max_pool_3x3_stride_2
from stoix.utils.config import StoixConfigError, compose_config


def test_squashed_normal_samples_and_mode_respect_bounds():
    head = NormalAffineTanhHead(action_dim=1, minimum=[-2.0], maximum=[2.0], init_log_std=2.0)
    x = jnp.ones((4096, 8)) * 50.0
    params = head.init(jax.random.PRNGKey(0), x, None)
    dist = head.apply(params, x, None)
    samples = dist.sample(seed=jax.random.PRNGKey(1))
    assert samples.shape == (4096, 1)
    assert float(samples.min()) >= -2.0 and float(samples.max()) <= 2.0
    assert float(samples.min()) < -1.5 and float(samples.max()) > 1.5  # wide, but inside
    mode = dist.mode()
    assert float(jnp.abs(mode).max()) <= 2.0


def test_squashed_normal_log_prob_is_finite_at_the_bounds():
    dist = AffineTanhNormal(jnp.zeros((3, 1)), jnp.ones((3, 1)), jnp.array([-2.0]), jnp.array([2.0]))
    log_prob = dist.log_prob(jnp.array([[-2.0], [0.0], [2.0]]))
    assert bool(jnp.all(jnp.isfinite(log_prob)))
    # Density of y = 2 tanh(x) at y=0 is N(0; 0, 1) / 2.
    np.testing.assert_allclose(log_prob[1], -0.5 * np.log(2 * np.pi) - np.log(2.0), rtol=1e-5)


def test_unsquashed_normal_head_has_exact_gaussian_log_probs_and_a_scale_floor():
    head = NormalHead(action_dim=1, minimum=-2.0, maximum=2.0, init_log_std=-20.0, min_scale=0.1)
    x = jnp.ones((3, 4))
    params = head.init(jax.random.PRNGKey(0), x, None)
    pi = head.apply(params, x, None)
    np.testing.assert_allclose(pi.stddev(), 0.1, rtol=1e-5)  # exp(-20) + the floor
    mean = pi.mode()
    action = mean + 5.0  # far outside the bounds: still an exact, finite log-probability
    expected = -0.5 * (5.0 / 0.1) ** 2 - np.log(0.1) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(pi.log_prob(action), np.full(3, expected), rtol=1e-5)


def test_categorical_head_never_picks_masked_actions():
    head = CategoricalHead(action_dim=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (256, 5))
    mask = jnp.array([1.0, 0.0, 1.0])
    params = head.init(jax.random.PRNGKey(1), x, mask)
    dist = head.apply(params, x, mask)
    samples = dist.sample(seed=jax.random.PRNGKey(2))
    assert not bool(jnp.any(samples == 1))
    assert float(dist.probs[:, 1].max()) == 0.0


def test_torsos_shapes():
    mlp = MLPTorso(layer_sizes=(32, 16), activation="relu", use_layer_norm=True)
    x = jnp.ones((7, 4))
    assert mlp.apply(mlp.init(jax.random.PRNGKey(0), x), x).shape == (7, 16)
    cnn = CNNTorso(channel_sizes=(8,), kernel_sizes=(3,), strides=(1,), hidden_sizes=(10,))
    img = jnp.ones((2, 5, 10, 10, 4))
    assert cnn.apply(cnn.init(jax.random.PRNGKey(0), img), img).shape == (2, 5, 10)
    with pytest.raises(ValueError, match="activation='swish2'"):
        bad = MLPTorso(layer_sizes=(4,), activation="swish2")
        bad.init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("size", [(84, 84), (11, 11), (6, 7)])
def test_max_pool_matches_flax_values_and_gradient(size):
    import flax.linen as nn

    # Distinct values, so the (tie-free) gradients must agree exactly.
    n = 2 * size[0] * size[1] * 3
    x = jax.random.permutation(jax.random.PRNGKey(0), jnp.arange(n, dtype=jnp.float32)).reshape(2, *size, 3)
    flax_pool = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    np.testing.assert_array_equal(max_pool_3x3_stride_2(x), flax_pool(x))
    loss = lambda pool: lambda x: jnp.sum(pool(x) ** 2)
    np.testing.assert_allclose(jax.grad(loss(max_pool_3x3_stride_2))(x), jax.grad(loss(flax_pool))(x))


def test_integer_images_are_scaled_to_unit_range():
    torso = VisualResNetTorso(channels_per_stage=(4,), blocks_per_stage=1, hidden_size=8)
    pixels = jax.random.randint(jax.random.PRNGKey(0), (3, 12, 12, 2), 0, 256).astype(jnp.uint8)
    params = torso.init(jax.random.PRNGKey(1), pixels)
    np.testing.assert_allclose(
        torso.apply(params, pixels), torso.apply(params, pixels.astype(jnp.float32) / 255.0), rtol=1e-6
    )
    assert not np.allclose(torso.apply(params, pixels), torso.apply(params, pixels.astype(jnp.float32)))


def test_network_config_must_fit_the_action_space():
    from stoix.networks.base import make_actor
    from stoix.wrappers import make_env

    cfg = compose_config("default/anakin/default_ff_ppo", ["env=gymnax/pendulum"])
    env, _ = make_env(cfg.env)
    with pytest.raises(StoixConfigError, match="network=mlp_continuous"):
        make_actor(cfg.network.actor_network, env.action_spec)


@pytest.mark.parametrize(
    "network, obs_shape", [("mlp", (8,)), ("cnn", (10, 10, 4)), ("visual_resnet", (84, 84, 4))]
)
def test_discrete_networks_build_from_config(network, obs_shape):
    from stoix.networks.base import make_actor, make_critic
    from stoix.utils.light_import import import_module_lightly

    cfg = compose_config("default/anakin/default_ff_ppo", [f"network={network}"])
    obs = Observation(jnp.ones((2, *obs_shape)), jnp.ones((2, 6)), jnp.zeros((2,), jnp.int32))
    specs = import_module_lightly("jumanji.specs", ["jumanji"])
    actor = make_actor(cfg.network.actor_network, specs.DiscreteArray(6))
    critic = make_critic(cfg.network.critic_network)
    pi = actor.apply(actor.init(jax.random.PRNGKey(0), obs), obs)
    assert pi.logits.shape == (2, 6)
    assert critic.apply(critic.init(jax.random.PRNGKey(0), obs), obs).shape == (2,)


def test_torso_must_fit_the_observations():
    from stoix.networks.base import check_torsos_fit

    image_env = compose_config("default/anakin/default_ff_ppo", ["env=gymnax/breakout"])
    with pytest.raises(
        StoixConfigError, match=r"takes flat observations.*use network=cnn or network=visual_resnet"
    ):
        check_torsos_fit(image_env.network, (10, 10, 4), "env=gymnax/breakout")
    check_torsos_fit(
        compose_config("default/anakin/default_ff_ppo", ["network=cnn"]).network, (10, 10, 4), "x"
    )
    flat = compose_config("default/anakin/default_ff_ppo", ["network=visual_resnet"])
    with pytest.raises(StoixConfigError, match=r"VisualResNetTorso\) takes \(H, W, C\) images.*\(4,\)"):
        check_torsos_fit(flat.network, (4,), "env=gymnax/cartpole")


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 10), (3, 2, 9), (4, 2, 10), (1, 1, 5), (5, 3, 11)])
def test_conv_patches_form_equals_xla_convolution_and_flax_conv(kernel, stride, size):
    """The patches form of `Conv` (the CPU default) gives flax's `nn.Conv` (SAME padding)
    values and gradients, with the same parameter tree, for odd and even kernels and strides."""
    import flax.linen as nn

    from stoix.networks.torso import Conv

    x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))
    flax_conv = nn.Conv(4, (kernel, kernel), (stride, stride))
    params = flax_conv.init(jax.random.PRNGKey(1), x)
    ours = {impl: Conv(4, kernel, stride, impl) for impl in ("xla", "patches")}
    assert jax.tree.structure(ours["patches"].init(jax.random.PRNGKey(1), x)) == jax.tree.structure(params)
    expected = flax_conv.apply(params, x)
    for conv in ours.values():
        np.testing.assert_allclose(conv.apply(params, x), expected, atol=1e-5)

    def loss(module):
        return jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1))(params, x)

    for got, want in zip(jax.tree.leaves(loss(ours["patches"])), jax.tree.leaves(loss(flax_conv))):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_unknown_conv_impl_is_one_line():
    from stoix.networks.torso import CNNTorso

    with pytest.raises(StoixConfigError, match="conv_impl='fft'"):
        CNNTorso([4], [3], [1], conv_impl="fft").init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 5, 1)))
