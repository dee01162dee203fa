"""V-MPO (Song et al., 2019, arXiv:1909.12238) on Anakin: on-policy maximum a posteriori
policy optimisation.

Rollouts, the value critic and truncation-aware GAE are ff_ppo.py's (a time-limit end
bootstraps from the true final observation, a termination does not). What differs is the
policy update, an EM step on every minibatch:
- E-step: the top half of the minibatch's advantages A, weighted by psi = softmax(A / eta),
  is a non-parametric improved policy. The temperature eta is a learned dual variable that
  minimises eta * eps_eta + eta * log mean(exp(A / eta)) over that half.
- M-step: weighted maximum likelihood, -sum psi log pi(a|s), under a bound on the KL between
  the policy that collected the rollout and the current one, enforced by a learned Lagrange
  multiplier alpha. For box actions the KL splits into a mean part and a standard-deviation
  part, each with its own bound and multiplier (the paper's decoupled constraints).
rlax.vmpo_loss computes all four terms; the duals are stored unconstrained and projected
through softplus. The same file trains discrete (`network=mlp`) and continuous
(`network=mlp_continuous`, see ff_vmpo_continuous.py) agents.

    python stoix/systems/mpo/ff_vmpo.py env=gymnax/acrobot
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import hydra
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_critic
from stoix.networks.distributions import AffineTanhNormal
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


class VMPODuals(NamedTuple):
    """Unconstrained dual variables; softplus of each is the multiplier used."""

    temperature: chex.Array  # eta, the E-step's temperature
    alpha: chex.Array  # the KL bound's multiplier (the mean's, for box actions)
    alpha_std: chex.Array  # the standard deviation's KL multiplier (unused for discrete actions)


class VMPOParams(NamedTuple):
    actor: Any
    critic: Any
    duals: VMPODuals


class VMPOOptStates(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState
    duals: optax.OptState


class LearnerState(NamedTuple):
    params: VMPOParams
    opt_states: VMPOOptStates
    key: chex.PRNGKey
    env_state: Any
    timestep: Any
    obs_norm: RunningStatistics | None = None  # None unless system.normalize_observations


class Transition(NamedTuple):
    obs: Observation  # raw observation acted on
    action: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)
    episode_metrics: Any


class VMPOBatch(NamedTuple):
    obs: Observation  # normalised, as the networks see it
    action: chex.Array
    advantage: chex.Array
    target: chex.Array


class EvalParams(NamedTuple):
    actor: Any
    obs_norm: RunningStatistics | None


class _UpdateCarry(NamedTuple):
    params: VMPOParams
    opt_states: VMPOOptStates
    key: chex.PRNGKey


def _normalize_obs(obs_norm: RunningStatistics | None, obs: Observation) -> Observation:
    return obs._replace(agent_view=normalize(obs_norm, obs.agent_view))


_DUAL_FLOOR = 1e-8


def project_dual(x: chex.Array) -> chex.Array:
    """Unconstrained dual -> a positive multiplier (at least _DUAL_FLOOR)."""
    return jax.nn.softplus(x) + _DUAL_FLOOR


def unproject_dual(value: float) -> float:
    """The unconstrained number whose projection is `value` (> _DUAL_FLOOR)."""
    return float(np.log(np.expm1(value - _DUAL_FLOOR)))


# ALGO LOGIC: the losses. Module-level so tests can call them with hand-made batches.
def policy_kls(old_pi: Any, pi: Any) -> tuple[chex.Array, chex.Array | None]:
    """KL(old || new) per example; for a squashed Gaussian, (mean part, std part).

    The mean part moves only the mean (KL(N(mu_old, s_old) || N(mu, s_old))), the std part
    only the scale (KL(N(mu_old, s_old) || N(mu_old, s))), each summed over action
    dimensions. A tanh squash is invertible, so the KL of the squashed distributions is that
    of the Gaussians underneath.
    """
    if isinstance(pi, AffineTanhNormal):
        old, new = old_pi.distribution.distribution, pi.distribution.distribution
        old_var = jnp.square(old.scale)
        kl_mean = jnp.sum(jnp.square(new.loc - old.loc) / (2.0 * old_var), axis=-1)
        kl_std = jnp.sum(
            jnp.log(new.scale / old.scale) + old_var / (2.0 * jnp.square(new.scale)) - 0.5, axis=-1
        )
        return kl_mean, kl_std
    return old_pi.kl_divergence(pi), None


def vmpo_policy_loss(
    actor_params: Any,
    duals: VMPODuals,
    old_actor_params: Any,
    batch: VMPOBatch,
    *,
    apply_fn: Callable,
    epsilon_temperature: float,
    epsilon_alpha: float,
    epsilon_alpha_std: float,
    top_k_fraction: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """E-step (temperature), M-step (weighted log-likelihood) and the KL terms, through
    rlax.vmpo_loss; `old_actor_params` is the policy that collected the rollout."""
    pi = apply_fn(actor_params, batch.obs)
    old_pi = apply_fn(old_actor_params, batch.obs)
    kl, kl_std = policy_kls(old_pi, pi)
    constraints = [(kl, rlax.LagrangePenalty(duals.alpha, epsilon_alpha))]
    if kl_std is not None:
        constraints.append((kl_std, rlax.LagrangePenalty(duals.alpha_std, epsilon_alpha_std)))
    loss, out = rlax.vmpo_loss(
        sample_log_probs=pi.log_prob(batch.action),
        advantages=batch.advantage,
        temperature_constraint=rlax.LagrangePenalty(duals.temperature, epsilon_temperature),
        kl_constraints=constraints,
        projection_operator=project_dual,
        top_k_fraction=top_k_fraction,
    )
    metrics = {
        "actor_loss": jnp.mean(out.policy_loss),
        "temperature_loss": out.temperature_loss,
        "temperature": project_dual(duals.temperature),
        "alpha": project_dual(duals.alpha),
        "kl": jnp.mean(kl),
        "entropy": jnp.mean(pi.entropy()),
    }
    if kl_std is not None:
        metrics["kl_scale"] = jnp.mean(kl_std)
        metrics["alpha_scale"] = project_dual(duals.alpha_std)
    return jnp.mean(loss), metrics


def critic_loss(critic_params: Any, batch: VMPOBatch, *, apply_fn: Callable) -> tuple[chex.Array, dict]:
    """Squared error to the GAE targets."""
    loss = 0.5 * jnp.mean(jnp.square(apply_fn(critic_params, batch.obs) - batch.target))
    return loss, {"value_loss": loss}


def vmpo_loss(
    params: VMPOParams,
    old_actor_params: Any,
    batch: VMPOBatch,
    *,
    policy_loss_fn: Callable,
    critic_loss_fn: Callable,
    vf_coef: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    p_loss, p_metrics = policy_loss_fn(params.actor, params.duals, old_actor_params, batch)
    c_loss, c_metrics = critic_loss_fn(params.critic, batch)
    return p_loss + vf_coef * c_loss, {**p_metrics, **c_metrics}


def get_learner_fn(
    env: Any,
    actor_apply: Callable,
    critic_apply: Callable,
    optimizers: VMPOParams,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: `num_updates_per_eval` updates, each a rollout then V-MPO epochs."""
    cfg = config.system
    norm_obs = bool(cfg.normalize_observations)
    batch_size = sizes.rollout_length * sizes.num_envs
    minibatch_size = batch_size // int(cfg.num_minibatches)
    loss_fn = functools.partial(
        vmpo_loss,
        policy_loss_fn=functools.partial(
            vmpo_policy_loss,
            apply_fn=actor_apply,
            epsilon_temperature=float(cfg.epsilon_temperature),
            epsilon_alpha=float(cfg.epsilon_alpha),
            epsilon_alpha_std=float(cfg.epsilon_alpha_std),
            top_k_fraction=float(cfg.top_k_fraction),
        ),
        critic_loss_fn=functools.partial(critic_loss, apply_fn=critic_apply),
        vf_coef=float(cfg.vf_coef),
    )

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, Transition]:
        # SELECT ACTION
        key, policy_key = jax.random.split(state.key)
        obs = state.timestep.observation
        pi = actor_apply(state.params.actor, _normalize_obs(state.obs_norm, obs))
        action = pi.sample(seed=policy_key)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = Transition(
            obs=obs,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
            episode_metrics=timestep.extras["episode_metrics"],
        )
        return state._replace(key=key, env_state=env_state, timestep=timestep), transition

    def _update_minibatch(
        carry: tuple[_UpdateCarry, Any], minibatch: VMPOBatch
    ) -> tuple[tuple[_UpdateCarry, Any], dict]:
        update, old_actor = carry
        grads, metrics = jax.grad(loss_fn, has_aux=True)(update.params, old_actor, minibatch)
        # NOTE: every replica must take the same step: average over update batches, then devices.
        for axis in sizes.replica_axes:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name=axis)
        params, opt_states = [], []
        for name in VMPOParams._fields:
            step, opt_state = getattr(optimizers, name).update(
                getattr(grads, name), getattr(update.opt_states, name), getattr(update.params, name)
            )
            params.append(optax.apply_updates(getattr(update.params, name), step))
            opt_states.append(opt_state)
        update = update._replace(params=VMPOParams(*params), opt_states=VMPOOptStates(*opt_states))
        return (update, old_actor), metrics

    def _update_epoch(
        carry: tuple[_UpdateCarry, Any], batch: VMPOBatch
    ) -> tuple[tuple[_UpdateCarry, Any], dict]:
        update, old_actor = carry
        key, shuffle_key = jax.random.split(update.key)
        permutation = shuffle.permutation(shuffle_key, batch_size)
        minibatches = jax.tree.map(lambda x: x[permutation].reshape(-1, minibatch_size, *x.shape[1:]), batch)
        return jax.lax.scan(_update_minibatch, (update._replace(key=key), old_actor), minibatches)

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT ROLLOUT: leaves shaped (rollout_length, num_envs, ...)
        state, traj = jax.lax.scan(_env_step, state, None, sizes.rollout_length)

        # CALCULATE ADVANTAGE
        critic_params = state.params.critic
        obs = _normalize_obs(state.obs_norm, traj.obs)
        v_tm1 = critic_apply(critic_params, obs)
        v_t = critic_apply(critic_params, _normalize_obs(state.obs_norm, traj.next_obs))
        advantage, target = truncated_gae(
            traj.reward, float(cfg.gamma) * traj.discount, v_tm1, v_t, traj.done, float(cfg.gae_lambda)
        )

        # UPDATE NETWORKS AND DUALS: the policy that collected the rollout anchors the KL
        batch = VMPOBatch(obs=obs, action=traj.action, advantage=advantage, target=target)
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)
        carry = (_UpdateCarry(state.params, state.opt_states, state.key), state.params.actor)
        (carry, _), metrics = jax.lax.scan(lambda c, _: _update_epoch(c, batch), carry, None, int(cfg.epochs))
        obs_norm = state.obs_norm
        if norm_obs:
            obs_norm = update_statistics(obs_norm, traj.obs.agent_view, sizes.replica_axes)
        state = state._replace(
            params=carry.params, opt_states=carry.opt_states, key=carry.key, obs_norm=obs_norm
        )
        return state, (traj.episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate V-MPO's sizes, build networks, duals and optimisers, initialise every replica."""
    cfg = config.system
    batch_size = sizes.rollout_length * sizes.num_envs
    num_minibatches = int(cfg.num_minibatches)
    require(
        batch_size % num_minibatches == 0,
        f"system.num_minibatches={num_minibatches} must divide the per-slot batch "
        f"system.rollout_length*arch.total_num_envs/(devices*arch.update_batch_size)="
        f"{sizes.rollout_length}*{sizes.num_envs}={batch_size}.",
    )
    require(
        int(float(cfg.top_k_fraction) * batch_size // num_minibatches) >= 1,
        f"system.top_k_fraction={cfg.top_k_fraction} keeps no sample of a minibatch of "
        f"{batch_size // num_minibatches}; raise it or use larger minibatches.",
    )

    actor = make_actor(config.network.actor_network, env.action_spec)
    critic = make_critic(config.network.critic_network)
    num_gradient_steps = sizes.num_updates * int(cfg.epochs) * num_minibatches

    def adam(learning_rate: float, decay: bool) -> optax.GradientTransformation:
        if decay:
            learning_rate = optax.linear_schedule(learning_rate, 0.0, num_gradient_steps)
        return optax.chain(
            optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(learning_rate, eps=1e-5)
        )

    decay = bool(cfg.decay_learning_rates)
    optimizers = VMPOParams(
        actor=adam(float(cfg.actor_learning_rate), decay),
        critic=adam(float(cfg.critic_learning_rate), decay),
        duals=adam(float(cfg.dual_learning_rate), False),
    )
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        duals = VMPODuals(
            temperature=jnp.asarray(unproject_dual(float(cfg.init_temperature)), jnp.float32),
            alpha=jnp.asarray(unproject_dual(float(cfg.init_alpha)), jnp.float32),
            alpha_std=jnp.asarray(unproject_dual(float(cfg.init_alpha)), jnp.float32),
        )
        params = VMPOParams(actor.init(actor_key, dummy_obs), critic.init(critic_key, dummy_obs), duals)
        opt_states = VMPOOptStates(
            *(getattr(optimizers, n).init(getattr(params, n)) for n in VMPOParams._fields)
        )
        env_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(env_key, sizes.num_envs))
        obs_norm = init_statistics(obs_spec.agent_view.shape) if cfg.normalize_observations else None
        return LearnerState(params, opt_states, key, env_state, timestep, obs_norm)

    learner_fn = get_learner_fn(env, actor.apply, critic.apply, optimizers, sizes, config)
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)

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


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_vmpo", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_vmpo")
    hydra_entry_point()
