"""Munchausen DQN (Vieillard et al., 2020, arXiv:2007.14430) on Anakin.

From ff_dqn.py; what changed is the target. With a softmax policy pi = softmax(Q_target/tau),
the reward gets a scaled, clipped log-policy bonus alpha * tau * max(log pi(a|s), l0), and the
bootstrap is the soft value sum_a' pi(a'|s') (Q_target(s', a') - tau log pi(a'|s')). rlax has
no Munchausen loss, so it is written here and tested against hand-computed numbers. With
n-step returns the bonus is added once, to the first transition's reward.

    python stoix/systems/q_learning/ff_mdqn.py
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
from stoix.systems.q_learning import ff_dqn
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.multistep import n_step_bootstrap


# ALGO LOGIC: the only change from ff_dqn.py.
def munchausen_q_loss(
    online_params: Any,
    target_params: Any,
    batch: ff_dqn.QTransition,
    *,
    apply_fn: Callable,
    gamma: float,
    loss: str,
    huber_delta: float,
    entropy_temperature: float,
    munchausen_coefficient: float,
    clip_value_min: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    tau = entropy_temperature
    obs = jax.tree.map(lambda x: x[:, 0], batch.obs)
    action = batch.action[:, 0]
    q_tm1 = apply_fn(online_params, obs)
    g, discount, index = n_step_bootstrap(batch.reward, batch.discount, batch.done, gamma)
    next_obs = jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), index], batch.next_obs)
    # Munchausen bonus: the target network's log-policy of the action taken.
    log_pi_tm1 = jax.nn.log_softmax(apply_fn(target_params, obs) / tau, axis=-1)
    log_pi_a = jnp.take_along_axis(log_pi_tm1, action[:, None], axis=-1)[:, 0]
    bonus = munchausen_coefficient * tau * jnp.clip(log_pi_a, clip_value_min, 0.0)
    # Soft bootstrap value under the target network's softmax policy.
    q_t = apply_fn(target_params, next_obs)
    log_pi_t = jax.nn.log_softmax(q_t / tau, axis=-1)
    soft_value = jnp.sum(jnp.exp(log_pi_t) * (q_t - tau * log_pi_t), axis=-1)
    target = jax.lax.stop_gradient(g + bonus + discount * soft_value)
    td_error = target - jnp.take_along_axis(q_tm1, action[:, None], axis=-1)[:, 0]
    value = ff_dqn.td_loss(td_error, loss, huber_delta)
    return value, {"q_loss": value, "mean_q": jnp.mean(q_tm1), "munchausen_bonus": jnp.mean(bonus)}


def learner_setup(env: Any, config: DictConfig, sizes: Any, key: chex.PRNGKey) -> Any:
    cfg = config.system
    loss = functools.partial(
        munchausen_q_loss,
        entropy_temperature=float(cfg.entropy_temperature),
        munchausen_coefficient=float(cfg.munchausen_coefficient),
        clip_value_min=float(cfg.clip_value_min),
    )
    return ff_dqn.learner_setup(env, config, sizes, key, loss=loss)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_mdqn", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_mdqn")
    hydra_entry_point()
