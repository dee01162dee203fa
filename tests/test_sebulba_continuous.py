"""Sebulba PPO with box actions: what the host env sees, time limits vs terminations, tiny
runs on gymnasium Pendulum-v1 and LunarLanderContinuous-v3, and network/env mismatches."""

import jax
import numpy as np
import pytest

from stoix.architectures.sebulba import run_experiment, specs_of
from stoix.utils.config import StoixConfigError, compose_config
from stoix.utils.multistep import truncated_gae
from stoix.wrappers import make_host_envs

pytestmark = pytest.mark.timeout(300)

ENTRY = "default/sebulba/default_ff_ppo_continuous"
TINY = [
    "arch.total_num_envs=4",
    "arch.total_timesteps=256",
    "arch.num_evaluation=1",
    "arch.num_eval_episodes=2",
    "arch.eval_step_cap=50",
    "arch.absolute_metric=false",
    "system.rollout_length=16",
    "system.num_minibatches=2",
    "system.epochs=1",
    "logger.use_console=false",
    "logger.use_json=false",
]


def env_cfg(name):
    return compose_config(ENTRY, [f"env=gymnasium/{name}"]).env


def run_ppo(cfg):
    from stoix.systems.ppo.sebulba import ff_ppo

    return run_experiment(cfg, ff_ppo.learner_setup)


def spy_on_actions(env):
    """Record every action array the gymnasium vector env receives."""
    seen, real_step = [], env._envs.step

    def step(actions):
        seen.append(np.array(actions))
        return real_step(actions)

    env._envs.step = step
    return seen


def test_box_specs_come_from_the_gymnasium_space():
    env = make_host_envs(env_cfg("lunarlander_continuous"), 2, 0)
    spec, dummy = specs_of(env)
    env.close()
    assert spec.shape == (2,) and spec.dtype == np.float32
    np.testing.assert_array_equal(spec.minimum, [-1.0, -1.0])
    np.testing.assert_array_equal(spec.maximum, [1.0, 1.0])
    assert dummy.agent_view.shape == (1, 8) and dummy.action_mask.shape == (1, 2)


def test_box_actions_reach_the_env_inside_the_bounds_with_its_shape_and_dtype():
    env = make_host_envs(env_cfg("pendulum"), 3, 0)
    seen = spy_on_actions(env)
    env.reset()
    # A policy's (envs, 1) float64 sample, two of them outside Pendulum's [-2, 2] (ClipAction's rule).
    env.step(np.array([[-5.0], [0.5], [7.0]]))
    # A flat (envs,) array is reshaped to the space's (1,) per env.
    env.step(np.array([1.5, -2.5, 0.0], np.float32))
    env.close()
    assert [a.shape for a in seen] == [(3, 1), (3, 1)] and all(a.dtype == np.float32 for a in seen)
    np.testing.assert_array_equal(seen[0], [[-2.0], [0.5], [2.0]])
    np.testing.assert_array_equal(seen[1], [[1.5], [-2.0], [0.0]])


def test_pendulum_time_limit_bootstraps_and_a_lunar_lander_crash_does_not():
    gamma, value = 0.99, 10.0  # a constant critic, so the targets are hand-checkable

    def one_step_target(step):
        # GAE over the single final step: target = r + gamma * discount * v(next_obs).
        r = np.asarray(step.reward[:1])
        _, target = truncated_gae(
            r, gamma * step.discount[:1], np.zeros(1), np.full(1, value), step.last[:1], 0.95
        )
        return float(r[0]), float(target[0])

    # Pendulum-v1: 200 steps of the null action, then gymnasium's TimeLimit ends the episode.
    env = make_host_envs(env_cfg("pendulum"), 1, 0)
    env.reset()
    steps = [env.step(np.zeros((1, 1), np.float32)) for _ in range(200)]
    env.close()
    assert [s.last[0] for s in steps].index(True) == 199  # the 200th step, and not before
    end = steps[-1]
    assert end.discount[0] == 1.0 and end.episode_metrics.is_terminal_step[0]
    assert end.episode_metrics.episode_length[0] == 200
    # next_obs is the final observation (bootstrapped from), not the next episode's first.
    assert end.next_obs.step_count[0] == 200 and end.observation.step_count[0] == 0
    assert not np.allclose(end.next_obs.agent_view, end.observation.agent_view)
    r, target = one_step_target(end)
    assert target == pytest.approx(r + 0.99 * 10.0)

    # LunarLanderContinuous-v3 with its engines off: it falls and crashes (reward -100).
    env = make_host_envs(env_cfg("lunarlander_continuous"), 1, 0)
    env.reset()
    for _ in range(1000):
        crash = env.step(np.zeros((1, 2), np.float32))
        if crash.last[0]:
            break
    env.close()
    assert crash.last[0] and crash.episode_metrics.episode_length[0] < 1000  # before the time limit
    assert crash.discount[0] == 0.0 and crash.reward[0] <= -100.0
    r, target = one_step_target(crash)
    assert target == pytest.approx(r)  # no bootstrap


def test_tiny_run_on_pendulum_acts_inside_the_bounds(tmp_path, monkeypatch):
    from stoix.wrappers.gymnasium import GymnasiumVecEnv

    seen, real = [], GymnasiumVecEnv._step

    def step(self, actions):
        seen.append(np.array(actions))
        return real(self, actions)

    monkeypatch.setattr(GymnasiumVecEnv, "_step", step)
    metric = run_ppo(compose_config(ENTRY, [*TINY, f"logger.base_exp_path={tmp_path}"]))
    # Rewards lie in [-16.3, 0]; evaluation episodes are cut at eval_step_cap=50 steps.
    assert -16.3 * 50 <= metric < 0.0
    training = [a for a in seen if a.shape == (4, 1)]  # one actor thread with all 4 envs
    assert len(training) == 256 // 4
    assert all(a.dtype == np.float32 and a.shape[1:] == (1,) for a in seen)
    assert all(np.all(np.abs(a) <= 2.0) for a in seen)
    # The policy acts stochastically while training: the actions are not one repeated value.
    assert len({float(x) for a in training for x in a.ravel()}) > 100


def test_tiny_run_on_lunarlander_continuous(tmp_path):
    overrides = [*TINY, "env=gymnasium/lunarlander_continuous", f"logger.base_exp_path={tmp_path}"]
    metric = run_ppo(compose_config(ENTRY, overrides))
    assert np.isfinite(metric) and -500.0 < metric < 300.0


@pytest.mark.parametrize(
    ("entry", "overrides", "match"),
    [
        (
            ENTRY,
            ["network=mlp"],
            r"network.actor_network.action_head._target_=stoix.networks.heads.CategoricalHead does "
            r"not fit this environment's continuous actions; .*\(e.g. network=mlp_continuous\)",
        ),
        (
            "default/sebulba/default_ff_ppo",
            ["network=mlp_continuous"],
            r"_target_=stoix.networks.heads.NormalAffineTanhHead does not fit this environment's "
            r"discrete actions; .*\(e.g. network=mlp\)",
        ),
    ],
)
def test_a_network_that_does_not_fit_the_action_space_is_one_line_before_compiling(
    entry, overrides, match, tmp_path, monkeypatch
):
    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled before the mismatch was reported")

    monkeypatch.setattr(jax, "pmap", no_compiling)
    with pytest.raises(StoixConfigError, match=match) as error:
        run_ppo(compose_config(entry, [*TINY, *overrides, f"logger.base_exp_path={tmp_path}"]))
    assert "\n" not in str(error.value)


def test_an_action_space_sebulba_cannot_take_is_a_clear_error():
    import gymnasium as gym

    class Fake:
        single_action_space = gym.spaces.MultiDiscrete([2, 3])
        single_observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    with pytest.raises(StoixConfigError, match="env=gymnasium/fake has actions MultiDiscrete"):
        specs_of(Fake(), "env=gymnasium/fake")
