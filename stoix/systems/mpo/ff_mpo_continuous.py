"""MPO (Abdolmaleki et al., 2018, arXiv:1806.06920) on Anakin, for box action spaces.

ff_mpo.py's learner (replay, n-step bootstrap that knows truncation from termination, target
networks, duals); what differs is everything a continuous action changes:
- Critic: Q-critic on (observation, action); its target is g + discount * mean_i
  Q_target(s', a'_i) over `num_samples` actions a'_i ~ pi_target(s').
- E-step on `num_samples` actions a_i ~ pi_target(s) per state, weighted by
  softmax_i(Q(s, a_i) / eta) (rlax.mpo_loss, samples on axis 0).
- M-step with the paper's decoupled Gaussian: the mean is fitted with the target policy's
  scale and the scale with the target policy's mean, log N(u_i; mu, s_target) +
  log N(u_i; mu_target, s), each under its own KL bound and multiplier (system.epsilon_alpha,
  system.epsilon_alpha_std), so the scale cannot collapse faster than its bound allows.
The policy is a Gaussian squashed into the action bounds (network=mlp_mpo_continuous); the
log-probabilities are taken before the squash, where the samples u_i were drawn (the squash
adds the same log-determinant under every Gaussian, which does not move the M-step).

    python stoix/systems/mpo/ff_mpo_continuous.py env=gymnax/mountain_car_continuous
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any

import chex
import distrax
import hydra
import jax
import jax.numpy as jnp
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.base_types import Observation, SystemSetup
from stoix.networks.base import make_q_critics
from stoix.systems.ddpg.ff_ddpg import Transition, bootstrap_point, first
from stoix.systems.mpo import ff_mpo
from stoix.systems.mpo.ff_vmpo import policy_kls, project_dual
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.sizes import AnakinSizes


def q_values(critic_apply: Callable, critic_params: Any, obs: Observation, actions: chex.Array) -> chex.Array:
    """Q(s, a_i) for actions shaped (N, B, A) at observations shaped (B, ...): (N, B)."""
    obs = jax.tree.map(lambda x: jnp.broadcast_to(x, (actions.shape[0], *x.shape)), obs)
    return critic_apply(critic_params, obs, actions)[0]


# ALGO LOGIC: the changes from ff_mpo.py.
def critic_loss(
    critic_params: Any,
    params: ff_mpo.MPOParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    gamma: float,
    num_samples: int,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """TD error of Q(s, a) against g + discount * mean_i Q_target(s', a'_i), a'_i ~ pi_target(s')."""
    g, discount, next_obs = bootstrap_point(batch, gamma)
    next_actions = actor_apply(params.target_actor, next_obs).sample(seed=key, sample_shape=num_samples)
    q_t = jnp.mean(q_values(critic_apply, params.target_critic, next_obs, next_actions), axis=0)
    q_tm1 = critic_apply(critic_params, first(batch.obs), batch.action[:, 0])[0]
    td_error = jax.vmap(rlax.td_learning)(q_tm1, g, discount, jax.lax.stop_gradient(q_t))
    loss = jnp.mean(rlax.l2_loss(td_error))
    return loss, {"critic_loss": loss, "mean_q": jnp.mean(q_tm1)}


def policy_loss(
    actor_and_duals: tuple[Any, ff_mpo.MPODuals],
    params: ff_mpo.MPOParams,
    batch: Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    epsilon_temperature: float,
    epsilon_alpha: float,
    epsilon_alpha_std: float,
    num_samples: int,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Sampled E-step and decoupled M-step with the three dual losses (rlax.mpo_loss)."""
    actor_params, duals = actor_and_duals
    obs = first(batch.obs)
    target_pi = actor_apply(params.target_actor, obs)
    pi = actor_apply(actor_params, obs)
    target_normal, normal = target_pi.distribution.distribution, pi.distribution.distribution

    # E-STEP SAMPLES: u_i ~ N(mu_target, s_target) before the squash, a_i its squashed action.
    u = jax.lax.stop_gradient(target_pi.distribution.sample(seed=key, sample_shape=num_samples))  # (N, B, A)
    q = jax.lax.stop_gradient(q_values(critic_apply, params.critic, obs, target_pi.bijector.forward(u)))

    # M-STEP: the mean with the target's scale, the scale with the target's mean.
    fixed_scale = distrax.MultivariateNormalDiag(normal.loc, jax.lax.stop_gradient(target_normal.scale))
    fixed_mean = distrax.MultivariateNormalDiag(jax.lax.stop_gradient(target_normal.loc), normal.scale)
    kl_mean, kl_scale = policy_kls(target_pi, pi)
    loss, out = rlax.mpo_loss(
        sample_log_probs=fixed_scale.log_prob(u) + fixed_mean.log_prob(u),
        sample_q_values=q,
        temperature_constraint=rlax.LagrangePenalty(duals.temperature, epsilon_temperature),
        kl_constraints=[
            (kl_mean, rlax.LagrangePenalty(duals.alpha, epsilon_alpha)),
            (kl_scale, rlax.LagrangePenalty(duals.alpha_std, epsilon_alpha_std)),
        ],
        projection_operator=project_dual,
        sample_axis=0,
    )
    metrics = {
        "actor_loss": jnp.mean(out.policy_loss),
        "temperature_loss": jnp.mean(out.temperature_loss),
        "temperature": project_dual(duals.temperature),
        "alpha": project_dual(duals.alpha),
        "alpha_scale": project_dual(duals.alpha_std),
        "kl": jnp.mean(kl_mean),
        "kl_scale": jnp.mean(kl_scale),
        "entropy": jnp.mean(pi.entropy()),
    }
    return jnp.mean(loss), metrics


def continuous_critic(config: DictConfig, action_spec: Any) -> ff_mpo.CriticSetup:
    """One Q-critic on (observation, action) (`network.q_network`)."""
    critic = make_q_critics(config.network.q_network, 1)
    dummy_action = jnp.zeros((1, *action_spec.shape), jnp.float32)
    return ff_mpo.CriticSetup(
        apply=critic.apply, init=lambda key, dummy_obs: critic.init(key, dummy_obs, dummy_action)
    )


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    cfg = config.system
    num_samples = int(cfg.num_samples)
    return ff_mpo.learner_setup(
        env,
        config,
        sizes,
        key,
        critic_setup=continuous_critic,
        critic_loss=functools.partial(critic_loss, num_samples=num_samples),
        policy_loss=functools.partial(
            policy_loss, num_samples=num_samples, epsilon_alpha_std=float(cfg.epsilon_alpha_std)
        ),
        continuous=True,
    )


@hydra.main(
    config_path=CONFIG_DIR, config_name="default/anakin/default_ff_mpo_continuous", version_base="1.3"
)
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_mpo_continuous")
    hydra_entry_point()
