"""Sampled AlphaZero for continuous actions (Hubert et al., 2021, "Learning and Planning in
Complex Action Spaces", arXiv:2104.06303) on Anakin.

From ff_az.py; what changed: the action space is a box, so every search node samples K actions
(`system.num_sampled_actions`) from the policy network and the tree searches over those K
arms. A node's embedding holds the environment state and its K real actions; the recurrent_fn
maps an arm index to its action and steps the environment (ff_az's model_env/model_state).
The prior over the arms is Sampled MuZero's sampling-corrected (beta-hat / beta) * pi. The
policy (a tanh-squashed Gaussian) learns the search's weights over the sampled actions by
cross-entropy on those actions; the value, its truncation-aware n-step targets and the critic
loss are ff_az's.

    python stoix/systems/search/ff_sampled_az.py system.num_sampled_actions=8
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
import mctx
import optax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ActorCriticParams, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_critic
from stoix.systems.ddpg.ff_ddpg import first, make_buffer, pmean_over
from stoix.systems.search.ff_az import (
    SEARCH_METHODS,
    AZOptStates,
    critic_loss,
    model_env,
    model_state,
    run_mctx,
    value_targets,
)
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes
from stoix.wrappers.gymnax import GymnaxState


class Transition(NamedTuple):
    obs: Observation
    action: chex.Array  # the continuous action taken (one of the root's sampled actions)
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)
    sampled_actions: chex.Array  # (K, action_dim): the root's arms
    search_policy: chex.Array  # (K,): the search's weights over those arms, the policy target


class LearnerState(NamedTuple):
    params: ActorCriticParams
    opt_states: AZOptStates
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any


class _UpdateCarry(NamedTuple):
    params: ActorCriticParams
    opt_states: AZOptStates
    buffer_state: Any
    key: chex.PRNGKey


class Embedding(NamedTuple):
    """A search node: the environment's state and the K actions its arms stand for."""

    env_state: Any
    actions: chex.Array  # (B, K, action_dim)


class SearchConfig(NamedTuple):
    method: str  # gumbel or muzero
    num_simulations: int
    num_sampled_actions: int  # K
    sampling_temperature: float  # beta: pi's pre-squash Gaussian with its scale times this
    noise: bool  # root noise (Gumbel or Dirichlet) and a sampled action; False: the best arm
    gumbel_scale: float
    dirichlet_alpha: float
    dirichlet_fraction: float


# ALGO LOGIC: the sampled arms and their prior.
def sampling_distribution(pi: distrax.Transformed, temperature: float) -> distrax.Distribution:
    """beta, the distribution the arms are drawn from: pi's pre-squash Gaussian with its scale
    times `temperature`, squashed by pi's own bijector (1: beta is pi itself)."""
    if temperature == 1.0:
        return pi
    gaussian = pi.distribution.distribution  # Transformed(Independent(Normal)) -> Normal
    widened = distrax.Normal(gaussian.loc, gaussian.scale * temperature)
    return distrax.Transformed(distrax.Independent(widened, reinterpreted_batch_ndims=1), pi.bijector)


def sampled_prior_logits(log_pi: chex.Array, log_beta: chex.Array) -> chex.Array:
    """Sampled MuZero's prior over K sampled arms, (beta-hat / beta) * pi, as normalised log
    probabilities (..., K). beta-hat, the samples' empirical distribution, is 1/K per arm
    (continuous samples do not repeat), so the prior is proportional to pi(a_k) / beta(a_k);
    with beta = pi it is uniform, 1/K, the empirical distribution of the samples."""
    return jax.nn.log_softmax(log_pi - log_beta, axis=-1)


def sample_arms(
    actor_params: Any,
    observation: Observation,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    num_samples: int,
    temperature: float,
) -> tuple[chex.Array, chex.Array]:
    """(K actions per observation (B, K, action_dim), their prior logits (B, K))."""
    pi = actor_apply(actor_params, observation)
    beta = sampling_distribution(pi, temperature)
    actions = beta.sample(seed=key, sample_shape=num_samples)  # (K, B, action_dim)
    # NOTE: through the same squash, the tanh Jacobian cancels in log pi - log beta.
    log_ratio_logits = sampled_prior_logits(pi.log_prob(actions).T, beta.log_prob(actions).T)
    return jnp.swapaxes(actions, 0, 1), log_ratio_logits


def make_recurrent_fn(
    model_env: Any, actor_apply: Callable, critic_apply: Callable, gamma: float, cfg: SearchConfig
) -> Callable:
    """mctx's recurrent_fn: the arm's real action, one step of `model_env` (un-vectorised, no
    auto-reset; ff_az.make_recurrent_fn says why a truncation is not a terminal here), then K
    fresh arms sampled at the new node."""

    def recurrent_fn(
        params: ActorCriticParams, key: chex.PRNGKey, arm: chex.Array, embedding: Embedding
    ) -> tuple[mctx.RecurrentFnOutput, Embedding]:
        env_key, arms_key = jax.random.split(key)
        action = jnp.take_along_axis(embedding.actions, arm[:, None, None], axis=1)[:, 0]
        state = embedding.env_state
        if isinstance(state, GymnaxState):  # the model draws its own randomness (ff_az.py)
            state = state._replace(key=jax.random.split(env_key, arm.shape[0]))
        state, timestep = jax.vmap(model_env.step)(state, action)
        actions, prior_logits = sample_arms(
            params.actor,
            timestep.observation,
            arms_key,
            actor_apply=actor_apply,
            num_samples=cfg.num_sampled_actions,
            temperature=cfg.sampling_temperature,
        )
        output = mctx.RecurrentFnOutput(
            reward=timestep.reward,
            discount=gamma * timestep.discount,
            prior_logits=prior_logits,
            value=critic_apply(params.critic, timestep.observation),
        )
        return output, Embedding(state, actions)

    return recurrent_fn


def search(
    params: ActorCriticParams,
    key: chex.PRNGKey,
    observation: Observation,
    env_state: Any,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    recurrent_fn: Callable,
    cfg: SearchConfig,
) -> tuple[mctx.PolicyOutput, chex.Array]:
    """One batched search over K sampled actions from the real environments' states:
    (mctx's output, whose `action` is an arm and `action_weights` the policy target over the
    arms; the root's arms (B, K, action_dim))."""
    arms_key, search_key = jax.random.split(key)
    actions, prior_logits = sample_arms(
        params.actor,
        observation,
        arms_key,
        actor_apply=actor_apply,
        num_samples=cfg.num_sampled_actions,
        temperature=cfg.sampling_temperature,
    )
    root = mctx.RootFnOutput(
        prior_logits=prior_logits,
        value=critic_apply(params.critic, observation),
        embedding=Embedding(model_state(env_state), actions),
    )
    output = run_mctx(
        params, search_key, root, recurrent_fn, cfg, max_num_considered_actions=cfg.num_sampled_actions
    )
    return output, actions


def chosen_action(output: mctx.PolicyOutput, actions: chex.Array) -> chex.Array:
    """The continuous action of the arm the search chose, (B, action_dim)."""
    return jnp.take_along_axis(actions, output.action[:, None, None], axis=1)[:, 0]


def policy_loss(
    actor_params: Any, batch: Transition, *, actor_apply: Callable, ent_coef: float
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Cross-entropy from the search's weights over the sampled actions to the policy,
    -sum_k w_k log pi(a_k|s_0), minus `ent_coef` times pi's (pre-squash) entropy, averaged
    over the batch. The entropy bonus keeps the Gaussian from collapsing onto the few arms a
    peaked search target favours."""
    pi = actor_apply(actor_params, first(batch.obs))
    actions = first(batch.sampled_actions)  # (B, K, action_dim)
    weights = first(batch.search_policy)  # (B, K)
    log_pi = pi.log_prob(jnp.swapaxes(actions, 0, 1)).T  # (B, K)
    cross_entropy = -jnp.mean(jnp.sum(weights * log_pi, axis=-1))
    entropy = jnp.mean(pi.entropy())
    loss = cross_entropy - ent_coef * entropy
    return loss, {"policy_loss": cross_entropy, "entropy": entropy}


def get_learner_fn(
    env: Any,
    search_fn: Callable,
    optimizers: AZOptStates,
    buffer: Any,
    sizes: AnakinSizes,
    config: DictConfig,
    actor_apply: Callable,
    critic_apply: Callable,
) -> tuple[Callable[[LearnerState], ExperimentOutput], Callable]:
    """(one slot's learner, its acting step), as in ff_az.py: search and step for
    `rollout_length` steps, store them, take `epochs` gradient steps on replayed sequences."""
    cfg = config.system
    targets_fn = functools.partial(value_targets, critic_apply=critic_apply, gamma=float(cfg.gamma))
    critic_loss_fn = functools.partial(critic_loss, critic_apply=critic_apply)
    policy_loss_fn = functools.partial(policy_loss, actor_apply=actor_apply, ent_coef=float(cfg.ent_coef))

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SEARCH: over K sampled actions, from a copy of every environment's state
        key, search_key = jax.random.split(state.key)
        obs = state.timestep.observation
        output, actions = search_fn(state.params, search_key, obs, state.env_state)
        action = chosen_action(output, actions)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = Transition(
            obs=obs,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
            sampled_actions=actions,
            search_policy=output.action_weights,
        )
        state = state._replace(key=key, env_state=env_state, timestep=timestep)
        return state, (transition, timestep.extras["episode_metrics"])

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key = jax.random.split(carry.key)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, n_step, ...)
        params, opt_states = carry.params, carry.opt_states

        # CALCULATE VALUE TARGETS: n-step, truncation-aware, with the current critic held fixed
        targets = targets_fn(params.critic, batch)

        # UPDATE CRITIC AND ACTOR: every replica takes the same step
        critic_grads, critic_metrics = jax.grad(critic_loss_fn, has_aux=True)(params.critic, batch, targets)
        actor_grads, actor_metrics = jax.grad(policy_loss_fn, has_aux=True)(params.actor, batch)
        critic_grads, actor_grads, metrics = pmean_over(
            (critic_grads, actor_grads, {**critic_metrics, **actor_metrics}), sizes.replica_axes
        )
        updates, critic_opt = optimizers.critic.update(critic_grads, opt_states.critic, params.critic)
        critic = optax.apply_updates(params.critic, updates)
        updates, actor_opt = optimizers.actor.update(actor_grads, opt_states.actor, params.actor)
        actor = optax.apply_updates(params.actor, updates)
        carry = _UpdateCarry(
            params=ActorCriticParams(actor=actor, critic=critic),
            opt_states=AZOptStates(actor=actor_opt, critic=critic_opt),
            buffer_state=carry.buffer_state,
            key=key,
        )
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

    return learner_fn, _env_step


def search_config(cfg: DictConfig, num_simulations: int, noise: bool) -> SearchConfig:
    return SearchConfig(
        method=str(cfg.search_method),
        num_simulations=num_simulations,
        num_sampled_actions=int(cfg.num_sampled_actions),
        sampling_temperature=float(cfg.sampling_temperature),
        noise=noise,
        gumbel_scale=float(cfg.gumbel_scale),
        dirichlet_alpha=float(cfg.dirichlet_alpha),
        dirichlet_fraction=float(cfg.dirichlet_fraction),
    )


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate, build the networks, the search, optimisers and buffer, fill the buffer with
    searched warm-up steps of the initial network and initialise every replica."""
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=True)
    require(
        cfg.search_method in SEARCH_METHODS,
        f"system.search_method={cfg.search_method!r} must be one of {', '.join(SEARCH_METHODS)}.",
    )
    buffer, replay = make_buffer(cfg, sizes)
    actor = make_actor(config.network.actor_network, env.action_spec)
    critic = make_critic(config.network.critic_network)
    train_cfg = search_config(cfg, int(cfg.num_simulations), noise=True)
    recurrent_fn = make_recurrent_fn(model_env(env), actor.apply, critic.apply, float(cfg.gamma), train_cfg)
    search_fn = functools.partial(
        search, actor_apply=actor.apply, critic_apply=critic.apply, recurrent_fn=recurrent_fn, cfg=train_cfg
    )

    def adam(learning_rate: float) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(learning_rate))

    optimizers = AZOptStates(
        actor=adam(float(cfg.actor_learning_rate)), critic=adam(float(cfg.critic_learning_rate))
    )
    learner_fn, env_step = get_learner_fn(
        env, search_fn, optimizers, buffer, sizes, config, actor.apply, critic.apply
    )
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        params = ActorCriticParams(actor.init(actor_key, dummy_obs), critic.init(critic_key, dummy_obs))
        reset_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(reset_key, sizes.num_envs))
        state = LearnerState(
            params=params,
            opt_states=AZOptStates(
                optimizers.actor.init(params.actor), optimizers.critic.init(params.critic)
            ),
            buffer_state=None,
            key=key,
            env_state=env_state,
            timestep=timestep,
        )
        # WARM-UP: the initial network's searches fill the buffer before the first gradient step.
        state, (traj, _) = jax.lax.scan(env_step, state, None, replay.warmup_per_env)
        traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)  # the buffer wants (envs, time, ...)
        buffer_state = buffer.add(buffer.init(jax.tree.map(lambda x: x[0, 0], traj)), traj)
        return state._replace(buffer_state=buffer_state)

    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)

    if cfg.evaluate_with_search:
        eval_search = {
            noise: functools.partial(
                search,
                actor_apply=actor.apply,
                critic_apply=critic.apply,
                recurrent_fn=recurrent_fn,  # its K and beta are the training search's
                cfg=search_config(cfg, int(cfg.num_eval_simulations), noise=noise),
            )
            for noise in (True, False)
        }

        def act(
            params: ActorCriticParams,
            observation: Observation,
            key: chex.PRNGKey,
            greedy: bool,
            env_state: Any,
        ) -> chex.Array:
            # greedy: no root noise and the best arm; the arms themselves are still sampled
            output, actions = eval_search[not greedy](params, key, observation, env_state)
            return chosen_action(output, actions)

    else:

        def act(
            params: ActorCriticParams, observation: Observation, key: chex.PRNGKey, greedy: bool
        ) -> chex.Array:
            pi = actor.apply(params.actor, observation)
            return pi.mode() if greedy else pi.sample(seed=key)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(
            act=act, eval_params=lambda state: state.params, uses_env_state=bool(cfg.evaluate_with_search)
        ),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_sampled_az", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_sampled_az")
    hydra_entry_point()
