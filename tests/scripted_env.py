"""A scripted gymnax environment whose episodes end exactly when a test says so.

The observation is [time, 10 * time]; the reward is 1 + time; action 1 terminates the episode
(discount 0); otherwise the time limit `max_steps_in_episode` truncates it (discount 1).
"""

import jax.numpy as jnp
from flax import struct

from stoix.utils.light_import import import_module_lightly

environment = import_module_lightly("gymnax.environments.environment", ["gymnax", "gymnax.environments"])
spaces = import_module_lightly("gymnax.environments.spaces", ["gymnax", "gymnax.environments"])


@struct.dataclass
class ScriptedState(environment.EnvState):
    time: int


@struct.dataclass
class ScriptedParams(environment.EnvParams):
    max_steps_in_episode: int = 5


class ScriptedEnv(environment.Environment):
    @property
    def default_params(self) -> ScriptedParams:
        return ScriptedParams()

    def _obs(self, time):
        return jnp.array([time, 10 * time], jnp.float32)

    def step_env(self, key, state, action, params):
        time = state.time + 1
        reward = 1.0 + state.time
        terminated = action == 1
        return self._obs(time), ScriptedState(time=time), jnp.float32(reward), terminated, {}

    def reset_env(self, key, params):
        return self._obs(0), ScriptedState(time=0)

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 1e4, (2,), jnp.float32)
