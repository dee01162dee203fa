"""Present Kinetix levels (Matthews et al., 2025: 2-D physics control tasks built on Jax2D)
to Stoix.

A Kinetix level is a scene of shapes, joints, motors and thrusters: the agent drives the
motors and thrusters so that a green shape touches a blue one (+1, the episode ends) and never
a red one (-1, the episode ends), with a small dense reward for closing the distance. Its
`done` joins those ends, a NaN in the physics and its step limit (`EnvParams.max_timesteps`,
256 in the shipped levels). As with Craftax, the adapter builds the level with that limit out of
reach, so Kinetix's `done` is a true end (discount 0), and applies `env.max_episode_steps`
itself (null: the level's own limit) as a truncation (discount 1).

`env.scenario.name` is a level shipped with the package (`s/h0_weak_thrust`; `s`, `m` and `l`
hold the small, medium and large ones); each reset starts the level's scene again.
`env.kwargs.action_type` is `discrete` (one of the motor/thruster commands, or no-op) or
`continuous` (one value in [-1, 1] per motor and thruster). Observations are Kinetix's
`symbolic_flat` vector for the MLP torsos; its `pixels` observation is a struct of an image and
a vector of global information, which no Stoix torso takes yet, so it is refused in one line.
"""

from functools import cached_property
from pathlib import Path
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

# Passed as Kinetix's own `max_timesteps` so that only the adapter's limit ends on time.
_NEVER = 2**30
ACTION_TYPES = ("discrete", "continuous")
OBSERVATION_TYPES = ("symbolic_flat",)


def _shipped_levels() -> list[str]:
    import kinetix

    root = Path(kinetix.__file__).parent / "levels"
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.json"))


def make_kinetix_env(
    level: str, action_type: str = "discrete", observation_type: str = "symbolic_flat"
) -> tuple[Any, Any, int]:
    """(the Kinetix environment starting every episode at `level`, its parameters with the step
    limit disabled, that limit)."""
    if action_type not in ACTION_TYPES:
        raise StoixConfigError(
            f"env.kwargs.action_type={action_type!r} is not supported; choose one of {ACTION_TYPES}."
        )
    if observation_type not in OBSERVATION_TYPES:
        raise StoixConfigError(
            f"env.kwargs.observation_type={observation_type!r} is not supported; choose one of "
            f"{OBSERVATION_TYPES} (Kinetix's pixels come with a global-information vector that "
            "no Stoix torso takes yet)."
        )
    levels = _shipped_levels()
    if level not in levels:
        raise StoixConfigError(
            f"env.scenario.name={level!r} is not a level shipped with Kinetix; choose one of "
            f"{levels[:8]} ... ({len(levels)} levels)."
        )
    from kinetix.environment.env import make_kinetix_env as make
    from kinetix.environment.spaces import ActionType, ObservationType
    from kinetix.util.saving import load_from_json_file

    scene, static_params, params = load_from_json_file(level)
    env = make(
        ActionType.from_string(action_type),
        ObservationType.from_string(observation_type),
        lambda key: scene,
        params,
        static_params,
        auto_reset=False,
    )
    return env, params.replace(max_timesteps=_NEVER), int(params.max_timesteps)


class KinetixState(NamedTuple):
    env_state: Any
    key: chex.PRNGKey


class KinetixToStoix(_jumanji_env.Environment):
    """One Kinetix level with Stoix observations and a time limit that truncates."""

    def __init__(self, env: Any, env_params: Any, max_episode_steps: int):
        self._env = env
        self._params = env_params
        self.max_episode_steps = int(max_episode_steps)
        space = env.action_space(env_params)
        self._discrete = hasattr(space, "n")
        self._num_actions = int(space.n) if self._discrete else int(space.shape[0])
        super().__init__()

    def _observation(self, obs: chex.Array, env_state: Any) -> Observation:
        return Observation(
            agent_view=jnp.asarray(obs, jnp.float32),
            action_mask=jnp.ones((self._num_actions,), jnp.float32),
            step_count=jnp.asarray(env_state.timestep, jnp.int32),
        )

    def reset(self, key: chex.PRNGKey) -> tuple[KinetixState, Any]:
        key, reset_key = jax.random.split(key)
        obs, env_state = self._env.reset_env(reset_key, self._params, None)
        timestep = jumanji_types.restart(self._observation(obs, env_state), extras={})
        return KinetixState(env_state, key), timestep

    def step(self, state: KinetixState, action: chex.Array) -> tuple[KinetixState, Any]:
        key, step_key = jax.random.split(state.key)
        obs, env_state, reward, done, _ = self._env.step_env(step_key, state.env_state, action, self._params)
        # With Kinetix's own limit out of reach, its `done` is a goal, a red contact or a NaN.
        observation = self._observation(obs, env_state)
        timestep = limited_timestep(observation, reward, done, self.max_episode_steps)
        return KinetixState(env_state, key), timestep

    @cached_property
    def observation_spec(self) -> Any:
        return observation_spec(self._env.observation_space(self._params).shape, self._num_actions)

    @cached_property
    def action_spec(self) -> Any:
        if self._discrete:
            return specs.DiscreteArray(num_values=self._num_actions, name="action")
        shape = (self._num_actions,)
        low, high = jnp.full(shape, -1.0, jnp.float32), jnp.full(shape, 1.0, jnp.float32)
        return specs.BoundedArray(shape, jnp.float32, low, high, "action")
