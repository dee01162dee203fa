"""Wrappers every Anakin environment goes through: episode metrics, auto-reset, vectorisation,
and for box actions a clip into the bounds.

Order matters: `make_env` builds `AutoReset(RecordEpisodeMetrics(env))`, so the metrics see
the last step of an episode before the reset replaces its observation.
"""

from functools import cached_property
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from stoix.base_types import EpisodeMetrics
from stoix.utils.light_import import import_module_lightly

_jumanji_env = import_module_lightly("jumanji.env", ["jumanji"])


class Wrapper(_jumanji_env.Environment):
    """Passes everything through to the wrapped environment."""

    def __init__(self, env: Any):
        self._env = env
        super().__init__()

    def __getattr__(self, name: str) -> Any:
        if name == "_env":  # not set yet: avoid infinite recursion while unpickling
            raise AttributeError(name)
        return getattr(self._env, name)

    def reset(self, key: chex.PRNGKey) -> tuple[Any, Any]:
        return self._env.reset(key)

    def step(self, state: Any, action: chex.Array) -> tuple[Any, Any]:
        return self._env.step(state, action)

    @cached_property
    def observation_spec(self) -> Any:
        return self._env.observation_spec

    @cached_property
    def action_spec(self) -> Any:
        return self._env.action_spec

    @property
    def unwrapped(self) -> Any:
        return self._env.unwrapped


class ClipAction(Wrapper):
    """Box actions are clipped into the action spec's bounds before the environment sees them,
    so a policy whose samples are unbounded (an unsquashed Gaussian) always acts legally; an
    action inside the bounds passes unchanged. Systems learn from the unclipped sample."""

    def step(self, state: Any, action: chex.Array) -> tuple[Any, Any]:
        spec = self.action_spec
        return self._env.step(state, jnp.clip(action, spec.minimum, spec.maximum))


class ObservationSubset(Wrapper):
    """Shows the agent only `indices` of a flat observation: a fully observed task made
    partially observable (CartPole without its velocities), so that memory is needed."""

    def __init__(self, env: Any, indices: tuple[int, ...]):
        super().__init__(env)
        self._indices = jnp.asarray(indices, jnp.int32)

    def _hide(self, timestep: Any) -> Any:
        obs = timestep.observation
        return timestep.replace(observation=obs._replace(agent_view=obs.agent_view[..., self._indices]))

    def reset(self, key: chex.PRNGKey) -> tuple[Any, Any]:
        state, timestep = self._env.reset(key)
        return state, self._hide(timestep)

    def step(self, state: Any, action: chex.Array) -> tuple[Any, Any]:
        state, timestep = self._env.step(state, action)
        return state, self._hide(timestep)

    @cached_property
    def observation_spec(self) -> Any:
        spec = self._env.observation_spec
        view = spec.agent_view
        return spec.replace(agent_view=view.replace(shape=(*view.shape[:-1], int(self._indices.shape[0]))))


class MetricsState(NamedTuple):
    env_state: Any
    running_return: chex.Array
    running_length: chex.Array


class RecordEpisodeMetrics(Wrapper):
    """Adds `extras["episode_metrics"]`: return and length so far, and whether this step ended
    the episode. Consumers keep only entries with `is_terminal_step` set."""

    def reset(self, key: chex.PRNGKey) -> tuple[MetricsState, Any]:
        env_state, timestep = self._env.reset(key)
        zero = jnp.zeros((), jnp.float32)
        timestep.extras["episode_metrics"] = EpisodeMetrics(
            episode_return=zero,
            episode_length=jnp.zeros((), jnp.int32),
            is_terminal_step=jnp.zeros((), bool),
        )
        return MetricsState(env_state, zero, jnp.zeros((), jnp.int32)), timestep

    def step(self, state: MetricsState, action: chex.Array) -> tuple[MetricsState, Any]:
        env_state, timestep = self._env.step(state.env_state, action)
        episode_return = state.running_return + timestep.reward
        episode_length = state.running_length + 1
        done = timestep.last()
        timestep.extras["episode_metrics"] = EpisodeMetrics(
            episode_return=episode_return,
            episode_length=episode_length,
            is_terminal_step=done,
        )
        state = MetricsState(
            env_state=env_state,
            running_return=jnp.where(done, 0.0, episode_return),
            running_length=jnp.where(done, 0, episode_length),
        )
        return state, timestep


class AutoResetState(NamedTuple):
    env_state: Any
    key: chex.PRNGKey


class AutoReset(Wrapper):
    """Starts a new episode as soon as one ends.

    The returned timestep keeps the last step's reward, discount and step type, but its
    observation is the first of the new episode; the true final observation, needed to
    bootstrap a truncated episode, is kept in `extras["next_obs"]` (on every step, so the
    structure never changes).
    """

    def reset(self, key: chex.PRNGKey) -> tuple[AutoResetState, Any]:
        key, reset_key = jax.random.split(key)
        env_state, timestep = self._env.reset(reset_key)
        timestep.extras["next_obs"] = timestep.observation
        return AutoResetState(env_state, key), timestep

    def step(self, state: AutoResetState, action: chex.Array) -> tuple[AutoResetState, Any]:
        key, reset_key = jax.random.split(state.key)
        env_state, timestep = self._env.step(state.env_state, action)
        reset_state, reset_timestep = self._env.reset(reset_key)
        done = timestep.last()

        def pick(reset_leaf: chex.Array, step_leaf: chex.Array) -> chex.Array:
            return jax.lax.select(done, reset_leaf, step_leaf)

        # NOTE: only the state and observation are replaced; metrics in extras stay those of
        # the step that ended the episode.
        env_state = jax.tree.map(pick, reset_state, env_state)
        timestep.extras["next_obs"] = timestep.observation
        timestep = timestep.replace(
            observation=jax.tree.map(pick, reset_timestep.observation, timestep.observation)
        )
        return AutoResetState(env_state, key), timestep


class PooledAutoReset(Wrapper):
    """A batch of environments that auto-reset from a small pool of fresh episodes: each step
    computes `max(1, n // reset_ratio)` resets for the `n` environments instead of one each.

    Under `vmap`, `AutoReset` computes a reset for every environment on every step (a select
    runs both branches), which dominates a task whose reset is costly (Craftax generates a
    world). Here the k-th environment to finish on a step takes pool entry `k % pool_size`, so
    starts are distinct unless more environments than the pool finish on one step (then some
    share a start; Craftax's own "optimistic resets" make the same trade). Everything else is
    `VmapWrapper(AutoReset(env))`: the final observation in `extras["next_obs"]`, the ended
    step's reward, discount and metrics kept, the state of the same structure.
    """

    def __init__(self, env: Any, reset_ratio: int):
        super().__init__(env)
        self.reset_ratio = int(reset_ratio)
        # Built here: a Jumanji environment computes its specs on construction, which cannot
        # happen inside a trace.
        self._auto_reset = AutoReset(env)

    def reset(self, keys: chex.PRNGKey) -> tuple[AutoResetState, Any]:
        return jax.vmap(self._auto_reset.reset)(keys)

    def step(self, state: AutoResetState, action: chex.Array) -> tuple[AutoResetState, Any]:
        keys = jax.vmap(jax.random.split)(state.key)
        key, reset_key = keys[:, 0], keys[:, 1]
        env_state, timestep = jax.vmap(self._env.step)(state.env_state, action)
        num_envs = timestep.reward.shape[0]
        pool_size = max(1, num_envs // self.reset_ratio)
        pool_state, pool_timestep = jax.vmap(self._env.reset)(reset_key[:pool_size])
        done = timestep.last()
        slot = (jnp.cumsum(done) - 1) % pool_size

        def pick(pool_leaf: chex.Array, step_leaf: chex.Array) -> chex.Array:
            mask = done.reshape(done.shape + (1,) * (step_leaf.ndim - 1))
            return jnp.where(mask, pool_leaf[slot], step_leaf)

        env_state = jax.tree.map(pick, pool_state, env_state)
        timestep.extras["next_obs"] = timestep.observation
        timestep = timestep.replace(
            observation=jax.tree.map(pick, pool_timestep.observation, timestep.observation)
        )
        return AutoResetState(env_state, key), timestep


class VmapWrapper(Wrapper):
    """Runs a batch of independent environments: `reset` takes one key per environment."""

    def reset(self, keys: chex.PRNGKey) -> tuple[Any, Any]:
        return jax.vmap(self._env.reset)(keys)

    def step(self, state: Any, action: chex.Array) -> tuple[Any, Any]:
        return jax.vmap(self._env.step)(state, action)
