"""AlphaZero-style learning (Silver et al., 2018, doi:10.1126/science.aar6404) on Anakin.

Every action is chosen by a Monte-Carlo tree search (mctx) whose model is the environment
itself: a JAX environment is a pure function of its state, so the search steps copies of the
real environments' states. The network is a categorical policy (the search's prior) and a
value (its leaf evaluation). The policy learns the search's action weights; the value learns
n-step returns from replay, bootstrapped from the true final observation after a time-limit
end and not after a termination. `system.search_method` picks mctx.muzero_policy (PUCT,
Dirichlet noise, visit counts) or mctx.gumbel_muzero_policy (Gumbel top-k, sequential
halving, improved policy). Replay and n-step targets are ff_ddpg.py's.

    python stoix/systems/search/ff_az.py system.search_method=muzero system.num_simulations=16
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import hydra
import jax
import jax.numpy as jnp
import mctx
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ActorCriticParams, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_critic
from stoix.systems.ddpg.ff_ddpg import bootstrap_point, first, make_buffer, pmean_over
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes
from stoix.wrappers.core import (
    AutoReset,
    AutoResetState,
    MetricsState,
    PooledAutoReset,
    RecordEpisodeMetrics,
    VmapWrapper,
)
from stoix.wrappers.gymnax import GymnaxState

SEARCH_METHODS = ("gumbel", "muzero")


class Transition(NamedTuple):
    obs: Observation
    action: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)
    search_policy: chex.Array  # the search's action weights at `obs`: the policy target


class AZOptStates(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState


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


class SearchConfig(NamedTuple):
    """What one call of the search needs besides the parameters and the root."""

    method: str  # gumbel or muzero
    num_simulations: int
    noise: bool  # root noise (Gumbel or Dirichlet) and sampled actions; False: deterministic
    max_num_considered_actions: int
    gumbel_scale: float
    dirichlet_alpha: float
    dirichlet_fraction: float


# THE MODEL: the environment's own step on a copy of its state.
def model_state(env_state: Any) -> Any:
    """The bare environment's state inside the training wrappers (AutoReset,
    RecordEpisodeMetrics): the search steps the environment without auto-reset, so an
    episode's end stays an end in the tree instead of jumping to a fresh episode."""
    while isinstance(env_state, AutoResetState | MetricsState):
        env_state = env_state.env_state
    return env_state


def model_env(env: Any) -> Any:
    """The single environment inside the training wrappers (VmapWrapper, AutoReset,
    RecordEpisodeMetrics), with whatever `make_env` put under them (a hidden part of the
    observation, clipped actions): the search sees what the agent sees."""
    while isinstance(env, VmapWrapper | AutoReset | PooledAutoReset | RecordEpisodeMetrics):
        env = env._env
    return env


def make_recurrent_fn(
    model_env: Any, actor_apply: Callable, critic_apply: Callable, gamma: float
) -> Callable:
    """mctx's recurrent_fn: one step of `model_env` (un-vectorised, no auto-reset) for a batch
    of search nodes, scored by the network.

    A termination gives discount 0, so nothing below it counts. A time-limit truncation is not
    a terminal in the model: the model keeps stepping (gymnax's dynamics continue past the
    limit) with discount gamma, consistent with the value targets, which bootstrap a
    truncated episode from its final observation, i.e. value the state as if it went on.
    """

    def recurrent_fn(
        params: ActorCriticParams, key: chex.PRNGKey, action: chex.Array, state: Any
    ) -> tuple[mctx.RecurrentFnOutput, Any]:
        # NOTE: the model draws its own randomness: a stochastic environment's outcome is then
        # sampled in the search, not foreseen from the key the real step will use.
        if isinstance(state, GymnaxState):
            state = state._replace(key=jax.random.split(key, action.shape[0]))
        state, timestep = jax.vmap(model_env.step)(state, action)
        output = mctx.RecurrentFnOutput(
            reward=timestep.reward,
            discount=gamma * timestep.discount,
            prior_logits=actor_apply(params.actor, timestep.observation).logits,
            value=critic_apply(params.critic, timestep.observation),
        )
        return output, state

    return recurrent_fn


def run_mctx(
    params: Any,
    key: chex.PRNGKey,
    root: mctx.RootFnOutput,
    recurrent_fn: Callable,
    cfg: Any,
    *,
    max_num_considered_actions: int,
    invalid_actions: chex.Array | None = None,
) -> mctx.PolicyOutput:
    """mctx's Gumbel or PUCT search as `cfg.method` says, with root noise only when `cfg.noise`
    (any config with the fields of SearchConfig; the sampled variants share it). Without noise
    the Gumbel search adds none and PUCT takes the most visited action (temperature 0)."""
    if cfg.method == "gumbel":
        return mctx.gumbel_muzero_policy(
            params,
            key,
            root,
            recurrent_fn,
            cfg.num_simulations,
            invalid_actions=invalid_actions,
            max_num_considered_actions=max_num_considered_actions,
            gumbel_scale=cfg.gumbel_scale if cfg.noise else 0.0,
        )
    return mctx.muzero_policy(
        params,
        key,
        root,
        recurrent_fn,
        cfg.num_simulations,
        invalid_actions=invalid_actions,
        dirichlet_fraction=cfg.dirichlet_fraction if cfg.noise else 0.0,
        dirichlet_alpha=cfg.dirichlet_alpha,
        temperature=1.0 if cfg.noise else 0.0,
    )


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
) -> mctx.PolicyOutput:
    """One batched search from the real environments' states; its `action` is the one to take
    and its `action_weights` the policy target."""
    root = mctx.RootFnOutput(
        prior_logits=actor_apply(params.actor, observation).logits,
        value=critic_apply(params.critic, observation),
        embedding=model_state(env_state),
    )
    return run_mctx(
        params,
        key,
        root,
        recurrent_fn,
        cfg,
        max_num_considered_actions=cfg.max_num_considered_actions,
        invalid_actions=observation.action_mask <= 0,
    )


# ALGO LOGIC: targets and losses. Module-level so tests call them with hand-made batches.
def value_targets(
    critic_params: Any, batch: Transition, *, critic_apply: Callable, gamma: float
) -> chex.Array:
    """n-step returns of sequences shaped (B, n), without gradient: rewards up to the first
    episode end, then gamma^(m+1) * V(true next observation of that step), which is zero after
    a termination and the final observation's value after a truncation."""
    g, discount, next_obs = bootstrap_point(batch, gamma)
    return jax.lax.stop_gradient(g + discount * critic_apply(critic_params, next_obs))


def critic_loss(
    critic_params: Any, batch: Transition, targets: chex.Array, *, critic_apply: Callable
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """0.5 * mean((G - V(s_0))^2) on the first step of each sequence."""
    v = critic_apply(critic_params, first(batch.obs))
    loss = jnp.mean(rlax.l2_loss(targets - v))
    return loss, {"critic_loss": loss, "mean_value": jnp.mean(v)}


def policy_loss(
    actor_params: Any, batch: Transition, *, actor_apply: Callable
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Cross-entropy from the search's action weights to the policy, -sum_a w_a log pi(a|s_0),
    averaged over the batch."""
    pi = actor_apply(actor_params, first(batch.obs))
    target = first(batch.search_policy)
    # NOTE: an illegal action has weight 0 and log-probability -inf; where() keeps 0 * -inf out.
    log_pi = jax.nn.log_softmax(pi.logits)
    loss = -jnp.mean(jnp.sum(jnp.where(target > 0, target * log_pi, 0.0), axis=-1))
    return loss, {"policy_loss": loss, "entropy": jnp.mean(pi.entropy())}


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
    """(one slot's learner, its acting step). Each update searches and steps for
    `rollout_length` steps, stores them, then takes `epochs` gradient steps on replayed n-step
    sequences (critic and actor)."""
    cfg = config.system
    targets_fn = functools.partial(value_targets, critic_apply=critic_apply, gamma=float(cfg.gamma))
    critic_loss_fn = functools.partial(critic_loss, critic_apply=critic_apply)
    policy_loss_fn = functools.partial(policy_loss, actor_apply=actor_apply)

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SEARCH: from a copy of every environment's state
        key, search_key = jax.random.split(state.key)
        obs = state.timestep.observation
        output = search_fn(state.params, search_key, obs, state.env_state)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, output.action)
        transition = Transition(
            obs=obs,
            action=output.action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
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
        noise=noise,
        max_num_considered_actions=int(cfg.max_num_considered_actions),
        gumbel_scale=float(cfg.gumbel_scale),
        dirichlet_alpha=float(cfg.dirichlet_alpha),
        dirichlet_fraction=float(cfg.dirichlet_fraction),
    )


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate, build the networks, the search, optimisers and buffer, fill the buffer with
    searched warm-up steps of the initial network and initialise every replica."""
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=False)
    require(
        cfg.search_method in SEARCH_METHODS,
        f"system.search_method={cfg.search_method!r} must be one of {', '.join(SEARCH_METHODS)}.",
    )
    buffer, replay = make_buffer(cfg, sizes)
    actor = make_actor(config.network.actor_network, env.action_spec)
    critic = make_critic(config.network.critic_network)
    # The model: the single environment inside the training env's wrappers (VmapWrapper,
    # AutoReset, RecordEpisodeMetrics) -- the same environment the evaluator steps.
    recurrent_fn = make_recurrent_fn(model_env(env), actor.apply, critic.apply, float(cfg.gamma))
    search_fn = functools.partial(
        search,
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        recurrent_fn=recurrent_fn,
        cfg=search_config(cfg, int(cfg.num_simulations), noise=True),
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
        # WARM-UP: the initial network's searches fill the buffer before the first gradient step,
        # so even the first policy targets are real search outputs.
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
                recurrent_fn=recurrent_fn,
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
            # greedy: the search without root noise, taking its best action
            return eval_search[not greedy](params, key, observation, env_state).action

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


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_az", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_az")
    hydra_entry_point()
