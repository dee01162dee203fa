"""A minimal single-function PPO in the PureJaxRL style, as an in-run speed baseline.

Written for `stoix.benchmarks.anakin` so Stoix's throughput can be compared, in the same
process and on the same jax, with the design PureJaxRL popularised: one jitted function, no
pmap/vmap over learners, values computed during the rollout, one actor-critic module, GAE
bootstrapped from the last value, each epoch shuffled with `jax.random.permutation` (`ff_ppo`
uses `stoix.utils.shuffle.permutation`: uniform by jax's own criterion, from cheaper sorts on a
CPU). It implements the same updates at the same sizes as `ff_ppo` (it is not a copy of
PureJaxRL's code) and is not used for training.
"""

from collections.abc import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal


class ActorCritic(nn.Module):
    action_dim: int
    layer_sizes: Sequence[int]
    activation: str
    # "mlp" on the (flattened) observation; "cnn": ff_ppo's network=cnn in each stream (16 3x3
    # filters, stride 1, SAME, before the dense layers), its convolution by XLA (nn.Conv, what a
    # PureJaxRL-style script writes) or as Stoix's matrix product over patches.
    torso: str = "mlp"

    @nn.compact
    def __call__(self, x):
        act = nn.relu if self.activation == "relu" else nn.tanh
        x = x.astype(jnp.float32)
        if self.torso == "mlp":
            pi = v = x.reshape(*x.shape[: x.ndim - 3], -1) if x.ndim >= 4 else x
        else:
            from stoix.networks.torso import Conv

            impl = "xla" if self.torso == "cnn_xla" else "patches"
            pi, v = (act(Conv(16, 3, 1, impl)(x)) for _ in range(2))
            pi, v = (y.reshape(*y.shape[:-3], -1) for y in (pi, v))
        for size in self.layer_sizes:
            pi = act(nn.Dense(size, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(pi))
            v = act(nn.Dense(size, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(v))
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(pi)
        value = nn.Dense(1, kernel_init=orthogonal(1.0))(v)
        return distrax.Categorical(logits=logits), jnp.squeeze(value, -1)


def make_train(
    num_envs,
    num_steps,
    total_timesteps,
    epochs,
    num_minibatches,
    layer_sizes,
    activation,
    env_name="CartPole-v1",
    torso="mlp",
):
    from stoix.wrappers.gymnax import make_gymnax_env

    env, params = make_gymnax_env(env_name)
    obs_shape = env.observation_space(params).shape
    num_updates = total_timesteps // (num_envs * num_steps)
    minibatch = num_envs * num_steps // num_minibatches
    network = ActorCritic(env.num_actions, tuple(layer_sizes), activation, torso)
    schedule = optax.linear_schedule(2.5e-4, 0.0, num_updates * epochs * num_minibatches)
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(schedule, eps=1e-5))
    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def train(key):
        key, init_key, reset_key = jax.random.split(key, 3)
        net_params = network.init(init_key, jnp.zeros((1, *obs_shape)))
        opt_state = tx.init(net_params)
        obs, env_state = vreset(jax.random.split(reset_key, num_envs), params)

        def update(runner, _):
            def env_step(carry, _):
                net_params, opt_state, env_state, obs, key = carry
                key, act_key, step_key = jax.random.split(key, 3)
                pi, value = network.apply(net_params, obs)
                action = pi.sample(seed=act_key)
                log_prob = pi.log_prob(action)
                obs2, env_state, reward, done, _, _ = vstep(
                    jax.random.split(step_key, num_envs), env_state, action, params
                )
                return (net_params, opt_state, env_state, obs2, key), (
                    obs,
                    action,
                    log_prob,
                    value,
                    reward,
                    done,
                )

            runner, (t_obs, t_act, t_logp, t_val, t_rew, t_done) = jax.lax.scan(
                env_step, runner, None, num_steps
            )
            net_params, opt_state, env_state, obs, key = runner
            _, last_val = network.apply(net_params, obs)

            def gae_step(carry, x):
                gae, next_value = carry
                done, value, reward = x
                delta = reward + 0.99 * next_value * (1 - done) - value
                gae = delta + 0.99 * 0.95 * (1 - done) * gae
                return (gae, value), gae

            _, adv = jax.lax.scan(
                gae_step, (jnp.zeros_like(last_val), last_val), (t_done, t_val, t_rew), reverse=True
            )
            targets = adv + t_val

            def loss_fn(p, b):
                obs, act, logp_old, val_old, a, tgt = b
                pi, value = network.apply(p, obs)
                logp = pi.log_prob(act)
                a = (a - a.mean()) / (a.std() + 1e-8)
                ratio = jnp.exp(logp - logp_old)
                pg = -jnp.minimum(ratio * a, jnp.clip(ratio, 0.8, 1.2) * a).mean()
                return pg + 0.5 * 0.5 * jnp.square(value - tgt).mean() - 0.01 * pi.entropy().mean()

            def epoch(carry, _):
                net_params, opt_state, key = carry
                key, perm_key = jax.random.split(key)
                perm = jax.random.permutation(perm_key, num_envs * num_steps)
                batch = (t_obs, t_act, t_logp, t_val, adv, targets)
                batch = jax.tree.map(lambda x: x.reshape(num_envs * num_steps, *x.shape[2:])[perm], batch)
                batch = jax.tree.map(lambda x: x.reshape(num_minibatches, minibatch, *x.shape[1:]), batch)

                def minibatch_step(carry, b):
                    net_params, opt_state = carry
                    grads = jax.grad(loss_fn)(net_params, b)
                    updates, opt_state = tx.update(grads, opt_state)
                    return (optax.apply_updates(net_params, updates), opt_state), None

                (net_params, opt_state), _ = jax.lax.scan(minibatch_step, (net_params, opt_state), batch)
                return (net_params, opt_state, key), None

            (net_params, opt_state, key), _ = jax.lax.scan(epoch, (net_params, opt_state, key), None, epochs)
            return (net_params, opt_state, env_state, obs, key), t_rew.sum()

        runner = (net_params, opt_state, env_state, obs, key)
        runner, rewards = jax.lax.scan(update, runner, None, num_updates)
        return rewards

    return train, num_updates * num_envs * num_steps


def main() -> None:
    """Config A of the benchmark (ff_ppo's defaults: 4 envs x 128 steps, 4 epochs x 4 minibatches,
    64x64 tanh, 5e5 steps) as a whole process, for the `make train` row of the benchmark."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="the lean PPO baseline at ff_ppo's default sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    train, steps = make_train(4, 128, 500_000, 4, 4, (64, 64), "tanh")
    compiled = jax.jit(train).lower(jax.random.PRNGKey(args.seed)).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.PRNGKey(args.seed)))
    sps = steps / (time.perf_counter() - start)
    print(f"lean PPO: {steps} steps, {sps:,.0f} steps/s training, compile {compile_s:.1f}s")


if __name__ == "__main__":
    main()
