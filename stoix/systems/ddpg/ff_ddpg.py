"""Deep Deterministic Policy Gradient (Lillicrap et al., 2015, arXiv:1509.02971) on Anakin.

A deterministic actor and a Q-critic on (observation, action), Gaussian exploration noise
scaled to the action bounds, target networks with Polyak averaging, n-step returns and
replay from a flashbax trajectory buffer held inside the compiled learner (as ff_dqn.py does),
filled first with uniformly random actions. A time-limit end is not a termination: the
target bootstraps from the true final observation unless the episode terminated.

This file is the template of the continuous off-policy family. TD3 (ff_td3.py) and D4PG
(ff_d4pg.py) pass their own critic and actor losses to `learner_setup`; TD3's delayed actor
and target updates are `system.actor_update_period` here (1 for DDPG). SAC (sac/ff_sac.py)
has its own learner and reuses the transition type and the warm-up.

    python stoix/systems/ddpg/ff_ddpg.py env=gymnax/pendulum
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import flashbax as fbx
import hydra
import jax
import jax.numpy as jnp
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_q_critics
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import n_step_bootstrap
from stoix.utils.sizes import AnakinSizes, replay_sizes


class Transition(NamedTuple):
    obs: Observation
    action: chex.Array  # in the environment's bounds
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)


class DDPGParams(NamedTuple):
    actor: Any
    critic: Any  # every critic, stacked on a leading axis (QCritics)
    target_actor: Any
    target_critic: Any


class DDPGOptStates(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState


class LearnerState(NamedTuple):
    params: DDPGParams
    opt_states: DDPGOptStates
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any
    gradient_steps: chex.Array


class _UpdateCarry(NamedTuple):
    params: DDPGParams
    opt_states: DDPGOptStates
    buffer_state: Any
    key: chex.PRNGKey
    gradient_steps: chex.Array


class ActionBounds(NamedTuple):
    minimum: chex.Array
    maximum: chex.Array

    @property
    def half_range(self) -> chex.Array:
        return (self.maximum - self.minimum) / 2.0

    def clip(self, action: chex.Array) -> chex.Array:
        return jnp.clip(action, self.minimum, self.maximum)


def first(tree: Any) -> Any:
    """Leaves shaped (B, n, ...) -> the first transition of each sequence, (B, ...)."""
    return jax.tree.map(lambda x: x[:, 0], tree)


def bootstrap_point(batch: Transition, gamma: float) -> tuple[chex.Array, chex.Array, Observation]:
    """(n-step reward sum, bootstrap discount, observation to bootstrap from) for sequences
    shaped (B, n): rewards up to the first episode end, then gamma^(m+1) * discount_m times the
    value of that transition's true next observation (zero after a termination)."""
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    next_obs = jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], batch.next_obs)
    return g, discount, next_obs


# ALGO LOGIC: the losses. Module-level so tests call them with hand-made batches.
def critic_loss(
    critic_params: Any,
    params: DDPGParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    gamma: float,
    bounds: ActionBounds,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """TD error of Q(s, a) against g + discount * Q_target(s', mu_target(s')) (rlax.td_learning)."""
    del key, bounds  # DDPG's target is deterministic
    g, discount, next_obs = bootstrap_point(batch, gamma)
    q_t = critic_apply(params.target_critic, next_obs, actor_apply(params.target_actor, next_obs))[0]
    q_tm1 = critic_apply(critic_params, first(batch.obs), batch.action[:, 0])[0]
    td_error = jax.vmap(rlax.td_learning)(q_tm1, g, discount, jax.lax.stop_gradient(q_t))
    loss = jnp.mean(rlax.l2_loss(td_error))
    return loss, {"critic_loss": loss, "mean_q": jnp.mean(q_tm1)}


def actor_loss(
    actor_params: Any,
    params: DDPGParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    q_value_of: Callable = lambda out: out,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Deterministic policy gradient through the first critic (rlax.dpg_loss: the action
    moves along dQ/da). `q_value_of` turns a critic's output into Q-values (D4PG: the mean)."""
    del key
    obs = first(batch.obs)
    action = actor_apply(actor_params, obs)
    q_of_action = lambda a: jnp.sum(q_value_of(critic_apply(params.critic, obs, a))[0])  # noqa: E731
    dqda = jax.grad(q_of_action)(action)
    loss = jnp.mean(jax.vmap(rlax.dpg_loss)(action, dqda))
    return loss, {"actor_loss": loss}


def warm_up(
    env: Any, buffer: Any, num_envs: int, num_steps: int, bounds: ActionBounds, key: chex.PRNGKey
) -> tuple[Any, Any, Any]:
    """Reset `num_envs` environments and fill a new buffer with `num_steps` uniformly random
    actions (inside the bounds) each; returns (env_state, timestep, buffer_state)."""
    reset_key, key = jax.random.split(key)
    env_state, timestep = env.reset(jax.random.split(reset_key, num_envs))

    def _random_step(carry: tuple, step_key: chex.PRNGKey) -> tuple[tuple, Transition]:
        env_state, timestep = carry
        shape = (num_envs, *bounds.minimum.shape)
        action = jax.random.uniform(step_key, shape, minval=bounds.minimum, maxval=bounds.maximum)
        env_state, next_timestep = env.step(env_state, action)
        transition = Transition(
            obs=timestep.observation,
            action=action,
            reward=next_timestep.reward,
            discount=next_timestep.discount,
            done=next_timestep.last(),
            next_obs=next_timestep.extras["next_obs"],
        )
        return (env_state, next_timestep), transition

    (env_state, timestep), traj = jax.lax.scan(
        _random_step, (env_state, timestep), jax.random.split(key, num_steps)
    )
    traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)  # the buffer wants (envs, time, ...)
    buffer_state = buffer.add(buffer.init(jax.tree.map(lambda x: x[0, 0], traj)), traj)
    return env_state, timestep, buffer_state


def action_bounds(env: Any, system_name: str) -> ActionBounds:
    """The environment's box, or a one-line error naming the systems that fit its actions."""
    spec = env.action_spec
    require_action_space(spec, system_name, continuous=True)
    shape = spec.shape
    return ActionBounds(
        jnp.broadcast_to(jnp.asarray(spec.minimum, jnp.float32), shape),
        jnp.broadcast_to(jnp.asarray(spec.maximum, jnp.float32), shape),
    )


def make_buffer(cfg: DictConfig, sizes: AnakinSizes) -> tuple[Any, Any]:
    """(flashbax buffer of n-step sequences per slot, validated replay sizes)."""
    replay = replay_sizes(cfg, sizes, int(cfg.n_step))
    buffer = fbx.make_trajectory_buffer(
        add_batch_size=sizes.num_envs,
        sample_batch_size=replay.batch_size,
        sample_sequence_length=replay.sequence_length,
        period=1,
        min_length_time_axis=replay.sequence_length,
        max_length_time_axis=replay.time_axis,
    )
    replay_ratio = int(cfg.epochs) / sizes.steps_per_update
    print(f"  replay ratio: {replay_ratio:g} gradient steps per environment step", flush=True)
    return buffer, replay


def pmean_over(tree: Any, axes: tuple[str, ...]) -> Any:
    """Average over the replica axes, so every replica takes the same step."""
    for axis in axes:
        tree = jax.lax.pmean(tree, axis_name=axis)
    return tree


def get_learner_fn(
    env: Any,
    actor_apply: Callable,
    optimizers: DDPGOptStates,
    buffer: Any,
    critic_loss_fn: Callable,
    actor_loss_fn: Callable,
    bounds: ActionBounds,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: each update takes `rollout_length` noisy steps, stores them, then
    takes `epochs` gradient steps on replayed n-step sequences."""
    cfg = config.system
    noise_scale = float(cfg.exploration_noise) * bounds.half_range
    period, tau = int(cfg.actor_update_period), float(cfg.tau)

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SELECT ACTION: the deterministic action plus Gaussian noise, kept inside the bounds
        key, noise_key = jax.random.split(state.key)
        obs = state.timestep.observation
        mean_action = actor_apply(state.params.actor, obs)
        action = bounds.clip(mean_action + noise_scale * jax.random.normal(noise_key, mean_action.shape))

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = Transition(
            obs=obs,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
        )
        state = state._replace(key=key, env_state=env_state, timestep=timestep)
        return state, (transition, timestep.extras["episode_metrics"])

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key, critic_key, actor_key = jax.random.split(carry.key, 4)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, n_step, ...)
        params, opt_states = carry.params, carry.opt_states

        # UPDATE CRITIC
        grads, critic_metrics = jax.grad(critic_loss_fn, has_aux=True)(
            params.critic, params, batch, critic_key
        )
        grads, critic_metrics = pmean_over((grads, critic_metrics), sizes.replica_axes)
        updates, critic_opt = optimizers.critic.update(grads, opt_states.critic, params.critic)
        params = params._replace(critic=optax.apply_updates(params.critic, updates))

        # UPDATE ACTOR AND TARGETS: every `actor_update_period` gradient steps (TD3's delay)
        grads, actor_metrics = jax.grad(actor_loss_fn, has_aux=True)(params.actor, params, batch, actor_key)
        grads, actor_metrics = pmean_over((grads, actor_metrics), sizes.replica_axes)
        updates, actor_opt = optimizers.actor.update(grads, opt_states.actor, params.actor)
        actor = optax.apply_updates(params.actor, updates)
        delayed = DDPGParams(
            actor=actor,
            critic=params.critic,
            target_actor=optax.incremental_update(actor, params.target_actor, tau),
            target_critic=optax.incremental_update(params.critic, params.target_critic, tau),
        )
        now = (carry.gradient_steps + 1) % period == 0
        keep_or_take = lambda new, old: jax.tree.map(lambda n, o: jnp.where(now, n, o), new, old)  # noqa: E731
        carry = _UpdateCarry(
            params=keep_or_take(delayed, params),
            opt_states=DDPGOptStates(actor=keep_or_take(actor_opt, opt_states.actor), critic=critic_opt),
            buffer_state=carry.buffer_state,
            key=key,
            gradient_steps=carry.gradient_steps + 1,
        )
        return carry, {**critic_metrics, **actor_metrics}

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT AND STORE: the buffer wants (num_envs, time, ...)
        state, (traj, episode_metrics) = jax.lax.scan(_env_step, state, None, sizes.rollout_length)
        buffer_state = buffer.add(state.buffer_state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj))

        # UPDATE NETWORKS
        carry = _UpdateCarry(state.params, state.opt_states, buffer_state, state.key, state.gradient_steps)
        carry, metrics = jax.lax.scan(_gradient_step, carry, None, int(cfg.epochs))
        state = state._replace(
            params=carry.params,
            opt_states=carry.opt_states,
            buffer_state=carry.buffer_state,
            key=carry.key,
            gradient_steps=carry.gradient_steps,
        )
        return state, (episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def learner_setup(
    env: Any,
    config: DictConfig,
    sizes: AnakinSizes,
    key: chex.PRNGKey,
    critic_loss: Callable = critic_loss,
    actor_loss: Callable = actor_loss,
    num_critics: int = 1,
) -> SystemSetup:
    """Validate, build the actor, `num_critics` critics, optimisers and buffer, fill the
    buffer with random-action warm-up steps and initialise every replica.

    Variants pass their own losses (same signatures as this file's) and how many critics
    they keep (TD3: 2).
    """
    cfg = config.system
    bounds = action_bounds(env, str(cfg.system_name))
    require(
        float(cfg.exploration_noise) >= 0, f"system.exploration_noise={cfg.exploration_noise} must be >= 0."
    )
    require(0.0 < float(cfg.tau) <= 1.0, f"system.tau={cfg.tau} must be in (0, 1].")
    require(
        int(cfg.actor_update_period) >= 1,
        f"system.actor_update_period={cfg.actor_update_period} must be >= 1 (1: every gradient step).",
    )
    buffer, replay = make_buffer(cfg, sizes)
    actor = make_actor(config.network.actor_network, env.action_spec)
    critic = make_q_critics(config.network.q_network, num_critics)
    optimizers = DDPGOptStates(
        actor=optax.chain(
            optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(float(cfg.actor_learning_rate))
        ),
        critic=optax.chain(
            optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(float(cfg.critic_learning_rate))
        ),
    )
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        actor_params = actor.init(actor_key, dummy_obs)
        critic_params = critic.init(critic_key, dummy_obs, jnp.zeros((1, *bounds.minimum.shape)))
        warmup_key, key = jax.random.split(slot_key)
        # WARM-UP: uniformly random actions fill the buffer before the first gradient step.
        env_state, timestep, buffer_state = warm_up(
            env, buffer, sizes.num_envs, replay.warmup_per_env, bounds, warmup_key
        )
        return LearnerState(
            params=DDPGParams(actor_params, critic_params, actor_params, critic_params),
            opt_states=DDPGOptStates(
                optimizers.actor.init(actor_params), optimizers.critic.init(critic_params)
            ),
            buffer_state=buffer_state,
            key=key,
            env_state=env_state,
            timestep=timestep,
            gradient_steps=jnp.zeros((), jnp.int32),
        )

    losses = {"actor_apply": actor.apply, "critic_apply": critic.apply}
    critic_loss_fn = functools.partial(critic_loss, **losses, gamma=float(cfg.gamma), bounds=bounds)
    actor_loss_fn = functools.partial(actor_loss, **losses)
    learner_fn = get_learner_fn(
        env, actor.apply, optimizers, buffer, critic_loss_fn, actor_loss_fn, bounds, sizes, config
    )
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)
    noise_scale = float(cfg.exploration_noise) * bounds.half_range

    def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
        action = actor.apply(params, observation)
        if greedy:
            return action
        return bounds.clip(action + noise_scale * jax.random.normal(key, action.shape))

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params.actor),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_ddpg", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_ddpg")
    hydra_entry_point()
