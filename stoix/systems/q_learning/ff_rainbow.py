"""Rainbow (Hessel et al., 2018, arXiv:1710.02298) on Anakin.

Copied from ff_dqn.py (the learner's layout, warm-up and target updates are the same); what
changed:
- prioritised replay: a flashbax prioritised trajectory buffer; samples are drawn in
  proportion to priority^`priority_exponent`, weighted by importance weights
  (min P / P)^`importance_sampling_exponent`, and re-prioritised with their loss;
- a dueling categorical head with noisy streams (`network=mlp_noisy_dueling_c51`): the
  learned noise explores, so epsilon defaults to 0; evaluation uses the mean weights;
- double C51 targets over n-step returns (rlax.categorical_double_q_learning's, batched in
  stoix.utils.distributional).

    python stoix/systems/q_learning/ff_rainbow.py system.n_step=3
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any

import chex
import distrax
import flashbax as fbx
import hydra
import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor
from stoix.systems.q_learning.ff_dqn import (
    LearnerState,
    OnlineAndTarget,
    QTransition,
    _UpdateCarry,
    update_target,
    warm_up,
)
from stoix.utils import distributional
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import n_step_bootstrap
from stoix.utils.sizes import AnakinSizes, replay_sizes


# ALGO LOGIC: the loss, per sample, so its values can become priorities.
def rainbow_loss(
    online_params: Any,
    target_params: Any,
    batch: QTransition,
    weights: chex.Array,
    noise_key: chex.PRNGKey,
    *,
    apply_fn: Callable,
    gamma: float,
) -> tuple[chex.Array, tuple[dict[str, chex.Array], chex.Array]]:
    """Importance-weighted double-C51 cross-entropy; returns the per-sample losses too."""
    keys = jax.random.split(noise_key, 3)
    dist_tm1 = apply_fn(online_params, jax.tree.map(lambda x: x[:, 0], batch.obs), rngs={"noise": keys[0]})
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    next_obs = jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], batch.next_obs)
    dist_t = apply_fn(target_params, next_obs, rngs={"noise": keys[1]})
    selector = jax.lax.stop_gradient(apply_fn(online_params, next_obs, rngs={"noise": keys[2]}).q_values)
    # NOTE: stoix.utils.distributional equals rlax.categorical_double_q_learning (tested) on the
    # whole batch; vmapped rlax's projection alone cost more than the three network passes (1,352 vs
    # 697 us per gradient step, see that module).
    per_sample = distributional.categorical_double_q_learning(
        dist_tm1.atoms,
        dist_tm1.logits,
        batch.action[:, 0],
        g,
        discount,
        dist_t.atoms,
        dist_t.logits,
        selector,
    )
    loss = jnp.mean(weights * per_sample)
    return loss, ({"q_loss": loss, "mean_q": jnp.mean(dist_tm1.q_values)}, per_sample)


def importance_weights(probabilities: chex.Array, exponent: float) -> chex.Array:
    """(1 / (N P_i))^beta normalised by its batch maximum, which is (min_j P_j / P_i)^beta.

    An item drawn with probability 0 gets weight 0. flashbax gives priority 0 to sequences the
    write head has broken, yet the sum tree's stratified sampling can still land on one at a
    segment boundary (measured: 1e-5 to 2e-3 of draws on CartPole, more as priorities shrink).
    Unguarded, (min P / P) is then 0/0: one NaN weight made every parameter NaN, which was
    Rainbow's "collapse" at learning rate 2.5e-4.
    """
    drawable = probabilities > 0
    p_min = jnp.min(jnp.where(drawable, probabilities, jnp.inf))
    return jnp.where(drawable, (p_min / jnp.where(drawable, probabilities, 1.0)) ** exponent, 0.0)


def new_priorities(per_sample_loss: chex.Array, probabilities: chex.Array) -> chex.Array:
    """Each drawn item's new priority: its own (unweighted) cross-entropy, kept above zero so it
    stays drawable. A broken item drawn by accident (probability 0) keeps priority 0 instead of
    being made drawable. flashbax raises priorities to its `priority_exponent` itself."""
    return jnp.where(probabilities > 0, per_sample_loss + 1e-6, 0.0)


def get_learner_fn(
    env: Any,
    q_apply: Callable,
    optimizer: optax.GradientTransformation,
    buffer: Any,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    cfg = config.system
    epsilon = optax.linear_schedule(
        float(cfg.epsilon_start), float(cfg.epsilon_finish), int(cfg.epsilon_decay_steps)
    )
    loss_fn = functools.partial(rainbow_loss, apply_fn=q_apply, gamma=float(cfg.gamma))

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[QTransition, Any]]:
        # SELECT ACTION: greedy on a noisy online network (plus epsilon, 0 by default)
        key, policy_key, noise_key = jax.random.split(state.key, 3)
        obs = state.timestep.observation
        q_values = q_apply(state.params.online, obs, rngs={"noise": noise_key}).q_values
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
            key=key, env_state=env_state, timestep=timestep, env_steps=state.env_steps + sizes.total_num_envs
        )
        return state, (transition, timestep.extras["episode_metrics"])

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key, noise_key = jax.random.split(carry.key, 3)
        sample = buffer.sample(carry.buffer_state, sample_key)
        weights = importance_weights(sample.probabilities, float(cfg.importance_sampling_exponent))
        grads, (metrics, per_sample) = jax.grad(loss_fn, has_aux=True)(
            carry.params.online, carry.params.target, sample.experience, weights, noise_key
        )
        # NOTE: priorities stay per replica (each has its own buffer); gradients are shared.
        priorities = new_priorities(per_sample, sample.probabilities)
        buffer_state = buffer.set_priorities(carry.buffer_state, sample.indices, priorities)
        for axis in sizes.replica_axes:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name=axis)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params.online)
        online = optax.apply_updates(carry.params.online, updates)
        gradient_steps = carry.gradient_steps + 1
        target = update_target(online, carry.params.target, gradient_steps, cfg)
        carry = _UpdateCarry(OnlineAndTarget(online, target), opt_state, buffer_state, key, gradient_steps)
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
        return state, (episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """As ff_dqn.learner_setup, with a prioritised buffer and a noise RNG for the network."""
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=False)
    require(
        cfg.target_update in ("hard", "polyak"),
        f"system.target_update={cfg.target_update!r} must be hard or polyak.",
    )
    replay = replay_sizes(cfg, sizes, int(cfg.n_step))

    q_network = make_actor(config.network.actor_network, env.action_spec)
    optimizer = optax.chain(
        optax.clip_by_global_norm(float(cfg.max_grad_norm)),
        optax.adam(float(cfg.learning_rate), eps=float(cfg.adam_eps)),
    )
    buffer = fbx.make_prioritised_trajectory_buffer(
        add_batch_size=sizes.num_envs,
        sample_batch_size=replay.batch_size,
        sample_sequence_length=replay.sequence_length,
        period=1,
        min_length_time_axis=replay.sequence_length,
        max_length_time_axis=replay.time_axis,
        priority_exponent=float(cfg.priority_exponent),
        # flashbax's own default is "cpu" on every backend: a scan of one-item sum-tree updates,
        # thousands of sequential kernels per batch on a GPU; on a GPU/TPU it vectorises them.
        device=jax.default_backend(),
    )
    obs_spec = env.observation_spec
    num_actions = int(env.action_spec.num_values)

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        online = q_network.init({"params": params_key, "noise": params_key}, dummy_obs)
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

    learner_fn = get_learner_fn(env, q_network.apply, optimizer, buffer, sizes, config)
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)
    evaluation_epsilon = float(cfg.evaluation_epsilon)

    def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
        # No "noise" RNG: evaluation uses the noisy layers' mean weights.
        q_values = q_network.apply(params, observation).q_values
        if greedy:
            return jnp.argmax(q_values, axis=-1)
        return distrax.EpsilonGreedy(q_values, evaluation_epsilon).sample(seed=key)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params.online),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_rainbow", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_rainbow")
    hydra_entry_point()
