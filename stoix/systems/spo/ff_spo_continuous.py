"""SPO (Macfarlane et al., NeurIPS 2024, arXiv:2402.07963) for box actions, on Anakin. From
ff_spo.py; what a continuous action changes:

- the root distribution is the particles' first actions with their normalised weights (no
  histogram: no two sampled actions coincide); training samples one particle by weight, greedy
  evaluation takes the most weighted one;
- the M-step maximises sum_i w_i log pi(a_i | s) over those particles under the same KL trust
  region (a Gaussian policy, network=mlp_gaussian; the environment clips its samples).

Planner, replay, value targets, critic and KL multiplier are ff_spo.py's. The defaults plan
shallower and wider (32 particles, depth 2, resampling every step): on Pendulum a first action's
effect is small next to that of 3 more random actions, and depth 4 did not learn in 2e5 steps.

    python stoix/systems/spo/ff_spo_continuous.py system.search_depth=4 system.resample_period=2
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

from collections.abc import Callable
from typing import Any

import chex
import hydra
import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.base_types import SystemSetup
from stoix.systems.ddpg.ff_ddpg import first
from stoix.systems.mpo.ff_vmpo import project_dual
from stoix.systems.spo.ff_spo import SMCOutput, Transition, build, validate
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.sizes import AnakinSizes


# ALGO LOGIC: the only changes from ff_spo.py.
def policy_loss(
    actor_and_dual: tuple[Any, chex.Array],
    target_actor_params: Any,
    batch: Transition,
    *,
    actor_apply: Callable,
    epsilon_kl: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Weighted maximum likelihood of the SMC's root particles, -sum_i w_i log pi(a_i|s_0),
    plus alpha * KL(target policy || policy) with alpha's own loss (as in ff_spo.py).
    `batch.search_policy` is an SMCOutput: root_actions (B, n, N, A), weights (B, n, N)."""
    actor_params, dual = actor_and_dual
    obs = first(batch.obs)
    pi = actor_apply(actor_params, obs)
    target_pi = actor_apply(target_actor_params, obs)
    particles = first(batch.search_policy)
    # log pi(a_i | s) for every particle: the particles on the leading axis broadcast over B
    log_prob = pi.log_prob(jnp.swapaxes(particles.root_actions, 0, 1))  # (N, B)
    nll = -jnp.sum(particles.weights * jnp.swapaxes(log_prob, 0, 1), axis=-1)
    kl = target_pi.kl_divergence(pi)
    alpha = project_dual(dual)
    dual_loss = alpha * (epsilon_kl - jax.lax.stop_gradient(kl))
    loss = jnp.mean(nll + jax.lax.stop_gradient(alpha) * kl + dual_loss)
    return loss, {
        "policy_loss": jnp.mean(nll),
        "kl": jnp.mean(kl),
        "alpha": alpha,
        "entropy": jnp.mean(pi.entropy()),
    }


def plan_act(output: SMCOutput, key: chex.PRNGKey, greedy: bool) -> tuple[chex.Array, SMCOutput]:
    """(one first action per root, the particles as the policy target): sampled by weight while
    training, the most weighted one when greedy."""
    log_w = jnp.log(output.weights)
    index = jnp.argmax(log_w, -1) if greedy else jax.random.categorical(key, log_w)
    action = jnp.take_along_axis(output.root_actions, index[:, None, None], axis=1)[:, 0]
    return action, output


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=True)
    validate(cfg)
    return build(env, config, sizes, key, plan_act, policy_loss)


@hydra.main(
    config_path=CONFIG_DIR, config_name="default/anakin/default_ff_spo_continuous", version_base="1.3"
)
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_spo_continuous")
    hydra_entry_point()
