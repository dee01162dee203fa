"""Present Jumanji environments with Stoix observations and truncation-aware timesteps.

Jumanji already speaks this TimeStep API, but Snake and Maze end an episode at their own time
limit with `termination` (discount 0), which would teach the agent that the clock is a wall.
So the adapter builds those tasks with their limit out of reach and applies
`env.max_episode_steps` itself (default: the task's own limit): a time-limit end keeps
discount 1 and bootstraps; a real termination (the snake hits itself, the 2048 board is full,
the maze target is reached) keeps Jumanji's discount 0.

Jumanji observations are structured (Snake's feature grid, 2048's board of exponents, Maze's
walls and positions); one small function per task turns each into the flat float vector the
MLP torsos take, and the task's own `action_mask` is passed through (all ones for a task
without one, Sokoban).

Connector and RobotWarehouse are multi-agent: one controller picks every agent's move, so the
action is multi-discrete (one choice per agent, network=mlp_multidiscrete), the mask is
(agents, choices), and Connector's per-agent rewards are summed into the team's reward.
"""

from collections.abc import Callable
from functools import cached_property
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError
from stoix.utils.light_import import import_module_lightly

_jumanji_env = import_module_lightly("jumanji.env", ["jumanji"])
specs = import_module_lightly("jumanji.specs", ["jumanji"])
jumanji_types = import_module_lightly("jumanji.types", ["jumanji"])

# An episode limit no run reaches: passed as a task's own `time_limit` so that only the
# adapter's truncation ends an episode on time.
_NEVER = 2**30


def _snake_view(obs: Any) -> chex.Array:
    """(rows, cols, 5) feature maps: body, head, tail, fruit, body order."""
    return obs.grid.astype(jnp.float32).reshape(-1)


def _game_2048_view(obs: Any) -> chex.Array:
    """Each cell's exponent one-hot (0 = empty); a 4x4 board reaches at most 2**17."""
    board = obs.board
    return jax.nn.one_hot(board, board.shape[-1] ** 2 + 2, dtype=jnp.float32).reshape(-1)


def _maze_view(obs: Any) -> chex.Array:
    """Walls, the agent's cell and the target's cell as three (rows, cols) planes."""
    walls = obs.walls
    rows, cols = jnp.arange(walls.shape[0])[:, None], jnp.arange(walls.shape[1])[None, :]
    agent = (rows == obs.agent_position.row) & (cols == obs.agent_position.col)
    target = (rows == obs.target_position.row) & (cols == obs.target_position.col)
    return jnp.stack([walls, agent, target], axis=-1).astype(jnp.float32).reshape(-1)


def _connector_view(obs: Any) -> chex.Array:
    """Each cell's value one-hot: empty, or agent i's path, head or target (3 * i + 1..3)."""
    num_agents = obs.action_mask.shape[-2]
    return jax.nn.one_hot(obs.grid, 3 * num_agents + 1, dtype=jnp.float32).reshape(-1)


def _robot_warehouse_view(obs: Any) -> chex.Array:
    """Every robot's own view (its position, direction, carried shelf and the nearby cells'
    robots, directions, shelves and requests), concatenated."""
    return obs.agents_view.astype(jnp.float32).reshape(-1)


def _sokoban_view(obs: Any) -> chex.Array:
    """The fixed (walls, targets) and variable (agent, boxes) grids, each cell's code one-hot
    over Sokoban's 7 object codes."""
    return jax.nn.one_hot(obs.grid, 7, dtype=jnp.float32).reshape(-1)


def _sokoban_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`generator: toy | simple_solve | huggingface` (with `dataset_name`) -> a Jumanji generator.
    Jumanji's own default downloads the Boxoban levels from Hugging Face, so Stoix defaults to
    the toy generator (two fixed levels, no download) and downloads only when asked."""
    kwargs = dict(kwargs)
    name = kwargs.pop("generator", "toy")
    dataset = kwargs.pop("dataset_name", "unfiltered-train")
    generators = import_module_lightly(
        "jumanji.environments.routing.sokoban.generator",
        ["jumanji", "jumanji.environments", "jumanji.environments.routing"],
    )
    if name == "toy":
        return {**kwargs, "generator": generators.ToyGenerator()}
    if name == "simple_solve":
        return {**kwargs, "generator": generators.SimpleSolveGenerator()}
    if name != "huggingface":
        raise StoixConfigError(
            f"env.kwargs.generator={name!r} is not a Sokoban generator; choose toy, simple_solve "
            "or huggingface (downloads the Boxoban levels named by env.kwargs.dataset_name)."
        )
    try:
        return {**kwargs, "generator": generators.HuggingFaceDeepMindGenerator(dataset)}
    except Exception as error:  # noqa: BLE001 (huggingface_hub raises many kinds when offline)
        raise StoixConfigError(
            f"env.kwargs.generator=huggingface could not download Boxoban levels "
            f"{dataset!r} from Hugging Face ({type(error).__name__}); go online or use "
            "env.kwargs.generator=toy."
        ) from None


class JumanjiTask(NamedTuple):
    module: str  # under jumanji.environments
    class_name: str
    agent_view: Callable[[Any], chex.Array]
    # The task's own episode limit, reproduced by the adapter as a truncation; None: no limit.
    time_limit: Callable[[Any], int | None]
    # Whether the constructor takes `time_limit` (its own limit would terminate, see above).
    overrides_time_limit: bool
    # Turns config kwargs into constructor arguments (objects such as a generator); None: as is.
    build_kwargs: Callable[[dict[str, Any]], dict[str, Any]] | None = None


JUMANJI_ENVIRONMENTS: dict[str, JumanjiTask] = {
    "Snake-v1": JumanjiTask(
        "routing.snake", "Snake", _snake_view, lambda kw: kw.get("time_limit", 4000), True
    ),
    "Game2048-v1": JumanjiTask("logic.game_2048", "Game2048", _game_2048_view, lambda kw: None, False),
    "Maze-v0": JumanjiTask(
        "routing.maze",
        "Maze",
        _maze_view,
        # Maze's own default is rows * cols of its default 10x10 generator.
        lambda kw: kw.get("time_limit") or 100,
        True,
    ),
    "Connector-v2": JumanjiTask(
        "routing.connector", "Connector", _connector_view, lambda kw: kw.get("time_limit", 50), True
    ),
    "RobotWarehouse-v0": JumanjiTask(
        "routing.robot_warehouse",
        "RobotWarehouse",
        _robot_warehouse_view,
        lambda kw: kw.get("time_limit", 500),
        True,
    ),
    "Sokoban-v0": JumanjiTask(
        "routing.sokoban",
        "Sokoban",
        _sokoban_view,
        lambda kw: kw.get("time_limit", 120),
        True,
        _sokoban_kwargs,
    ),
}


def make_jumanji_env(name: str, **env_kwargs: Any) -> tuple[Any, JumanjiTask, int | None]:
    """(the Jumanji environment with its own time limit disabled, its task entry, that limit)."""
    if name not in JUMANJI_ENVIRONMENTS:
        raise StoixConfigError(
            f"env.scenario.name={name!r} is not a known Jumanji environment; "
            f"choose one of {sorted(JUMANJI_ENVIRONMENTS)}."
        )
    task = JUMANJI_ENVIRONMENTS[name]
    own_limit = task.time_limit(env_kwargs)
    if task.overrides_time_limit:
        env_kwargs = {**env_kwargs, "time_limit": _NEVER}
    if task.build_kwargs is not None:
        env_kwargs = task.build_kwargs(env_kwargs)
    # NOTE: `jumanji.environments` and its families import every task (and their viewers) from
    # their `__init__`; importing the one task's module keeps the others out of the process.
    deferred = ["jumanji", "jumanji.environments", f"jumanji.environments.{task.module.split('.')[0]}"]
    module = import_module_lightly(f"jumanji.environments.{task.module}.env", deferred)
    return getattr(module, task.class_name)(**env_kwargs), task, own_limit


class JumanjiState(NamedTuple):
    env_state: Any
    step_count: chex.Array


class JumanjiToStoix(_jumanji_env.Environment):
    """One Jumanji environment with Stoix observations, its action mask and a time limit that
    truncates (`max_episode_steps=None`: no limit)."""

    def __init__(self, env: Any, agent_view: Callable[[Any], chex.Array], max_episode_steps: int | None):
        self._env = env
        self._agent_view = agent_view
        self._limit = max_episode_steps
        if max_episode_steps is not None:
            # Read by the evaluator as its step cap; without it the evaluator's default applies.
            self.max_episode_steps = int(max_episode_steps)
        super().__init__()

    def _observation(self, obs: Any, step_count: chex.Array) -> Observation:
        mask = getattr(obs, "action_mask", None)
        mask = jnp.ones(self._mask_shape) if mask is None else mask  # Sokoban has none
        return Observation(
            agent_view=self._agent_view(obs),
            action_mask=jnp.asarray(mask, jnp.float32),
            step_count=step_count,
        )

    @cached_property
    def _mask_shape(self) -> tuple[int, ...]:
        """(actions,), or (sub-actions, largest choice count) for a multi-discrete action."""
        num_values = np.asarray(self.action_spec.num_values)
        return (int(num_values),) if num_values.ndim == 0 else (num_values.size, int(num_values.max()))

    def reset(self, key: chex.PRNGKey) -> tuple[JumanjiState, Any]:
        env_state, timestep = self._env.reset(key)
        step_count = jnp.zeros((), jnp.int32)
        timestep = jumanji_types.restart(self._observation(timestep.observation, step_count), extras={})
        return JumanjiState(env_state, step_count), timestep

    def step(self, state: JumanjiState, action: chex.Array) -> tuple[JumanjiState, Any]:
        env_state, timestep = self._env.step(state.env_state, action)
        step_count = state.step_count + 1
        # Jumanji marks a termination with discount 0 and its own truncations with discount 1;
        # a multi-agent task's episode terminates when every agent's discount is 0.
        terminated = timestep.last() & jnp.all(timestep.discount == 0.0)
        truncated = timestep.last() & ~terminated
        if self._limit is not None:
            truncated = truncated | ((step_count >= self._limit) & ~terminated)
        episode_over = terminated | truncated
        timestep = jumanji_types.TimeStep(
            step_type=jnp.where(episode_over, jumanji_types.StepType.LAST, jumanji_types.StepType.MID),
            # Connector rewards each agent; the one controller gets the team's total.
            reward=jnp.sum(jnp.asarray(timestep.reward, jnp.float32)),
            # NOTE: discount 0 only on a true termination; a time-limit end bootstraps.
            discount=jnp.where(terminated, 0.0, 1.0).astype(jnp.float32),
            observation=self._observation(timestep.observation, step_count),
            # Jumanji's own extras (2048's highest tile, ...) differ per task; dropped so every
            # suite's timestep has the same structure.
            extras={},
        )
        return JumanjiState(env_state, step_count), timestep

    @cached_property
    def observation_spec(self) -> Any:
        view = jax.eval_shape(self._agent_view, self._env.observation_spec.generate_value())
        return specs.Spec(
            Observation,
            "ObservationSpec",
            agent_view=specs.Array(tuple(view.shape), jnp.float32, "agent_view"),
            action_mask=specs.Array(self._mask_shape, jnp.float32, "action_mask"),
            step_count=specs.Array((), jnp.int32, "step_count"),
        )

    @cached_property
    def action_spec(self) -> Any:
        spec = self._env.action_spec
        if not hasattr(spec, "num_values") or jnp.ndim(spec.num_values) > 1:
            raise StoixConfigError(
                f"{type(self._env).__name__} has a {type(spec).__name__} action space; Stoix's "
                "Jumanji adapter handles discrete and multi-discrete (one choice per agent) actions."
            )
        if jnp.ndim(spec.num_values) == 1:
            return specs.MultiDiscreteArray(num_values=jnp.asarray(spec.num_values, jnp.int32), name="action")
        return specs.DiscreteArray(num_values=int(spec.num_values), name="action")
