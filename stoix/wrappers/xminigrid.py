"""Present XLand-MiniGrid environments (its MiniGrid ports and XLand tasks) to Stoix.

XLand-MiniGrid already keeps the two ends apart: reaching the goal is `discount` 0, its own
step limit (`max_steps`, default 4 x height x width for MiniGrid, 3 x height x width for XLand)
ends with discount 1. The adapter keeps those ends and reads `env.max_episode_steps` (null:
the suite's own limit) as `max_steps`. NOTE: the goal reward is `1 - 0.9 * steps / max_steps`,
so a changed limit also changes the reward scale.

The agent sees XLand-MiniGrid's egocentric (view, view, 2) grid of tile and colour ids
(7x7 for MiniGrid, 5x5 for XLand), flattened into floats for the MLP torsos. There is no
action mask in its API: all six actions are always legal.

An XLand task is a ruleset (a goal, rules and the objects placed). Its benchmarks of
sampled rulesets are downloaded on first use; the configs here build one ruleset from
`env.ruleset` instead (a goal over one object, no rules), so nothing is fetched at runtime.
"""

from functools import cached_property
from typing import Any

import chex
import jax.numpy as jnp

from stoix.base_types import Observation
from stoix.utils.config import StoixConfigError
from stoix.utils.light_import import import_module_lightly

_jumanji_env = import_module_lightly("jumanji.env", ["jumanji"])
specs = import_module_lightly("jumanji.specs", ["jumanji"])
jumanji_types = import_module_lightly("jumanji.types", ["jumanji"])

# env.ruleset.goal -> xminigrid.core.goals class: which act on the object counts as success.
_GOALS = {"agent_hold": "AgentHoldGoal", "agent_near": "AgentNearGoal", "agent_on_tile": "AgentOnTileGoal"}


def _tile(spec: Any) -> chex.Array:
    """[object, colour] names ("ball", "blue") -> XLand-MiniGrid's (tile id, colour id)."""
    from xminigrid.core.constants import TILES_REGISTRY, Colors, Tiles

    try:
        tile, colour = (str(name).upper() for name in spec)
        return TILES_REGISTRY[getattr(Tiles, tile), getattr(Colors, colour)]
    except (AttributeError, TypeError, ValueError) as error:
        raise StoixConfigError(
            f"env.ruleset tile {spec!r} must be [object, colour] names, e.g. [ball, blue] "
            "(objects: ball, square, pyramid, key, hex, star, goal; colours: red, green, blue, "
            "purple, yellow, grey, ...)."
        ) from error


def make_ruleset(ruleset_cfg: Any) -> Any:
    """One XLand ruleset from `env.ruleset`: {goal, tile, distractors}; no rules."""
    from xminigrid.core import goals
    from xminigrid.core.rules import EmptyRule
    from xminigrid.types import RuleSet

    goal_name = ruleset_cfg.get("goal")
    if goal_name not in _GOALS:
        raise StoixConfigError(
            f"env.ruleset.goal={goal_name!r} is not known; choose one of {sorted(_GOALS)}."
        )
    tile = _tile(ruleset_cfg.get("tile"))
    objects = [tile, *(_tile(spec) for spec in ruleset_cfg.get("distractors") or [])]
    return RuleSet(
        goal=getattr(goals, _GOALS[goal_name])(tile=tile).encode(),
        rules=EmptyRule().encode()[None, ...],
        init_tiles=jnp.stack(objects),
    )


def make_xminigrid_env(name: str, ruleset: Any = None, **env_kwargs: Any) -> tuple[Any, Any]:
    """An XLand-MiniGrid environment and its parameters (`env_kwargs` replace parameters:
    height, width, view_size, max_steps)."""
    import xminigrid

    if name not in xminigrid.registered_environments():
        raise StoixConfigError(
            f"env.scenario.name={name!r} is not an XLand-MiniGrid environment; "
            f"choose one of {sorted(xminigrid.registered_environments())}."
        )
    env, params = xminigrid.make(name)
    unknown = sorted(set(env_kwargs) - set(params.__dataclass_fields__))
    if unknown:
        raise StoixConfigError(
            f"env.kwargs {unknown}: {name} has no such parameter; its parameters are "
            f"{sorted(params.__dataclass_fields__)}."
        )
    params = params.replace(**env_kwargs)
    if name.startswith("XLand-MiniGrid"):
        if ruleset is None:
            raise StoixConfigError(
                f"env.ruleset is missing: {name} needs a task, e.g. ruleset: "
                "{goal: agent_hold, tile: [ball, blue]} (see configs/env/xminigrid/xland_r1_9x9.yaml)."
            )
        params = params.replace(ruleset=make_ruleset(ruleset))
    elif ruleset is not None:
        raise StoixConfigError(f"env.ruleset is set, but {name} is a fixed MiniGrid task; set it to null.")
    return env, params


class XMiniGridToStoix(_jumanji_env.Environment):
    """One XLand-MiniGrid environment with Stoix observations; its own limit truncates."""

    def __init__(self, env: Any, env_params: Any):
        self._env = env
        self._params = env_params
        self.max_episode_steps = int(env_params.max_steps)
        super().__init__()

    def _observation(self, timestep: Any) -> Observation:
        return Observation(
            agent_view=timestep.observation.astype(jnp.float32).reshape(-1),
            action_mask=jnp.ones((self._env.num_actions(self._params),), jnp.float32),
            step_count=jnp.asarray(timestep.state.step_num, jnp.int32),
        )

    def reset(self, key: chex.PRNGKey) -> tuple[Any, Any]:
        # The suite's TimeStep (it holds the state) is this adapter's state.
        native = self._env.reset(self._params, key)
        return native, jumanji_types.restart(self._observation(native), extras={})

    def step(self, state: Any, action: chex.Array) -> tuple[Any, Any]:
        native = self._env.step(self._params, state, action)
        # XLand-MiniGrid: LAST with discount 0 on the goal, LAST with discount 1 on its limit.
        timestep = jumanji_types.TimeStep(
            step_type=jnp.where(native.last(), jumanji_types.StepType.LAST, jumanji_types.StepType.MID),
            reward=jnp.asarray(native.reward, jnp.float32),
            discount=jnp.asarray(native.discount, jnp.float32),
            observation=self._observation(native),
            extras={},
        )
        return native, timestep

    @cached_property
    def observation_spec(self) -> Any:
        size = int(jnp.prod(jnp.asarray(self._env.observation_shape(self._params))))
        num_actions = self._env.num_actions(self._params)
        return specs.Spec(
            Observation,
            "ObservationSpec",
            agent_view=specs.Array((size,), jnp.float32, "agent_view"),
            action_mask=specs.Array((num_actions,), jnp.float32, "action_mask"),
            step_count=specs.Array((), jnp.int32, "step_count"),
        )

    @cached_property
    def action_spec(self) -> Any:
        return specs.DiscreteArray(num_values=int(self._env.num_actions(self._params)), name="action")
