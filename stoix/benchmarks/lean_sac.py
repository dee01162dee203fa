"""A minimal SAC in a few jitted functions, as an in-run speed baseline for ff_sac.

Written for `stoix.benchmarks.anakin`: the same algorithm at the same sizes as ff_sac's
defaults on gymnax Pendulum-v1 (4 environments, one gradient step per 4 environment steps,
batch 256, 256x256 networks, twin critics, learned temperature, 5,000 random warm-up steps,
20 evaluation rounds of 32 greedy episodes), without Stoix's layers: gymnax's own auto-reset
(the final observation of a time-limit end is lost; Pendulum never terminates, so the lean
version simply always bootstraps), a plain circular buffer instead of flashbax, one network
per role, no pmap/vmap over learners, no episode metrics. It is not used for training.

    python -m stoix.benchmarks.lean_sac --seed 0
"""

import argparse
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class Actor(nn.Module):
    layer_sizes: Sequence[int]

    @nn.compact
    def __call__(self, x):
        for size in self.layer_sizes:
            x = nn.relu(nn.Dense(size)(x))
        mean = nn.Dense(1)(x)
        log_std = -5.0 + 3.5 * (jnp.tanh(nn.Dense(1)(x)) + 1.0)  # in [-5, 2]
        return mean, log_std


class TwinCritic(nn.Module):
    layer_sizes: Sequence[int]

    @nn.compact
    def __call__(self, obs, action):
        qs = []
        for _ in range(2):
            x = jnp.concatenate([obs, action], -1)
            for size in self.layer_sizes:
                x = nn.relu(nn.Dense(size)(x))
            qs.append(nn.Dense(1)(x)[..., 0])
        return jnp.stack(qs)


class State(NamedTuple):
    actor: Any
    critic: Any
    target: Any
    log_alpha: jax.Array
    opt: tuple
    buffer: tuple  # obs, action, reward, next_obs
    size: jax.Array
    pointer: jax.Array
    env_state: Any
    obs: jax.Array
    key: jax.Array


def make(
    num_envs: int = 4,
    batch_size: int = 256,
    buffer_size: int = 100_000,
    warmup_steps: int = 5_000,
    total_timesteps: int = 45_000,
    num_rounds: int = 20,
    layer_sizes: Sequence[int] = (256, 256),
    learning_rate: float = 1e-3,
    gamma: float = 0.99,
    tau: float = 0.005,
):
    from stoix.wrappers.gymnax import make_gymnax_env

    env, env_params = make_gymnax_env("Pendulum-v1")
    actor, critic = Actor(tuple(layer_sizes)), TwinCritic(tuple(layer_sizes))
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(learning_rate))
    alpha_tx = optax.adam(learning_rate)
    target_entropy = -1.0
    scale = 2.0  # Pendulum's torque bound
    updates_per_round = total_timesteps // (num_envs * num_rounds)
    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def policy(actor_params, obs, key):
        mean, log_std = actor.apply(actor_params, obs)
        dist = distrax.Transformed(
            distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)), distrax.Block(distrax.Tanh(), 1)
        )
        action, log_prob = dist.sample_and_log_prob(seed=key)
        return action * scale, log_prob

    def add(state: State, obs, action, reward, next_obs) -> State:
        index = (state.pointer + jnp.arange(num_envs)) % buffer_size
        buffer = tuple(b.at[index].set(x) for b, x in zip(state.buffer, (obs, action, reward, next_obs)))
        return state._replace(
            buffer=buffer,
            pointer=(state.pointer + num_envs) % buffer_size,
            size=jnp.minimum(state.size + num_envs, buffer_size),
        )

    def env_step(state: State, action):
        key, step_key = jax.random.split(state.key)
        next_obs, env_state, reward, _, _, _ = vstep(
            jax.random.split(step_key, num_envs), state.env_state, action, env_params
        )
        # gymnax auto-resets: after a time-limit end `next_obs` is the new episode's first one.
        state = add(state, state.obs, action, reward, next_obs)
        return state._replace(env_state=env_state, obs=next_obs, key=key)

    def init(key):
        key, actor_key, critic_key, reset_key = jax.random.split(key, 4)
        obs, env_state = vreset(jax.random.split(reset_key, num_envs), env_params)
        actor_params = actor.init(actor_key, obs)
        critic_params = critic.init(critic_key, obs, jnp.zeros((num_envs, 1)))
        log_alpha = jnp.zeros(())
        buffer = (
            jnp.zeros((buffer_size, 3)),
            jnp.zeros((buffer_size, 1)),
            jnp.zeros((buffer_size,)),
            jnp.zeros((buffer_size, 3)),
        )
        opt = (tx.init(actor_params), tx.init(critic_params), alpha_tx.init(log_alpha))
        state = State(
            actor_params, critic_params, critic_params, log_alpha, opt, buffer, 0, 0, env_state, obs, key
        )
        state = state._replace(size=jnp.zeros((), jnp.int32), pointer=jnp.zeros((), jnp.int32))

        def random_step(state, _):
            key, action_key = jax.random.split(state.key)
            action = jax.random.uniform(action_key, (num_envs, 1), minval=-scale, maxval=scale)
            return env_step(state._replace(key=key), action), None

        state, _ = jax.lax.scan(random_step, state, None, warmup_steps // num_envs)
        return state

    def gradient_step(state: State) -> State:
        key, sample_key, target_key, actor_key = jax.random.split(state.key, 4)
        index = jax.random.randint(sample_key, (batch_size,), 0, state.size)
        obs, action, reward, next_obs = (b[index] for b in state.buffer)
        alpha = jnp.exp(state.log_alpha)
        next_action, next_log_prob = policy(state.actor, next_obs, target_key)
        target = reward + gamma * (
            jnp.min(critic.apply(state.target, next_obs, next_action), 0) - alpha * next_log_prob
        )

        def critic_loss(params):
            return jnp.sum(jnp.mean(0.5 * (critic.apply(params, obs, action) - target) ** 2, axis=1))

        grads = jax.grad(critic_loss)(state.critic)
        updates, critic_opt = tx.update(grads, state.opt[1], state.critic)
        critic_params = optax.apply_updates(state.critic, updates)

        def actor_loss(params):
            new_action, log_prob = policy(params, obs, actor_key)
            return jnp.mean(
                alpha * log_prob - jnp.min(critic.apply(critic_params, obs, new_action), 0)
            ), log_prob

        grads, log_prob = jax.grad(actor_loss, has_aux=True)(state.actor)
        updates, actor_opt = tx.update(grads, state.opt[0], state.actor)
        actor_params = optax.apply_updates(state.actor, updates)
        # log_prob above is of the scaled action; in the [-1, 1] box it is larger by log(scale).
        unit_log_prob = jax.lax.stop_gradient(log_prob) + jnp.log(scale)
        alpha_grad = jax.grad(lambda la: -jnp.mean(la * (unit_log_prob + target_entropy)))(state.log_alpha)
        updates, alpha_opt = alpha_tx.update(alpha_grad, state.opt[2], state.log_alpha)
        return state._replace(
            actor=actor_params,
            critic=critic_params,
            target=optax.incremental_update(critic_params, state.target, tau),
            log_alpha=optax.apply_updates(state.log_alpha, updates),
            opt=(actor_opt, critic_opt, alpha_opt),
            key=key,
        )

    def train_round(state: State) -> State:
        def update(state, _):
            key, action_key = jax.random.split(state.key)
            action, _ = policy(state.actor, state.obs, action_key)
            state = env_step(state._replace(key=key), action)
            return gradient_step(state), None

        state, _ = jax.lax.scan(update, state, None, updates_per_round)
        return state

    def evaluate(actor_params, key, num_episodes: int = 32):
        obs, env_state = vreset(jax.random.split(key, num_episodes), env_params)

        def step(carry, step_key):
            obs, env_state, total = carry
            mean, _ = actor.apply(actor_params, obs)
            obs, env_state, reward, _, _, _ = vstep(
                jax.random.split(step_key, num_episodes), env_state, jnp.tanh(mean) * scale, env_params
            )
            return (obs, env_state, total + reward), None

        (_, _, total), _ = jax.lax.scan(
            step, (obs, env_state, jnp.zeros(num_episodes)), jax.random.split(key, 200)
        )
        return jnp.mean(total)

    steps_per_round = updates_per_round * num_envs
    return (
        jax.jit(init),
        jax.jit(train_round, donate_argnums=0),
        jax.jit(evaluate),
        steps_per_round,
        num_rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    init, train_round, evaluate, steps_per_round, num_rounds = make()
    key = jax.random.PRNGKey(args.seed)
    compile_start = time.perf_counter()
    state = init(key)
    train_round = train_round.lower(state).compile()
    evaluate(state.actor, key).block_until_ready()
    print(f"compile {time.perf_counter() - compile_start:.1f}s", flush=True)
    train_s = 0.0
    for round_index in range(num_rounds):
        start = time.perf_counter()
        state = train_round(state)
        jax.block_until_ready(state)
        train_s += time.perf_counter() - start
        value = float(evaluate(state.actor, jax.random.fold_in(key, round_index)))
        print(f"EVAL step {(round_index + 1) * steps_per_round} | episode_return {value:.2f}", flush=True)
    print(f"RESULT lean_sac: {num_rounds * steps_per_round / train_s:,.0f} steps/s training", flush=True)


if __name__ == "__main__":
    main()
