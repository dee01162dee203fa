"""Recurrent networks: a torso, a recurrent cell scanned over time, a second torso and a head.

Inputs are time-major: observations shaped (T, B, ...) and `reset` flags shaped (T, B), where
`reset[t, b]` marks that observation t of environment b is the first of a new episode. The
cell's carry is set back to its initial value (zeros) before such a step, so an episode never
sees its predecessor's memory, and one call over a sequence with a reset in the middle gives
the same outputs after the reset as a fresh call from there.

The cell is chosen by config (`rnn.cell_type`): flax's GRU or LSTM, or a minimal GRU (Feng
et al., 2024, "Were RNNs all we needed?"), whose gates see only the input, a linear
recurrence that is cheap per step.
"""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError

CELL_TYPES = ("gru", "lstm", "min_gru")

Carry = Any  # an array (B, H), or for an LSTM a (cell, hidden) pair of them


class MinGRUCell(nn.Module):
    """h_t = (1 - z_t) * h_{t-1} + z_t * h~_t with z_t and h~_t functions of x_t alone."""

    features: int

    @nn.compact
    def __call__(self, carry: chex.Array, x: chex.Array) -> tuple[chex.Array, chex.Array]:
        z = nn.sigmoid(nn.Dense(self.features, name="gate")(x))
        candidate = nn.Dense(self.features, name="candidate")(x)
        hidden = (1.0 - z) * carry + z * candidate
        return hidden, hidden


def initial_carry(cell_type: str, hidden_size: int, batch_size: int) -> Carry:
    """The carry an episode starts from: zeros, one row per environment."""
    zeros = jnp.zeros((batch_size, hidden_size), jnp.float32)
    return (zeros, zeros) if cell_type == "lstm" else zeros


def reset_carry(carry: Carry, reset: chex.Array) -> Carry:
    """Zero the rows of `carry` whose `reset` (B,) is true."""
    return jax.tree.map(lambda c: jnp.where(reset[:, None], jnp.zeros_like(c), c), carry)


class ScannedRNN(nn.Module):
    """A recurrent cell applied over the leading (time) axis, reset where `reset` is true."""

    cell_type: str = "gru"
    hidden_size: int = 128

    @nn.compact
    def __call__(self, carry: Carry, x: chex.Array, reset: chex.Array) -> tuple[Carry, chex.Array]:
        if self.cell_type == "gru":
            cell = nn.GRUCell(self.hidden_size, name="cell")
        elif self.cell_type == "lstm":
            cell = nn.OptimizedLSTMCell(self.hidden_size, name="cell")
        else:
            cell = MinGRUCell(self.hidden_size, name="cell")

        def step(module: nn.Module, carry: Carry, inputs: tuple) -> tuple[Carry, chex.Array]:
            x_t, reset_t = inputs
            return module(reset_carry(carry, reset_t), x_t)

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        return scan(cell, carry, (x, reset))

    def initial_carry(self, batch_size: int) -> Carry:
        return initial_carry(self.cell_type, self.hidden_size, batch_size)


class RecurrentActor(nn.Module):
    """(carry, observations (T, B, ...), reset (T, B)) -> (carry, action distribution (T, B))."""

    pre_torso: nn.Module
    rnn: ScannedRNN
    post_torso: nn.Module
    action_head: nn.Module

    @nn.compact
    def __call__(self, carry: Carry, observation: Observation, reset: chex.Array) -> tuple[Carry, Any]:
        carry, x = self.rnn(carry, self.pre_torso(observation.agent_view), reset)
        return carry, self.action_head(self.post_torso(x), observation.action_mask)

    def initial_carry(self, batch_size: int) -> Carry:
        return self.rnn.initial_carry(batch_size)


class RecurrentCritic(nn.Module):
    """(carry, observations (T, B, ...), reset (T, B)) -> (carry, values (T, B))."""

    pre_torso: nn.Module
    rnn: ScannedRNN
    post_torso: nn.Module
    critic_head: nn.Module

    @nn.compact
    def __call__(self, carry: Carry, observation: Observation, reset: chex.Array) -> tuple[Carry, chex.Array]:
        carry, x = self.rnn(carry, self.pre_torso(observation.agent_view), reset)
        return carry, self.critic_head(self.post_torso(x))

    def initial_carry(self, batch_size: int) -> Carry:
        return self.rnn.initial_carry(batch_size)


class Identity(nn.Module):
    """No layers (a torso slot left empty in config)."""

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        return x


def _torso(cfg: Any) -> nn.Module:
    import hydra

    return Identity() if cfg is None else hydra.utils.instantiate(cfg)


def make_recurrent_actor(actor_cfg: Any, action_spec: Any) -> RecurrentActor:
    """The recurrent actor of `cfg.network.actor_network` for this action space (the head
    gets its sizes from the spec, as in `make_actor`)."""
    from stoix.networks.base import make_actor

    # make_actor checks the head fits the action space and fills in its sizes.
    head = make_actor(actor_cfg, action_spec).action_head
    return RecurrentActor(
        pre_torso=_torso(actor_cfg.pre_torso),
        rnn=_rnn(actor_cfg),
        post_torso=_torso(actor_cfg.get("post_torso")),
        action_head=head,
    )


def make_recurrent_critic(critic_cfg: Any) -> RecurrentCritic:
    import hydra

    return RecurrentCritic(
        pre_torso=_torso(critic_cfg.pre_torso),
        rnn=_rnn(critic_cfg),
        post_torso=_torso(critic_cfg.get("post_torso")),
        critic_head=hydra.utils.instantiate(critic_cfg.critic_head),
    )


def _rnn(network_cfg: Any) -> ScannedRNN:
    rnn_cfg = network_cfg.get("rnn")
    if rnn_cfg is None:
        raise StoixConfigError(
            "this system needs a recurrent network (a `rnn:` entry in each sub-network); "
            "pick one with network=rnn (discrete actions) or network=rnn_continuous."
        )
    cell_type = str(rnn_cfg.cell_type)
    hidden_size = int(rnn_cfg.hidden_size)
    if cell_type not in CELL_TYPES:
        raise StoixConfigError(
            f"network rnn.cell_type={cell_type!r} is not known; choose one of {list(CELL_TYPES)}."
        )
    if hidden_size < 1:
        raise StoixConfigError(f"network rnn.hidden_size={hidden_size} must be >= 1.")
    return ScannedRNN(cell_type=cell_type, hidden_size=hidden_size)


class RecurrentQNetwork(nn.Module):
    """(carry, observations (T, B, ...), reset (T, B)) -> (carry, Q-values (T, B, actions))."""

    pre_torso: nn.Module
    rnn: ScannedRNN
    post_torso: nn.Module
    q_head: nn.Module

    @nn.compact
    def __call__(self, carry: Carry, observation: Observation, reset: chex.Array) -> tuple[Carry, chex.Array]:
        carry, x = self.rnn(carry, self.pre_torso(observation.agent_view), reset)
        return carry, self.q_head(self.post_torso(x), observation.action_mask)

    def initial_carry(self, batch_size: int) -> Carry:
        return self.rnn.initial_carry(batch_size)


def make_recurrent_q_network(q_cfg: Any, action_spec: Any) -> RecurrentQNetwork:
    """The recurrent Q-network of `cfg.network.actor_network` (network=rnn_dqn); its head gets
    one output per action of the (discrete) action spec."""
    import hydra

    if q_cfg.get("rnn") is None:
        raise StoixConfigError(
            "this system needs a recurrent Q-network (a `rnn:` entry in network.actor_network); "
            "pick one with network=rnn_dqn."
        )
    head = str(q_cfg.action_head._target_)
    if not head.endswith("QNetworkHead"):
        raise StoixConfigError(
            f"network.actor_network.action_head._target_={head} is not a Q-value head; "
            "pick a recurrent Q-network with network=rnn_dqn."
        )
    return RecurrentQNetwork(
        pre_torso=_torso(q_cfg.pre_torso),
        rnn=_rnn(q_cfg),
        post_torso=_torso(q_cfg.get("post_torso")),
        q_head=hydra.utils.instantiate(q_cfg.action_head, action_dim=int(action_spec.num_values)),
    )
