"""Present Navix environments (MiniGrid re-written in JAX) to Stoix.

Navix marks each step TRANSITION, TRUNCATION (its `max_steps` reached) or TERMINATION (the
goal reached, lava entered); a termination on the last allowed step counts as a termination.
The adapter keeps that split: discount 0 only on TERMINATION. `env.max_episode_steps` is
passed to Navix as `max_steps` (Navix's `make` defaults to 100).

The agent sees Navix's own observation (`observation_fn`, default `symbolic`: the fully
observed (height, width, 3) grid of object, colour and state ids), flattened into floats for
the MLP torsos. Navix has no action mask: its seven actions are always legal.
"""

from functools import cached_property
from typing import Any

import chex
import jax.numpy as jnp
import numpy as np

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError
from stoix.utils.light_import import import_module_lightly

_jumanji_env = import_module_lightly("jumanji.env", ["jumanji"])
specs = import_module_lightly("jumanji.specs", ["jumanji"])
jumanji_types = import_module_lightly("jumanji.types", ["jumanji"])

# Navix's observation functions by name (navix.observations), for `env.kwargs.observation_fn`.
_OBSERVATIONS = ("symbolic", "symbolic_first_person", "categorical", "categorical_first_person")


def make_navix_env(name: str, max_episode_steps: int, **env_kwargs: Any) -> Any:
    """A Navix environment from its registry name; `observation_fn` is a name from _OBSERVATIONS."""
    import navix

    if name not in navix.registry():
        raise StoixConfigError(
            f"env.scenario.name={name!r} is not a Navix environment; "
            f"choose one of {sorted(navix.registry())}."
        )
    observation = env_kwargs.pop("observation_fn", "symbolic")
    if observation not in _OBSERVATIONS:
        raise StoixConfigError(
            f"env.kwargs.observation_fn={observation!r} is not supported; choose one of {_OBSERVATIONS}."
        )
    try:
        return navix.make(
            name,
            max_steps=int(max_episode_steps),
            observation_fn=getattr(navix.observations, observation),
            **env_kwargs,
        )
    except TypeError as error:
        raise StoixConfigError(f"env.kwargs={env_kwargs} cannot build Navix {name!r}: {error}") from error


class NavixToStoix(_jumanji_env.Environment):
    """One Navix environment with Stoix observations; its `max_steps` truncates."""

    def __init__(self, env: Any):
        self._env = env
        self.max_episode_steps = int(env.max_steps)
        self._num_actions = len(env.action_set)
        super().__init__()

    def _observation(self, native: Any) -> Observation:
        return Observation(
            agent_view=jnp.asarray(native.observation, jnp.float32).reshape(-1),
            action_mask=jnp.ones((self._num_actions,), jnp.float32),
            step_count=jnp.asarray(native.t, jnp.int32),
        )

    def reset(self, key: chex.PRNGKey) -> tuple[Any, Any]:
        # Navix's Timestep (it holds the state) is this adapter's state.
        native = self._env.reset(key)
        return native, jumanji_types.restart(self._observation(native), extras={})

    def step(self, state: Any, action: chex.Array) -> tuple[Any, Any]:
        # NOTE: Navix's public `step` resets inside a `lax.cond` when the previous step ended,
        # which under vmap computes both branches every step; Stoix's AutoReset resets already,
        # so the step alone (`_step`, what `step` calls) is taken. navix is pinned below 0.7.5.
        native = self._env._step(state, action)
        from navix.environments.environment import StepType

        terminated = native.step_type == StepType.TERMINATION
        timestep = jumanji_types.TimeStep(
            step_type=jnp.where(
                native.step_type != StepType.TRANSITION,
                jumanji_types.StepType.LAST,
                jumanji_types.StepType.MID,
            ),
            reward=jnp.asarray(native.reward, jnp.float32),
            # NOTE: discount 0 only on a true termination; a time-limit end bootstraps.
            discount=jnp.where(terminated, 0.0, 1.0).astype(jnp.float32),
            observation=self._observation(native),
            extras={},
        )
        return native, timestep

    @cached_property
    def observation_spec(self) -> Any:
        size = int(np.prod(self._env.observation_space.shape))
        return specs.Spec(
            Observation,
            "ObservationSpec",
            agent_view=specs.Array((size,), jnp.float32, "agent_view"),
            action_mask=specs.Array((self._num_actions,), jnp.float32, "action_mask"),
            step_count=specs.Array((), jnp.int32, "step_count"),
        )

    @cached_property
    def action_spec(self) -> Any:
        return specs.DiscreteArray(num_values=self._num_actions, name="action")
