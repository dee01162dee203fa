"""Present gymnax environments through Jumanji's `Environment` API.

gymnax's `step_env` reports natural termination only; the time limit is checked here, so a
truncated episode ends with discount 1 (bootstrap from the final observation) while a
terminated one ends with discount 0.
"""

from functools import cached_property
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError
from stoix.utils.light_import import import_module_lightly

_jumanji_env = import_module_lightly("jumanji.env", ["jumanji"])
specs = import_module_lightly("jumanji.specs", ["jumanji"])
jumanji_types = import_module_lightly("jumanji.types", ["jumanji"])

# gymnax id -> (module under gymnax.environments, class name). Importing one module is
# far cheaper than `gymnax.make`, which imports every environment and its plotting stack.
GYMNAX_ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "CartPole-v1": ("classic_control.cartpole", "CartPole"),
    "Acrobot-v1": ("classic_control.acrobot", "Acrobot"),
    "MountainCar-v0": ("classic_control.mountain_car", "MountainCar"),
    "MountainCarContinuous-v0": ("classic_control.continuous_mountain_car", "ContinuousMountainCar"),
    "Pendulum-v1": ("classic_control.pendulum", "Pendulum"),
    "Asterix-MinAtar": ("minatar.asterix", "MinAsterix"),
    "Breakout-MinAtar": ("minatar.breakout", "MinBreakout"),
    "Freeway-MinAtar": ("minatar.freeway", "MinFreeway"),
    "SpaceInvaders-MinAtar": ("minatar.space_invaders", "MinSpaceInvaders"),
    "MemoryChain-bsuite": ("bsuite.memory_chain", "MemoryChain"),
}


class GymnaxState(NamedTuple):
    env_state: Any
    key: chex.PRNGKey


def make_gymnax_env(name: str, **env_kwargs: Any) -> tuple[Any, Any]:
    """Build a gymnax environment and its default parameters from its id."""
    if name not in GYMNAX_ENVIRONMENTS:
        raise StoixConfigError(
            f"env.scenario.name={name!r} is not a known gymnax environment; "
            f"choose one of {sorted(GYMNAX_ENVIRONMENTS)}."
        )
    module_name, class_name = GYMNAX_ENVIRONMENTS[name]
    module = import_module_lightly(f"gymnax.environments.{module_name}", ["gymnax", "gymnax.environments"])
    env = getattr(module, class_name)(**env_kwargs)
    return env, env.default_params


class GymnaxToJumanji(_jumanji_env.Environment):
    """One gymnax environment with Stoix observations and truncation-aware timesteps."""

    def __init__(self, env: Any, env_params: Any):
        self._env = env
        self._params = env_params
        self._num_actions = int(env.num_actions)
        self._discrete = not hasattr(env.action_space(env_params), "low")
        self.max_episode_steps = int(env_params.max_steps_in_episode)
        super().__init__()

    def _observation(self, obs: chex.Array, env_state: Any) -> Observation:
        mask_size = self._num_actions if self._discrete else self.action_spec.shape[-1]
        return Observation(
            agent_view=obs.astype(jnp.float32),
            action_mask=jnp.ones((mask_size,), jnp.float32),
            step_count=jnp.asarray(env_state.time, jnp.int32),
        )

    def reset(self, key: chex.PRNGKey) -> tuple[GymnaxState, Any]:
        key, reset_key = jax.random.split(key)
        obs, env_state = self._env.reset_env(reset_key, self._params)
        timestep = jumanji_types.restart(observation=self._observation(obs, env_state), shape=(), extras={})
        return GymnaxState(env_state=env_state, key=key), timestep

    def step(self, state: GymnaxState, action: chex.Array) -> tuple[GymnaxState, Any]:
        key, step_key = jax.random.split(state.key)
        obs, env_state, reward, terminated, _ = self._env.step_env(
            step_key, state.env_state, action, self._params
        )
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.logical_and(env_state.time >= self.max_episode_steps, ~terminated)
        episode_over = jnp.logical_or(terminated, truncated)
        timestep = jumanji_types.TimeStep(
            step_type=jnp.where(episode_over, jumanji_types.StepType.LAST, jumanji_types.StepType.MID),
            reward=jnp.asarray(reward, jnp.float32),
            # NOTE: discount is 0 only on a true termination; a time-limit end keeps 1 so the
            # learner bootstraps from the final observation.
            discount=jnp.where(terminated, 0.0, 1.0).astype(jnp.float32),
            observation=self._observation(obs, env_state),
            extras={},
        )
        return GymnaxState(env_state=env_state, key=key), timestep

    @cached_property
    def observation_spec(self) -> Any:
        space = self._env.observation_space(self._params)
        mask_size = self._num_actions if self._discrete else self.action_spec.shape[-1]
        return specs.Spec(
            Observation,
            "ObservationSpec",
            agent_view=specs.Array(tuple(space.shape), jnp.float32, "agent_view"),
            action_mask=specs.Array((mask_size,), jnp.float32, "action_mask"),
            step_count=specs.Array((), jnp.int32, "step_count"),
        )

    @cached_property
    def action_spec(self) -> Any:
        space = self._env.action_space(self._params)
        if self._discrete:
            return specs.DiscreteArray(num_values=int(space.n), name="action")
        low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
        high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)
        return specs.BoundedArray(tuple(space.shape), jnp.float32, low, high, "action")
