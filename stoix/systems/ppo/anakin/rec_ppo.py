"""Recurrent PPO on Anakin: PPO's clipped objective over whole environment sequences.

Actor and critic are recurrent (`network=rnn`: a GRU, LSTM or minimal GRU, chosen by
`network.*.rnn.cell_type`). The rollout keeps each network's memory in the learner state and
records where episodes start (`reset`); every update's minibatches are whole environment
sequences with the memory they started from, so the gradient flows back through time. GAE is
truncation-aware as in ff_ppo.py: a time-limit end bootstraps from the critic's value of the
true final observation, read with the memory of the episode that ended there.

    python stoix/systems/ppo/anakin/rec_ppo.py env=gymnax/cartpole_stateless
    python stoix/systems/ppo/anakin/rec_ppo.py env=gymnax/memory_chain system.rollout_length=64
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
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, run_from_cli
from stoix.base_types import ActorApply, ActorCriticParams, ExperimentOutput, Observation, SystemSetup
from stoix.networks.recurrent import make_recurrent_actor, make_recurrent_critic
from stoix.systems.ppo.anakin.ff_ppo import clipped_objective, make_optimizer, value_loss
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import truncated_gae
from stoix.utils.sizes import AnakinSizes


class RNNCarry(NamedTuple):
    actor: Any
    critic: Any


class LearnerState(NamedTuple):
    params: ActorCriticParams
    opt_state: optax.OptState
    key: chex.PRNGKey
    env_state: Any
    timestep: Any
    reset: chex.Array  # (num_envs,) the current observation starts an episode
    carry: RNNCarry  # each network's memory after the previous observation


class RecPPOTransition(NamedTuple):
    obs: Observation
    reset: chex.Array  # obs is the first of its episode: the memory is zeroed before it
    action: chex.Array
    log_prob: chex.Array
    value: chex.Array
    next_value: chex.Array  # the critic's value of the true next observation, same episode
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array
    episode_metrics: Any


class SequenceBatch(NamedTuple):
    """Time-major (T, B, ...) sequences and the memory (B, ...) they start from."""

    carry: RNNCarry
    obs: Observation
    reset: chex.Array
    action: chex.Array
    log_prob: chex.Array
    value: chex.Array
    advantage: chex.Array
    target: chex.Array


def _add_time_axis(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[None], tree)


# ALGO LOGIC: the loss over sequences, from ff_ppo's objectives on the flattened steps.
def rec_ppo_loss(
    params: ActorCriticParams,
    batch: SequenceBatch,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    clip_eps: float,
    ent_coef: float,
    vf_coef: float,
    standardize_advantages: bool,
    clip_value: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Replay each sequence from its stored memory, then PPO's clipped objective and value
    loss over every step of every sequence."""
    _, pi = actor_apply(params.actor, batch.carry.actor, batch.obs, batch.reset)
    _, value = critic_apply(params.critic, batch.carry.critic, batch.obs, batch.reset)
    a_loss, a_metrics = clipped_objective(
        pi.log_prob(batch.action).reshape(-1),
        batch.log_prob.reshape(-1),
        batch.advantage.reshape(-1),
        pi.entropy(),
        clip_eps=clip_eps,
        ent_coef=ent_coef,
        standardize_advantages=standardize_advantages,
    )
    c_loss, c_metrics = value_loss(
        value, batch.value, batch.target, clip_eps=clip_eps if clip_value else 0.0, clip_value=clip_value
    )
    return a_loss + vf_coef * c_loss, {**a_metrics, **c_metrics}


def advantages_and_targets(
    traj: RecPPOTransition, gamma: float, gae_lambda: float
) -> tuple[chex.Array, chex.Array]:
    """GAE over a time-major rollout: each step bootstraps from `next_value` unless it
    terminated (discount 0); an episode end, terminated or truncated, stops the trace."""
    return truncated_gae(
        traj.reward, gamma * traj.discount, traj.value, traj.next_value, traj.done, gae_lambda
    )


def split_sequences(batch: SequenceBatch, permutation: chex.Array, num_minibatches: int) -> SequenceBatch:
    """Shuffle whole sequences (the environment axis) into `num_minibatches` minibatches:
    leaves become (num_minibatches, T, B / num_minibatches, ...), the memory
    (num_minibatches, B / num_minibatches, ...)."""

    def split_env_axis(x: chex.Array) -> chex.Array:  # (B, ...) -> (M, B/M, ...)
        x = x[permutation]
        return x.reshape(num_minibatches, -1, *x.shape[1:])

    carry = jax.tree.map(split_env_axis, batch.carry)
    steps = jax.tree.map(
        lambda x: jnp.swapaxes(split_env_axis(jnp.swapaxes(x, 0, 1)), 1, 2), batch._replace(carry=None)
    )
    return steps._replace(carry=carry)


def get_learner_fn(
    env: Any,
    actor_apply: Callable,
    critic_apply: Callable,
    optimizer: optax.GradientTransformation,
    sizes: AnakinSizes,
    config: DictConfig,
) -> Callable[[LearnerState], ExperimentOutput]:
    cfg = config.system
    num_minibatches = int(cfg.num_minibatches)
    clip_value = bool(cfg.get("clip_value_loss", False))
    loss_fn = functools.partial(
        rec_ppo_loss,
        actor_apply=actor_apply,
        critic_apply=critic_apply,
        clip_eps=float(cfg.clip_eps),
        ent_coef=float(cfg.ent_coef),
        vf_coef=float(cfg.vf_coef),
        standardize_advantages=bool(cfg.standardize_advantages),
        clip_value=clip_value,
    )

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, RecPPOTransition]:
        # SELECT ACTION: one step of each network, as a sequence of length 1
        key, policy_key = jax.random.split(state.key)
        obs = state.timestep.observation
        seq_obs, seq_reset = _add_time_axis(obs), state.reset[None]
        actor_carry, pi = actor_apply(state.params.actor, state.carry.actor, seq_obs, seq_reset)
        critic_carry, value = critic_apply(state.params.critic, state.carry.critic, seq_obs, seq_reset)
        action = pi.sample(seed=policy_key)
        log_prob = pi.log_prob(action)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action[0])
        next_obs = timestep.extras["next_obs"]
        # NOTE: the true next observation continues this episode's memory (no reset), so a
        # truncated episode bootstraps from what the critic would have seen next.
        _, next_value = critic_apply(
            state.params.critic, critic_carry, _add_time_axis(next_obs), jnp.zeros_like(seq_reset)
        )
        transition = RecPPOTransition(
            obs=obs,
            reset=state.reset,
            action=action[0],
            log_prob=log_prob[0],
            value=value[0],
            next_value=next_value[0],
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            episode_metrics=timestep.extras["episode_metrics"],
        )
        state = state._replace(
            key=key,
            env_state=env_state,
            timestep=timestep,
            reset=timestep.last(),
            carry=RNNCarry(actor_carry, critic_carry),
        )
        return state, transition

    def _update_minibatch(carry: tuple, minibatch: SequenceBatch) -> tuple[tuple, dict]:
        params, opt_state = carry
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, minibatch)
        # NOTE: every replica must take the same step: average over update batches, then devices.
        for axis in sizes.replica_axes:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name=axis)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def _update_epoch(carry: tuple, batch: SequenceBatch) -> tuple[tuple, dict]:
        params, opt_state, key = carry
        key, shuffle_key = jax.random.split(key)
        permutation = jax.random.permutation(shuffle_key, sizes.num_envs)
        minibatches = split_sequences(batch, permutation, num_minibatches)
        (params, opt_state), metrics = jax.lax.scan(_update_minibatch, (params, opt_state), minibatches)
        return (params, opt_state, key), metrics

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT ROLLOUT: leaves shaped (rollout_length, num_envs, ...)
        initial_carry = state.carry
        state, traj = jax.lax.scan(_env_step, state, None, sizes.rollout_length)

        # CALCULATE ADVANTAGE
        advantage, target = advantages_and_targets(traj, float(cfg.gamma), float(cfg.gae_lambda))

        # UPDATE NETWORKS: `epochs` passes over shuffled minibatches of whole sequences
        batch = SequenceBatch(
            carry=initial_carry,
            obs=traj.obs,
            reset=traj.reset,
            action=traj.action,
            log_prob=traj.log_prob,
            value=traj.value,
            advantage=advantage,
            target=target,
        )
        (params, opt_state, key), metrics = jax.lax.scan(
            lambda c, _: _update_epoch(c, batch),
            (state.params, state.opt_state, state.key),
            None,
            int(cfg.epochs),
        )
        state = state._replace(params=params, opt_state=opt_state, key=key)
        return state, (traj.episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate the sizes, build the recurrent networks and optimiser, initialise replicas."""
    cfg = config.system
    require(float(cfg.clip_eps) > 0, f"system.clip_eps={cfg.clip_eps} must be > 0.")
    num_minibatches = int(cfg.num_minibatches)
    require(
        num_minibatches >= 1 and sizes.num_envs % num_minibatches == 0,
        f"system.num_minibatches={num_minibatches} must divide the environments per slot "
        f"arch.total_num_envs/(devices*arch.update_batch_size)={sizes.num_envs}: rec_ppo's "
        "minibatches are whole environment sequences.",
    )
    actor = make_recurrent_actor(config.network.actor_network, env.action_spec)
    critic = make_recurrent_critic(config.network.critic_network)
    optimizer = make_optimizer(cfg, sizes.num_updates * int(cfg.epochs) * num_minibatches)
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, 1, *s.shape), s.dtype), obs_spec.generate_value())
        dummy_reset = jnp.zeros((1, 1), bool)
        params = ActorCriticParams(
            actor.init(actor_key, actor.initial_carry(1), dummy_obs, dummy_reset),
            critic.init(critic_key, critic.initial_carry(1), dummy_obs, dummy_reset),
        )
        env_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(env_key, sizes.num_envs))
        carry = RNNCarry(actor.initial_carry(sizes.num_envs), critic.initial_carry(sizes.num_envs))
        reset = jnp.ones((sizes.num_envs,), bool)
        return LearnerState(params, optimizer.init(params), key, env_state, timestep, reset, carry)

    learner_fn = get_learner_fn(env, actor.apply, critic.apply, optimizer, sizes, config)
    # NOTE: jax.vmap even for one slot: unbatched (anakin.map_slots) ran 6% slower here (docs/benchmarks.md).
    learn = jax.pmap(jax.vmap(learner_fn, axis_name="batch"), axis_name="device", donate_argnums=0)

    def act(
        actor_params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool, carry: Any
    ) -> tuple:
        no_reset = jnp.zeros((1, observation.agent_view.shape[0]), bool)
        carry, pi = actor.apply(actor_params, carry, _add_time_axis(observation), no_reset)
        action = pi.mode() if greedy else pi.sample(seed=key)
        return action[0], carry

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(
            act=act, eval_params=lambda state: state.params.actor, init_carry=actor.initial_carry
        ),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_rec_ppo", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_rec_ppo")
    hydra_entry_point()
