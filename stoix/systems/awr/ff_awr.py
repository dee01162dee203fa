"""Advantage-Weighted Regression (Peng et al., 2019, arXiv:1910.00177) on Anakin.

Off-policy actor-critic by supervised regression: the critic V(s) regresses onto TD(lambda)
returns computed on replayed sequences with the current critic, and the actor maximises
log pi(a|s) weighted by min(exp(A / beta), max_weight), A = return - V(s), on the replayed
actions. Replay is ff_dqn.py's (a flashbax trajectory buffer inside the compiled learner,
filled first with random actions); rollouts of `rollout_length` steps sample the policy. A
time-limit end bootstraps from the true final observation, a termination does not.

The same learner trains discrete (categorical head, `network=mlp`) and continuous actions
(tanh-squashed Gaussian, `network=mlp_continuous`); ff_awr_continuous.py passes
`continuous=True`, so each entry refuses the other kind of environment in one line.

    python stoix/systems/awr/ff_awr.py env=gymnax/acrobot system.beta=0.5
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

from stoix.architectures.anakin import init_learner_state, run_from_cli
from stoix.base_types import ActorApply, ActorCriticParams, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_critic
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.sizes import AnakinSizes, replay_sizes

# NOTE: a tanh-squashed Gaussian gives an action on its bound a log-probability of +-inf
# (the inverse tanh diverges), and float32 sampling does reach the bounds. Every continuous
# action the learner takes and stores is kept this fraction of the half-range inside the box,
# so the stored actions' log-probabilities stay finite (|pre-tanh| <= atanh(1 - 1e-3) = 3.8).
BOUND_MARGIN = 1e-3


class Transition(NamedTuple):
    obs: Observation
    action: chex.Array  # continuous: inside the box by BOUND_MARGIN
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)


class AWROptStates(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState


class LearnerState(NamedTuple):
    params: ActorCriticParams
    opt_states: AWROptStates
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any


class _UpdateCarry(NamedTuple):
    params: ActorCriticParams
    opt_states: AWROptStates
    buffer_state: Any
    key: chex.PRNGKey


class ActionBox(NamedTuple):
    """A continuous environment's bounds."""

    minimum: chex.Array
    maximum: chex.Array

    def inside(self, action: chex.Array) -> chex.Array:
        margin = BOUND_MARGIN * (self.maximum - self.minimum) / 2.0
        return jnp.clip(action, self.minimum + margin, self.maximum - margin)


# ALGO LOGIC: the returns and the losses. Module-level so tests call them with hand-made batches.
def lambda_returns(
    r_t: chex.Array,
    discount_t: chex.Array,
    done_t: chex.Array,
    v_t: chex.Array,
    *,
    gamma: float,
    td_lambda: float,
) -> chex.Array:
    """TD(lambda) returns of sequences shaped (B, T) (rlax.lambda_returns, vmapped over B).

    `v_t` is the value of each transition's true next observation. The trace is cut where an
    episode ends (lambda_t = 0 there), so G_t = r_t + gamma * discount_t * v_t at an end: a
    truncated episode bootstraps from its final observation, a terminated one (discount 0)
    from nothing, and no return borrows from the next episode. The last step of a sequence
    bootstraps from its own v_t.
    """
    lambda_t = td_lambda * (1.0 - done_t.astype(r_t.dtype))
    return jax.vmap(rlax.lambda_returns)(r_t, gamma * discount_t, v_t, lambda_t)


def returns_and_advantages(
    critic_params: Any, batch: Transition, *, critic_apply: Callable, gamma: float, td_lambda: float
) -> tuple[chex.Array, chex.Array]:
    """(G_t, G_t - V(s_t)) for sequences shaped (B, T), both without gradient. The bootstrap
    values are of each transition's `next_obs`, the true final observation at an episode end."""
    v_tm1 = critic_apply(critic_params, batch.obs)
    v_t = critic_apply(critic_params, batch.next_obs)
    returns = lambda_returns(batch.reward, batch.discount, batch.done, v_t, gamma=gamma, td_lambda=td_lambda)
    return jax.lax.stop_gradient(returns), jax.lax.stop_gradient(returns - v_tm1)


def critic_loss(
    critic_params: Any, batch: Transition, returns: chex.Array, *, critic_apply: Callable
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """0.5 * mean((G_t - V(s_t))^2) over every step of every sequence."""
    v_tm1 = critic_apply(critic_params, batch.obs)
    loss = jnp.mean(rlax.l2_loss(jax.lax.stop_gradient(returns) - v_tm1))
    return loss, {"critic_loss": loss, "mean_value": jnp.mean(v_tm1)}


def advantage_weights(
    advantages: chex.Array, *, beta: float, max_weight: float, normalize_advantages: bool
) -> chex.Array:
    """min(exp(A / beta), max_weight), with A standardised over the batch if asked. Written as
    exp(min(A / beta, log max_weight)) so a large advantage cannot overflow to inf."""
    if normalize_advantages:
        advantages = (advantages - jnp.mean(advantages)) / (jnp.std(advantages) + 1e-8)
    return jnp.exp(jnp.minimum(advantages / beta, jnp.log(max_weight)))


def actor_loss(
    actor_params: Any,
    batch: Transition,
    advantages: chex.Array,
    *,
    actor_apply: Callable,
    beta: float,
    max_weight: float,
    normalize_advantages: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """-mean(log pi(a|s) * min(exp(A / beta), max_weight)): weighted maximum likelihood of the
    replayed actions; the weights carry no gradient."""
    weights = jax.lax.stop_gradient(
        advantage_weights(
            advantages, beta=beta, max_weight=max_weight, normalize_advantages=normalize_advantages
        )
    )
    pi = actor_apply(actor_params, batch.obs)
    loss = -jnp.mean(pi.log_prob(batch.action) * weights)
    metrics = {
        "actor_loss": loss,
        "mean_weight": jnp.mean(weights),
        "capped_fraction": jnp.mean(weights >= max_weight * (1.0 - 1e-6)),
        "entropy": jnp.mean(pi.entropy()),
    }
    return loss, metrics


def warm_up(
    env: Any, buffer: Any, num_envs: int, num_steps: int, random_action: Callable, key: chex.PRNGKey
) -> tuple[Any, Any, Any]:
    """Reset `num_envs` environments and fill a new buffer with `num_steps` random actions
    (`random_action(key, num_envs)`) each; returns (env_state, timestep, buffer_state)."""
    reset_key, key = jax.random.split(key)
    env_state, timestep = env.reset(jax.random.split(reset_key, num_envs))

    def _random_step(carry: tuple, step_key: chex.PRNGKey) -> tuple[tuple, Transition]:
        env_state, timestep = carry
        action = random_action(step_key, num_envs)
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


def get_learner_fn(
    env: Any,
    actor_apply: Callable,
    optimizers: AWROptStates,
    buffer: Any,
    legal: Callable,
    targets_fn: Callable,
    critic_loss_fn: Callable,
    actor_loss_fn: Callable,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: each update samples the policy for `rollout_length` steps, stores
    them, then takes `epochs` gradient steps (critic and actor) on replayed sequences."""

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SELECT ACTION: a sample of the policy (continuous: kept inside the box, see BOUND_MARGIN)
        key, policy_key = jax.random.split(state.key)
        obs = state.timestep.observation
        action = legal(actor_apply(state.params.actor, obs).sample(seed=policy_key))

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
        key, sample_key = jax.random.split(carry.key)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, sequence, ...)
        params, opt_states = carry.params, carry.opt_states

        # CALCULATE RETURNS AND ADVANTAGES: TD(lambda) with the current critic, held fixed
        returns, advantages = targets_fn(params.critic, batch)

        # UPDATE CRITIC AND ACTOR: the same batch and advantages; every replica takes the same step
        critic_grads, critic_metrics = jax.grad(critic_loss_fn, has_aux=True)(params.critic, batch, returns)
        actor_grads, actor_metrics = jax.grad(actor_loss_fn, has_aux=True)(params.actor, batch, advantages)
        grads = (critic_grads, actor_grads, {**critic_metrics, **actor_metrics})
        for axis in sizes.replica_axes:
            grads = jax.lax.pmean(grads, axis_name=axis)
        critic_grads, actor_grads, metrics = grads
        updates, critic_opt = optimizers.critic.update(critic_grads, opt_states.critic, params.critic)
        critic = optax.apply_updates(params.critic, updates)
        updates, actor_opt = optimizers.actor.update(actor_grads, opt_states.actor, params.actor)
        actor = optax.apply_updates(params.actor, updates)

        metrics["mean_advantage_abs"] = jnp.mean(jnp.abs(advantages))
        carry = _UpdateCarry(
            params=ActorCriticParams(actor=actor, critic=critic),
            opt_states=AWROptStates(actor=actor_opt, critic=critic_opt),
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
        carry, metrics = jax.lax.scan(_gradient_step, carry, None, int(config.system.epochs))
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
    env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey, continuous: bool = False
) -> SystemSetup:
    """Validate, build the actor, critic, optimisers and buffer, fill the buffer with
    random-action warm-up steps and initialise every replica. `continuous` says which kind
    of action space this entry takes (ff_awr_continuous.py: True)."""
    cfg = config.system
    spec = env.action_spec
    require_action_space(spec, str(cfg.system_name), continuous=continuous)
    replay = replay_sizes(cfg, sizes, int(cfg.sample_sequence_length), "system.sample_sequence_length")
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
    actor = make_actor(config.network.actor_network, spec)
    critic = make_critic(config.network.critic_network)

    if continuous:
        box = ActionBox(
            jnp.broadcast_to(jnp.asarray(spec.minimum, jnp.float32), spec.shape),
            jnp.broadcast_to(jnp.asarray(spec.maximum, jnp.float32), spec.shape),
        )
        legal = box.inside

        def random_action(step_key: chex.PRNGKey, n: int) -> chex.Array:
            shape = (n, *spec.shape)
            return box.inside(jax.random.uniform(step_key, shape, minval=box.minimum, maxval=box.maximum))

    else:
        legal = lambda action: action  # noqa: E731 (every categorical sample is legal)

        def random_action(step_key: chex.PRNGKey, n: int) -> chex.Array:
            return jax.random.randint(step_key, (n,), 0, int(spec.num_values))

    def adam(learning_rate: float) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(learning_rate))

    optimizers = AWROptStates(
        actor=adam(float(cfg.actor_learning_rate)), critic=adam(float(cfg.critic_learning_rate))
    )
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        params = ActorCriticParams(actor.init(actor_key, dummy_obs), critic.init(critic_key, dummy_obs))
        warmup_key, key = jax.random.split(slot_key)
        # WARM-UP: random actions fill the buffer before the first gradient step.
        env_state, timestep, buffer_state = warm_up(
            env, buffer, sizes.num_envs, replay.warmup_per_env, random_action, warmup_key
        )
        return LearnerState(
            params=params,
            opt_states=AWROptStates(
                optimizers.actor.init(params.actor), optimizers.critic.init(params.critic)
            ),
            buffer_state=buffer_state,
            key=key,
            env_state=env_state,
            timestep=timestep,
        )

    targets_fn = functools.partial(
        returns_and_advantages,
        critic_apply=critic.apply,
        gamma=float(cfg.gamma),
        td_lambda=float(cfg.td_lambda),
    )
    critic_loss_fn = functools.partial(critic_loss, critic_apply=critic.apply)
    actor_loss_fn = functools.partial(
        actor_loss,
        actor_apply=actor.apply,
        beta=float(cfg.beta),
        max_weight=float(cfg.max_weight),
        normalize_advantages=bool(cfg.normalize_advantages),
    )
    learner_fn = get_learner_fn(
        env,
        actor.apply,
        optimizers,
        buffer,
        legal,
        targets_fn,
        critic_loss_fn,
        actor_loss_fn,
        sizes,
        config,
    )
    # NOTE: jax.vmap even for one slot: unbatched (anakin.map_slots) ran 20% slower here (docs/benchmarks.md).
    learn = jax.pmap(jax.vmap(learner_fn, axis_name="batch"), axis_name="device", donate_argnums=0)

    def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
        pi = actor.apply(params, observation)
        return pi.mode() if greedy else legal(pi.sample(seed=key))

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params.actor),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_awr", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_awr")
    hydra_entry_point()
