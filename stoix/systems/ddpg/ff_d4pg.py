"""Distributed Distributional DDPG (Barth-Maron et al., 2018, arXiv:1804.08617) on Anakin.

From ff_ddpg.py; what changed is the critic: a categorical distribution over fixed returns
(network=mlp_d4pg, `v_min`/`v_max` set for the task), trained by projecting the n-step
target distribution onto its support (rlax.categorical_td_learning, batched in
stoix.utils.distributional), and the actor follows the gradient of the distribution's mean.
"Distributed" is Anakin's: many environments and update batches across devices. n-step
returns are on by default (system.n_step=3).

    python stoix/systems/ddpg/ff_d4pg.py env=gymnax/pendulum
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any

import chex
import hydra
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.systems.ddpg import ff_ddpg
from stoix.utils import distributional
from stoix.utils.config import CONFIG_DIR, check_overrides


# ALGO LOGIC: the only change from ff_ddpg.py.
def d4pg_critic_loss(
    critic_params: Any,
    params: ff_ddpg.DDPGParams,
    batch: ff_ddpg.Transition,
    key: chex.PRNGKey,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    gamma: float,
    bounds: ff_ddpg.ActionBounds,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Cross-entropy between Z(s, a) and the target g + discount * Z_target(s', mu_target(s'))
    projected onto the critic's support; after a termination the target is g alone."""
    del key, bounds
    g, discount, next_obs = ff_ddpg.bootstrap_point(batch, gamma)
    target = critic_apply(params.target_critic, next_obs, actor_apply(params.target_actor, next_obs))
    dist = critic_apply(critic_params, ff_ddpg.first(batch.obs), batch.action[:, 0])
    # The batched form of rlax.categorical_td_learning (equal to it, tests/test_distributional.py):
    # vmapping rlax's per-sample projection is ~2x slower on CPU (docs/benchmarks.md, row g).
    loss = distributional.categorical_td_learning(
        dist.atoms[0], dist.logits[0], g, discount, target.atoms[0], target.logits[0]
    )
    loss = jnp.mean(loss)
    return loss, {"critic_loss": loss, "mean_q": jnp.mean(dist.value[0])}


learner_setup = functools.partial(
    ff_ddpg.learner_setup,
    critic_loss=d4pg_critic_loss,
    actor_loss=functools.partial(ff_ddpg.actor_loss, q_value_of=lambda out: out.value),
)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_d4pg", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_d4pg")
    hydra_entry_point()
