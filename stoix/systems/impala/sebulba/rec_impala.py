"""Recurrent IMPALA (Espeholt et al., 2018, arXiv:1802.01561) on Sebulba, from ff_impala.py.

What changes from ff_impala.py: the actor and critic are recurrent (`network=rnn`: a GRU, LSTM
or minimal GRU, chosen by `network.*.rnn.cell_type`). Actor threads run both networks at every
step, keep their memory from one rollout to the next and send, with each rollout, the memory it
started from (the Sebulba loop's `RecurrentTrajectory`) and the reset flags that mark episode
starts. The learner replays each rollout from that memory with its current parameters (the
gradient flows back through time and stops at the rollout's start), then takes ff_impala.py's
V-trace step; its `vtrace_targets` is reused as is.

Truncation: v_t is the critic's value of the true next observation read with the memory the
critic holds after that step (no reset), so a time-limit end bootstraps from the final
observation as the ended episode would have seen it, a termination (discount 0) does not, and
the trace is cut where an episode ends. For a step that does not end an episode this is exactly
the next step's value.

    python stoix/systems/impala/sebulba/rec_impala.py
    python stoix/systems/impala/sebulba/rec_impala.py network.actor_network.rnn.cell_type=lstm \
        network.critic_network.rnn.cell_type=lstm
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
from omegaconf import DictConfig

from stoix.architectures.sebulba import RecurrentTrajectory, SebulbaSystem, run_from_cli
from stoix.base_types import ActorCriticParams, Observation
from stoix.networks.recurrent import make_recurrent_actor, make_recurrent_critic
from stoix.systems.impala.sebulba.ff_impala import vtrace_targets
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import SebulbaSizes
from stoix.wrappers.host import HostTimeStep


class RNNCarry(NamedTuple):
    """Each network's memory, leaves shaped (envs, ...)."""

    actor: Any
    critic: Any


class ActInfo(NamedTuple):
    """What `act` hands to `record` besides the action."""

    log_prob: chex.Array  # the behaviour policy's, for V-trace's importance ratios
    reset: chex.Array  # the observation acted on starts an episode


class Trajectory(NamedTuple):
    """Host arrays shaped (rollout_length, envs, ...); the rollout's initial memory travels
    beside them (RecurrentTrajectory)."""

    obs: Observation
    reset: chex.Array  # obs is the first of its episode: the memory is zeroed before it
    action: chex.Array
    log_prob: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)


def record(obs: Observation, action: np.ndarray, info: ActInfo, next_timestep: HostTimeStep) -> Trajectory:
    """One actor step, as the learner needs it."""
    return Trajectory(
        obs=obs,
        reset=info.reset,
        action=action,
        log_prob=info.log_prob,
        reward=next_timestep.reward,
        discount=next_timestep.discount,
        done=next_timestep.last,
        next_obs=next_timestep.next_obs,
    )


def _add_time_axis(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[None], tree)


def make_act(actor_apply: Callable, critic_apply: Callable | None, greedy: bool) -> Callable:
    """A jitted recurrent `act`: (params, observation, key, carry, reset) -> (action, ActInfo,
    key, carry), one step of each network as a sequence of length 1. Training actors also step
    the critic so that its memory is there to send with the next rollout; evaluation
    (`critic_apply=None`) leaves the critic's memory as it is."""

    def act(
        params: ActorCriticParams, observation: Observation, key: chex.PRNGKey, carry: RNNCarry, reset: Any
    ) -> tuple:
        key, policy_key = jax.random.split(key)
        seq_obs, seq_reset = _add_time_axis(observation), reset[None]
        actor_carry, pi = actor_apply(params.actor, carry.actor, seq_obs, seq_reset)
        critic_carry = carry.critic
        if critic_apply is not None:
            critic_carry, _ = critic_apply(params.critic, carry.critic, seq_obs, seq_reset)
        action = pi.mode() if greedy else pi.sample(seed=policy_key)
        info = ActInfo(log_prob=pi.log_prob(action)[0], reset=reset)
        return action[0], info, key, RNNCarry(actor_carry, critic_carry)

    return jax.jit(act)


def replay(
    params: ActorCriticParams, traj: RecurrentTrajectory, *, actor_apply: Callable, critic_apply: Callable
) -> tuple[Any, chex.Array, chex.Array]:
    """Both networks over each rollout from the memory it started from: the policy at every
    step (T, B), v_tm1 (T, B), the value of each observation, and v_t (T, B), the value of its
    true next observation read from the memory after the step, without a reset."""
    steps = traj.steps
    carry = jax.tree.map(lambda x: x[0], traj.initial_carry)  # (1, B, ...) -> (B, ...)
    _, pi = actor_apply(params.actor, carry.actor, steps.obs, steps.reset)

    # NOTE: the critic runs one step at a time so that every step's whole memory (an LSTM's
    # cell included) comes out for the bootstrap pass below.
    def critic_step(critic_carry: Any, inputs: tuple) -> tuple[Any, tuple]:
        obs, reset = inputs
        critic_carry, value = critic_apply(params.critic, critic_carry, _add_time_axis(obs), reset[None])
        return critic_carry, (value[0], critic_carry)

    _, (v_tm1, memory) = jax.lax.scan(critic_step, carry.critic, (steps.obs, steps.reset))
    # v_t: one batched critic step over all (T * B) steps, from each step's memory.
    num_steps, num_envs = steps.reset.shape
    flat_memory = jax.tree.map(lambda x: x.reshape(num_steps * num_envs, *x.shape[2:]), memory)
    flat_next_obs = jax.tree.map(lambda x: x.reshape(1, num_steps * num_envs, *x.shape[2:]), steps.next_obs)
    no_reset = jnp.zeros((1, num_steps * num_envs), bool)
    _, v_t = critic_apply(params.critic, flat_memory, flat_next_obs, no_reset)
    return pi, v_tm1, v_t.reshape(num_steps, num_envs)


# ALGO LOGIC: ff_impala's V-trace loss, on the replayed sequences.
def rec_impala_loss(
    params: ActorCriticParams,
    traj: RecurrentTrajectory,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    gamma: float,
    trace_lambda: float,
    clip_rho: float,
    clip_pg_rho: float,
    ent_coef: float,
    vf_coef: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    steps = traj.steps
    pi, v_tm1, v_t = replay(params, traj, actor_apply=actor_apply, critic_apply=critic_apply)
    log_prob = pi.log_prob(steps.action)
    rho = jnp.exp(log_prob - steps.log_prob)  # target / behaviour policy
    lambda_t = trace_lambda * (1.0 - steps.done.astype(jnp.float32))
    targets, pg_advantage = jax.vmap(
        functools.partial(vtrace_targets, clip_rho=clip_rho, clip_pg_rho=clip_pg_rho), in_axes=1, out_axes=1
    )(v_tm1, v_t, steps.reward, gamma * steps.discount, jax.lax.stop_gradient(rho), lambda_t)
    pg_loss = -jnp.mean(log_prob * pg_advantage)
    value_loss = 0.5 * jnp.mean(jnp.square(targets - v_tm1))
    entropy = jnp.mean(pi.entropy())
    loss = pg_loss + vf_coef * value_loss - ent_coef * entropy
    metrics = {"actor_loss": pg_loss, "value_loss": value_loss, "entropy": entropy, "mean_rho": jnp.mean(rho)}
    return loss, metrics


def make_update_fn(actor: Any, critic: Any, optimizer: Any, cfg: DictConfig) -> Callable:
    """One V-trace gradient step on a learner device's share of the rollouts (pmapped)."""
    sys_cfg = cfg.system
    loss_fn = functools.partial(
        rec_impala_loss,
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        gamma=float(sys_cfg.gamma),
        trace_lambda=float(sys_cfg.trace_lambda),
        clip_rho=float(sys_cfg.clip_rho),
        clip_pg_rho=float(sys_cfg.clip_pg_rho),
        ent_coef=float(sys_cfg.ent_coef),
        vf_coef=float(sys_cfg.vf_coef),
    )

    def update(
        params: ActorCriticParams, opt_state: Any, traj: RecurrentTrajectory, key: chex.PRNGKey
    ) -> tuple:
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, traj)
        grads, metrics = jax.lax.pmean((grads, metrics), axis_name="device")
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return update


def learner_setup(
    cfg: DictConfig, sizes: SebulbaSizes, action_spec: Any, dummy_obs: Observation, key: chex.PRNGKey
) -> SebulbaSystem:
    """Build the recurrent actor and critic (a one-line error for a network without a `rnn:`
    entry) and the optimiser; actors sample, carry both memories and record the behaviour
    policy's log-probability and the reset flags."""
    sys_cfg = cfg.system
    require(
        all(cfg.network[name].get("rnn") is not None for name in ("actor_network", "critic_network")),
        "rec_impala needs recurrent networks (an `rnn:` entry in network.actor_network and "
        "network.critic_network); pick them with network=rnn.",
    )
    actor = make_recurrent_actor(cfg.network.actor_network, action_spec)
    critic = make_recurrent_critic(cfg.network.critic_network)
    learning_rate = (
        optax.linear_schedule(float(sys_cfg.learning_rate), 0.0, sizes.num_updates)
        if sys_cfg.decay_learning_rates
        else float(sys_cfg.learning_rate)
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(float(sys_cfg.max_grad_norm)), optax.adam(learning_rate, eps=1e-5)
    )
    actor_key, critic_key, learn_key = jax.random.split(key, 3)
    seq_obs, seq_reset = _add_time_axis(dummy_obs), jnp.zeros((1, 1), bool)  # (T=1, B=1, ...)
    params = ActorCriticParams(
        actor.init(actor_key, actor.initial_carry(1), seq_obs, seq_reset),
        critic.init(critic_key, critic.initial_carry(1), seq_obs, seq_reset),
    )

    def init_carry(num_envs: int) -> RNNCarry:
        return RNNCarry(actor.initial_carry(num_envs), critic.initial_carry(num_envs))

    return SebulbaSystem(
        params=params,
        opt_state=optimizer.init(params),
        learn_key=learn_key,
        act=make_act(actor.apply, critic.apply, greedy=False),
        act_eval=make_act(actor.apply, None, greedy=bool(cfg.arch.evaluation_greedy)),
        record=record,
        update=make_update_fn(actor, critic, optimizer, cfg),
        init_carry=init_carry,
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/sebulba/default_rec_impala", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/sebulba/default_rec_impala")
    hydra_entry_point()
