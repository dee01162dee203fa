"""Networks assembled from a torso and a head, as named in `configs/network/*.yaml`."""

from typing import Any

import chex
import flax.linen as nn
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
        raise StoixConfigError(
            f"network.actor_network.action_head._target_={actor_cfg.action_head._target_} does "
            f"not fit this environment's {kind} actions; pick a network for {kind} actions "
            f"(e.g. network={'mlp' if discrete else 'mlp_continuous'})."
        )
    if discrete:
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


def make_critic(critic_cfg: Any) -> FeedForwardCritic:
    """Build the critic named in `cfg.network.critic_network`."""
    import hydra

    return FeedForwardCritic(
        torso=hydra.utils.instantiate(critic_cfg.pre_torso),
        critic_head=hydra.utils.instantiate(critic_cfg.critic_head),
    )
