"""IMPALA (Espeholt et al., 2018, arXiv:1802.01561) on Sebulba.

Actors act with whatever parameters they last received (`arch.synchronous=false` by default),
so their rollouts come from a lagged behaviour policy; the learner corrects for the lag with
V-trace (rlax.vtrace) and takes one gradient step per batch of rollouts. The actor threads,
pipelines, evaluation and run loop are the Sebulba architecture's
(stoix/architectures/sebulba.py); this file holds what an actor records, the V-trace learner
step and the setup.

Truncation: rlax's V-trace targets use v_t, the value of the true next observation, and the
trace is cut where an episode ends (lambda_t = 0); the policy-gradient target is computed
here from v_t rather than with rlax's helper, which would bootstrap a truncated episode from
the next episode's first state.

    python stoix/systems/impala/sebulba/ff_impala.py
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

from stoix.architectures.sebulba import SebulbaSystem, policy_act, run_from_cli
from stoix.base_types import ActorCriticParams, Observation
from stoix.networks.base import make_actor, make_critic
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.sizes import SebulbaSizes
from stoix.wrappers.host import HostTimeStep


class Trajectory(NamedTuple):
    """Host arrays shaped (rollout_length, envs, ...)."""

    obs: Observation
    action: np.ndarray
    log_prob: np.ndarray  # the behaviour policy's, for V-trace's importance ratios
    reward: np.ndarray
    discount: np.ndarray  # 0 on termination, 1 otherwise (truncation included)
    done: np.ndarray  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)


def record(
    obs: Observation, action: np.ndarray, log_prob: np.ndarray, next_timestep: HostTimeStep
) -> Trajectory:
    """One actor step, as the learner needs it."""
    return Trajectory(
        obs=obs,
        action=action,
        log_prob=log_prob,
        reward=next_timestep.reward,
        discount=next_timestep.discount,
        done=next_timestep.last,
        next_obs=next_timestep.next_obs,
    )


def vtrace_targets(
    v_tm1: chex.Array,
    v_t: chex.Array,
    r_t: chex.Array,
    discount_t: chex.Array,
    rho_tm1: chex.Array,
    lambda_t: chex.Array,
    clip_rho: float,
    clip_pg_rho: float,
) -> tuple[chex.Array, chex.Array]:
    """(value targets, policy-gradient advantages) along time axis 0 of one environment."""
    errors = rlax.vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_t, clip_rho)
    targets = errors + v_tm1
    # q_t = r_t + discount_t * (lambda_t * target_{t+1} + (1 - lambda_t) * V(true next obs)).
    next_target = jnp.concatenate([targets[1:], v_t[-1:]])
    q_estimate = r_t + discount_t * (lambda_t * next_target + (1.0 - lambda_t) * v_t)
    pg_advantage = jnp.minimum(clip_pg_rho, rho_tm1) * (q_estimate - v_tm1)
    return jax.lax.stop_gradient(targets), jax.lax.stop_gradient(pg_advantage)


# ALGO LOGIC: the loss on a whole batch of rollouts, time on axis 0.
def impala_loss(
    params: ActorCriticParams,
    traj: Trajectory,
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
    pi = actor_apply(params.actor, traj.obs)
    log_prob = pi.log_prob(traj.action)
    rho = jnp.exp(log_prob - traj.log_prob)  # target / behaviour policy
    v_tm1 = critic_apply(params.critic, traj.obs)
    v_t = critic_apply(params.critic, traj.next_obs)
    lambda_t = trace_lambda * (1.0 - traj.done.astype(jnp.float32))
    targets, pg_advantage = jax.vmap(
        functools.partial(vtrace_targets, clip_rho=clip_rho, clip_pg_rho=clip_pg_rho), in_axes=1, out_axes=1
    )(v_tm1, v_t, traj.reward, gamma * traj.discount, jax.lax.stop_gradient(rho), lambda_t)
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
        impala_loss,
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        gamma=float(sys_cfg.gamma),
        trace_lambda=float(sys_cfg.trace_lambda),
        clip_rho=float(sys_cfg.clip_rho),
        clip_pg_rho=float(sys_cfg.clip_pg_rho),
        ent_coef=float(sys_cfg.ent_coef),
        vf_coef=float(sys_cfg.vf_coef),
    )

    def update(params: ActorCriticParams, opt_state: Any, traj: Trajectory, key: chex.PRNGKey) -> tuple:
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, traj)
        grads, metrics = jax.lax.pmean((grads, metrics), axis_name="device")
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return update


def learner_setup(
    cfg: DictConfig, sizes: SebulbaSizes, action_spec: Any, dummy_obs: Observation, key: chex.PRNGKey
) -> SebulbaSystem:
    """Build the actor, critic and optimiser (one gradient step per update), and say how
    actors act: they sample and record the behaviour policy's log-probability."""
    sys_cfg = cfg.system
    actor = make_actor(cfg.network.actor_network, action_spec)
    critic = make_critic(cfg.network.critic_network)
    learning_rate = (
        optax.linear_schedule(float(sys_cfg.learning_rate), 0.0, sizes.num_updates)
        if sys_cfg.decay_learning_rates
        else float(sys_cfg.learning_rate)
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(float(sys_cfg.max_grad_norm)), optax.adam(learning_rate, eps=1e-5)
    )
    actor_key, critic_key, learn_key = jax.random.split(key, 3)
    params = ActorCriticParams(actor.init(actor_key, dummy_obs), critic.init(critic_key, dummy_obs))
    return SebulbaSystem(
        params=params,
        opt_state=optimizer.init(params),
        learn_key=learn_key,
        act=policy_act(actor.apply, greedy=False),
        act_eval=policy_act(actor.apply, greedy=bool(cfg.arch.evaluation_greedy)),
        record=record,
        update=make_update_fn(actor, critic, optimizer, cfg),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/sebulba/default_ff_impala", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/sebulba/default_ff_impala")
    hydra_entry_point()
