"""DQN with regularised Q-learning (DQNReg; Co-Reyes et al., 2021, arXiv:2101.03958) on Anakin.

From ff_dqn.py; what changed is the loss: the squared TD error plus a penalty on the Q-value
of the action taken, k * Q(s, a), which counteracts value overestimation. The loss is written
here (rlax has none) and tested against hand-computed numbers.

    python stoix/systems/q_learning/ff_dqn_reg.py system.regularizer_coefficient=0.1
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
from stoix.systems.q_learning import ff_dqn
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.multistep import n_step_bootstrap


# ALGO LOGIC: the only change from ff_dqn.py.
def regularised_q_loss(
    online_params: Any,
    target_params: Any,
    batch: ff_dqn.QTransition,
    *,
    apply_fn: Callable,
    gamma: float,
    loss: str,
    huber_delta: float,
    regularizer_coefficient: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    q_tm1 = apply_fn(online_params, jax.tree.map(lambda x: x[:, 0], batch.obs))
    action = batch.action[:, 0]
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    q_t = apply_fn(target_params, jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], batch.next_obs))
    td_error = jax.vmap(rlax.q_learning)(q_tm1, action, g, discount, q_t)
    q_taken = jnp.take_along_axis(q_tm1, action[:, None], axis=-1)[:, 0]
    td = ff_dqn.td_loss(td_error, loss, huber_delta)
    penalty = regularizer_coefficient * jnp.mean(q_taken)
    return td + penalty, {"q_loss": td, "regularizer": penalty, "mean_q": jnp.mean(q_tm1)}


def learner_setup(env: Any, config: DictConfig, sizes: Any, key: chex.PRNGKey) -> Any:
    loss = functools.partial(
        regularised_q_loss, regularizer_coefficient=float(config.system.regularizer_coefficient)
    )
    return ff_dqn.learner_setup(env, config, sizes, key, loss=loss)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_dqn_reg", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_dqn_reg")
    hydra_entry_point()
