"""R2D2 (Kapturowski et al., 2019, "Recurrent Experience Replay in Distributed Reinforcement
Learning", ICLR) on Anakin.

From ff_dqn.py (replay inside the learner, warm-up, epsilon-greedy acting, target updates) and
ff_rainbow.py (prioritised replay, importance weights); what changed:
- a recurrent Q-network (`network=rnn_dqn`) whose memory the rollout keeps in the learner
  state, as rec_ppo.py does; every stored step keeps the memory it was acted with;
- replay samples sequences of `sample_sequence_length` steps from a prioritised trajectory
  buffer; each sequence starts from its first step's stored memory and its first
  `burn_in_length` steps only warm that memory up (no loss, no gradient);
- n-step double-Q targets with value rescaling, h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x, on
  every later step, cut at episode ends: a time-limit end bootstraps from the true final
  observation, read with the memory of the episode that ended; a termination does not;
- sequence priorities eta * max|td| + (1 - eta) * mean|td|.

    python stoix/systems/q_learning/rec_r2d2.py env=gymnax/memory_chain
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
from stoix.networks.recurrent import make_recurrent_q_network
from stoix.systems.q_learning.ff_dqn import OnlineAndTarget, update_target
from stoix.systems.q_learning.ff_rainbow import importance_weights
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import n_step_bootstrap
from stoix.utils.sizes import AnakinSizes, replay_sizes


class R2D2Transition(NamedTuple):
    obs: Observation
    reset: chex.Array  # obs is the first of its episode: the memory is zeroed before it
    carry: Any  # the memory the acting network held before obs (before any reset)
    action: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)


class ActingState(NamedTuple):
    env_state: Any
    timestep: Any
    reset: chex.Array  # (num_envs,) the current observation starts an episode
    carry: Any  # the memory after the previous observation


class LearnerState(NamedTuple):
    params: OnlineAndTarget
    opt_state: optax.OptState
    buffer_state: Any
    key: chex.PRNGKey
    acting: ActingState
    env_steps: chex.Array  # environment steps taken by all envs together since warm-up
    gradient_steps: chex.Array


class _UpdateCarry(NamedTuple):
    params: OnlineAndTarget
    opt_state: optax.OptState
    buffer_state: Any
    key: chex.PRNGKey
    gradient_steps: chex.Array


def _add_time_axis(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[None], tree)


def act_and_step(
    env: Any, q_apply: Callable, params: Any, acting: ActingState, epsilon: chex.Array, key: chex.PRNGKey
) -> tuple[ActingState, R2D2Transition, Any]:
    """One epsilon-greedy step of every environment, carrying the memory (warm-up: epsilon 1)."""
    obs = acting.timestep.observation
    carry, q_values = q_apply(params, acting.carry, _add_time_axis(obs), acting.reset[None])
    action = distrax.EpsilonGreedy(q_values[0], epsilon).sample(seed=key)
    env_state, timestep = env.step(acting.env_state, action)
    transition = R2D2Transition(
        obs=obs,
        reset=acting.reset,
        carry=acting.carry,
        action=action,
        reward=timestep.reward,
        discount=timestep.discount,
        done=timestep.last(),
        next_obs=timestep.extras["next_obs"],
    )
    acting = ActingState(env_state=env_state, timestep=timestep, reset=timestep.last(), carry=carry)
    return acting, transition, timestep.extras["episode_metrics"]


# ALGO LOGIC: unrolls, targets, priorities and the loss. Module-level so tests call them.
def unroll(
    q_apply: Callable, params: Any, carry: Any, obs: Observation, reset: chex.Array
) -> tuple[chex.Array, Any]:
    """Q-values (T, B, A) of a time-major sequence and the memory after each step (T, B, ...).

    One step at a time, so that every step's memory comes out (an LSTM's output is not its
    whole memory); the bootstrap values need it.
    """

    def _step(carry: Any, inputs: tuple) -> tuple[Any, tuple]:
        obs_t, reset_t = inputs
        carry, q_values = q_apply(params, carry, _add_time_axis(obs_t), reset_t[None])
        return carry, (q_values[0], carry)

    _, (q_values, carries) = jax.lax.scan(_step, carry, (obs, reset))
    return q_values, carries


def next_q_values(q_apply: Callable, params: Any, carries: Any, next_obs: Observation) -> chex.Array:
    """Q-values (T, B, A) of each step's true next observation, read with the memory after that
    step, i.e. as the same episode's next step. After a truncation that is the final
    observation seen with the ended episode's memory; elsewhere it equals the next step's Q."""
    steps, batch = jax.tree.leaves(carries)[0].shape[:2]
    flat_carry = jax.tree.map(lambda c: c.reshape(steps * batch, *c.shape[2:]), carries)
    flat_obs = jax.tree.map(lambda x: x.reshape(1, steps * batch, *x.shape[2:]), next_obs)
    _, q_values = q_apply(params, flat_carry, flat_obs, jnp.zeros((1, steps * batch), bool))
    return q_values.reshape(steps, batch, -1)


def n_step_targets(
    r_t: chex.Array, discount_t: chex.Array, done_t: chex.Array, v_t: chex.Array, *, gamma: float, n_step: int
) -> chex.Array:
    """n-step returns (T, B) of time-major transitions (T, B).

    `v_t` is the value of transition t's true next observation. For each step t the return is
    sum_k gamma^k r_{t+k} + gamma^(m+1) discount_{t+m} v_{t+m}, summed up to the first episode end
    m within n steps (so no return crosses into the next episode) or the sequence's last step:
    a time-limit end bootstraps from its final observation, a termination (discount 0) does not.
    """
    steps = r_t.shape[0]
    window = jnp.minimum(jnp.arange(steps)[:, None] + jnp.arange(n_step)[None, :], steps - 1)  # (T, n)
    # The sequence's last transition closes every window that reaches it.
    ends = jnp.logical_or(done_t, (jnp.arange(steps) == steps - 1)[:, None])

    def windows(x: chex.Array) -> chex.Array:  # (T, B) -> (T, B, n)
        return jnp.moveaxis(x[window], 1, -1)

    g, discount, index = n_step_bootstrap(windows(r_t), windows(discount_t), windows(ends), gamma)
    bootstrap = v_t[jnp.arange(steps)[:, None] + index, jnp.arange(r_t.shape[1])[None, :]]
    return g + discount * bootstrap


def sequence_priorities(abs_td: chex.Array, eta: float) -> chex.Array:
    """eta * max_t |td_t| + (1 - eta) * mean_t |td_t| of each sequence; `abs_td` is (T, B)."""
    return eta * jnp.max(abs_td, axis=0) + (1.0 - eta) * jnp.mean(abs_td, axis=0)


def r2d2_loss(
    online_params: Any,
    target_params: Any,
    batch: R2D2Transition,
    weights: chex.Array,
    *,
    q_apply: Callable,
    gamma: float,
    n_step: int,
    burn_in_length: int,
    priority_eta: float,
    rescaling_eps: float | None,
) -> tuple[chex.Array, tuple[dict[str, chex.Array], chex.Array]]:
    """Importance-weighted squared transformed n-step double-Q errors on sequences shaped
    (B, L, ...), averaged over each sequence's steps after the burn-in; also returns each
    sequence's new priority. `rescaling_eps` None: no value rescaling."""
    if rescaling_eps is None:
        tx, tx_inv = (lambda x: x), (lambda x: x)
    else:
        tx = functools.partial(rlax.signed_hyperbolic, eps=rescaling_eps)
        tx_inv = functools.partial(rlax.signed_parabolic, eps=rescaling_eps)
    start_carry = jax.tree.map(lambda c: c[:, 0], batch.carry)  # the stored memory of step 0
    seq = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch._replace(carry=None))  # (L, B, ...)
    burn = jax.tree.map(lambda x: x[:burn_in_length], seq)
    learn = jax.tree.map(lambda x: x[burn_in_length:], seq)

    def warmed_up(params: Any) -> Any:
        # BURN-IN: the memory after the first steps, from the stored one, with no gradient.
        if burn_in_length == 0:
            return start_carry
        _, carries = unroll(q_apply, params, start_carry, burn.obs, burn.reset)
        return jax.lax.stop_gradient(jax.tree.map(lambda c: c[-1], carries))

    # ONLINE Q-VALUES: the gradient flows through time from the end of the burn-in
    q_tm1, online_carries = unroll(q_apply, online_params, warmed_up(online_params), learn.obs, learn.reset)

    # DOUBLE-Q BOOTSTRAP VALUES: the target network evaluates the online network's choice
    _, target_carries = unroll(q_apply, target_params, warmed_up(target_params), learn.obs, learn.reset)
    q_next_target = next_q_values(q_apply, target_params, target_carries, learn.next_obs)
    frozen_online = jax.lax.stop_gradient((online_params, online_carries))
    selector = jnp.argmax(next_q_values(q_apply, *frozen_online, learn.next_obs), axis=-1)
    v_t = tx_inv(jnp.take_along_axis(q_next_target, selector[..., None], axis=-1)[..., 0])

    # TRANSFORMED N-STEP TARGETS
    returns = n_step_targets(learn.reward, learn.discount, learn.done, v_t, gamma=gamma, n_step=n_step)
    targets = jax.lax.stop_gradient(tx(returns))
    q_a = jnp.take_along_axis(q_tm1, learn.action[..., None], axis=-1)[..., 0]
    td_error = targets - q_a  # (T, B)
    loss = jnp.mean(weights * jnp.mean(0.5 * jnp.square(td_error), axis=0))
    priorities = sequence_priorities(jnp.abs(jax.lax.stop_gradient(td_error)), priority_eta)
    metrics = {"q_loss": loss, "mean_q": jnp.mean(q_tm1), "mean_abs_td": jnp.mean(jnp.abs(td_error))}
    return loss, (metrics, priorities)


def get_learner_fn(
    env: Any,
    q_apply: Callable,
    optimizer: optax.GradientTransformation,
    buffer: Any,
    loss_fn: Callable,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    """One slot's learner: each update takes `rollout_length` steps, stores them with their
    memory, then takes `epochs` gradient steps on replayed prioritised sequences."""
    cfg = config.system
    epsilon = optax.linear_schedule(
        float(cfg.epsilon_start), float(cfg.epsilon_finish), int(cfg.epsilon_decay_steps)
    )

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[R2D2Transition, Any]]:
        # SELECT ACTION AND STEP ENVIRONMENT: epsilon-greedy on the online network's memory
        key, policy_key = jax.random.split(state.key)
        acting, transition, episode_metrics = act_and_step(
            env, q_apply, state.params.online, state.acting, epsilon(state.env_steps), policy_key
        )
        state = state._replace(key=key, acting=acting, env_steps=state.env_steps + sizes.total_num_envs)
        return state, (transition, episode_metrics)

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key = jax.random.split(carry.key)
        sample = buffer.sample(carry.buffer_state, sample_key)  # sequences (B, L, ...)
        weights = importance_weights(sample.probabilities, float(cfg.importance_sampling_exponent))
        grads, (metrics, priorities) = jax.grad(loss_fn, has_aux=True)(
            carry.params.online, carry.params.target, sample.experience, weights
        )
        # NOTE: priorities stay per replica (each has its own buffer); gradients are shared.
        # A broken sequence drawn by accident keeps priority 0 (see ff_rainbow.importance_weights).
        priorities = jnp.where(sample.probabilities > 0, priorities + 1e-6, 0.0)
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
        metrics["epsilon"] = epsilon(state.env_steps)
        return state, (episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate the sequence and replay sizes, build the recurrent Q-network, optimiser and
    prioritised sequence buffer, fill it with random-action warm-up steps (their memory
    included) and initialise every replica."""
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=False)
    require(
        cfg.target_update in ("hard", "polyak"),
        f"system.target_update={cfg.target_update!r} must be hard or polyak.",
    )
    sequence_length, burn_in = int(cfg.sample_sequence_length), int(cfg.burn_in_length)
    require(
        burn_in < sequence_length,
        f"system.burn_in_length={burn_in} must be < system.sample_sequence_length={sequence_length}: "
        "burn-in steps only warm the memory up, so at least one step of each sequence must be left "
        "to learn from.",
    )
    replay = replay_sizes(cfg, sizes, sequence_length, "system.sample_sequence_length")
    period = int(cfg.sequence_period)
    require(
        period <= sequence_length and replay.time_axis % period == 0,
        f"system.sequence_period={period} must be <= system.sample_sequence_length={sequence_length} "
        f"and divide the steps kept per environment, system.total_buffer_size/arch.total_num_envs="
        f"{replay.time_axis}.",
    )
    q_network = make_recurrent_q_network(config.network.actor_network, env.action_spec)
    optimizer = optax.chain(
        optax.clip_by_global_norm(float(cfg.max_grad_norm)),
        optax.adam(float(cfg.learning_rate), eps=float(cfg.adam_eps)),
    )
    buffer = fbx.make_prioritised_trajectory_buffer(
        add_batch_size=sizes.num_envs,
        sample_batch_size=replay.batch_size,
        sample_sequence_length=sequence_length,
        period=period,
        min_length_time_axis=sequence_length,
        max_length_time_axis=replay.time_axis,
        priority_exponent=float(cfg.priority_exponent),
        # flashbax's own default is "cpu" on every backend: a scan of one-item sum-tree updates,
        # thousands of sequential kernels per batch on a GPU; on a GPU/TPU it vectorises them.
        device=jax.default_backend(),
    )
    obs_spec = env.observation_spec
    num_envs = sizes.num_envs

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, 1, *s.shape), s.dtype), obs_spec.generate_value())
        online = q_network.init(params_key, q_network.initial_carry(1), dummy_obs, jnp.zeros((1, 1), bool))
        reset_key, warmup_key, key = jax.random.split(slot_key, 3)
        env_state, timestep = env.reset(jax.random.split(reset_key, num_envs))
        reset = jnp.ones((num_envs,), bool)  # every first observation starts an episode
        acting = ActingState(env_state, timestep, reset, q_network.initial_carry(num_envs))

        # WARM-UP: uniformly random actions (epsilon 1) fill the buffer, the memory kept as when acting.
        def _random_step(acting: ActingState, step_key: chex.PRNGKey) -> tuple[ActingState, R2D2Transition]:
            acting, transition, _ = act_and_step(env, q_network.apply, online, acting, 1.0, step_key)
            return acting, transition

        acting, traj = jax.lax.scan(_random_step, acting, jax.random.split(warmup_key, replay.warmup_per_env))
        traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)  # (envs, time, ...)
        buffer_state = buffer.add(buffer.init(jax.tree.map(lambda x: x[0, 0], traj)), traj)
        return LearnerState(
            params=OnlineAndTarget(online, online),
            opt_state=optimizer.init(online),
            buffer_state=buffer_state,
            key=key,
            acting=acting,
            env_steps=jnp.zeros((), jnp.int32),
            gradient_steps=jnp.zeros((), jnp.int32),
        )

    loss_fn = functools.partial(
        r2d2_loss,
        q_apply=q_network.apply,
        gamma=float(cfg.gamma),
        n_step=int(cfg.n_step),
        burn_in_length=burn_in,
        priority_eta=float(cfg.priority_eta),
        rescaling_eps=float(cfg.value_rescaling_eps) if cfg.value_rescaling else None,
    )
    learner_fn = get_learner_fn(env, q_network.apply, optimizer, buffer, loss_fn, sizes, config)
    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)
    evaluation_epsilon = float(cfg.evaluation_epsilon)

    def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool, carry: Any) -> tuple:
        no_reset = jnp.zeros((1, observation.agent_view.shape[0]), bool)
        carry, q_values = q_network.apply(params, carry, _add_time_axis(observation), no_reset)
        if greedy:
            return jnp.argmax(q_values[0], axis=-1), carry
        return distrax.EpsilonGreedy(q_values[0], evaluation_epsilon).sample(seed=key), carry

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(
            act=act, eval_params=lambda state: state.params.online, init_carry=q_network.initial_carry
        ),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_rec_r2d2", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_rec_r2d2")
    hydra_entry_point()
