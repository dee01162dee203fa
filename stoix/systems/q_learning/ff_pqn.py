"""Parallelised Q-Network, PQN (Gallici et al., 2024, arXiv:2407.04811) on Anakin.

Q-learning without replay or a target network: many environments act epsilon-greedily, each
rollout gets Q(lambda) targets (rlax.lambda_returns with max_a Q(s') as the bootstrap), and a
LayerNorm Q-network regresses onto them for a few epochs of minibatches, as PPO does.
A time-limit end bootstraps from the true final observation and cuts the lambda trace;
a termination does not bootstrap.

    python stoix/systems/q_learning/ff_pqn.py arch.total_num_envs=64
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import distrax
import hydra
import jax
import jax.numpy as jnp
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor
from stoix.utils import shuffle
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes


class LearnerState(NamedTuple):
    params: Any
    opt_state: optax.OptState
    key: chex.PRNGKey
    env_state: Any
    timestep: Any
    env_steps: chex.Array  # environment steps taken by all envs together


class PQNTransition(NamedTuple):
    obs: Observation
    action: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)


class PQNBatch(NamedTuple):
    obs: Observation
    action: chex.Array
    target: chex.Array


class _UpdateCarry(NamedTuple):
    params: Any
    opt_state: optax.OptState
    key: chex.PRNGKey


def q_lambda_targets(
    r_t: chex.Array, d_t: chex.Array, q_next_t: chex.Array, done_t: chex.Array, gamma: float, lambda_: float
) -> chex.Array:
    """Q(lambda) targets over time axis 0 (any trailing batch axes), via rlax.lambda_returns:
    G_t = r_t + gamma d_t ((1 - l_t) max_a Q(s'_t) + l_t G_{t+1}), with l_t = lambda except 0
    where an episode ends, so no trace crosses into the next episode."""
    lambda_t = lambda_ * (1.0 - done_t.astype(r_t.dtype))
    returns = functools.partial(rlax.lambda_returns, stop_target_gradients=True)
    return jax.vmap(returns, in_axes=1, out_axes=1)(r_t, gamma * d_t, q_next_t, lambda_t)


# ALGO LOGIC: the loss. Module-level so tests can call it.
def q_regression_loss(
    params: Any, batch: PQNBatch, *, apply_fn: Callable
) -> tuple[chex.Array, dict[str, chex.Array]]:
    q_values = apply_fn(params, batch.obs)
    q_taken = jnp.take_along_axis(q_values, batch.action[:, None], axis=-1)[:, 0]
    loss = 0.5 * jnp.mean(jnp.square(q_taken - batch.target))
    return loss, {"q_loss": loss, "mean_q": jnp.mean(q_taken)}


def get_learner_fn(
    env: Any,
    q_apply: Callable,
    optimizer: optax.GradientTransformation,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    cfg = config.system
    batch_size = sizes.rollout_length * sizes.num_envs
    minibatch_size = batch_size // int(cfg.num_minibatches)
    epsilon = optax.linear_schedule(
        float(cfg.epsilon_start), float(cfg.epsilon_finish), int(cfg.epsilon_decay_steps)
    )
    loss_fn = functools.partial(q_regression_loss, apply_fn=q_apply)

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[PQNTransition, Any]]:
        # SELECT ACTION: epsilon-greedy
        key, policy_key = jax.random.split(state.key)
        obs = state.timestep.observation
        q_values = q_apply(state.params, obs)
        action = distrax.EpsilonGreedy(q_values, epsilon(state.env_steps)).sample(seed=policy_key)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = PQNTransition(
            obs=obs,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
        )
        state = state._replace(
            key=key, env_state=env_state, timestep=timestep, env_steps=state.env_steps + sizes.total_num_envs
        )
        return state, (transition, timestep.extras["episode_metrics"])

    def _update_minibatch(carry: _UpdateCarry, minibatch: PQNBatch) -> tuple[_UpdateCarry, dict]:
        grads, metrics = jax.grad(loss_fn, has_aux=True)(carry.params, minibatch)
        # NOTE: every replica must take the same step: average over update batches, then devices.
        for axis in sizes.replica_axes:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name=axis)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        return carry._replace(params=optax.apply_updates(carry.params, updates), opt_state=opt_state), metrics

    def _update_epoch(carry: _UpdateCarry, batch: PQNBatch) -> tuple[_UpdateCarry, dict]:
        key, shuffle_key = jax.random.split(carry.key)
        permutation = shuffle.permutation(shuffle_key, batch_size)
        minibatches = jax.tree.map(lambda x: x[permutation].reshape(-1, minibatch_size, *x.shape[1:]), batch)
        return jax.lax.scan(_update_minibatch, carry._replace(key=key), minibatches)

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT ROLLOUT: leaves shaped (rollout_length, num_envs, ...)
        state, (traj, episode_metrics) = jax.lax.scan(_env_step, state, None, sizes.rollout_length)

        # CALCULATE Q(LAMBDA) TARGETS from the true next observations
        q_next = jnp.max(q_apply(state.params, traj.next_obs), axis=-1)
        target = q_lambda_targets(
            traj.reward, traj.discount, q_next, traj.done, float(cfg.gamma), float(cfg.q_lambda)
        )

        # UPDATE NETWORK: `epochs` passes over shuffled minibatches
        batch = PQNBatch(obs=traj.obs, action=traj.action, target=target)
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)
        carry = _UpdateCarry(state.params, state.opt_state, state.key)
        carry, metrics = jax.lax.scan(lambda c, _: _update_epoch(c, batch), carry, None, int(cfg.epochs))
        state = state._replace(params=carry.params, opt_state=carry.opt_state, key=carry.key)
        metrics["epsilon"] = epsilon(state.env_steps)
        return state, (episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=False)
    batch_size = sizes.rollout_length * sizes.num_envs
    num_minibatches = int(cfg.num_minibatches)
    require(
        num_minibatches >= 1 and batch_size % num_minibatches == 0,
        f"system.num_minibatches={num_minibatches} must divide the per-slot batch "
        f"system.rollout_length*arch.total_num_envs/(devices*arch.update_batch_size)="
        f"{sizes.rollout_length}*{sizes.num_envs}={batch_size}.",
    )
    q_network = make_actor(config.network.actor_network, env.action_spec)
    num_gradient_steps = sizes.num_updates * int(cfg.epochs) * num_minibatches
    learning_rate = (
        optax.linear_schedule(float(cfg.learning_rate), 0.0, num_gradient_steps)
        if cfg.decay_learning_rates
        else float(cfg.learning_rate)
    )
    optimizer = optax.chain(optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.radam(learning_rate))
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        params = q_network.init(params_key, dummy_obs)
        env_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(env_key, sizes.num_envs))
        return LearnerState(
            params, optimizer.init(params), key, env_state, timestep, jnp.zeros((), jnp.int32)
        )

    learner_fn = get_learner_fn(env, q_network.apply, optimizer, sizes, config)
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)
    evaluation_epsilon = float(cfg.evaluation_epsilon)

    def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
        q_values = q_network.apply(params, observation)
        if greedy:
            return jnp.argmax(q_values, axis=-1)
        return distrax.EpsilonGreedy(q_values, evaluation_epsilon).sample(seed=key)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_pqn", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_pqn")
    hydra_entry_point()
