"""Double DQN (van Hasselt et al., 2016, arXiv:1509.06461) on Anakin.

From ff_dqn.py; what changed is the target: the online network picks the next action and the
target network values it (rlax.double_q_learning), which removes DQN's max-operator bias.
Everything else (replay, exploration, target updates, n-step returns) is ff_dqn.py's.

    python stoix/systems/q_learning/ff_ddqn.py network=mlp_dueling_dqn
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
def double_q_learning_loss(
    online_params: Any,
    target_params: Any,
    batch: ff_dqn.QTransition,
    *,
    apply_fn: Callable,
    gamma: float,
    loss: str,
    huber_delta: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """n-step double Q-learning: bootstrap with Q_target(s', argmax_a Q_online(s', a))."""
    q_tm1 = apply_fn(online_params, jax.tree.map(lambda x: x[:, 0], batch.obs))
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    next_obs = jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], batch.next_obs)
    q_t_value = apply_fn(target_params, next_obs)
    q_t_selector = apply_fn(online_params, next_obs)
    td_error = jax.vmap(rlax.double_q_learning)(
        q_tm1, batch.action[:, 0], g, discount, q_t_value, q_t_selector
    )
    value = ff_dqn.td_loss(td_error, loss, huber_delta)
    return value, {"q_loss": value, "mean_q": jnp.mean(q_tm1)}


learner_setup = functools.partial(ff_dqn.learner_setup, loss=double_q_learning_loss)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_ddqn", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_ddqn")
    hydra_entry_point()
