"""Deep Q-Network (Mnih et al., 2015, doi:10.1038/nature14236) on Anakin.

Epsilon-greedy acting with a linear schedule, replay from a flashbax trajectory buffer held
inside the compiled learner, n-step returns, a target network (hard or Polyak updates) and a
Huber or squared TD loss from rlax. A time-limit end is not a termination: the target
bootstraps from the true final observation unless the episode terminated.

Dueling DQN is a network, not a file: `network=mlp_dueling_dqn`. Double DQN (ff_ddqn.py)
reuses this file with its own loss.

    python stoix/systems/q_learning/ff_dqn.py network=mlp_dueling_dqn
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import distrax
import flashbax as fbx
import hydra
import jax
import jax.numpy as jnp
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import n_step_bootstrap
from stoix.utils.sizes import AnakinSizes, replay_sizes


class OnlineAndTarget(NamedTuple):
    online: Any
    target: Any


class QTransition(NamedTuple):
    obs: Observation
    action: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)


class LearnerState(NamedTuple):
    params: OnlineAndTarget
    opt_state: optax.OptState
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any
    env_steps: chex.Array  # environment steps taken by all envs together since warm-up
    gradient_steps: chex.Array


class _UpdateCarry(NamedTuple):
    params: OnlineAndTarget
    opt_state: optax.OptState
    buffer_state: Any
    key: chex.PRNGKey
    gradient_steps: chex.Array


def _at_index(tree: Any, index: chex.Array) -> Any:
    """Leaves shaped (B, n, ...) -> (B, ...), taking time step index[b] for sample b."""
    return jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], tree)


# ALGO LOGIC: the loss. Module-level so tests call it with hand-made batches.
def q_learning_loss(
    online_params: Any,
    target_params: Any,
    batch: QTransition,
    *,
    apply_fn: Callable,
    gamma: float,
    loss: str,
    huber_delta: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """n-step Q-learning on sequences shaped (B, n): the TD error of the first transition
    against sum_k gamma^k r_k + gamma^(m+1) d_m max_a Q_target(next_obs_m) (rlax.q_learning)."""
    q_tm1 = apply_fn(online_params, jax.tree.map(lambda x: x[:, 0], batch.obs))
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    q_t = apply_fn(target_params, _at_index(batch.next_obs, index))
    td_error = jax.vmap(rlax.q_learning)(q_tm1, batch.action[:, 0], g, discount, q_t)
    value = td_loss(td_error, loss, huber_delta)
    return value, {"q_loss": value, "mean_q": jnp.mean(q_tm1)}


def td_loss(td_error: chex.Array, loss: str, huber_delta: float) -> chex.Array:
    if loss == "huber":
        return jnp.mean(rlax.huber_loss(td_error, huber_delta))
    return jnp.mean(rlax.l2_loss(td_error))


def update_target(online: Any, target: Any, gradient_steps: chex.Array, system: DictConfig) -> Any:
    """A hard copy every `target_update_period` gradient steps, or Polyak averaging with `tau`."""
    if system.target_update == "hard":
        return optax.periodic_update(online, target, gradient_steps, int(system.target_update_period))
    return optax.incremental_update(online, target, float(system.tau))


def warm_up(
    env: Any, buffer: Any, num_envs: int, num_actions: int, num_steps: int, key: chex.PRNGKey
) -> tuple[Any, Any, Any]:
    """Reset `num_envs` environments and fill a new buffer with `num_steps` uniformly random
    actions each; returns (env_state, timestep, buffer_state) to start learning from."""
    reset_key, key = jax.random.split(key)
    env_state, timestep = env.reset(jax.random.split(reset_key, num_envs))

    def _random_step(carry: tuple, step_key: chex.PRNGKey) -> tuple[tuple, QTransition]:
        env_state, timestep = carry
        action = jax.random.randint(step_key, (num_envs,), 0, num_actions)
        env_state, next_timestep = env.step(env_state, action)
        transition = QTransition(
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
    q_apply: Callable,
    optimizer: optax.GradientTransformation,
    buffer: Any,
    loss_fn: Callable,
    sizes: AnakinSizes,
    config: DictConfig,
    q_values_of: Callable = lambda out: out,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: each update takes `rollout_length` steps, stores them, then takes
    `epochs` gradient steps on replayed n-step sequences."""
    cfg = config.system
    epsilon = optax.linear_schedule(
        float(cfg.epsilon_start), float(cfg.epsilon_finish), int(cfg.epsilon_decay_steps)
    )

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[QTransition, Any]]:
        # SELECT ACTION: epsilon-greedy on the online network
        key, policy_key = jax.random.split(state.key)
        obs = state.timestep.observation
        q_values = q_values_of(q_apply(state.params.online, obs))
        action = distrax.EpsilonGreedy(q_values, epsilon(state.env_steps)).sample(seed=policy_key)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = QTransition(
            obs=obs,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
        )
        state = state._replace(
            key=key,
            env_state=env_state,
            timestep=timestep,
            env_steps=state.env_steps + sizes.total_num_envs,
        )
        return state, (transition, timestep.extras["episode_metrics"])

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key = jax.random.split(carry.key)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, n_step, ...)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(carry.params.online, carry.params.target, batch)
        # NOTE: every replica must take the same step: average over update batches, then devices.
        for axis in sizes.replica_axes:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name=axis)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params.online)
        online = optax.apply_updates(carry.params.online, updates)
        gradient_steps = carry.gradient_steps + 1
        target = update_target(online, carry.params.target, gradient_steps, cfg)
        carry = carry._replace(
            params=OnlineAndTarget(online, target),
            opt_state=opt_state,
            key=key,
            gradient_steps=gradient_steps,
        )
        return carry, metrics

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT AND STORE: the buffer wants (num_envs, time, ...)
        state, (traj, episode_metrics) = jax.lax.scan(_env_step, state, None, sizes.rollout_length)
        buffer_state = buffer.add(state.buffer_state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj))

        # UPDATE NETWORKS
        carry = _UpdateCarry(state.params, state.opt_state, buffer_state, state.key, state.gradient_steps)
        carry, metrics = jax.lax.scan(_gradient_step, carry, None, int(cfg.epochs))
        state = state._replace(
            params=carry.params,
            opt_state=carry.opt_state,
            buffer_state=carry.buffer_state,
            key=carry.key,
            gradient_steps=carry.gradient_steps,
        )
        metrics["epsilon"] = epsilon(state.env_steps)
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
    loss: Callable = q_learning_loss,
    q_values_of: Callable = lambda out: out,
) -> SystemSetup:
    """Validate replay sizes, build the Q-network, optimiser and buffer, fill the buffer with
    random-action warm-up steps and initialise every replica.

    Variants pass their own `loss`, and `q_values_of` when the network returns more than
    Q-values (a distributional head's output -> its expected Q-values).
    """
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=False)
    require(cfg.loss in ("huber", "l2"), f"system.loss={cfg.loss!r} must be huber or l2.")
    require(
        cfg.target_update in ("hard", "polyak"),
        f"system.target_update={cfg.target_update!r} must be hard or polyak.",
    )
    replay = replay_sizes(cfg, sizes, int(cfg.n_step))

    q_network = make_actor(config.network.actor_network, env.action_spec)
    optimizer = optax.chain(
        optax.clip_by_global_norm(float(cfg.max_grad_norm)),
        optax.adam(
            optax.linear_schedule(float(cfg.learning_rate), 0.0, sizes.num_updates * int(cfg.epochs))
            if cfg.decay_learning_rates
            else float(cfg.learning_rate),
        ),
    )
    buffer = fbx.make_trajectory_buffer(
        add_batch_size=sizes.num_envs,
        sample_batch_size=replay.batch_size,
        sample_sequence_length=replay.sequence_length,
        period=1,
        min_length_time_axis=replay.sequence_length,
        max_length_time_axis=replay.time_axis,
    )
    obs_spec = env.observation_spec
    num_actions = int(env.action_spec.num_values)

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        online = q_network.init(params_key, dummy_obs)
        warmup_key, key = jax.random.split(slot_key)
        # WARM-UP: random actions fill the buffer before the first gradient step.
        env_state, timestep, buffer_state = warm_up(
            env, buffer, sizes.num_envs, num_actions, replay.warmup_per_env, warmup_key
        )
        return LearnerState(
            params=OnlineAndTarget(online, online),
            opt_state=optimizer.init(online),
            buffer_state=buffer_state,
            key=key,
            env_state=env_state,
            timestep=timestep,
            env_steps=jnp.zeros((), jnp.int32),
            gradient_steps=jnp.zeros((), jnp.int32),
        )

    loss_fn = functools.partial(
        loss,
        apply_fn=q_network.apply,
        gamma=float(cfg.gamma),
        loss=str(cfg.loss),
        huber_delta=float(cfg.huber_delta),
    )
    learner_fn = get_learner_fn(env, q_network.apply, optimizer, buffer, loss_fn, sizes, config, q_values_of)
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)
    evaluation_epsilon = float(cfg.evaluation_epsilon)

    def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
        q_values = q_values_of(q_network.apply(params, observation))
        if greedy:
            return jnp.argmax(q_values, axis=-1)
        return distrax.EpsilonGreedy(q_values, evaluation_epsilon).sample(seed=key)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params.online),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_dqn", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_dqn")
    hydra_entry_point()
