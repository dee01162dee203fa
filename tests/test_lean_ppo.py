"""The lean PPO baseline (stoix/benchmarks/lean_ppo.py) that the speed benchmark times beside
ff_ppo: its image torsos are one network in two computations, and it trains at tiny sizes."""

import jax
import jax.numpy as jnp
import numpy as np

from stoix.benchmarks.lean_ppo import ActorCritic, make_train


def test_patches_and_xla_torsos_are_the_same_network():
    image = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, (5, 10, 10, 4))
    patches, xla = (ActorCritic(3, (32,), "relu", torso) for torso in ("cnn", "cnn_xla"))
    params = patches.init(jax.random.PRNGKey(1), image)
    (pi_a, v_a), (pi_b, v_b) = patches.apply(params, image), xla.apply(params, image)
    np.testing.assert_allclose(pi_a.logits, pi_b.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_a, v_b, rtol=1e-5, atol=1e-5)
    flat = ActorCritic(3, (32,), "relu", "mlp")
    assert flat.init(jax.random.PRNGKey(1), image)["params"]["Dense_0"]["kernel"].shape == (400, 32)


def test_breakout_baseline_trains_at_tiny_sizes():
    train, steps = make_train(
        num_envs=2,
        num_steps=8,
        total_timesteps=32,
        epochs=1,
        num_minibatches=2,
        layer_sizes=(16,),
        activation="relu",
        env_name="Breakout-MinAtar",
        torso="cnn",
    )
    rewards = jax.jit(train)(jax.random.PRNGKey(0))
    assert steps == 32 and rewards.shape == (2,) and bool(jnp.all(jnp.isfinite(rewards)))
