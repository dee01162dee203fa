"""Build MuJoCo Playground tasks (Zakka et al., 2025: MJX physics) for Stoix.

A bare Playground environment (`registry.load`, without its training wrappers) has Brax's
API: `reset(key)` and `step(state, action)` on a state with `obs`, `reward` and `done`, and
`action_size` / `observation_size`. Its `done` marks only a true end (a NaN in the physics for
the DM Control Suite tasks); the time limit (the task's `episode_length`, 1000 steps) is
applied by Playground's training wrapper, which is not used here. So the adapter is Brax's
(`BraxToStoix`): a time-limit end keeps discount 1 and bootstraps, a `done` ends with
discount 0, actions are a Box in [-1, 1] per actuator (every DM Control Suite actuator's
control range).

Playground runs its physics on MJX with NVIDIA Warp by default; the configs choose MJX's pure
JAX implementation (`impl: jax`), the one that runs on a CPU and under `vmap`, and the lock
leaves Warp out.
"""

from typing import Any

from stoix.utils.config import StoixConfigError


def make_playground_env(name: str, **config_overrides: Any) -> Any:
    """A bare Playground environment from its registry name; `config_overrides` update its
    default config (`impl`, `ctrl_dt`, ...)."""
    # NOTE: importing the registry imports every suite's task modules (~3 s), so it waits until
    # a playground config asks for it.
    from mujoco_playground import registry

    if name not in registry.ALL_ENVS:
        raise StoixConfigError(
            f"env.scenario.name={name!r} is not a MuJoCo Playground environment; choose one of "
            f"{sorted(registry.ALL_ENVS)}."
        )
    try:
        return registry.load(name, config_overrides=config_overrides)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise StoixConfigError(
            f"env.kwargs={config_overrides} cannot build Playground {name!r}: {error}"
        ) from error
