"""Twin Delayed DDPG (Fujimoto et al., 2018, arXiv:1802.09477) on Anakin.

From ff_ddpg.py; what changed is the critic's target and how often the actor moves:
- twin critics, and the target takes the smaller of the two target critics' values, which
  curbs DDPG's overestimation;
- target policy smoothing: the target actor's action gets clipped Gaussian noise
  (`system.policy_noise`, `system.noise_clip`, both fractions of the action half-range);
- delayed actor and target updates: `system.actor_update_period=2` in ff_td3.yaml, handled by
  ff_ddpg.py's learner. The actor follows the first critic, as in the paper.

    python stoix/systems/ddpg/ff_td3.py env=gymnax/pendulum
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any

import chex
import hydra
import jax
import jax.numpy as jnp
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.base_types import SystemSetup
from stoix.systems.ddpg import ff_ddpg
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes


# ALGO LOGIC: the only change from ff_ddpg.py (with the delay set in the config).
def td3_critic_loss(
    critic_params: Any,
    params: ff_ddpg.DDPGParams,
    batch: ff_ddpg.Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    gamma: float,
    bounds: ff_ddpg.ActionBounds,
    policy_noise: float,
    noise_clip: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Each critic's TD error against g + discount * min_k Q_target_k(s', a'), where a' is the
    target action plus clipped noise, kept inside the bounds."""
    g, discount, next_obs = ff_ddpg.bootstrap_point(batch, gamma)
    next_action = actor_apply(params.target_actor, next_obs)
    limit = noise_clip * bounds.half_range
    noise = jnp.clip(
        policy_noise * bounds.half_range * jax.random.normal(key, next_action.shape), -limit, limit
    )
    next_action = bounds.clip(next_action + noise)
    q_t = jnp.min(critic_apply(params.target_critic, next_obs, next_action), axis=0)
    q_tm1 = critic_apply(critic_params, ff_ddpg.first(batch.obs), batch.action[:, 0])  # (critics, B)
    td_learning = jax.vmap(rlax.td_learning)  # over the batch
    td_error = jax.vmap(td_learning, in_axes=(0, None, None, None))(  # over the critics
        q_tm1, g, discount, jax.lax.stop_gradient(q_t)
    )
    loss = jnp.sum(jnp.mean(rlax.l2_loss(td_error), axis=1))
    return loss, {"critic_loss": loss, "mean_q": jnp.mean(q_tm1)}


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    cfg = config.system
    require(float(cfg.policy_noise) >= 0, f"system.policy_noise={cfg.policy_noise} must be >= 0.")
    require(float(cfg.noise_clip) >= 0, f"system.noise_clip={cfg.noise_clip} must be >= 0.")
    critic_loss = functools.partial(
        td3_critic_loss, policy_noise=float(cfg.policy_noise), noise_clip=float(cfg.noise_clip)
    )
    return ff_ddpg.learner_setup(env, config, sizes, key, critic_loss=critic_loss, num_critics=2)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_td3", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_td3")
    hydra_entry_point()
