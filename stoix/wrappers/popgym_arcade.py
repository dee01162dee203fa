"""Present POPGym Arcade games (Morad et al., 2025: memory and POMDP games rendered as pixels)
through Stoix's Jumanji API, with truncation-aware timesteps.

POPGym Arcade games are gymnax environments: `step_env` returns `done` and an info dict that
says whether the game ended on its own (`terminated`: every card played, a mine hit, the ship
sunk) or at its step limit (`truncated`). The adapter keeps the two apart: a termination ends
with discount 0, a time-limit end with discount 1 so the learner bootstraps;
`env.max_episode_steps` (if set) truncates earlier.

Every game renders a (obs_size, obs_size, 3) uint8 image (obs_size 128 or 256); with
`partial_obs: true` the image hides what the agent must remember. `downsample: k` averages
k x k pixel blocks and flattens the result into floats in [0, 1], a vector the MLP and
recurrent torsos (network=rnn) take on CPU; `downsample: null` keeps the image for the CNN
torsos.
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

# Game family -> its module under popgym_arcade.environments. A game id is the family and a
# difficulty: CountRecallEasy, NavigatorHard, ...
POPGYM_ARCADE_FAMILIES: dict[str, str] = {
    "AutoEncode": "autoencode",
    "BattleShip": "battleship",
    "Breakout": "breakout",
    "CartPole": "cartpole",
    "CountRecall": "countrecall",
    "MineSweeper": "minesweeper",
    "Navigator": "navigator",
    "NoisyCartPole": "cartpole",
    "Skittles": "skittles",
    "Tetris": "tetris",
}
DIFFICULTIES = ("Easy", "Medium", "Hard")
POPGYM_ARCADE_ENVIRONMENTS = tuple(f"{f}{d}" for f in POPGYM_ARCADE_FAMILIES for d in DIFFICULTIES)


def make_popgym_arcade_env(name: str, **env_kwargs: Any) -> tuple[Any, Any]:
    """(the game, its default parameters) from its id, importing only that game's module."""
    if name not in POPGYM_ARCADE_ENVIRONMENTS:
        raise StoixConfigError(
            f"env.scenario.name={name!r} is not a POPGym Arcade game; choose one of "
            f"{sorted(POPGYM_ARCADE_ENVIRONMENTS)}."
        )
    family = name.removesuffix(next(d for d in DIFFICULTIES if name.endswith(d)))
    # NOTE: popgym_arcade's `__init__` imports every game (and builds their render templates);
    # deferring it keeps the other games out of the process.
    module = import_module_lightly(
        f"popgym_arcade.environments.{POPGYM_ARCADE_FAMILIES[family]}",
        ["gymnax", "gymnax.environments", "popgym_arcade", "popgym_arcade.environments"],
    )
    env = getattr(module, name)(**env_kwargs)
    own = [vars(c) for c in type(env).__mro__ if c.__module__.startswith("popgym_arcade")]
    if any("is_terminal" in v for v in own) and not any("is_terminated" in v for v in own):
        # NOTE: CartPole and Breakout were written against popgym-arcade's gymnax fork
        # (stable-gymnax, which pyproject.toml keeps out) and define only `is_terminal`;
        # gymnax 1.x's `discount` (called in their `step_env`) asks `is_terminated`.
        env.is_terminated = env.is_terminal
    return env, env.default_params


class PopGymArcadeState(NamedTuple):
    env_state: Any
    key: chex.PRNGKey
    step_count: chex.Array


class PopGymArcadeToStoix(_jumanji_env.Environment):
    """One POPGym Arcade game with Stoix observations: its image, or with `downsample` a flat
    vector of k x k block means; all actions are always legal."""

    def __init__(self, env: Any, env_params: Any, max_episode_steps: int | None, downsample: int | None):
        self._env = env
        self._params = env_params
        self._num_actions = int(env.action_space(env_params).n)
        size = int(env.observation_space(env_params).shape[0])
        if downsample is not None and (int(downsample) < 1 or size % int(downsample)):
            raise StoixConfigError(
                f"env.downsample={downsample} must be a positive divisor of the image size {size} "
                "(e.g. 4 or 8), or null for the image itself."
            )
        self._downsample = None if downsample is None else int(downsample)
        own = getattr(env, "max_steps_in_episode", None) or getattr(env, "max_episode_length", None)
        self._limit = int(max_episode_steps) if max_episode_steps is not None else None
        limit = self._limit if self._limit is not None else own
        if limit is not None:
            # Read by the evaluator as its step cap.
            self.max_episode_steps = int(limit)
        super().__init__()

    def _view(self, image: chex.Array) -> chex.Array:
        if self._downsample is None:
            return image
        k = self._downsample
        size, _, channels = image.shape
        blocks = image.astype(jnp.float32).reshape(size // k, k, size // k, k, channels)
        return (blocks.mean(axis=(1, 3)) / 255.0).reshape(-1)

    def _observation(self, image: chex.Array, step_count: chex.Array) -> Observation:
        return Observation(
            agent_view=self._view(image),
            action_mask=jnp.ones((self._num_actions,), jnp.float32),
            step_count=step_count,
        )

    def reset(self, key: chex.PRNGKey) -> tuple[PopGymArcadeState, Any]:
        key, reset_key = jax.random.split(key)
        image, env_state = self._env.reset_env(reset_key, self._params)
        step_count = jnp.zeros((), jnp.int32)
        timestep = jumanji_types.restart(self._observation(image, step_count), shape=(), extras={})
        return PopGymArcadeState(env_state, key, step_count), timestep

    def step(self, state: PopGymArcadeState, action: chex.Array) -> tuple[PopGymArcadeState, Any]:
        key, step_key = jax.random.split(state.key)
        image, env_state, reward, done, info = self._env.step_env(
            step_key, state.env_state, action, self._params
        )
        step_count = state.step_count + 1
        terminated = jnp.asarray(done, bool) & jnp.asarray(info["terminated"], bool)
        truncated = jnp.asarray(done, bool) & ~terminated
        if self._limit is not None:
            truncated = truncated | ((step_count >= self._limit) & ~terminated)
        episode_over = terminated | truncated
        timestep = jumanji_types.TimeStep(
            step_type=jnp.where(episode_over, jumanji_types.StepType.LAST, jumanji_types.StepType.MID),
            reward=jnp.asarray(reward, jnp.float32),
            # NOTE: discount 0 only on a true termination; a time-limit end bootstraps.
            discount=jnp.where(terminated, 0.0, 1.0).astype(jnp.float32),
            observation=self._observation(image, step_count),
            extras={},
        )
        return PopGymArcadeState(env_state, key, step_count), timestep

    @cached_property
    def observation_spec(self) -> Any:
        shape = tuple(self._env.observation_space(self._params).shape)
        if self._downsample is None:
            view = specs.Array(shape, jnp.uint8, "agent_view")
        else:
            k = self._downsample
            view = specs.Array(((shape[0] // k) * (shape[1] // k) * shape[2],), jnp.float32, "agent_view")
        return specs.Spec(
            Observation,
            "ObservationSpec",
            agent_view=view,
            action_mask=specs.Array((self._num_actions,), jnp.float32, "action_mask"),
            step_count=specs.Array((), jnp.int32, "step_count"),
        )

    @cached_property
    def action_spec(self) -> Any:
        return specs.DiscreteArray(num_values=self._num_actions, name="action")
