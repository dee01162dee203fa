"""Categorical DQN, C51 (Bellemare et al., 2017, arXiv:1707.06887) on Anakin.

From ff_dqn.py; what changed: the network predicts, for each action, a categorical
distribution over `system.num_atoms` returns between `system.v_min` and `system.v_max`, and
the loss is the cross-entropy to the projected n-step target distribution
(rlax.categorical_q_learning's, batched in stoix.utils.distributional). Acting and
evaluation use the distributions' means.

    python stoix/systems/q_learning/ff_c51.py network=mlp_dueling_c51
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

if __name__ == "__main__":
    # Before the imports below start JAX's backend (Jumanji's types build arrays on import):
    # XLA's CPU compiler (jaxlib 0.10) runs this file's learner 14-37% faster without its
    # YNNPACK fusions (numbers in that module).
    from stoix.utils import xla_flags

    xla_flags.add(xla_flags.YNN_OFF)

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
def categorical_q_loss(
    online_params: Any,
    target_params: Any,
    batch: ff_dqn.QTransition,
    *,
    apply_fn: Callable,
    gamma: float,
    loss: str,
    huber_delta: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Cross-entropy between Q(s, a) and the projected n-step target distribution; the
    target uses the target network's greedy action (as in the C51 paper). `loss` and
    `huber_delta` do not apply to a distributional loss."""
    dist_tm1 = apply_fn(online_params, jax.tree.map(lambda x: x[:, 0], batch.obs))
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    dist_t = apply_fn(target_params, jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], batch.next_obs))
    # NOTE: stoix.utils.distributional equals rlax.categorical_q_learning (tested) on the whole
    # batch at once; vmapped rlax made each gradient step ~1.9x slower (532 vs 283 us, see that module).
    cross_entropy = distributional.categorical_q_learning(
        dist_tm1.atoms, dist_tm1.logits, batch.action[:, 0], g, discount, dist_t.atoms, dist_t.logits
    )
    value = jnp.mean(cross_entropy)
    return value, {"q_loss": value, "mean_q": jnp.mean(dist_tm1.q_values)}


learner_setup = functools.partial(
    ff_dqn.learner_setup, loss=categorical_q_loss, q_values_of=lambda out: out.q_values
)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_c51", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_c51")
    hydra_entry_point()
