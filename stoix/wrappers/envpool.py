"""envpool vector environments as Stoix host environments (see stoix/wrappers/host.py).

envpool resets an environment on the step *after* its episode ended and ignores that step's
action. Stoix's systems expect the reset on the same step (the JAX semantics), so the wrapper
resets the finished environments itself, right after the step that ended them: the final
observation becomes `next_obs` and the reset one the observation to act on.

Atari: envpool's own `episodic_life` and `reward_clip` are switched off and done here instead,
because an explicit reset after a lost life restarts the whole game in envpool. With
`wrapper.episodic_life`, losing a life is a termination for learning (discount 0, `last`) but
the game goes on, and the episode return counts the unclipped score of the whole game. With
`wrapper.fire_after_life_loss` (games that need FIRE to serve, e.g. Breakout) the wrapper then
presses FIRE once, as envpool's own soft reset would.
Observations stay uint8 (the torsos scale integer images to [0, 1]) and are turned from
envpool's (C, H, W) into the (H, W, C) the convolutions expect.
"""

import importlib
import warnings
from typing import Any

import numpy as np

from stoix.utils.config import StoixConfigError
from stoix.utils.light_import import import_module_lightly
from stoix.wrappers.host import HostVecEnv

# NOTE: envpool's package `__init__` registers every suite, MuJoCo included, and fails without
# the MuJoCo asset packages (~470 MB, dropped in pyproject.toml). Only these suites are loaded.
# envpool builds float64 Box bounds that gymnasium warns about casting, on every space access.
warnings.filterwarnings("ignore", message=".*precision lowered by casting", category=UserWarning)
_SUITES = ("classic_control", "atari", "box2d", "toy_text")


def envpool_registry() -> Any:
    """envpool's registration module with the classic-control, Atari, Box2D and toy-text suites
    registered: the supported way to reach envpool from user code in this install, where a
    plain `import envpool` fails (its `__init__` needs the dropped MuJoCo assets). It offers
    envpool's own `make`, `make_gymnasium`, `make_dm`, `make_spec` and `list_all_envs`."""
    try:
        registration = import_module_lightly("envpool.registration", ["envpool"])
    except ModuleNotFoundError:
        raise StoixConfigError(
            "env=envpool/... needs envpool (Linux only): run `make install` on Linux."
        ) from None
    for suite in _SUITES:
        importlib.import_module(f"envpool.{suite}.registration")
    return registration


def make_envpool_envs(task_id: str, num_envs: int, seed: int, **kwargs: Any) -> Any:
    """A synchronous envpool of `num_envs` copies of `task_id` (gymnasium API)."""
    registration = envpool_registry()
    if task_id not in registration.registry.specs:
        known = sorted(registration.registry.specs)
        raise StoixConfigError(
            f"env.scenario.name={task_id!r} is not an envpool task Stoix loads "
            f"(suites: {', '.join(_SUITES)}); e.g. {', '.join(known[:6])}, ..."
        )
    for key in ("episodic_life", "reward_clip"):
        if kwargs.get(key):
            raise StoixConfigError(
                f"env.kwargs.{key}=true: envpool's own {key} breaks Stoix's same-step resets; "
                f"set env.wrapper.{key}=true instead."
            )
    if task_id.endswith("-v5"):  # Atari: the wrapper does these (see the module docstring)
        kwargs.update(episodic_life=False, reward_clip=False)
    try:
        return registration.make_gymnasium(task_id, num_envs=num_envs, seed=seed, **kwargs)
    except (TypeError, ValueError) as e:
        raise StoixConfigError(f"env=envpool/{task_id}: bad env.kwargs {kwargs}: {e}") from None


FIRE = 1  # in ALE's minimal action sets, FIRE is action 1 wherever the game has it


class EnvPoolVecEnv(HostVecEnv):
    """Same-step resets, episodic life and reward clipping over an envpool (`make_envpool_envs`).

    `fire_after_life_loss` (Atari games that need FIRE to serve or launch, e.g. Breakout):
    after a lost life the wrapper presses FIRE once for that environment, as envpool's and
    the usual Atari preprocessing's soft reset does; that press is not an agent step, and its
    score counts in the game's return.
    """

    def __init__(
        self,
        envs: Any,
        episodic_life: bool = False,
        reward_clip: bool = False,
        fire_after_life_loss: bool = False,
    ):
        self._envs = envs
        self._episodic_life = bool(episodic_life)
        self._reward_clip = bool(reward_clip)
        self._fire_after_life_loss = bool(fire_after_life_loss)
        self.num_envs = int(envs.spec.config.num_envs)
        self.single_action_space = envs.action_space
        space = envs.observation_space
        self._images = len(space.shape) == 3
        if self._images:
            import gymnasium as gym

            channels, height, width = space.shape
            space = gym.spaces.Box(0, 255, (height, width, channels), space.dtype)
        self.single_observation_space = space
        self._lives = np.zeros(self.num_envs, np.int32)
        self._all_envs = np.arange(self.num_envs, dtype=np.int32)
        self._start()

    def _view(self, obs: np.ndarray) -> np.ndarray:
        # A copy: the trajectory keeps these arrays while envpool steps on.
        if self._images:
            return np.ascontiguousarray(obs.transpose(0, 2, 3, 1))
        return np.array(obs, np.float32)

    def _reset(self) -> np.ndarray:
        obs, info = self._envs.reset(self._all_envs)
        self._lives = np.asarray(info.get("lives", self._lives), np.int32).copy()
        return self._view(obs)

    def _step(self, actions: np.ndarray) -> tuple:
        obs, reward, terminated, truncated, info = self._envs.step(actions)
        score = np.asarray(reward, np.float32)
        episode_over = np.logical_or(terminated, truncated)
        terminated = np.asarray(terminated, bool)
        lost_life = np.zeros(self.num_envs, bool)
        if "lives" in info:
            lives = np.asarray(info["lives"], np.int32)
            lost_life = lives < self._lives
            self._lives = lives.copy()
        if self._episodic_life:
            terminated = np.logical_or(terminated, lost_life)
        last = np.logical_or(terminated, truncated)
        reward = np.sign(score) if self._reward_clip else score.copy()
        next_view = obs = self._view(obs)
        resume = np.flatnonzero(lost_life & ~episode_over).astype(np.int32)
        if self._fire_after_life_loss and resume.size:
            fire_obs, fire_score, fire_term, fire_trunc, fire_info = self._envs.step(
                np.full(resume.size, FIRE, np.int32), resume
            )
            order = np.asarray(fire_info["env_id"])
            obs = next_view.copy()
            obs[order] = self._view(fire_obs)
            score[order] += np.asarray(fire_score, np.float32)
            self._lives[order] = np.asarray(fire_info["lives"], np.int32)
            episode_over[order] |= np.logical_or(fire_term, fire_trunc)  # rare: the press ended it
        if np.any(episode_over):
            # Same-step reset of the environments whose episode (game) is over.
            ended = np.flatnonzero(episode_over).astype(np.int32)
            reset_obs, reset_info = self._envs.reset(ended)
            order = np.asarray(reset_info["env_id"])
            obs = obs.copy() if obs is next_view else obs
            obs[order] = self._view(reset_obs)
            if "lives" in reset_info:
                self._lives[order] = np.asarray(reset_info["lives"], np.int32)
        return obs, next_view, reward, terminated, last, score, episode_over

    def close(self) -> None:
        self._envs.close()
