"""Discovered Policy Optimisation (Lu et al., 2022, arXiv:2210.05639) on Anakin.

From ff_ppo.py; what changed is the actor's objective: PPO's clip is replaced by the drift
function DPO discovered by meta-learning, r * A - drift(r, A), where the drift penalises
moving the probability ratio r away from 1 in the direction the advantage favours, smoothly
and more for negative advantages:
    A >= 0: relu((r - 1) A - alpha tanh((r - 1) A / alpha))
    A <  0: relu(log(r) A - beta tanh(log(r) A / beta)).
Rollouts, truncation-aware GAE, the critic and the epochs are ff_ppo.py's. Continuous actions
are configuration (ff_dpo_continuous.py, network=mlp_continuous), as for PPO.

    python stoix/systems/ppo/anakin/ff_dpo.py
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any

import chex
import hydra
import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.base_types import SystemSetup
from stoix.systems.ppo.anakin import ff_ppo
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes


# ALGO LOGIC: the only change from ff_ppo.py.
def drift(ratio: chex.Array, advantage: chex.Array, alpha: float, beta: float) -> chex.Array:
    """DPO's drift: zero at ratio 1, growing as the ratio moves the way the advantage pulls."""
    positive = jax.nn.relu((ratio - 1.0) * advantage - alpha * jnp.tanh((ratio - 1.0) * advantage / alpha))
    log_ratio = jnp.log(ratio)
    negative = jax.nn.relu(log_ratio * advantage - beta * jnp.tanh(log_ratio * advantage / beta))
    return jnp.where(advantage >= 0, positive, negative)


def dpo_actor_loss(
    actor_params: Any,
    batch: ff_ppo.PPOBatch,
    *,
    apply_fn: Callable,
    alpha: float,
    beta: float,
    ent_coef: float,
    standardize_advantages: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """-(r A - drift(r, A)) averaged over the batch, minus an entropy bonus."""
    pi = apply_fn(actor_params, batch.obs)
    log_prob = pi.log_prob(batch.action)
    advantage = batch.advantage
    if standardize_advantages:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    ratio = jnp.exp(log_prob - batch.log_prob)
    policy_loss = -jnp.mean(ratio * advantage - drift(ratio, advantage, alpha, beta))
    entropy = pi.entropy().mean()
    metrics = {
        "actor_loss": policy_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - (log_prob - batch.log_prob)),
    }
    return policy_loss - ent_coef * entropy, metrics


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    cfg = config.system
    require(
        float(cfg.alpha) > 0, f"system.alpha={cfg.alpha} must be > 0 (DPO's drift for positive advantages)."
    )
    require(float(cfg.beta) > 0, f"system.beta={cfg.beta} must be > 0 (DPO's drift for negative advantages).")
    loss = functools.partial(dpo_actor_loss, alpha=float(cfg.alpha), beta=float(cfg.beta))
    return ff_ppo.learner_setup(env, config, sizes, key, policy_loss=loss)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_dpo", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_dpo")
    hydra_entry_point()
