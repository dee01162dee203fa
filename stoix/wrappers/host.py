"""Host (non-JAX) vector environments for Sebulba, with the semantics of Stoix's JAX envs.

Every host env steps a batch of environments on the CPU and returns a `HostTimeStep` of numpy
arrays: the observation to act on next (the first of a new episode after an end), reward,
discount (0 only on termination), `last` (terminated or truncated), the true next observation
(the final one where an episode ended, for bootstrapping) and episode metrics flagged on the
step an episode finished. `make_host_envs` picks the backend from `env.env_name`:

- `gymnasium`: stoix/wrappers/gymnasium.py (gymnasium's SyncVectorEnv);
- `envpool`: stoix/wrappers/envpool.py (envpool's C++ thread pool; Atari included).
"""

from typing import Any, NamedTuple

import numpy as np

from stoix.base_types import EpisodeMetrics, Observation


class HostTimeStep(NamedTuple):
    observation: Observation
    reward: np.ndarray
    discount: np.ndarray
    last: np.ndarray
    next_obs: Observation
    episode_metrics: EpisodeMetrics


class HostVecEnv:
    """Book-keeping shared by the host backends: step counts and episode metrics.

    Subclasses set `num_envs`, `single_action_space`, `single_observation_space` (gymnasium
    spaces) and implement `_reset() -> obs` and `_step(actions)`, which returns
    `(obs, next_obs, reward, terminated, last, score, episode_over)`: `reward` is what the agent
    learns from, `score` what the episode return counts (they differ when rewards are clipped),
    and `episode_over` marks the ends that finish an episode for reporting (with episodic
    life, losing a life is `last` and `terminated` but not `episode_over`).
    """

    num_envs: int
    single_action_space: Any
    single_observation_space: Any

    def _start(self) -> None:
        space = self.single_action_space
        self.num_actions = int(space.n) if hasattr(space, "n") else int(np.prod(space.shape))
        # Box actions: ClipAction's rule (stoix/wrappers/core.py) on the host. The environment
        # sees the action clipped into its bounds, in the space's shape and dtype; the system
        # learns from its own (unclipped) sample.
        is_box = hasattr(space, "low") and not hasattr(space, "n")
        self._box = (space.low, space.high, space.shape, space.dtype) if is_box else None
        self._action_mask = np.ones((self.num_envs, self.num_actions), np.float32)
        self._running_return = np.zeros(self.num_envs, np.float32)
        self._running_length = np.zeros(self.num_envs, np.int32)
        self._steps = np.zeros(self.num_envs, np.int32)

    def _observation(self, agent_view: np.ndarray, steps: np.ndarray) -> Observation:
        return Observation(agent_view=agent_view, action_mask=self._action_mask, step_count=steps)

    def reset(self) -> HostTimeStep:
        obs = self._reset()
        self._running_return[:] = 0.0
        self._running_length[:] = 0
        self._steps[:] = 0
        observation = self._observation(obs, self._steps.copy())
        zeros = np.zeros(self.num_envs, np.float32)
        done = np.zeros(self.num_envs, bool)
        metrics = EpisodeMetrics(zeros.copy(), self._running_length.copy(), done.copy())
        return HostTimeStep(
            observation, zeros, np.ones(self.num_envs, np.float32), done, observation, metrics
        )

    def step(self, actions: np.ndarray) -> HostTimeStep:
        actions = np.asarray(actions)
        if self._box is not None:
            low, high, shape, dtype = self._box
            actions = np.clip(actions.reshape(self.num_envs, *shape), low, high).astype(dtype)
        obs, next_view, reward, terminated, last, score, episode_over = self._step(actions)
        self._steps += 1
        next_obs = self._observation(next_view, self._steps.copy())
        self._running_return += score
        self._running_length += 1
        metrics = EpisodeMetrics(
            self._running_return.copy(), self._running_length.copy(), episode_over.copy()
        )
        self._running_return[episode_over] = 0.0
        self._running_length[episode_over] = 0
        self._steps[last] = 0
        return HostTimeStep(
            observation=self._observation(obs, self._steps.copy()),
            reward=np.asarray(reward, np.float32),
            discount=np.where(terminated, 0.0, 1.0).astype(np.float32),
            last=last,
            next_obs=next_obs,
            episode_metrics=metrics,
        )

    def running_return(self) -> np.ndarray:
        """The score of each environment's unfinished episode so far."""
        return self._running_return.copy()

    def running_length(self) -> np.ndarray:
        """The steps of each environment's unfinished episode so far."""
        return self._running_length.copy()

    def close(self) -> None:
        pass
