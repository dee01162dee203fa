"""PPO on Sebulba: actor threads step host (envpool, gymnasium) environments, a learner trains.

The losses, batch type and truncation-aware GAE are the Anakin PPO's
(stoix/systems/ppo/anakin/ff_ppo.py); what changes is where things run. The actor threads,
pipelines, asynchronous evaluation, checkpoints and run loop are the Sebulba architecture's
(stoix/architectures/sebulba.py). This file holds what is PPO's: what an actor records per
step, the learner's update (GAE, then epochs of minibatches, `pmap`ped over the learner
devices) and the setup that builds the networks and optimiser. It is generic in the policy
distribution: discrete actions with `network=mlp`, box actions with `network=mlp_continuous`
(ff_ppo_continuous.py beside it holds the continuous-control defaults).

    python stoix/systems/ppo/sebulba/ff_ppo.py env=gymnasium/cartpole
    python stoix/systems/ppo/sebulba/ff_ppo.py arch=sebulba env=envpool/pong network=visual_resnet
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

from stoix.architectures.sebulba import SebulbaSystem, policy_act, run_from_cli
from stoix.base_types import ActorCriticParams, Observation
from stoix.networks.base import make_actor, make_critic
from stoix.systems.ppo.anakin.ff_ppo import PPOBatch, actor_loss, critic_loss, ppo_loss, rollout_values
from stoix.utils import shuffle
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import truncated_gae
from stoix.utils.sizes import SebulbaSizes
from stoix.wrappers.host import HostTimeStep


class Trajectory(NamedTuple):
    """Host arrays shaped (rollout_length, envs, ...)."""

    obs: Observation
    action: np.ndarray
    log_prob: np.ndarray
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


def trajectory_values(
    critic: Callable[[Observation], chex.Array], traj: Trajectory, max_truncations: int | None = None
) -> tuple:
    """Values of a rollout's observations and true next observations, each (T, E), with
    Anakin's one critic pass (ff_ppo.rollout_values): a step that did not end an episode has
    the next step's observation as its next one, the observation after the rollout is the
    last step's next one, and up to `max_truncations` (default: one per environment) truncated
    episodes' final observations are gathered on their own."""
    return rollout_values(
        critic,
        traj.obs,
        jax.tree.map(lambda x: x[-1], traj.next_obs),
        traj.next_obs,
        traj.done & (traj.discount > 0),
        max_truncations=traj.done.shape[1] if max_truncations is None else max_truncations,
    )


def make_update_fn(actor: Any, critic: Any, optimizer: Any, cfg: DictConfig, batch_size: int) -> Callable:
    """PPO's learning step for one learner device's share of the rollouts (pmapped)."""
    sys_cfg = cfg.system
    minibatch_size = batch_size // int(sys_cfg.num_minibatches)
    loss_fn = functools.partial(
        ppo_loss,
        actor_loss_fn=functools.partial(
            actor_loss,
            apply_fn=actor.apply,
            clip_eps=float(sys_cfg.clip_eps),
            ent_coef=float(sys_cfg.ent_coef),
            standardize_advantages=bool(sys_cfg.standardize_advantages),
        ),
        critic_loss_fn=functools.partial(
            critic_loss,
            apply_fn=critic.apply,
            clip_eps=float(sys_cfg.clip_eps),
            clip_value=bool(sys_cfg.clip_value_loss),
        ),
        vf_coef=float(sys_cfg.vf_coef),
    )

    def _update_minibatch(carry: tuple, minibatch: PPOBatch) -> tuple[tuple, dict]:
        params, opt_state = carry
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, minibatch)
        grads, metrics = jax.lax.pmean((grads, metrics), axis_name="device")
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def update(params: ActorCriticParams, opt_state: Any, traj: Trajectory, key: chex.PRNGKey) -> tuple:
        # CALCULATE ADVANTAGE: truncation-aware GAE, as on Anakin
        v_tm1, v_t = trajectory_values(lambda o: critic.apply(params.critic, o), traj)
        advantage, target = truncated_gae(
            traj.reward,
            float(sys_cfg.gamma) * traj.discount,
            v_tm1,
            v_t,
            traj.done,
            float(sys_cfg.gae_lambda),
        )
        batch = PPOBatch(traj.obs, traj.action, traj.log_prob, v_tm1, advantage, target)
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)

        def _epoch(carry: tuple, epoch_key: chex.PRNGKey) -> tuple[tuple, dict]:
            permutation = shuffle.permutation(epoch_key, batch_size)
            minibatches = jax.tree.map(
                lambda x: x[permutation].reshape(-1, minibatch_size, *x.shape[1:]), batch
            )
            return jax.lax.scan(_update_minibatch, carry, minibatches)

        (params, opt_state), metrics = jax.lax.scan(
            _epoch, (params, opt_state), jax.random.split(key, int(sys_cfg.epochs))
        )
        return params, opt_state, jax.tree.map(jnp.mean, metrics)

    return update


def learner_setup(
    cfg: DictConfig, sizes: SebulbaSizes, action_spec: Any, dummy_obs: Observation, key: chex.PRNGKey
) -> SebulbaSystem:
    """Validate PPO's sizes, build the actor, critic and optimiser, and say how actors act."""
    sys_cfg = cfg.system
    batch_size = sizes.batch_per_learner_device
    require(
        batch_size % int(sys_cfg.num_minibatches) == 0,
        f"system.num_minibatches={sys_cfg.num_minibatches} must divide each learner device's batch "
        f"system.rollout_length*arch.total_num_envs/len(arch.learner.device_ids)={batch_size}.",
    )
    require(
        not sys_cfg.normalize_observations,
        "system.normalize_observations is not supported on Sebulba yet.",
    )
    actor = make_actor(cfg.network.actor_network, action_spec)
    critic = make_critic(cfg.network.critic_network)
    num_gradient_steps = sizes.num_updates * int(sys_cfg.epochs) * int(sys_cfg.num_minibatches)
    learning_rate = (
        optax.linear_schedule(float(sys_cfg.learning_rate), 0.0, num_gradient_steps)
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
        update=make_update_fn(actor, critic, optimizer, cfg, batch_size),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/sebulba/default_ff_ppo", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/sebulba/default_ff_ppo")
    hydra_entry_point()
