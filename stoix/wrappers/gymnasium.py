"""gymnasium vector environments as Stoix host environments (see stoix/wrappers/host.py)."""

from typing import Any

import numpy as np

from stoix.utils.config import StoixConfigError
from stoix.wrappers.host import HostTimeStep, HostVecEnv

__all__ = ["GymnasiumVecEnv", "HostTimeStep", "make_gymnasium_envs"]


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


class GymnasiumVecEnv(HostVecEnv):
    """Wraps a SAME_STEP-autoreset gymnasium vector env (see `make_gymnasium_envs`)."""

    def __init__(self, envs: Any, seed: int):
        self._envs = envs
        self._seed = seed
        self.num_envs = envs.num_envs
        self.single_action_space = envs.single_action_space
        self.single_observation_space = envs.single_observation_space
        self._start()

    def _reset(self) -> np.ndarray:
        obs, _ = self._envs.reset(seed=self._seed)
        return np.asarray(obs, np.float32)

    def _step(self, actions: np.ndarray) -> tuple:
        obs, reward, terminated, truncated, info = self._envs.step(actions)
        reward = np.asarray(reward, np.float32)
        last = np.logical_or(terminated, truncated)
        obs = np.asarray(obs, np.float32)
        next_view = obs.copy()
        if np.any(last):
            final = info["final_obs"]
            for i in np.flatnonzero(last):
                next_view[i] = np.asarray(final[i], np.float32)
        return obs, next_view, reward, np.asarray(terminated), last, reward, last

    def close(self) -> None:
        self._envs.close()
