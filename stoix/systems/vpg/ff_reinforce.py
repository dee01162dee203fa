"""REINFORCE with a learned value baseline (Williams, 1992) on Anakin.

From ff_ppo.py; what changed is the actor's loss and the sizes: the plain policy gradient
-log pi(a|s) * (G - V(s)), one gradient step per rollout on the whole batch (no ratio, no
clip: the data is always on-policy), and Monte-Carlo returns G (`system.gae_lambda=1`):
rewards summed to the end of the rollout, bootstrapped from V of the true next observation
where the rollout stops or an episode is truncated, and from nothing where it terminated
(ff_ppo.py's truncated_gae with lambda 1). The critic regresses onto G. Continuous actions
are configuration (ff_reinforce_continuous.py, network=mlp_continuous).

    python stoix/systems/vpg/ff_reinforce.py
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

from collections.abc import Callable
from typing import Any

import chex
import hydra
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.base_types import SystemSetup
from stoix.systems.ppo.anakin import ff_ppo
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes


# ALGO LOGIC: the only change from ff_ppo.py (with its sizes set in the config).
def reinforce_loss(
    actor_params: Any,
    batch: ff_ppo.PPOBatch,
    *,
    apply_fn: Callable,
    ent_coef: float,
    standardize_advantages: bool,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """-mean(log pi(a|s) * advantage) minus an entropy bonus. Written out rather than with
    rlax.policy_gradient_loss, which takes logits and so fits discrete policies only."""
    pi = apply_fn(actor_params, batch.obs)
    log_prob = pi.log_prob(batch.action)
    advantage = batch.advantage
    if standardize_advantages:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    policy_loss = -jnp.mean(log_prob * advantage)
    entropy = pi.entropy().mean()
    return policy_loss - ent_coef * entropy, {"actor_loss": policy_loss, "entropy": entropy}


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    cfg = config.system
    for name in ("epochs", "num_minibatches"):
        require(
            int(cfg[name]) == 1,
            f"system.{name}={cfg[name]}: REINFORCE takes one gradient step on each rollout (its "
            f"gradient is unbiased only on-policy); set system.{name}=1, or use ff_ppo for several.",
        )
    return ff_ppo.learner_setup(env, config, sizes, key, policy_loss=reinforce_loss)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_reinforce", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_reinforce")
    hydra_entry_point()
