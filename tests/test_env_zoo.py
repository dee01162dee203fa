"""XLand-MiniGrid, Navix and Craftax on Anakin: each adapter keeps termination (discount 0)
apart from the time limit (discount 1), keeps the final observation and the episode metrics
on auto-reset; every config builds and steps; unknown names are one clear error; PPO trains
on one task of each suite. (tests/test_env_suites.py checks a gymnax run imports none.)"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from stoix.utils.config import CONFIG_DIR, REPO_ROOT, StoixConfigError
from stoix.wrappers import make_env
from stoix.wrappers.core import AutoReset, RecordEpisodeMetrics

ZOO_CONFIGS = sorted(
    f"{suite}/{p.stem}"
    for suite in ("xminigrid", "navix", "craftax")
    for p in (Path(CONFIG_DIR) / "env" / suite).glob("*.yaml")
)
# Craftax's step takes ~15 s to compile on 2 CPU cores (its pixels ~30 s more the first time,
# while Craftax caches its textures): those configs are checked in the slow suite.
ZOO_PARAMS = [pytest.param(t, marks=pytest.mark.slow) if t.startswith("craftax") else t for t in ZOO_CONFIGS]
# Scripted shortest paths to the goal from the fixed start (agent at (1, 1) facing east).
# XLand-MiniGrid: 0 forward, 1 turn right; the goal counts when stepped onto with forward.
XMINIGRID_EMPTY_6X6_PATH = [0, 0, 0, 1, 0, 0, 0]
# Navix: 0 turn left, 1 turn right, 2 forward.
NAVIX_EMPTY_5X5_PATH = [2, 2, 1, 2, 2]


def env_cfg(path: str, **changes):
    cfg = OmegaConf.load(REPO_ROOT / f"configs/env/{path}.yaml")
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def single(path: str, **changes):
    return make_env(env_cfg(path, **changes))[1]


def rollout(env, key, actions):
    state, _ = env.reset(key)
    return jax.jit(lambda s: jax.lax.scan(lambda s, a: env.step(s, a), s, jnp.asarray(actions))[1])(state)


def check_ends(traj, last_steps, discounts):
    """The episode ends exactly at `last_steps` with `discounts`; every other step has discount 1."""
    last = np.nonzero(np.asarray(traj.last()))[0]
    np.testing.assert_array_equal(last, last_steps)
    np.testing.assert_array_equal(np.asarray(traj.discount)[last], discounts)
    assert np.all(np.asarray(traj.discount)[~np.asarray(traj.last())] == 1.0)


def test_xminigrid_goal_terminates_and_time_limit_truncates():
    path = XMINIGRID_EMPTY_6X6_PATH
    env = single("xminigrid/empty_6x6")
    assert env.max_episode_steps == 4 * 6 * 6, "the suite's own limit"
    traj = rollout(env, jax.random.PRNGKey(0), path)
    check_ends(traj, [6], [0.0])
    # XLand-MiniGrid's goal reward: 1 - 0.9 * steps / max_steps.
    np.testing.assert_allclose(np.asarray(traj.reward), [0.0] * 6 + [1 - 0.9 * 7 / 144], rtol=1e-6)
    # A limit of 4 steps ends the same walk on time, with discount 1; a limit of 7 coincides with
    # the goal, and the termination wins.
    check_ends(
        rollout(single("xminigrid/empty_6x6", max_episode_steps=4), jax.random.PRNGKey(0), path[:4]),
        [3],
        [1.0],
    )
    traj = rollout(single("xminigrid/empty_6x6", max_episode_steps=7), jax.random.PRNGKey(0), path)
    check_ends(traj, [6], [0.0])


def test_xminigrid_auto_reset_keeps_final_observation_and_metrics():
    path = XMINIGRID_EMPTY_6X6_PATH
    env = AutoReset(RecordEpisodeMetrics(single("xminigrid/empty_6x6")))
    traj = rollout(env, jax.random.PRNGKey(1), [*path, 0])
    assert int(traj.observation.step_count[6]) == 0, "the observation restarted"
    assert int(traj.extras["next_obs"].step_count[6]) == 7
    # The agent stands on the goal in the final view: the cell ahead of it is the wall, not floor.
    assert not np.array_equal(
        np.asarray(traj.extras["next_obs"].agent_view[6]), np.asarray(traj.observation.agent_view[6])
    )
    metrics = traj.extras["episode_metrics"]
    np.testing.assert_array_equal(np.asarray(metrics.is_terminal_step), [0] * 6 + [1, 0])
    assert int(metrics.episode_length[6]) == 7
    np.testing.assert_allclose(float(metrics.episode_return[6]), 1 - 0.9 * 7 / 144, rtol=1e-6)


def test_navix_goal_terminates_and_time_limit_truncates():
    path = NAVIX_EMPTY_5X5_PATH
    env = single("navix/empty_5x5")
    assert env.max_episode_steps == 100
    traj = rollout(env, jax.random.PRNGKey(0), path)
    check_ends(traj, [4], [0.0])
    np.testing.assert_allclose(np.asarray(traj.reward), [0.0] * 4 + [1.0])
    check_ends(
        rollout(single("navix/empty_5x5", max_episode_steps=3), jax.random.PRNGKey(0), [0] * 3), [2], [1.0]
    )
    traj = rollout(single("navix/empty_5x5", max_episode_steps=5), jax.random.PRNGKey(0), path)
    check_ends(traj, [4], [0.0])


def test_navix_auto_reset_keeps_final_observation_and_metrics():
    env = AutoReset(RecordEpisodeMetrics(single("navix/empty_5x5", max_episode_steps=3)))
    traj = rollout(env, jax.random.PRNGKey(0), [1, 1, 1, 2])
    # Three right turns end the episode on time facing north; the reset faces east again.
    final, restarted = traj.extras["next_obs"].agent_view[2], traj.observation.agent_view[2]
    start = single("navix/empty_5x5").reset(jax.random.PRNGKey(5))[1].observation.agent_view
    np.testing.assert_array_equal(np.asarray(restarted), np.asarray(start))
    assert not np.array_equal(np.asarray(final), np.asarray(start)), "the final observation is kept apart"
    assert int(traj.extras["next_obs"].step_count[2]) == 3 and int(traj.observation.step_count[2]) == 0
    metrics = traj.extras["episode_metrics"]
    np.testing.assert_array_equal(np.asarray(metrics.is_terminal_step), [0, 0, 1, 0])
    assert int(metrics.episode_length[2]) == 3 and float(metrics.episode_return[2]) == 0.0


@pytest.mark.slow
def test_craftax_death_terminates_and_time_limit_truncates():
    """Slow: compiling Craftax's step takes ~15 s on 2 CPU cores."""
    env = AutoReset(RecordEpisodeMetrics(single("craftax/classic_symbolic", max_episode_steps=4)))
    assert env.max_episode_steps == 4
    # NOOP (action 0) four times: the limit ends the episode with discount 1.
    traj = rollout(env, jax.random.PRNGKey(0), [0] * 5)
    check_ends(traj, [3], [1.0])
    assert int(traj.extras["next_obs"].step_count[3]) == 4 and int(traj.observation.step_count[3]) == 0
    metrics = traj.extras["episode_metrics"]
    assert int(metrics.episode_length[3]) == 4
    np.testing.assert_allclose(float(metrics.episode_return[3]), float(np.sum(traj.reward[:4])))
    # A player at zero health dies on the next step: discount 0, well before the limit.
    bare = single("craftax/classic_symbolic")
    assert bare.max_episode_steps == 10_000, "Craftax's own limit"
    state, _ = bare.reset(jax.random.PRNGKey(0))
    dying = state._replace(
        env_state=state.env_state.replace(player_health=jnp.zeros_like(state.env_state.player_health))
    )
    _, timestep = jax.jit(bare.step)(dying, jnp.asarray(0))
    assert bool(timestep.last()) and float(timestep.discount) == 0.0
    _, timestep = jax.jit(bare.step)(state, jnp.asarray(0))
    assert not bool(timestep.last()) and float(timestep.discount) == 1.0


@pytest.mark.parametrize("task", ZOO_PARAMS)
def test_every_zoo_config_builds_and_steps(task):
    assert {
        "xminigrid/empty_6x6",
        "xminigrid/xland_r1_9x9",
        "navix/empty_5x5",
        "navix/doorkey_5x5",
        "craftax/classic_symbolic",
        "craftax/classic_pixels",
    } <= set(ZOO_CONFIGS)
    env, eval_env = make_env(env_cfg(task))
    state, timestep = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
    spec = env.observation_spec.agent_view
    assert timestep.observation.agent_view.shape == (2, *spec.shape)
    assert timestep.observation.action_mask.shape == (2, env.action_spec.num_values)
    state, timestep = jax.jit(env.step)(state, jnp.ones((2,), jnp.int32))
    assert timestep.observation.agent_view.dtype == jnp.float32
    assert timestep.observation.agent_view.shape == (2, *spec.shape)
    assert eval_env.max_episode_steps > 0
    if task == "craftax/classic_pixels":
        assert spec.shape == (63, 63, 3), "an image for network=cnn"
    else:
        assert len(spec.shape) == 1, "a flat vector for network=mlp"


def test_unknown_zoo_names_are_clear_errors():
    with pytest.raises(StoixConfigError, match=r"env.scenario.name='MiniGrid-Empty-7x7'.*MiniGrid-Empty-6x6"):
        make_env(env_cfg("xminigrid/empty_6x6", **{"scenario.name": "MiniGrid-Empty-7x7"}))
    with pytest.raises(StoixConfigError, match=r"env.scenario.name='Navix-Empty-4x4-v0'.*Navix-Empty-5x5-v0"):
        make_env(env_cfg("navix/empty_5x5", **{"scenario.name": "Navix-Empty-4x4-v0"}))
    with pytest.raises(StoixConfigError, match=r"env.scenario.name='Craftax-Symbolic-v9'.*Classic-Symbolic"):
        make_env(env_cfg("craftax/classic_symbolic", **{"scenario.name": "Craftax-Symbolic-v9"}))
    with pytest.raises(StoixConfigError, match=r"env.ruleset.goal='hold'"):
        make_env(env_cfg("xminigrid/xland_r1_9x9", **{"ruleset.goal": "hold"}))
    with pytest.raises(StoixConfigError, match=r"env.ruleset is missing"):
        make_env(env_cfg("xminigrid/xland_r1_9x9", ruleset=None))
    with pytest.raises(StoixConfigError, match=r"env.kwargs \['day_lenght'\]"):
        make_env(env_cfg("craftax/classic_symbolic", **{"kwargs.day_lenght": 10}))
