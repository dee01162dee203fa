"""Adapter and wrappers: termination vs truncation, the kept final observation, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf
from scripted_env import ScriptedEnv

from stoix.utils.config import REPO_ROOT, StoixConfigError
from stoix.wrappers import make_env
from stoix.wrappers.core import AutoReset, ClipAction, PooledAutoReset, RecordEpisodeMetrics, VmapWrapper
from stoix.wrappers.gymnax import GYMNAX_ENVIRONMENTS, GymnaxToJumanji


def scripted(max_steps=5):
    env = ScriptedEnv()
    return GymnaxToJumanji(env, env.default_params.replace(max_steps_in_episode=max_steps))


def rollout(env, actions):
    state, timestep = env.reset(jax.random.PRNGKey(0))

    def body(state, action):
        state, timestep = env.step(state, action)
        return state, timestep

    _, traj = jax.lax.scan(body, state, jnp.asarray(actions))
    return traj


def test_termination_has_discount_zero_and_truncation_discount_one():
    traj = rollout(scripted(max_steps=3), [0, 1, 0, 0, 0])
    # Step 2 (action 1) terminates; the bare adapter does not reset, so we stop there.
    assert int(traj.step_type[1]) == 2 and float(traj.discount[1]) == 0.0
    assert float(traj.discount[0]) == 1.0 and int(traj.step_type[0]) == 1
    trunc = rollout(scripted(max_steps=3), [0, 0, 0])
    assert int(trunc.step_type[2]) == 2, "the time limit must end the episode"
    assert float(trunc.discount[2]) == 1.0, "a truncated episode still bootstraps"


def test_auto_reset_keeps_true_final_observation():
    env = AutoReset(RecordEpisodeMetrics(scripted(max_steps=3)))
    traj = rollout(env, [0, 0, 0, 0, 1, 0])
    times = np.asarray(traj.observation.agent_view[:, 0])
    next_times = np.asarray(traj.extras["next_obs"].agent_view[:, 0])
    # Episode 1 truncates at step 3: the observation restarts at 0, next_obs keeps 3.
    np.testing.assert_array_equal(times, [1, 2, 0, 1, 0, 1])
    np.testing.assert_array_equal(next_times, [1, 2, 3, 1, 2, 1])
    np.testing.assert_array_equal(np.asarray(traj.discount), [1, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(np.asarray(traj.last()), [0, 0, 1, 0, 1, 0])


def test_episode_metrics_only_mark_finished_episodes():
    env = AutoReset(RecordEpisodeMetrics(scripted(max_steps=3)))
    traj = rollout(env, [0, 0, 0, 0, 1, 0])
    metrics = traj.extras["episode_metrics"]
    done = np.asarray(metrics.is_terminal_step)
    np.testing.assert_array_equal(done, [0, 0, 1, 0, 1, 0])
    # Rewards are 1 + time: episode 1 = 1 + 2 + 3, episode 2 = 1 + 2.
    np.testing.assert_allclose(np.asarray(metrics.episode_return)[done], [6.0, 3.0])
    np.testing.assert_array_equal(np.asarray(metrics.episode_length)[done], [3, 2])
    # The running counters restart after each episode.
    assert float(metrics.episode_return[3]) == 1.0


def test_vmap_wrapper_steps_independent_environments():
    env = VmapWrapper(AutoReset(RecordEpisodeMetrics(scripted(max_steps=4))))
    state, timestep = env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    assert timestep.observation.agent_view.shape == (3, 2)
    state, timestep = env.step(state, jnp.array([0, 1, 0]))
    np.testing.assert_array_equal(np.asarray(timestep.discount), [1, 0, 1])
    np.testing.assert_array_equal(np.asarray(timestep.observation.agent_view[:, 0]), [1, 0, 1])


def batch_rollout(env, num_envs, actions):
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    # Reset and steps inside one trace, as a learner builds them.
    return jax.jit(lambda k: jax.lax.scan(env.step, env.reset(k)[0], jnp.asarray(actions))[1])(keys)


def test_pooled_auto_reset_matches_auto_reset_on_every_output():
    """The scripted task always restarts at time 0, so a start from the pool and an
    environment's own reset are the same: every output of the two batches must agree, over
    terminations (action 1) and truncations (limit 3) that several environments hit at once."""
    actions = np.zeros((9, 6), np.int32)
    actions[1, [0, 2, 3]] = 1  # three terminations on step 2, more than the pool of 2
    actions[4, 5] = 1
    own = batch_rollout(VmapWrapper(AutoReset(RecordEpisodeMetrics(scripted(max_steps=3)))), 6, actions)
    pooled = batch_rollout(PooledAutoReset(RecordEpisodeMetrics(scripted(max_steps=3)), 3), 6, actions)
    assert np.asarray(own.last()).sum() > 10
    for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(pooled), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pooled_auto_reset_draws_starts_from_a_pool_of_one_per_ratio():
    """CartPole starts at random: with a 3-step limit all 8 environments end together; with
    reset_ratio 4 their new starts come from a pool of 2 (the k-th to finish takes entry k % 2),
    with reset_ratio 1 every environment gets its own, and each round's pool is fresh."""
    cfg = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/cartpole.yaml")
    cfg.max_episode_steps = 3

    def starts(ratio):
        cfg.reset_ratio = ratio
        env, _ = make_env(cfg)
        assert isinstance(env, PooledAutoReset)
        traj = batch_rollout(env, 8, np.zeros((6, 8), np.int32))
        assert np.asarray(traj.last())[[2, 5]].all() and float(traj.discount[2].min()) == 1.0
        return np.asarray(traj.observation.agent_view)[[2, 5]]  # (round, env, 4)

    pooled = starts(4)
    for round_starts in pooled:
        assert len(np.unique(round_starts, axis=0)) == 2
        np.testing.assert_array_equal(round_starts[0::2], np.repeat(round_starts[:1], 4, axis=0))
        np.testing.assert_array_equal(round_starts[1::2], np.repeat(round_starts[1:2], 4, axis=0))
    assert not np.array_equal(pooled[0][:2], pooled[1][:2]), "a fresh pool each step"
    assert all(len(np.unique(r, axis=0)) == 8 for r in starts(1))


@pytest.mark.parametrize("ratio", [0, -2, 1.5, True, "4"])
def test_bad_reset_ratio_is_one_clear_error(ratio):
    cfg = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/cartpole.yaml")
    cfg.reset_ratio = ratio
    with pytest.raises(StoixConfigError, match=r"env.reset_ratio=.*positive integer"):
        make_env(cfg)


@pytest.mark.parametrize("name", sorted(GYMNAX_ENVIRONMENTS))
def test_every_gymnax_config_builds_and_steps(name):
    task = {
        "CartPole-v1": "cartpole",
        "Acrobot-v1": "acrobot",
        "MountainCar-v0": "mountain_car",
        "MountainCarContinuous-v0": "mountain_car_continuous",
        "Pendulum-v1": "pendulum",
        "Asterix-MinAtar": "asterix",
        "Breakout-MinAtar": "breakout",
        "Freeway-MinAtar": "freeway",
        "SpaceInvaders-MinAtar": "space_invaders",
        "MemoryChain-bsuite": "memory_chain",
    }[name]
    env_cfg = OmegaConf.load(REPO_ROOT / f"configs/env/gymnax/{task}.yaml")
    assert env_cfg.scenario.name == name
    env, eval_env = make_env(env_cfg)
    state, timestep = env.reset(jax.random.split(jax.random.PRNGKey(0), 2))
    spec = env.action_spec
    if hasattr(spec, "num_values"):
        action = jnp.zeros((2,), jnp.int32)
    else:
        action = jnp.broadcast_to(jnp.asarray(spec.maximum) + 5.0, (2, *spec.shape))
    state, timestep = jax.jit(env.step)(state, action)
    assert timestep.observation.agent_view.shape == (2, *env.observation_spec.agent_view.shape)
    assert eval_env.max_episode_steps > 0


def test_unknown_gymnax_name_is_a_clear_error():
    env_cfg = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/cartpole.yaml")
    env_cfg.scenario.name = "CartPole-v9"
    with pytest.raises(ValueError, match="env.scenario.name='CartPole-v9'"):
        make_env(env_cfg)


def test_pendulum_action_spec_is_bounded():
    env_cfg = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/pendulum.yaml")
    _, eval_env = make_env(env_cfg)
    spec = eval_env.action_spec
    np.testing.assert_allclose(spec.minimum, [-2.0])
    np.testing.assert_allclose(spec.maximum, [2.0])


def test_box_actions_are_clipped_into_the_bounds_before_the_environment_sees_them():
    class Echo:  # steps to the action it was given
        observation_spec = None
        action_spec = type(
            "Spec", (), {"minimum": np.asarray([-2.0, 0.0]), "maximum": np.asarray([2.0, 1.0])}
        )()

        def step(self, state, action):
            return state, action

    _, seen = ClipAction(Echo()).step(None, jnp.asarray([5.0, -3.0]))
    np.testing.assert_allclose(seen, [2.0, 0.0])
    _, seen = ClipAction(Echo()).step(None, jnp.asarray([-1.5, 0.25]))  # inside: unchanged
    np.testing.assert_allclose(seen, [-1.5, 0.25])
    # Every box environment (training and evaluation) gets it; discrete ones do not.
    pendulum = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/pendulum.yaml")
    cartpole = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/cartpole.yaml")
    assert isinstance(make_env(pendulum)[1], ClipAction)
    assert isinstance(make_env(pendulum)[0]._env._env._env, ClipAction)
    assert not isinstance(make_env(cartpole)[1], ClipAction)


def test_host_environment_on_anakin_points_to_sebulba():
    from omegaconf import OmegaConf

    from stoix.utils.config import CONFIG_DIR, StoixConfigError
    from stoix.wrappers import make_env

    with pytest.raises(StoixConfigError, match="run a Sebulba script"):
        make_env(OmegaConf.load(f"{CONFIG_DIR}/env/envpool/pong.yaml"))


def test_search_systems_find_the_single_environment_under_pooled_auto_reset():
    from stoix.systems.search.ff_az import model_env
    from stoix.wrappers.gymnax import GymnaxToJumanji

    cfg = OmegaConf.load(REPO_ROOT / "configs/env/gymnax/cartpole.yaml")
    cfg.reset_ratio = 4
    env, _ = make_env(cfg)
    assert isinstance(model_env(env), GymnaxToJumanji)
