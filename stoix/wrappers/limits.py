"""What the adapters whose suite mixes its time limit into `done` share (brax.py, craftax.py,
kinetix.py): the suite's own limit is put out of reach (or never applied), its `done` is then a
true end, and the adapter counts steps and applies `env.max_episode_steps` as a truncation."""

from typing import Any

import chex
import jax.numpy as jnp

from stoix.base_types import Observation
from stoix.utils.light_import import import_module_lightly

specs = import_module_lightly("jumanji.specs", ["jumanji"])
jumanji_types = import_module_lightly("jumanji.types", ["jumanji"])


def limited_timestep(
    observation: Observation, reward: chex.Array, terminated: chex.Array, max_episode_steps: int
) -> Any:
    """The step's TimeStep: last on a termination (discount 0) or when the observation's
    `step_count` reaches `max_episode_steps` (a truncation: discount 1, so the learner
    bootstraps); a step that does both is a termination."""
    terminated = jnp.asarray(terminated, bool)
    truncated = (observation.step_count >= max_episode_steps) & ~terminated
    return jumanji_types.TimeStep(
        step_type=jnp.where(terminated | truncated, jumanji_types.StepType.LAST, jumanji_types.StepType.MID),
        reward=jnp.asarray(reward, jnp.float32),
        # NOTE: discount 0 only on a true termination; a time-limit end bootstraps.
        discount=jnp.where(terminated, 0.0, 1.0).astype(jnp.float32),
        observation=observation,
        # The suite's info is dropped so every suite's timestep has the same structure.
        extras={},
    )


def observation_spec(shape: tuple[int, ...], num_actions: int) -> Any:
    """The spec of an Observation with a float `agent_view` of `shape`, an all-ones action mask
    of `num_actions` and an int step count."""
    return specs.Spec(
        Observation,
        "ObservationSpec",
        agent_view=specs.Array(tuple(shape), jnp.float32, "agent_view"),
        action_mask=specs.Array((int(num_actions),), jnp.float32, "action_mask"),
        step_count=specs.Array((), jnp.int32, "step_count"),
    )
