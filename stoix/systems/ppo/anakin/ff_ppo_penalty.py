"""PPO with an adaptive KL penalty (Schulman et al., 2017, arXiv:1707.06347, section 4) on Anakin.

From ff_ppo.py; what changed is the actor's objective and one number carried between
updates: instead of clipping the ratio r, the surrogate r * A is penalised by beta times the
KL divergence between the behaviour and the current policy, and after each update's epochs
beta adapts to the KL d between the behaviour policy and the policy the epochs ended with,
measured on the whole rollout:
    d < kl_target / 1.5  ->  beta / 2,        d > kl_target * 1.5  ->  beta * 2.
The KL is estimated from the stored actions as mean((r - 1) - log r), which is non-negative
and unbiased for KL(old || new) (the loss uses the same estimate on each minibatch). Beta
lives in ff_ppo's learner state (`loss_state`), so it is checkpointed and resumed with
everything else. Continuous actions are configuration (ff_ppo_penalty_continuous.py,
network=mlp_continuous).

    python stoix/systems/ppo/anakin/ff_ppo_penalty.py
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


# ALGO LOGIC: the changes from ff_ppo.py.
def penalty_actor_loss(
    actor_params: Any,
    batch: ff_ppo.PPOBatch,
    *,
    loss_state: chex.Array,
    apply_fn: Callable,
    ent_coef: float,
    standardize_advantages: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """-(mean(r A) - beta KL) minus an entropy bonus; `loss_state` is beta."""
    pi = apply_fn(actor_params, batch.obs)
    log_prob = pi.log_prob(batch.action)
    advantage = batch.advantage
    if standardize_advantages:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    log_ratio = log_prob - batch.log_prob
    ratio = jnp.exp(log_ratio)
    kl = jnp.mean((ratio - 1.0) - log_ratio)
    policy_loss = -jnp.mean(ratio * advantage) + loss_state * kl
    entropy = pi.entropy().mean()
    metrics = {"actor_loss": policy_loss, "entropy": entropy, "approx_kl": kl, "kl_coef": loss_state}
    return policy_loss - ent_coef * entropy, metrics


def adapt_kl_coef(kl_coef: chex.Array, kl: chex.Array, *, kl_target: float) -> chex.Array:
    """Halve beta when the update's KL fell below kl_target / 1.5, double it above 1.5 x."""
    kl_coef = jnp.where(kl < kl_target / 1.5, kl_coef / 2.0, kl_coef)
    return jnp.where(kl > kl_target * 1.5, kl_coef * 2.0, kl_coef)


def update_kl_coef(
    kl_coef: chex.Array,
    actor_params: Any,
    batch: ff_ppo.PPOBatch,
    apply_fn: Callable,
    replica_axes: tuple[str, ...],
    *,
    kl_target: float,
) -> chex.Array:
    """After an update's epochs: KL(behaviour || updated policy) on the whole rollout, averaged
    over the replicas so every replica keeps the same beta, then the adaptation rule."""
    log_ratio = apply_fn(actor_params, batch.obs).log_prob(batch.action) - batch.log_prob
    kl = jnp.mean(jnp.expm1(log_ratio) - log_ratio)
    for axis in replica_axes:
        kl = jax.lax.pmean(kl, axis_name=axis)
    return adapt_kl_coef(kl_coef, kl, kl_target=kl_target)


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    cfg = config.system
    require(float(cfg.kl_target) > 0, f"system.kl_target={cfg.kl_target} must be > 0.")
    require(float(cfg.init_kl_coef) > 0, f"system.init_kl_coef={cfg.init_kl_coef} must be > 0.")
    return ff_ppo.learner_setup(
        env,
        config,
        sizes,
        key,
        policy_loss=penalty_actor_loss,
        init_loss_state=jnp.asarray(float(cfg.init_kl_coef), jnp.float32),
        update_loss_state=functools.partial(update_kl_coef, kl_target=float(cfg.kl_target)),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_ppo_penalty", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_ppo_penalty")
    hydra_entry_point()
