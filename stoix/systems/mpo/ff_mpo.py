"""Maximum a posteriori Policy Optimisation (Abdolmaleki et al., 2018, arXiv:1806.06920) on
Anakin, for discrete actions.

Off-policy: a stochastic actor, a Q-critic, target networks with Polyak averaging, and
replay of n-step sequences from a flashbax buffer inside the compiled learner (ff_ddpg.py's
replay and n-step bootstrap; the initial policy fills the buffer first). Each gradient step:
- Critic: expected SARSA under the target policy, Q(s, a) -> g + discount * E_{a' ~ pi_target(s')}
  Q_target(s', a'); the bootstrap point knows truncation from termination.
- E-step: the improved policy q(a|s) ~ pi_target(a|s) exp(Q(s, a) / eta); the temperature
  eta is a dual minimising eta * eps_eta + eta * log E_{pi_target}[exp(Q(s, a) / eta)].
- M-step: weighted maximum likelihood, -E_q[log pi(a|s)], under a bound on
  KL(pi_target(s) || pi(s)) enforced by a learned multiplier alpha.
With a handful of actions every expectation is exact: a Q-network gives Q(s, .) for all
actions at once and the sums run over them. ff_mpo_continuous.py samples actions instead
(rlax.mpo_loss) and bounds the Gaussian's mean and scale separately; it passes its critic
and losses to this file's `learner_setup`. The duals are stored unconstrained and projected
through softplus (ff_vmpo.py's helpers).

    python stoix/systems/mpo/ff_mpo.py env=gymnax/acrobot
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
from stoix.networks.base import make_actor
from stoix.systems.ddpg.ff_ddpg import Transition, bootstrap_point, first, make_buffer, pmean_over
from stoix.systems.mpo.ff_vmpo import VMPODuals as MPODuals
from stoix.systems.mpo.ff_vmpo import project_dual, unproject_dual
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.sizes import AnakinSizes


class MPOParams(NamedTuple):
    actor: Any
    critic: Any
    duals: MPODuals  # unconstrained; softplus of each is the multiplier used
    target_actor: Any
    target_critic: Any


class MPOOptStates(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState
    duals: optax.OptState


class LearnerState(NamedTuple):
    params: MPOParams
    opt_states: MPOOptStates
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any


class _UpdateCarry(NamedTuple):
    params: MPOParams
    opt_states: MPOOptStates
    buffer_state: Any
    key: chex.PRNGKey


class CriticSetup(NamedTuple):
    """How a system builds its critic: `apply(params, obs, ...)` and `init(key, dummy_obs)`."""

    apply: Callable
    init: Callable


def kl_penalty(kl: chex.Array, alpha: chex.Array, epsilon: float) -> tuple[chex.Array, chex.Array]:
    """(KL loss, multiplier loss) for a bound KL <= epsilon, per example: the policy sees
    alpha * KL with alpha held fixed, alpha sees alpha * (epsilon - KL) with KL held fixed,
    so descent raises alpha while KL exceeds its bound and lowers it otherwise (rlax's
    kl_constraint_loss, which rlax does not export)."""
    alpha = project_dual(alpha)
    return jax.lax.stop_gradient(alpha) * kl, alpha * (epsilon - jax.lax.stop_gradient(kl))


# ALGO LOGIC: the losses. Module-level so tests call them with hand-made batches.
def critic_loss(
    critic_params: Any,
    params: MPOParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    gamma: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """TD error of Q(s, a) against g + discount * sum_a' pi_target(a'|s') Q_target(s', a')."""
    del key  # the expectation is exact
    g, discount, next_obs = bootstrap_point(batch, gamma)
    next_probs = actor_apply(params.target_actor, next_obs).probs
    q_t = jnp.sum(next_probs * critic_apply(params.target_critic, next_obs), axis=-1)
    q_all = critic_apply(critic_params, first(batch.obs))
    q_tm1 = jnp.take_along_axis(q_all, batch.action[:, 0, None], axis=-1)[:, 0]
    td_error = jax.vmap(rlax.td_learning)(q_tm1, g, discount, jax.lax.stop_gradient(q_t))
    loss = jnp.mean(rlax.l2_loss(td_error))
    return loss, {"critic_loss": loss, "mean_q": jnp.mean(q_tm1)}


def policy_loss(
    actor_and_duals: tuple[Any, MPODuals],
    params: MPOParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    epsilon_temperature: float,
    epsilon_alpha: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """E-step over every action, weighted by the target policy, then the M-step and the dual
    losses. Written out because rlax.mpo_loss weighs sampled actions uniformly; enumerating
    the actions puts the target policy's probabilities into the weights instead."""
    del key
    actor_params, duals = actor_and_duals
    obs = first(batch.obs)
    target_pi = actor_apply(params.target_actor, obs)
    pi = actor_apply(actor_params, obs)
    q = jax.lax.stop_gradient(critic_apply(params.critic, obs))  # (B, A)
    log_prior = jax.nn.log_softmax(target_pi.logits, axis=-1)

    # E-STEP: q(a|s) = softmax(log pi_target(a|s) + Q(s, a) / eta); the temperature's dual.
    temperature = project_dual(duals.temperature)
    scaled = log_prior + q / temperature
    weights = jax.lax.stop_gradient(jax.nn.softmax(scaled, axis=-1))
    temperature_loss = temperature * (epsilon_temperature + jnp.mean(jax.nn.logsumexp(scaled, axis=-1)))

    # M-STEP: weighted maximum likelihood under the KL bound.
    log_probs = jax.nn.log_softmax(pi.logits, axis=-1)
    m_step_loss = -jnp.mean(jnp.sum(weights * log_probs, axis=-1))
    kl = target_pi.kl_divergence(pi)
    kl_loss, alpha_loss = kl_penalty(kl, duals.alpha, epsilon_alpha)
    loss = m_step_loss + temperature_loss + jnp.mean(kl_loss + alpha_loss)
    metrics = {
        "actor_loss": m_step_loss,
        "temperature_loss": temperature_loss,
        "temperature": temperature,
        "alpha": project_dual(duals.alpha),
        "kl": jnp.mean(kl),
        "entropy": jnp.mean(pi.entropy()),
    }
    return loss, metrics


def discrete_critic(config: DictConfig, action_spec: Any) -> CriticSetup:
    """A Q-network with one output per action (`network.q_network`, DiscreteQNetworkHead)."""
    network = make_actor(config.network.q_network, action_spec)
    return CriticSetup(apply=network.apply, init=network.init)


def make_env_step(env: Any, actor_apply: Callable) -> Callable:
    """One step of every environment in a slot, acting with a sample of the current policy."""

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SELECT ACTION
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

    return _env_step


def get_learner_fn(
    env: Any,
    actor_apply: Callable,
    optimizers: MPOOptStates,
    buffer: Any,
    critic_loss_fn: Callable,
    policy_loss_fn: Callable,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: each update takes `rollout_length` steps sampled from the policy,
    stores them, then takes `epochs` gradient steps on replayed n-step sequences."""
    cfg = config.system
    tau = float(cfg.tau)

    _env_step = make_env_step(env, actor_apply)

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key, critic_key, policy_key = jax.random.split(carry.key, 4)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, n_step, ...)
        params, opt_states = carry.params, carry.opt_states

        # UPDATE CRITIC
        grads, critic_metrics = jax.grad(critic_loss_fn, has_aux=True)(
            params.critic, params, batch, critic_key
        )
        grads, critic_metrics = pmean_over((grads, critic_metrics), sizes.replica_axes)
        updates, critic_opt = optimizers.critic.update(grads, opt_states.critic, params.critic)
        critic = optax.apply_updates(params.critic, updates)

        # UPDATE ACTOR AND DUALS (E- and M-step, against the updated critic)
        params = params._replace(critic=critic)
        (actor_grads, dual_grads), policy_metrics = jax.grad(policy_loss_fn, has_aux=True)(
            (params.actor, params.duals), params, batch, policy_key
        )
        (actor_grads, dual_grads), policy_metrics = pmean_over(
            ((actor_grads, dual_grads), policy_metrics), sizes.replica_axes
        )
        updates, actor_opt = optimizers.actor.update(actor_grads, opt_states.actor, params.actor)
        actor = optax.apply_updates(params.actor, updates)
        updates, dual_opt = optimizers.duals.update(dual_grads, opt_states.duals, params.duals)
        duals = optax.apply_updates(params.duals, updates)

        # UPDATE TARGETS
        params = MPOParams(
            actor=actor,
            critic=critic,
            duals=duals,
            target_actor=optax.incremental_update(actor, params.target_actor, tau),
            target_critic=optax.incremental_update(critic, params.target_critic, tau),
        )
        carry = _UpdateCarry(params, MPOOptStates(actor_opt, critic_opt, dual_opt), carry.buffer_state, key)
        return carry, {**critic_metrics, **policy_metrics}

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


def learner_setup(
    env: Any,
    config: DictConfig,
    sizes: AnakinSizes,
    key: chex.PRNGKey,
    critic_setup: Callable = discrete_critic,
    critic_loss: Callable = critic_loss,
    policy_loss: Callable = policy_loss,
    continuous: bool = False,
) -> SystemSetup:
    """Validate, build actor, critic, duals, optimisers and buffer, fill the buffer with the
    initial policy's steps and initialise every replica.

    ff_mpo_continuous.py passes its own `critic_setup(config, action_spec) -> CriticSetup`,
    losses (same signatures as this file's, with any further keywords already bound) and
    `continuous=True`.
    """
    cfg = config.system
    spec = env.action_spec
    require_action_space(spec, str(cfg.system_name), continuous=continuous)
    buffer, replay = make_buffer(cfg, sizes)
    actor = make_actor(config.network.actor_network, spec)
    critic = critic_setup(config, spec)

    def adam(learning_rate: float) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(learning_rate))

    optimizers = MPOOptStates(
        actor=adam(float(cfg.actor_learning_rate)),
        critic=adam(float(cfg.critic_learning_rate)),
        duals=optax.adam(float(cfg.dual_learning_rate)),
    )
    obs_spec = env.observation_spec
    warmup_step = make_env_step(env, actor.apply)

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        actor_params = actor.init(actor_key, dummy_obs)
        critic_params = critic.init(critic_key, dummy_obs)
        duals = MPODuals(
            temperature=jnp.asarray(unproject_dual(float(cfg.init_temperature)), jnp.float32),
            alpha=jnp.asarray(unproject_dual(float(cfg.init_alpha)), jnp.float32),
            # box actions only (the scale's KL multiplier); unused by a categorical policy
            alpha_std=jnp.asarray(unproject_dual(float(cfg.get("init_alpha_std", 1.0))), jnp.float32),
        )
        params = MPOParams(actor_params, critic_params, duals, actor_params, critic_params)
        opt_states = MPOOptStates(
            *(getattr(optimizers, n).init(getattr(params, n)) for n in MPOOptStates._fields)
        )
        # WARM-UP: the initial policy fills the buffer before the first gradient step.
        reset_key, warmup_key, key = jax.random.split(slot_key, 3)
        env_state, timestep = env.reset(jax.random.split(reset_key, sizes.num_envs))
        state = LearnerState(params, opt_states, None, warmup_key, env_state, timestep)
        state, (traj, _) = jax.lax.scan(warmup_step, state, None, replay.warmup_per_env)
        traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)  # the buffer wants (envs, time, ...)
        buffer_state = buffer.add(buffer.init(jax.tree.map(lambda x: x[0, 0], traj)), traj)
        return state._replace(buffer_state=buffer_state, key=key)

    apply_fns = {"actor_apply": actor.apply, "critic_apply": critic.apply}
    critic_loss_fn = functools.partial(critic_loss, **apply_fns, gamma=float(cfg.gamma))
    policy_loss_fn = functools.partial(
        policy_loss,
        **apply_fns,
        epsilon_temperature=float(cfg.epsilon_temperature),
        epsilon_alpha=float(cfg.epsilon_alpha),
    )
    learner_fn = get_learner_fn(
        env, actor.apply, optimizers, buffer, critic_loss_fn, policy_loss_fn, sizes, config
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


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_mpo", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_mpo")
    hydra_entry_point()
