"""Networks assembled from a torso and a head, as named in `configs/network/*.yaml`."""

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError


class FeedForwardActor(nn.Module):
    """observation -> torso -> action head (a distribution or an action)."""

    torso: nn.Module
    action_head: nn.Module

    @nn.compact
    def __call__(self, observation: Observation):  # noqa: ANN204 (distribution or array)
        return self.action_head(self.torso(observation.agent_view), observation.action_mask)


class FeedForwardCritic(nn.Module):
    """observation -> torso -> scalar value."""

    torso: nn.Module
    critic_head: nn.Module

    @nn.compact
    def __call__(self, observation: Observation) -> chex.Array:
        return self.critic_head(self.torso(observation.agent_view))


def make_actor(actor_cfg: Any, action_spec: Any) -> FeedForwardActor:
    """Build the actor named in `cfg.network.actor_network` for this action space.

    The head gets `action_dim` (and `minimum`/`maximum` for a box), so network configs never
    repeat what the environment already says.
    """
    import hydra

    discrete = hasattr(action_spec, "num_values")
    head_cls = hydra.utils.get_class(actor_cfg.action_head._target_)
    if getattr(head_cls, "discrete_actions", discrete) != discrete:
        kind = "discrete" if discrete else "continuous"
        family = "rnn" if "rnn" in actor_cfg else "mlp"
        raise StoixConfigError(
            f"network.actor_network.action_head._target_={actor_cfg.action_head._target_} does "
            f"not fit this environment's {kind} actions; pick a network for {kind} actions "
            f"(e.g. network={family if discrete else family + '_continuous'})."
        )
    multi = discrete and np.ndim(action_spec.num_values) > 0
    if discrete and bool(getattr(head_cls, "multi_discrete_actions", False)) != multi:
        fix = "network=mlp_multidiscrete" if multi else "network=mlp"
        raise StoixConfigError(
            f"network.actor_network.action_head._target_={actor_cfg.action_head._target_} does "
            f"not fit this environment's {'multi-' if multi else 'single '}discrete actions; "
            f"use {fix}."
        )
    if multi:
        head_kwargs = {"action_dims": np.asarray(action_spec.num_values).astype(int).tolist()}
    elif discrete:
        head_kwargs = {"action_dim": int(action_spec.num_values)}
    else:
        head_kwargs = {
            "action_dim": int(action_spec.shape[-1]),
            "minimum": np.asarray(action_spec.minimum, np.float32).tolist(),
            "maximum": np.asarray(action_spec.maximum, np.float32).tolist(),
        }
    return FeedForwardActor(
        torso=hydra.utils.instantiate(actor_cfg.pre_torso),
        action_head=hydra.utils.instantiate(actor_cfg.action_head, **head_kwargs),
    )


_IMAGE_TORSOS = ("CNNTorso", "VisualResNetTorso")


def check_torsos_fit(network_cfg: Any, obs_shape: tuple[int, ...], env_label: str) -> None:
    """Image torsos for (H, W, C) observations, the others for flat ones: a mismatch is a
    StoixConfigError naming the network to pick, raised before anything compiles."""
    images = len(obs_shape) == 3
    for name, sub_network in network_cfg.items():
        torso = sub_network.get("pre_torso") if hasattr(sub_network, "get") else None
        if torso is None or "_target_" not in torso:
            continue
        torso_name = str(torso._target_).rsplit(".", 1)[-1]
        if images and torso_name not in _IMAGE_TORSOS:
            raise StoixConfigError(
                f"network.{name}.pre_torso ({torso_name}) takes flat observations, but {env_label} "
                f"gives images shaped {tuple(obs_shape)}; use network=cnn or network=visual_resnet."
            )
        if not images and torso_name in _IMAGE_TORSOS:
            raise StoixConfigError(
                f"network.{name}.pre_torso ({torso_name}) takes (H, W, C) images, but {env_label} "
                f"gives observations shaped {tuple(obs_shape)}; use an MLP network (the system's default)."
            )


class QCritics(nn.Module):
    """(observation, action) -> `len(torsos)` independent Q-critics, stacked on a new leading
    axis: (num_critics, ...) for scalar heads, (num_critics, ..., atoms) for distributional
    ones. The action is concatenated to the flat observation (continuous control)."""

    torsos: Sequence[nn.Module]
    critic_heads: Sequence[nn.Module]

    @nn.compact
    def __call__(self, observation: Observation, action: chex.Array) -> Any:
        x = jnp.concatenate([observation.agent_view.astype(jnp.float32), action.astype(jnp.float32)], -1)
        outputs = [head(torso(x)) for torso, head in zip(self.torsos, self.critic_heads, strict=True)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)


def make_q_critics(critic_cfg: Any, num_critics: int) -> QCritics:
    """`num_critics` Q-critics built from `cfg.network.q_network` (each its own parameters)."""
    import hydra

    return QCritics(
        torsos=tuple(hydra.utils.instantiate(critic_cfg.pre_torso) for _ in range(num_critics)),
        critic_heads=tuple(hydra.utils.instantiate(critic_cfg.critic_head) for _ in range(num_critics)),
    )


def make_critic(critic_cfg: Any) -> FeedForwardCritic:
    """Build the critic named in `cfg.network.critic_network`."""
    import hydra

    return FeedForwardCritic(
        torso=hydra.utils.instantiate(critic_cfg.pre_torso),
        critic_head=hydra.utils.instantiate(critic_cfg.critic_head),
    )
