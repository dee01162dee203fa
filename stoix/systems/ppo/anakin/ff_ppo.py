"""Proximal Policy Optimisation (Schulman et al., 2017, arXiv:1707.06347) on Anakin.

A clipped-surrogate actor and a value critic trained on rollouts of vectorised JAX
environments, with truncation-aware GAE: a time-limit end bootstraps from the true final
observation, a termination does not. Environment stepping and learning compile into one
program: `pmap` over devices, `vmap` over update batches, `lax.scan` over updates.

The policy head comes from the network config, so the same file trains discrete
(`network=mlp`) and continuous (`network=mlp_continuous`, see ff_ppo_continuous.py) agents.

    python stoix/systems/ppo/anakin/ff_ppo.py env=gymnax/acrobot system.rollout_length=32
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
from stoix.base_types import ActorApply, ActorCriticParams, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_critic
from stoix.utils import shuffle
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import truncated_gae
from stoix.utils.running_statistics import (
    RunningStatistics,
    init_statistics,
    normalize,
    update_statistics,
)
from stoix.utils.sizes import AnakinSizes


class LearnerState(NamedTuple):
    params: ActorCriticParams
    opt_state: optax.OptState
    key: chex.PRNGKey
    env_state: Any
    timestep: Any
    obs_norm: RunningStatistics | None = None  # None unless system.normalize_observations
    loss_state: Any = None  # what a variant's policy loss carries between updates (PPO: none)


class PPOTransition(NamedTuple):
    obs: Observation  # raw observation acted on
    action: chex.Array
    log_prob: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)
    episode_metrics: Any


class PPOBatch(NamedTuple):
    obs: Observation
    action: chex.Array
    log_prob: chex.Array
    value: chex.Array
    advantage: chex.Array
    target: chex.Array


class EvalParams(NamedTuple):
    actor: Any
    obs_norm: RunningStatistics | None


class _UpdateCarry(NamedTuple):
    params: ActorCriticParams
    opt_state: optax.OptState
    key: chex.PRNGKey
    loss_state: Any = None


def _normalize_obs(obs_norm: RunningStatistics | None, obs: Observation) -> Observation:
    return obs._replace(agent_view=normalize(obs_norm, obs.agent_view))


# ALGO LOGIC: the losses. Module-level so tests can call them with hand-made batches.
def clipped_objective(
    log_prob: chex.Array,
    old_log_prob: chex.Array,
    advantage: chex.Array,
    entropy: chex.Array,
    *,
    clip_eps: float,
    ent_coef: float,
    standardize_advantages: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """PPO's clipped surrogate (rlax's) minus an entropy bonus, over flat (N,) arrays."""
    if standardize_advantages:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    ratio = jnp.exp(log_prob - old_log_prob)
    policy_loss = rlax.clipped_surrogate_pg_loss(ratio, advantage, clip_eps)
    entropy = entropy.mean()
    metrics = {
        "actor_loss": policy_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - (log_prob - old_log_prob)),
        "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > clip_eps),
    }
    return policy_loss - ent_coef * entropy, metrics


def value_loss(
    value: chex.Array, old_value: chex.Array, target: chex.Array, *, clip_eps: float, clip_value: bool
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Half the squared error to the targets, optionally clipped around the old values."""
    loss = jnp.square(value - target)
    if clip_value:
        clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
        loss = jnp.maximum(loss, jnp.square(clipped - target))
    loss = 0.5 * jnp.mean(loss)
    return loss, {"value_loss": loss}


def actor_loss(
    actor_params: Any,
    batch: PPOBatch,
    *,
    apply_fn: Callable,
    clip_eps: float,
    ent_coef: float,
    standardize_advantages: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """The clipped objective of the actor's current policy on a batch."""
    pi = apply_fn(actor_params, batch.obs)
    return clipped_objective(
        pi.log_prob(batch.action),
        batch.log_prob,
        batch.advantage,
        pi.entropy(),
        clip_eps=clip_eps,
        ent_coef=ent_coef,
        standardize_advantages=standardize_advantages,
    )


def critic_loss(
    critic_params: Any,
    batch: PPOBatch,
    *,
    apply_fn: Callable,
    clip_eps: float,
    clip_value: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Squared error to the GAE targets, optionally clipped around the old values."""
    value = apply_fn(critic_params, batch.obs)
    return value_loss(value, batch.value, batch.target, clip_eps=clip_eps, clip_value=clip_value)


def ppo_loss(
    params: ActorCriticParams,
    batch: PPOBatch,
    loss_state: Any = None,
    *,
    actor_loss_fn: Callable,
    critic_loss_fn: Callable,
    vf_coef: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    if loss_state is None:
        a_loss, a_metrics = actor_loss_fn(params.actor, batch)
    else:
        a_loss, a_metrics = actor_loss_fn(params.actor, batch, loss_state=loss_state)
    c_loss, c_metrics = critic_loss_fn(params.critic, batch)
    return a_loss + vf_coef * c_loss, {**a_metrics, **c_metrics}


def rollout_values(
    critic: Callable[[Observation], chex.Array],
    obs: Observation,
    last_obs: Observation,
    next_obs: Observation,
    truncated: chex.Array,
    max_truncations: int,
    batch_axis: str | None = None,
) -> tuple[chex.Array, chex.Array]:
    """Values of the observations acted on and of the true next observations, each (T, E).

    `obs` and `next_obs` are (T, E, ...) from a rollout, `last_obs` (E, ...) the observation
    after it, `truncated` (T, E) marks steps whose episode ended without terminating. A step
    that did not end an episode has the next one's observation as its next observation, so one
    critic pass over the T + 1 observations gives both values; only the final observations of
    truncated episodes need their own, and up to `max_truncations` of them are gathered into one
    small batch (a rollout with more, e.g. under a short time limit, takes the critic over all of
    `next_obs`: the values are the same either way). At a terminated step the next value is the
    reset observation's: it is multiplied by a zero discount wherever it is used.

    `batch_axis` names a `vmap` axis this runs under: the choice between the two ways is taken
    over it, so that it stays a branch instead of becoming a select that computes both.
    """
    num_steps, num_envs = truncated.shape
    both = jax.tree.map(lambda x, y: jnp.concatenate([x, y[None]]), obs, last_obs)
    values = critic(both)
    v_tm1, v_t = values[:-1], values[1:]
    count = truncated.sum()
    if batch_axis is not None:
        count = jax.lax.pmax(count, batch_axis)

    def gathered(v_t: chex.Array) -> chex.Array:
        flat = truncated.reshape(-1)
        # Unused slots point one past the end: their values are computed and dropped.
        (index,) = jnp.nonzero(flat, size=max_truncations, fill_value=flat.size)
        final_obs = jax.tree.map(
            lambda x: x.reshape(flat.size, *x.shape[2:])[jnp.minimum(index, flat.size - 1)], next_obs
        )
        return v_t.reshape(-1).at[index].set(critic(final_obs), mode="drop").reshape(num_steps, num_envs)

    def full(v_t: chex.Array) -> chex.Array:
        return jnp.where(truncated, critic(next_obs), v_t)

    return v_tm1, jax.lax.cond(count <= max_truncations, gathered, full, v_t)


def get_learner_fn(
    env: Any,
    actor_apply: Callable,
    critic_apply: Callable,
    optimizer: optax.GradientTransformation,
    sizes: AnakinSizes,
    config: DictConfig,
    policy_loss: Callable,
    update_loss_state: Callable | None = None,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: `num_updates_per_eval` updates, each a rollout then PPO epochs.

    `policy_loss(actor_params, batch, *, apply_fn, ent_coef, standardize_advantages)` is the
    actor's loss: PPO's clipped surrogate here; variants (DPO, REINFORCE) pass their own. A
    variant whose loss carries state between updates (PPO-penalty's KL coefficient) also gets
    `loss_state=` and passes `update_loss_state(loss_state, actor_params, batch, actor_apply,
    replica_axes) -> loss_state`, applied after each update's epochs with the updated actor
    and the whole rollout batch (average any statistic over `replica_axes`).
    """
    cfg = config.system
    norm_obs = bool(cfg.normalize_observations)
    batch_size = sizes.rollout_length * sizes.num_envs
    minibatch_size = batch_size // int(cfg.num_minibatches)
    clip_value = bool(cfg.get("clip_value_loss", False))
    loss_fn = functools.partial(
        ppo_loss,
        actor_loss_fn=functools.partial(
            policy_loss,
            apply_fn=actor_apply,
            ent_coef=float(cfg.ent_coef),
            standardize_advantages=bool(cfg.standardize_advantages),
        ),
        critic_loss_fn=functools.partial(
            critic_loss,
            apply_fn=critic_apply,
            clip_eps=float(cfg.clip_eps) if clip_value else 0.0,
            clip_value=clip_value,
        ),
        vf_coef=float(cfg.vf_coef),
    )

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, PPOTransition]:
        # SELECT ACTION
        key, policy_key = jax.random.split(state.key)
        obs = state.timestep.observation
        pi = actor_apply(state.params.actor, _normalize_obs(state.obs_norm, obs))
        action = pi.sample(seed=policy_key)
        log_prob = pi.log_prob(action)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = PPOTransition(
            obs=obs,
            action=action,
            log_prob=log_prob,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
            episode_metrics=timestep.extras["episode_metrics"],
        )
        return state._replace(key=key, env_state=env_state, timestep=timestep), transition

    def _update_minibatch(carry: _UpdateCarry, minibatch: PPOBatch) -> tuple[_UpdateCarry, dict]:
        grads, metrics = jax.grad(loss_fn, has_aux=True)(carry.params, minibatch, carry.loss_state)
        # NOTE: every replica must take the same step: average over update batches, then devices.
        for axis in sizes.replica_axes:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name=axis)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        params = optax.apply_updates(carry.params, updates)
        return carry._replace(params=params, opt_state=opt_state), metrics

    def _update_epoch(carry: _UpdateCarry, batch: PPOBatch) -> tuple[_UpdateCarry, dict]:
        key, shuffle_key = jax.random.split(carry.key)
        permutation = shuffle.permutation(shuffle_key, batch_size)
        minibatches = jax.tree.map(lambda x: x[permutation.reshape(-1, minibatch_size)], batch)
        carry, metrics = jax.lax.scan(_update_minibatch, carry._replace(key=key), minibatches)
        return carry, metrics

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT ROLLOUT: leaves shaped (rollout_length, num_envs, ...)
        state, traj = jax.lax.scan(_env_step, state, None, sizes.rollout_length)

        # CALCULATE ADVANTAGE: the values of the rollout's observations in one batched call,
        # plus the final observations of truncated episodes
        v_tm1, v_t = rollout_values(
            lambda o: critic_apply(state.params.critic, _normalize_obs(state.obs_norm, o)),
            traj.obs,
            state.timestep.observation,
            traj.next_obs,
            traj.done & (traj.discount > 0),
            max_truncations=sizes.num_envs,
            batch_axis="batch" if sizes.update_batch_size > 1 else None,
        )
        advantage, target = truncated_gae(
            traj.reward,
            float(cfg.gamma) * traj.discount,
            v_tm1,
            v_t,
            traj.done,
            float(cfg.gae_lambda),
        )

        # UPDATE NETWORKS: `epochs` passes over shuffled minibatches
        batch = PPOBatch(
            obs=_normalize_obs(state.obs_norm, traj.obs),
            action=traj.action,
            log_prob=traj.log_prob,
            value=v_tm1,
            advantage=advantage,
            target=target,
        )
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)
        carry = _UpdateCarry(state.params, state.opt_state, state.key, state.loss_state)
        carry, metrics = jax.lax.scan(lambda c, _: _update_epoch(c, batch), carry, None, int(cfg.epochs))
        metrics = jax.tree.map(jnp.mean, metrics)
        loss_state = state.loss_state
        if update_loss_state is not None:
            loss_state = update_loss_state(
                loss_state, carry.params.actor, batch, actor_apply, sizes.replica_axes
            )
        obs_norm = state.obs_norm
        if norm_obs:
            # Statistics change after the epochs, so each rollout is acted on and learned
            # from with the same normalisation (the first ratio is exactly 1).
            obs_norm = update_statistics(obs_norm, traj.obs.agent_view, sizes.replica_axes)
        state = state._replace(
            params=carry.params,
            opt_state=carry.opt_state,
            key=carry.key,
            obs_norm=obs_norm,
            loss_state=loss_state,
        )
        return state, (traj.episode_metrics, metrics)

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def make_optimizer(cfg: DictConfig, num_gradient_steps: int) -> optax.GradientTransformation:
    """Adam behind a global-norm clip; the learning rate decays linearly to 0 over the run's
    gradient steps when `system.decay_learning_rates`."""
    learning_rate = (
        optax.linear_schedule(float(cfg.learning_rate), 0.0, num_gradient_steps)
        if cfg.decay_learning_rates
        else float(cfg.learning_rate)
    )
    clip = optax.clip_by_global_norm(float(cfg.max_grad_norm))
    return optax.chain(clip, optax.adam(learning_rate, eps=1e-5))


def learner_setup(
    env: Any,
    config: DictConfig,
    sizes: AnakinSizes,
    key: chex.PRNGKey,
    policy_loss: Callable | None = None,
    init_loss_state: Any = None,
    update_loss_state: Callable | None = None,
) -> SystemSetup:
    """Validate PPO's sizes, build networks and optimiser, and initialise every replica.

    Variants that change only the actor's loss pass it as `policy_loss` (see
    `get_learner_fn`); the default is PPO's clipped surrogate with `system.clip_eps`.
    """
    cfg = config.system
    if policy_loss is None:
        require(float(cfg.clip_eps) > 0, f"system.clip_eps={cfg.clip_eps} must be > 0.")
        policy_loss = functools.partial(actor_loss, clip_eps=float(cfg.clip_eps))
    batch_size = sizes.rollout_length * sizes.num_envs
    num_minibatches = int(cfg.num_minibatches)
    require(
        num_minibatches >= 1 and batch_size % num_minibatches == 0,
        f"system.num_minibatches={num_minibatches} must divide the per-slot batch "
        f"system.rollout_length*arch.total_num_envs/(devices*arch.update_batch_size)="
        f"{sizes.rollout_length}*{sizes.num_envs}={batch_size}.",
    )

    actor = make_actor(config.network.actor_network, env.action_spec)
    critic = make_critic(config.network.critic_network)
    optimizer = make_optimizer(cfg, sizes.num_updates * int(cfg.epochs) * num_minibatches)
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        params = ActorCriticParams(actor.init(actor_key, dummy_obs), critic.init(critic_key, dummy_obs))
        env_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(env_key, sizes.num_envs))
        obs_norm = init_statistics(obs_spec.agent_view.shape) if cfg.normalize_observations else None
        return LearnerState(
            params, optimizer.init(params), key, env_state, timestep, obs_norm, init_loss_state
        )

    learner_fn = get_learner_fn(
        env, actor.apply, critic.apply, optimizer, sizes, config, policy_loss, update_loss_state
    )
    # NOTE: no buffer donation. Donating the learner state makes XLA's CPU backend insert
    # copies inside the compiled loops: config A of `make benchmark` trained ~20% slower with
    # it (same program, same process). PPO's state is small, so keeping two copies is cheap.
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device")

    def act(eval_params: EvalParams, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
        pi = actor.apply(eval_params.actor, _normalize_obs(eval_params.obs_norm, observation))
        return pi.mode() if greedy else pi.sample(seed=key)

    def eval_params(state: LearnerState) -> EvalParams:
        return EvalParams(state.params.actor, state.obs_norm)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=eval_params),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_ppo", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_ppo")
    hydra_entry_point()
