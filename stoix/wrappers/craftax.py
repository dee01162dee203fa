"""Present Craftax Classic (Crafter re-written in JAX) to Stoix.

Craftax's `done` joins two ends: the player dying (health 0, or walking into lava) and its
step limit (`EnvParams.max_timesteps`, 10,000). The adapter builds the task with that limit
out of reach, so Craftax's `done` is a death only (discount 0), and applies
`env.max_episode_steps` itself (null: Craftax's own 10,000) as a truncation (discount 1).

Observations are Craftax's own: Classic-Symbolic is a flat vector of 1,345 values in [0, 1]
(the 7x9 local map one-hot, inventory, intrinsics, direction) for the MLP torsos;
Classic-Pixels is a (63, 63, 3) float image in [0, 1] for `network=cnn`. Craftax has no
action mask in its API: all 17 actions are always accepted (an impossible craft is a no-op).
The reward is +1 per achievement unlocked plus 0.1 per health point gained (minus lost).
"""

from functools import cached_property
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError
from stoix.utils.light_import import import_module_lightly
from stoix.wrappers.limits import limited_timestep, observation_spec

_jumanji_env = import_module_lightly("jumanji.env", ["jumanji"])
specs = import_module_lightly("jumanji.specs", ["jumanji"])
jumanji_types = import_module_lightly("jumanji.types", ["jumanji"])

# Passed as Craftax's own `max_timesteps` so that only the adapter's limit ends on time.
_NEVER = 2**30

# Craftax name -> (module under craftax, class without auto-reset).
CRAFTAX_ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "Craftax-Classic-Symbolic-v1": (
        "craftax_classic.envs.craftax_symbolic_env",
        "CraftaxClassicSymbolicEnvNoAutoReset",
    ),
    "Craftax-Classic-Pixels-v1": (
        "craftax_classic.envs.craftax_pixels_env",
        "CraftaxClassicPixelsEnvNoAutoReset",
    ),
}


def make_craftax_env(name: str, **env_params: Any) -> tuple[Any, Any, int]:
    """(the Craftax environment, its parameters with the step limit disabled, that limit);
    `env_params` replace fields of Craftax's EnvParams (day_length, spawn chances, ...)."""
    if name not in CRAFTAX_ENVIRONMENTS:
        raise StoixConfigError(
            f"env.scenario.name={name!r} is not a supported Craftax environment; "
            f"choose one of {sorted(CRAFTAX_ENVIRONMENTS)}."
        )
    module_name, class_name = CRAFTAX_ENVIRONMENTS[name]
    module = import_module_lightly(f"craftax.{module_name}", ["craftax"])
    env = getattr(module, class_name)()
    params = env.default_params
    unknown = sorted(set(env_params) - set(params.__dataclass_fields__))
    if unknown:
        raise StoixConfigError(
            f"env.kwargs {unknown}: Craftax has no such parameter; its parameters are "
            f"{sorted(params.__dataclass_fields__)}."
        )
    params = params.replace(**env_params)
    return env, params.replace(max_timesteps=_NEVER), int(params.max_timesteps)


class CraftaxState(NamedTuple):
    env_state: Any
    key: chex.PRNGKey


class CraftaxToStoix(_jumanji_env.Environment):
    """One Craftax environment with Stoix observations and a time limit that truncates."""

    def __init__(self, env: Any, env_params: Any, max_episode_steps: int):
        self._env = env
        self._params = env_params
        self.max_episode_steps = int(max_episode_steps)
        super().__init__()

    def _observation(self, obs: chex.Array, env_state: Any) -> Observation:
        return Observation(
            agent_view=jnp.asarray(obs, jnp.float32),
            action_mask=jnp.ones((self._env.num_actions,), jnp.float32),
            step_count=jnp.asarray(env_state.timestep, jnp.int32),
        )

    def reset(self, key: chex.PRNGKey) -> tuple[CraftaxState, Any]:
        key, reset_key = jax.random.split(key)
        obs, env_state = self._env.reset_env(reset_key, self._params)
        return CraftaxState(env_state, key), jumanji_types.restart(
            self._observation(obs, env_state), extras={}
        )

    def step(self, state: CraftaxState, action: chex.Array) -> tuple[CraftaxState, Any]:
        key, step_key = jax.random.split(state.key)
        obs, env_state, reward, done, _ = self._env.step_env(step_key, state.env_state, action, self._params)
        # With Craftax's own limit out of reach, its `done` is a death. Its info (achievement
        # rates) is dropped.
        observation = self._observation(obs, env_state)
        timestep = limited_timestep(observation, reward, done, self.max_episode_steps)
        return CraftaxState(env_state, key), timestep

    @cached_property
    def observation_spec(self) -> Any:
        return observation_spec(self._env.observation_space(self._params).shape, self._env.num_actions)

    @cached_property
    def action_spec(self) -> Any:
        return specs.DiscreteArray(num_values=int(self._env.num_actions), name="action")
