"""Soft Actor-Critic with a learned temperature (Haarnoja et al., 2018, arXiv:1812.05905) on Anakin.

A tanh-squashed Gaussian actor (distrax, scaled into the action bounds), twin Q-critics with
Polyak-averaged targets, and the temperature alpha tuned so that the policy's entropy stays
near `system.target_entropy_scale * -action_dim` (measured in the [-1, 1] box, the paper's
convention). Replay, random-action warm-up, n-step returns and the transition type are
ff_ddpg.py's; a time-limit end bootstraps from the true final observation, a termination does
not. The learner is this file's own: three losses (critic, actor, temperature) per step.

    python stoix/systems/sac/ff_sac.py env=gymnax/pendulum
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import hydra
import jax
import jax.numpy as jnp
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_q_critics
from stoix.systems.ddpg.ff_ddpg import (
    Transition,
    action_bounds,
    bootstrap_point,
    first,
    make_buffer,
    pmean_over,
    warm_up,
)
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes


class SACParams(NamedTuple):
    actor: Any
    critic: Any  # both critics, stacked on a leading axis (QCritics)
    target_critic: Any
    log_alpha: chex.Array


class SACOptStates(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState
    alpha: optax.OptState


class LearnerState(NamedTuple):
    params: SACParams
    opt_states: SACOptStates
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any


class _UpdateCarry(NamedTuple):
    params: SACParams
    opt_states: SACOptStates
    buffer_state: Any
    key: chex.PRNGKey


# ALGO LOGIC: the losses. Module-level so tests call them with hand-made batches.
def critic_loss(
    critic_params: Any,
    params: SACParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    gamma: float,
    log_prob_offset: float = 0.0,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Each critic's TD error against g + discount * (min_k Q_target_k(s', a') - alpha log pi(a'|s'))
    with a' ~ pi(s'): the soft value of the bootstrap observation (zero after a termination).
    `log_prob_offset` moves log pi into the [-1, 1] box, the unit every loss here uses."""
    g, discount, next_obs = bootstrap_point(batch, gamma)
    next_action, next_log_prob = actor_apply(params.actor, next_obs).sample_and_log_prob(seed=key)
    next_log_prob = next_log_prob + log_prob_offset
    q_t = jnp.min(critic_apply(params.target_critic, next_obs, next_action), axis=0)
    v_t = q_t - jnp.exp(params.log_alpha) * next_log_prob
    q_tm1 = critic_apply(critic_params, first(batch.obs), batch.action[:, 0])  # (critics, B)
    td_learning = jax.vmap(rlax.td_learning)  # over the batch
    td_error = jax.vmap(td_learning, in_axes=(0, None, None, None))(  # over the critics
        q_tm1, g, discount, jax.lax.stop_gradient(v_t)
    )
    loss = jnp.sum(jnp.mean(rlax.l2_loss(td_error), axis=1))
    return loss, {"critic_loss": loss, "mean_q": jnp.mean(q_tm1)}


def actor_loss(
    actor_params: Any,
    params: SACParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    log_prob_offset: float = 0.0,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """E[alpha log pi(a|s) - min_k Q_k(s, a)] with a reparameterised a ~ pi(s); the log-probs
    (in the [-1, 1] box, see critic_loss) come back without gradient for the temperature."""
    obs = first(batch.obs)
    action, log_prob = actor_apply(actor_params, obs).sample_and_log_prob(seed=key)
    log_prob = log_prob + log_prob_offset
    q = jnp.min(critic_apply(params.critic, obs, action), axis=0)
    loss = jnp.mean(jax.lax.stop_gradient(jnp.exp(params.log_alpha)) * log_prob - q)
    return loss, {"actor_loss": loss, "log_prob": jax.lax.stop_gradient(log_prob)}


def alpha_loss(log_alpha: chex.Array, log_prob: chex.Array, target_entropy: float) -> chex.Array:
    """-log_alpha * (log pi + target_entropy): alpha grows while the entropy -log pi is below the
    target and shrinks while it is above. `log_prob` is measured in the [-1, 1] box."""
    return -jnp.mean(log_alpha * (jax.lax.stop_gradient(log_prob) + target_entropy))


def get_learner_fn(
    env: Any,
    actor_apply: Callable,
    optimizers: SACOptStates,
    buffer: Any,
    critic_loss_fn: Callable,
    actor_loss_fn: Callable,
    alpha_loss_fn: Callable,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: each update takes `rollout_length` sampled actions, stores them,
    then takes `epochs` gradient steps (critics, actor, temperature, targets)."""
    cfg = config.system
    tau = float(cfg.tau)

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SELECT ACTION: a sample from the squashed Gaussian, inside the bounds by construction
        key, policy_key = jax.random.split(state.key)
        obs = state.timestep.observation
        action = actor_apply(state.params.actor, obs).sample(seed=policy_key)

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

        # UPDATE CRITICS
        grads, critic_metrics = jax.grad(critic_loss_fn, has_aux=True)(
            params.critic, params, batch, critic_key
        )
        grads, critic_metrics = pmean_over((grads, critic_metrics), sizes.replica_axes)
        updates, critic_opt = optimizers.critic.update(grads, opt_states.critic, params.critic)
        params = params._replace(critic=optax.apply_updates(params.critic, updates))

        # UPDATE ACTOR
        grads, actor_metrics = jax.grad(actor_loss_fn, has_aux=True)(params.actor, params, batch, actor_key)
        log_prob = actor_metrics.pop("log_prob")
        grads, actor_metrics = pmean_over((grads, actor_metrics), sizes.replica_axes)
        updates, actor_opt = optimizers.actor.update(grads, opt_states.actor, params.actor)
        actor = optax.apply_updates(params.actor, updates)

        # UPDATE TEMPERATURE AND TARGETS
        alpha_grad = pmean_over(jax.grad(alpha_loss_fn)(params.log_alpha, log_prob), sizes.replica_axes)
        updates, alpha_opt = optimizers.alpha.update(alpha_grad, opt_states.alpha, params.log_alpha)
        params = SACParams(
            actor=actor,
            critic=params.critic,
            target_critic=optax.incremental_update(params.critic, params.target_critic, tau),
            log_alpha=optax.apply_updates(params.log_alpha, updates),
        )
        metrics = {
            **critic_metrics,
            **actor_metrics,
            "alpha": jnp.exp(params.log_alpha),
            "entropy": -pmean_over(jnp.mean(log_prob), sizes.replica_axes),
        }
        carry = _UpdateCarry(params, SACOptStates(actor_opt, critic_opt, alpha_opt), carry.buffer_state, key)
        return carry, metrics

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT AND STORE: the buffer wants (num_envs, time, ...)
        state, (traj, episode_metrics) = jax.lax.scan(_env_step, state, None, sizes.rollout_length)
        buffer_state = buffer.add(state.buffer_state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj))

        # UPDATE NETWORKS
        carry = _UpdateCarry(state.params, state.opt_states, buffer_state, state.key)
        carry, metrics = jax.lax.scan(_gradient_step, carry, None, int(cfg.epochs))
        state = state._replace(
            params=carry.params, opt_states=carry.opt_states, buffer_state=carry.buffer_state, key=carry.key
        )
        return state, (episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate, build the actor, twin critics, optimisers and buffer, fill the buffer with
    random-action warm-up steps and initialise every replica."""
    cfg = config.system
    bounds = action_bounds(env, str(cfg.system_name))
    require(0.0 < float(cfg.tau) <= 1.0, f"system.tau={cfg.tau} must be in (0, 1].")
    require(float(cfg.init_alpha) > 0, f"system.init_alpha={cfg.init_alpha} must be > 0.")
    buffer, replay = make_buffer(cfg, sizes)
    actor = make_actor(config.network.actor_network, env.action_spec)
    critic = make_q_critics(config.network.q_network, 2)

    def adam(learning_rate: float) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(learning_rate))

    optimizers = SACOptStates(
        actor=adam(float(cfg.actor_learning_rate)),
        critic=adam(float(cfg.critic_learning_rate)),
        alpha=optax.adam(float(cfg.alpha_learning_rate)),
    )
    target_entropy = float(cfg.target_entropy_scale) * -float(bounds.minimum.size)
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        actor_params = actor.init(actor_key, dummy_obs)
        critic_params = critic.init(critic_key, dummy_obs, jnp.zeros((1, *bounds.minimum.shape)))
        log_alpha = jnp.log(jnp.asarray(float(cfg.init_alpha), jnp.float32))
        warmup_key, key = jax.random.split(slot_key)
        # WARM-UP: uniformly random actions fill the buffer before the first gradient step.
        env_state, timestep, buffer_state = warm_up(
            env, buffer, sizes.num_envs, replay.warmup_per_env, bounds, warmup_key
        )
        return LearnerState(
            params=SACParams(actor_params, critic_params, critic_params, log_alpha),
            opt_states=SACOptStates(
                optimizers.actor.init(actor_params),
                optimizers.critic.init(critic_params),
                optimizers.alpha.init(log_alpha),
            ),
            buffer_state=buffer_state,
            key=key,
            env_state=env_state,
            timestep=timestep,
        )

    # The actor's log-probs are of actions in [minimum, maximum]; in the [-1, 1] box, where the
    # entropy target is set, each dimension's density is larger by half_range. Every loss uses
    # that unit, so the soft values do not get a constant bonus that depends on the box.
    unit_box_offset = jnp.sum(jnp.log(bounds.half_range))
    applies = {"actor_apply": actor.apply, "critic_apply": critic.apply, "log_prob_offset": unit_box_offset}
    learner_fn = get_learner_fn(
        env,
        actor.apply,
        optimizers,
        buffer,
        functools.partial(critic_loss, **applies, gamma=float(cfg.gamma)),
        functools.partial(actor_loss, **applies),
        functools.partial(alpha_loss, target_entropy=target_entropy),
        sizes,
        config,
    )
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)

    def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
        pi = actor.apply(params, observation)
        return pi.mode() if greedy else pi.sample(seed=key)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params.actor),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_sac", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_sac")
    hydra_entry_point()
