"""Jumanji and Brax on Anakin: the adapters keep termination (discount 0) apart from the time
limit (discount 1), keep the final observation on auto-reset, report episode metrics on the
finishing step and pass Jumanji's action masks through; every config builds; a gymnax run
imports neither suite; PPO trains on one task of each."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from stoix.utils.config import CONFIG_DIR, REPO_ROOT, StoixConfigError
from stoix.wrappers import make_env
from stoix.wrappers.core import AutoReset, ClipAction, RecordEpisodeMetrics

JUMANJI_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "env" / "jumanji").glob("*.yaml"))
MULTI_AGENT = ("connector", "robot_warehouse")
BRAX_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "env" / "brax").glob("*.yaml"))
UP = 0  # Snake's actions: up, right, down, left


def env_cfg(path: str, **changes):
    cfg = OmegaConf.load(REPO_ROOT / f"configs/env/{path}.yaml")
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def rollout(env, key, actions):
    state, _ = env.reset(key)
    return jax.jit(lambda s: jax.lax.scan(lambda s, a: env.step(s, a), s, jnp.asarray(actions))[1])(state)


def snake_start(auto_reset: bool = False):
    """A key whose snake starts at least 2 rows below the top wall, and that row. AutoReset
    resets with a key split from the one it is given."""
    from stoix.wrappers.jumanji import make_jumanji_env

    snake, _, _ = make_jumanji_env("Snake-v1")
    for seed in range(20):
        key = jax.random.PRNGKey(seed)
        reset_key = jax.random.split(key)[1] if auto_reset else key
        row = int(snake.reset(reset_key)[0].head_position.row)
        if row >= 2:
            return key, row
    raise AssertionError("no start two rows below the wall in 20 seeds")


def test_gymnax_run_imports_neither_jumanji_tasks_nor_brax():
    code = (
        "import sys, jax, jax.numpy as jnp\n"
        "from omegaconf import OmegaConf\n"
        "from stoix.utils.config import CONFIG_DIR\n"
        "from stoix.wrappers import make_env\n"
        "env, _ = make_env(OmegaConf.load(f'{CONFIG_DIR}/env/gymnax/cartpole.yaml'))\n"
        "state, _ = env.reset(jax.random.split(jax.random.PRNGKey(0), 2))\n"
        "env.step(state, jnp.zeros((2,), jnp.int32))\n"
        "heavy = ('brax', 'mujoco', 'jumanji.environments', 'navix', 'popgym_arcade', 'dm_pix',\n"
        "         'xminigrid', 'craftax', 'mujoco_playground', 'kinetix', 'jax2d')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_jumanji_time_limit_truncates_and_termination_has_discount_zero():
    # Snake's own time limit terminates (discount 0); the adapter turns it into a truncation.
    key, row = snake_start()
    # Moving up, the head reaches the top row after `row` steps and hits the wall on the next.
    truncated = make_env(env_cfg("jumanji/snake", **{"kwargs.time_limit": row}))[1]
    traj = rollout(truncated, key, [UP] * row)
    np.testing.assert_array_equal(np.asarray(traj.last()), [0] * (row - 1) + [1])
    np.testing.assert_array_equal(np.asarray(traj.discount), [1.0] * row)
    # When the wall and the time limit come on the same step, the termination wins.
    both = make_env(env_cfg("jumanji/snake", max_episode_steps=row + 1))[1]
    traj = rollout(both, key, [UP] * (row + 1))
    np.testing.assert_array_equal(np.asarray(traj.last()), [0] * row + [1])
    np.testing.assert_array_equal(np.asarray(traj.discount), [1.0] * row + [0.0])


def test_jumanji_auto_reset_keeps_final_observation_metrics_and_action_mask():
    key, row = snake_start(auto_reset=True)
    single = make_env(env_cfg("jumanji/snake", max_episode_steps=row))[1]
    env = AutoReset(RecordEpisodeMetrics(single))
    traj = rollout(env, key, [UP] * (row + 1))
    end = row - 1
    assert bool(traj.last()[end]) and float(traj.discount[end]) == 1.0
    # The observation restarts; the final one, with the head on the top row, is kept.
    assert int(traj.observation.step_count[end]) == 0
    assert int(traj.extras["next_obs"].step_count[end]) == row
    head = np.asarray(traj.extras["next_obs"].agent_view[end]).reshape(12, 12, 5)[..., 1]
    assert np.argwhere(head)[0][0] == 0, "the final observation has the head on the top row"
    # Snake's own mask: from the top row, up is illegal.
    assert float(traj.extras["next_obs"].action_mask[end][UP]) == 0.0
    metrics = traj.extras["episode_metrics"]
    np.testing.assert_array_equal(np.asarray(metrics.is_terminal_step), [0] * end + [1, 0])
    assert int(metrics.episode_length[end]) == row
    np.testing.assert_allclose(float(metrics.episode_return[end]), float(np.sum(traj.reward[:row])))


def test_jumanji_action_mask_is_the_tasks_own():
    from stoix.wrappers.jumanji import make_jumanji_env

    native, _, _ = make_jumanji_env("Game2048-v1")
    env = make_env(env_cfg("jumanji/game_2048"))[1]
    for seed in range(4):
        key = jax.random.PRNGKey(seed)
        _, timestep = env.reset(key)
        expected = native.reset(key)[1].observation.action_mask
        np.testing.assert_array_equal(
            np.asarray(timestep.observation.action_mask), np.asarray(expected, np.float32)
        )


@pytest.mark.parametrize(
    "task",
    # The multi-agent tasks take ~8 s each to build and step: make test-slow.
    [pytest.param(t, marks=pytest.mark.slow) if t in MULTI_AGENT else t for t in JUMANJI_CONFIGS],
)
def test_every_jumanji_config_builds_and_steps(task):
    assert {"snake", "game_2048", "maze"} <= set(JUMANJI_CONFIGS)
    env, eval_env = make_env(env_cfg(f"jumanji/{task}"))
    state, timestep = env.reset(jax.random.split(jax.random.PRNGKey(0), 2))
    assert timestep.observation.agent_view.dtype == jnp.float32
    assert timestep.observation.agent_view.shape == (2, *env.observation_spec.agent_view.shape)
    # (2, actions), or (2, agents, choices) for a multi-discrete task (Connector, RobotWarehouse)
    assert timestep.observation.action_mask.shape == (2, *env.observation_spec.action_mask.shape)
    assert env.observation_spec.action_mask.shape[-1] == int(np.max(env.action_spec.num_values))
    state, timestep = jax.jit(env.step)(state, jnp.zeros((2, *env.action_spec.shape), jnp.int32))
    assert timestep.observation.agent_view.shape == (2, *env.observation_spec.agent_view.shape)


def test_unknown_suite_task_names_are_clear_errors():
    with pytest.raises(StoixConfigError, match="env.scenario.name='Snake-v9'"):
        make_env(env_cfg("jumanji/snake", **{"scenario.name": "Snake-v9"}))
    with pytest.raises(StoixConfigError, match="env.scenario.name='antt'"):
        make_env(env_cfg("brax/ant", **{"scenario.name": "antt"}))


def test_brax_fall_terminates_and_time_limit_truncates():
    """inverted_pendulum, pushed hard, falls on step 7 (discount 0); left alone, it stands for
    the whole 30-step limit (discount 1). Auto-reset keeps the final observation, the metrics
    mark both ends."""
    env = AutoReset(
        RecordEpisodeMetrics(make_env(env_cfg("brax/inverted_pendulum", max_episode_steps=30))[1])
    )
    assert isinstance(env._env._env, ClipAction), "box actions are clipped into [-1, 1]"
    traj = rollout(env, jax.random.PRNGKey(0), jnp.asarray([1.0] * 7 + [0.0] * 31)[:, None])
    last = np.nonzero(np.asarray(traj.last()))[0]
    np.testing.assert_array_equal(last, [6, 36])
    np.testing.assert_array_equal(np.asarray(traj.discount)[last], [0.0, 1.0])
    assert np.all(np.asarray(traj.discount)[np.asarray(~traj.last())] == 1.0)
    # The pole angle of the kept final observation is past Brax's fall threshold (0.2 rad).
    assert abs(float(traj.extras["next_obs"].agent_view[6, 1])) > 0.2
    assert abs(float(traj.observation.agent_view[6, 1])) < 0.2, "the observation restarted"
    np.testing.assert_array_equal(np.asarray(traj.extras["next_obs"].step_count)[last], [7, 30])
    metrics = traj.extras["episode_metrics"]
    np.testing.assert_array_equal(np.nonzero(np.asarray(metrics.is_terminal_step))[0], last)
    np.testing.assert_array_equal(np.asarray(metrics.episode_length)[last], [7, 30])


def test_playground_nan_terminates_and_time_limit_truncates():
    """CartpoleBalance (MJX physics, pure JAX) never ends on its own: it runs to the 5-step
    limit (discount 1). A NaN action makes the physics NaN, which Playground reports as `done`:
    discount 0 on that step, and auto-reset starts a finite episode again."""
    cfg = env_cfg("playground/cartpole_balance", max_episode_steps=5)
    assert cfg.kwargs.impl == "jax"
    env = AutoReset(RecordEpisodeMetrics(make_env(cfg)[1]))
    spec = env.action_spec
    assert spec.shape == (1,)
    np.testing.assert_array_equal(np.asarray(spec.minimum), [-1.0])
    traj = rollout(env, jax.random.PRNGKey(0), jnp.asarray([0.5] * 5 + [0.0, np.nan, 0.0])[:, None])
    last = np.nonzero(np.asarray(traj.last()))[0]
    np.testing.assert_array_equal(last, [4, 6])
    np.testing.assert_array_equal(np.asarray(traj.discount)[last], [1.0, 0.0])
    assert np.all(np.asarray(traj.discount)[np.asarray(~traj.last())] == 1.0)
    # The truncated episode's final observation is kept; the terminal one is the NaN state.
    np.testing.assert_array_equal(np.asarray(traj.extras["next_obs"].step_count)[last], [5, 2])
    assert np.all(np.isfinite(np.asarray(traj.extras["next_obs"].agent_view[4])))
    assert not np.all(np.isfinite(np.asarray(traj.extras["next_obs"].agent_view[6])))
    assert np.all(np.isfinite(np.asarray(traj.observation.agent_view[7]))), "auto-reset restarted"
    metrics = traj.extras["episode_metrics"]
    np.testing.assert_array_equal(np.asarray(metrics.episode_length)[last], [5, 2])
    # Rewards are Playground's own (DM Control's balance reward lies in [0, 1]).
    assert np.all((np.asarray(traj.reward)[:5] >= 0.0) & (np.asarray(traj.reward)[:5] <= 1.0))


def test_playground_unknown_task_is_one_line():
    with pytest.raises(StoixConfigError, match="env.scenario.name='CartpoleBalanse'"):
        make_env(env_cfg("playground/cartpole_balance", **{"scenario.name": "CartpoleBalanse"}))


@pytest.mark.slow
@pytest.mark.parametrize("task", BRAX_CONFIGS)
def test_every_brax_config_builds_and_steps(task):
    # Slow: building a Brax system takes 2-3 s and compiling its step 10-25 s on 2 CPU cores;
    # the fast suite builds and steps inverted_pendulum in the test above.
    assert {"inverted_pendulum", "halfcheetah", "ant", "hopper", "reacher", "humanoid"} <= set(BRAX_CONFIGS)
    cfg = env_cfg(f"brax/{task}")
    assert cfg.kwargs.backend == "positional"
    env, eval_env = make_env(cfg)
    spec = env.action_spec
    np.testing.assert_array_equal(np.asarray(spec.minimum), -np.ones(spec.shape))
    assert eval_env.max_episode_steps == 1000
    state, timestep = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
    state, timestep = jax.jit(env.step)(state, jnp.zeros((2, *spec.shape)))
    assert timestep.observation.agent_view.shape == (2, *env.observation_spec.agent_view.shape)
    assert np.all(np.isfinite(np.asarray(timestep.reward)))
