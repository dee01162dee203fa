"""A batch of gymnasium environments with the same semantics as Stoix's JAX environments.

For Sebulba actors, which step non-JAX environments on the host. Each step returns numpy
arrays: the observation to act on next (the first of a new episode after an end), reward,
discount (0 only on termination), `last` (terminated or truncated), the true next observation
(the final one where an episode ended, for bootstrapping) and episode metrics flagged on the
step an episode finished.
"""

from typing import Any, NamedTuple

import numpy as np

from stoix.base_types import EpisodeMetrics, Observation
from stoix.utils.config import StoixConfigError


class HostTimeStep(NamedTuple):
    observation: Observation
    reward: np.ndarray
    discount: np.ndarray
    last: np.ndarray
    next_obs: Observation
    episode_metrics: EpisodeMetrics


def make_gymnasium_envs(env_id: str, num_envs: int, seed: int, **kwargs: Any) -> Any:
    """`num_envs` copies of `env_id` in a SyncVectorEnv that resets on the step an episode
    ends (the final observation comes in `info["final_obs"]`)."""
    import gymnasium as gym
    from gymnasium.error import DependencyNotInstalled, Error

    try:
        envs = gym.vector.SyncVectorEnv(
            [lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    except DependencyNotInstalled as e:
        raise StoixConfigError(f"env.scenario.name={env_id} needs an optional package: {e}") from None
    except Error as e:
        raise StoixConfigError(f"env.scenario.name={env_id}: {e}") from None
    envs.reset(seed=seed)
    return envs


class GymnasiumVecEnv:
    """Wraps a SAME_STEP-autoreset gymnasium vector env (see `make_gymnasium_envs`)."""

    def __init__(self, envs: Any, seed: int):
        self._envs = envs
        self._seed = seed
        self.num_envs = envs.num_envs
        space = envs.single_action_space
        self.num_actions = int(space.n) if hasattr(space, "n") else int(np.prod(space.shape))
        self._running_return = np.zeros(self.num_envs, np.float32)
        self._running_length = np.zeros(self.num_envs, np.int32)
        self._steps = np.zeros(self.num_envs, np.int32)

    def _observation(self, obs: np.ndarray) -> Observation:
        return Observation(
            agent_view=np.asarray(obs, np.float32),
            action_mask=np.ones((self.num_envs, self.num_actions), np.float32),
            step_count=self._steps.copy(),
        )

    def reset(self) -> HostTimeStep:
        obs, _ = self._envs.reset(seed=self._seed)
        self._running_return[:] = 0.0
        self._running_length[:] = 0
        self._steps[:] = 0
        observation = self._observation(obs)
        zeros = np.zeros(self.num_envs, np.float32)
        done = np.zeros(self.num_envs, bool)
        metrics = EpisodeMetrics(zeros.copy(), self._running_length.copy(), done.copy())
        return HostTimeStep(
            observation, zeros, np.ones(self.num_envs, np.float32), done, observation, metrics
        )

    def step(self, actions: np.ndarray) -> HostTimeStep:
        obs, reward, terminated, truncated, info = self._envs.step(np.asarray(actions))
        reward = np.asarray(reward, np.float32)
        last = np.logical_or(terminated, truncated)
        next_agent_view = np.array(obs, np.float32, copy=True)
        if np.any(last):
            final = info["final_obs"]
            for i in np.flatnonzero(last):
                next_agent_view[i] = np.asarray(final[i], np.float32)
        self._steps += 1
        next_obs = Observation(next_agent_view, self._observation(obs).action_mask, self._steps.copy())
        self._running_return += reward
        self._running_length += 1
        metrics = EpisodeMetrics(self._running_return.copy(), self._running_length.copy(), last.copy())
        self._running_return[last] = 0.0
        self._running_length[last] = 0
        self._steps[last] = 0
        return HostTimeStep(
            observation=self._observation(obs),
            reward=reward,
            discount=np.where(terminated, 0.0, 1.0).astype(np.float32),
            last=last,
            next_obs=next_obs,
            episode_metrics=metrics,
        )

    def close(self) -> None:
        self._envs.close()
