"""Quantile-regression DQN (Dabney et al., 2018, arXiv:1710.10044) on Anakin.

From ff_dqn.py; what changed: the network predicts `system.num_quantiles` quantiles of the
return for each action, trained with the quantile Huber loss against the n-step target
quantiles of the greedy next action (rlax.quantile_q_learning's loss, batched). Acting and
evaluation use the quantiles' means.

    python stoix/systems/q_learning/ff_qr_dqn.py system.num_quantiles=50
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

if __name__ == "__main__":
    # Before the imports below start JAX's backend (Jumanji's types build arrays on import):
    # XLA's CPU compiler (jaxlib 0.10) hands this loss's reductions over the (batch, N, N)
    # pairwise errors to YNNPACK, which made training ~3.4x slower (numbers in that module).
    from stoix.utils import xla_flags

    xla_flags.add(xla_flags.YNN_REDUCE_OFF)

import functools
from collections.abc import Callable
from typing import Any

import chex
import hydra
import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.systems.q_learning import ff_dqn
from stoix.utils import distributional
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.multistep import n_step_bootstrap


# ALGO LOGIC: the only change from ff_dqn.py (besides the network).
def quantile_q_loss(
    online_params: Any,
    target_params: Any,
    batch: ff_dqn.QTransition,
    *,
    apply_fn: Callable,
    gamma: float,
    loss: str,
    huber_delta: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Quantile Huber loss (kappa = system.huber_delta) of Q(s, a)'s quantiles against
    g + discount * quantiles of Q_target(s', argmax_a mean Q_target(s', a))."""
    dist_tm1 = apply_fn(online_params, jax.tree.map(lambda x: x[:, 0], batch.obs))
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    dist_t = apply_fn(target_params, jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], batch.next_obs))
    num_quantiles = dist_tm1.atoms.shape[-1]
    tau = (jnp.arange(num_quantiles, dtype=jnp.float32) + 0.5) / num_quantiles
    # NOTE: the batched loss of stoix.utils.distributional, equal to vmapped
    # rlax.quantile_q_learning (tests/test_distributional.py) but computing its gradient beside
    # its value, so no (batch, N, N) array waits for the backward pass: ~9% more steps/s here
    # (docs/benchmarks.md, row (g)). The target quantiles are those of the greedy next action.
    per_sample = distributional.quantile_q_learning(
        dist_tm1.atoms,
        tau,
        batch.action[:, 0],
        g,
        discount,
        dist_t.atoms,
        dist_t.atoms,
        huber_param=huber_delta,
    )
    value = jnp.mean(per_sample)
    return value, {"q_loss": value, "mean_q": jnp.mean(dist_tm1.q_values)}


learner_setup = functools.partial(
    ff_dqn.learner_setup, loss=quantile_q_loss, q_values_of=lambda out: out.q_values
)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_qr_dqn", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_qr_dqn")
    hydra_entry_point()
