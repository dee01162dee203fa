"""Present Brax environments with Stoix observations and truncation-aware timesteps.

A bare Brax environment (`brax.envs.get_environment`, without Brax's `EpisodeWrapper`) reports
only natural termination in `state.done` (the hopper falls, the ant flips); the time limit is
counted here, so a time-limit end keeps discount 1 and bootstraps while a fall ends with
discount 0. Actions are a Box in [-1, 1] per actuator.

The physics backend comes from `env.kwargs.backend`; the configs default to `positional`,
the cheapest to compile and step on a CPU (`spring` is close; `generalized` and `mjx` are
the accurate, slow ones).
"""

import warnings
from functools import cached_property
from typing import Any, NamedTuple

import chex
import jax.numpy as jnp

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError
from stoix.utils.light_import import import_module_lightly
from stoix.wrappers.limits import limited_timestep, observation_spec

_jumanji_env = import_module_lightly("jumanji.env", ["jumanji"])
specs = import_module_lightly("jumanji.specs", ["jumanji"])
jumanji_types = import_module_lightly("jumanji.types", ["jumanji"])


def make_brax_env(name: str, **env_kwargs: Any) -> Any:
    """A bare Brax environment (no episode or auto-reset wrappers) from its registry name."""
    with warnings.catch_warnings():
        # NOTE: brax warns on every import that its pipelines are in maintenance mode (MJX is
        # the successor); the environments here are the ones it still ships and tests.
        warnings.filterwarnings("ignore", message="Brax System, piplines", category=UserWarning)
        from brax import envs

        if name not in envs._envs:
            raise StoixConfigError(
                f"env.scenario.name={name!r} is not a Brax environment; choose one of {sorted(envs._envs)}."
            )
        try:
            return envs.get_environment(name, **env_kwargs)
        except (TypeError, ValueError, KeyError) as error:
            raise StoixConfigError(f"env.kwargs={env_kwargs} cannot build Brax {name!r}: {error}") from error


class BraxState(NamedTuple):
    env_state: Any
    step_count: chex.Array


class BraxToStoix(_jumanji_env.Environment):
    """One environment with Brax's API (a Brax task, or a MuJoCo Playground task, see
    playground.py) with Stoix observations and a time limit that truncates."""

    def __init__(self, env: Any, max_episode_steps: int):
        self._env = env
        self.max_episode_steps = int(max_episode_steps)
        super().__init__()

    def _observation(self, obs: chex.Array, step_count: chex.Array) -> Observation:
        return Observation(
            agent_view=jnp.asarray(obs, jnp.float32),
            action_mask=jnp.ones((self._env.action_size,), jnp.float32),
            step_count=step_count,
        )

    def reset(self, key: chex.PRNGKey) -> tuple[BraxState, Any]:
        env_state = self._env.reset(key)
        step_count = jnp.zeros((), jnp.int32)
        timestep = jumanji_types.restart(self._observation(env_state.obs, step_count), extras={})
        return BraxState(env_state, step_count), timestep

    def step(self, state: BraxState, action: chex.Array) -> tuple[BraxState, Any]:
        env_state = self._env.step(state.env_state, action)
        step_count = state.step_count + 1
        observation = self._observation(env_state.obs, step_count)
        terminated = env_state.done > 0.5
        timestep = limited_timestep(observation, env_state.reward, terminated, self.max_episode_steps)
        return BraxState(env_state, step_count), timestep

    @cached_property
    def observation_spec(self) -> Any:
        return observation_spec((int(self._env.observation_size),), int(self._env.action_size))

    @cached_property
    def action_spec(self) -> Any:
        shape = (int(self._env.action_size),)
        low, high = jnp.full(shape, -1.0, jnp.float32), jnp.full(shape, 1.0, jnp.float32)
        return specs.BoundedArray(shape, jnp.float32, low, high, "action")
