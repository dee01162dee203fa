"""POPGym Arcade, Jumanji's multi-agent tasks (Connector, RobotWarehouse: multi-discrete
actions) and Jumanji Sokoban on Anakin: the adapters keep termination (discount 0) apart from
the time limit (discount 1), keep the final observation on auto-reset and report metrics on
the finishing step; the multi-discrete head's log-probability and entropy are sums over
sub-actions with each sub-action's mask applied; rec_ppo trains on POPGym Arcade (slow; ff_ppo
on every config: test_env_train.py)."""

import importlib.metadata
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_for, train_tiny
from omegaconf import OmegaConf
from test_env_suites import env_cfg, rollout

from stoix.networks.heads import CategoricalHead, MultiCategoricalHead
from stoix.utils.config import StoixConfigError
from stoix.wrappers import make_env
from stoix.wrappers.core import AutoReset, RecordEpisodeMetrics

FIRE, UP = 4, 0  # CountRecall's actions: 4 plays the card, 0 raises the guessed count


# POPGYM ARCADE


def test_popgym_arcade_runs_on_the_real_gymnax_without_its_fork():
    # stable-gymnax installs its own top-level `gymnax`; pyproject.toml overrides it away.
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("stable-gymnax")
    from gymnax.environments import environment

    from stoix.wrappers.popgym_arcade import make_popgym_arcade_env

    # CartPole defines only the fork's `is_terminal`; the adapter maps gymnax 1.x's name to it.
    game, params = make_popgym_arcade_env("CartPoleEasy", partial_obs=True)
    assert isinstance(game, environment.Environment)
    image, state = game.reset_env(jax.random.PRNGKey(0), params)
    image, state, reward, done, info = jax.jit(game.step_env)(jax.random.PRNGKey(1), state, 0, params)
    assert image.shape == (128, 128, 3) and image.dtype == jnp.uint8
    assert float(reward) >= 0 and not bool(done)


def test_popgym_arcade_termination_truncation_auto_reset_and_metrics():
    """CountRecallEasy ends when all 26 cards are played (a termination); a new episode that
    never plays one reaches the 30-step limit (a truncation). One compiled rollout through
    AutoReset(RecordEpisodeMetrics(.))."""
    single = make_env(env_cfg("popgym_arcade/count_recall_easy", max_episode_steps=30))[1]
    assert single.observation_spec.agent_view.shape == (32 * 32 * 3,)
    env = AutoReset(RecordEpisodeMetrics(single))
    traj = rollout(env, jax.random.PRNGKey(0), [FIRE] * 26 + [UP] * 31)
    last = np.nonzero(np.asarray(traj.last()))[0]
    np.testing.assert_array_equal(last, [25, 55])
    np.testing.assert_array_equal(np.asarray(traj.discount)[last], [0.0, 1.0])
    assert np.all(np.asarray(traj.discount)[np.asarray(~traj.last())] == 1.0)
    metrics = traj.extras["episode_metrics"]
    np.testing.assert_array_equal(np.nonzero(np.asarray(metrics.is_terminal_step))[0], last)
    np.testing.assert_array_equal(np.asarray(metrics.episode_length)[last], [26, 30])
    np.testing.assert_allclose(float(metrics.episode_return[25]), float(np.sum(traj.reward[:26])), rtol=1e-6)
    # The observation restarts; the final one is kept for the bootstrap.
    np.testing.assert_array_equal(np.asarray(traj.extras["next_obs"].step_count)[last], [26, 30])
    np.testing.assert_array_equal(np.asarray(traj.observation.step_count)[last], [0, 0])
    view = np.asarray(traj.observation.agent_view)
    assert 0.0 <= view.min() and view.max() <= 1.0


def test_popgym_arcade_bad_names_and_downsample_are_clear_errors():
    with pytest.raises(StoixConfigError, match="env.scenario.name='CountRecallEasyy'"):
        make_env(env_cfg("popgym_arcade/count_recall_easy", **{"scenario.name": "CountRecallEasyy"}))
    with pytest.raises(StoixConfigError, match="env.downsample=5"):
        make_env(env_cfg("popgym_arcade/navigator_easy", downsample=5))


def train(entry: str, env: str, tmp_path, extra=()):
    system = entry.removeprefix("default_")
    overrides = [*tiny_for(system), f"env={env}", "arch.eval_step_cap=64", f"logger.base_exp_path={tmp_path}"]
    train_tiny(system, [*overrides, *extra])


@pytest.mark.slow
def test_rec_ppo_trains_on_popgym_arcade_count_recall(tmp_path):
    # Slow: 42 s on 2 CPU cores (importing and compiling the game's renderer, ~6 ms per
    # rendered frame); the fast suite checks the adapter above.
    train(
        "default_rec_ppo",
        "popgym_arcade/count_recall_easy",
        tmp_path,
        ["network=rnn", "arch.total_timesteps=512"],
    )


# MULTI-DISCRETE HEAD


def _head_with_logits(dims, bias, mask):
    """The head's distribution with a zero kernel, so its logits are `bias` (flattened)."""
    head = MultiCategoricalHead(action_dims=dims)
    x = jnp.ones((1, 3))
    params = head.init(jax.random.PRNGKey(0), x, mask)
    params = jax.tree.map(jnp.zeros_like, params)
    params["params"]["Dense_0"]["bias"] = jnp.asarray(bias, jnp.float32).reshape(-1)
    return head.apply(params, x, mask)


def test_multi_categorical_log_prob_and_entropy_are_sums_over_masked_sub_actions():
    # Sub-action 0 has 3 choices with logits (0, ln 2, 0) and choice 2 masked: probabilities
    # (1/3, 2/3, 0). Sub-action 1 has 2 choices (its third column is padding) with logits
    # (ln 3, 0): probabilities (3/4, 1/4).
    bias = [[0.0, math.log(2.0), 0.0], [math.log(3.0), 0.0, 5.0]]
    mask = jnp.asarray([[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    pi = _head_with_logits((3, 2), bias, mask)
    expected_log_prob = math.log(2 / 3) + math.log(3 / 4)
    np.testing.assert_allclose(np.asarray(pi.log_prob(jnp.asarray([[1, 0]]))), [expected_log_prob], rtol=1e-5)

    def entropy(*p):
        return -sum(q * math.log(q) for q in p)

    np.testing.assert_allclose(
        np.asarray(pi.entropy()), [entropy(1 / 3, 2 / 3) + entropy(3 / 4, 1 / 4)], rtol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(pi.mode()), [[1, 0]])
    samples = np.asarray(pi.sample(seed=jax.random.PRNGKey(1), sample_shape=(2000,)))
    assert samples.shape == (2000, 1, 2)
    assert not np.any(samples[..., 0] == 2), "a masked choice was sampled"
    assert not np.any(samples[..., 1] == 2), "a padded choice was sampled"
    np.testing.assert_allclose(np.mean(samples[..., 0] == 1), 2 / 3, atol=0.04)


def test_head_and_action_space_mismatch_is_a_clear_error():
    from stoix.networks.base import make_actor

    env = make_env(env_cfg("jumanji/robot_warehouse"))[1]
    single = OmegaConf.create(
        {
            "pre_torso": {"_target_": "stoix.networks.torso.MLPTorso", "layer_sizes": [8]},
            "action_head": {"_target_": f"{CategoricalHead.__module__}.CategoricalHead"},
        }
    )
    with pytest.raises(StoixConfigError, match="network=mlp_multidiscrete"):
        make_actor(single, env.action_spec)
    single.action_head._target_ = f"{MultiCategoricalHead.__module__}.MultiCategoricalHead"
    actor = make_actor(single, env.action_spec)
    assert actor.action_head.action_dims == [5, 5, 5, 5]


# JUMANJI CONNECTOR, ROBOT WAREHOUSE, SOKOBAN


@pytest.mark.slow
def test_jumanji_multi_agent_masks_rewards_and_time_limit():
    # Slow: compiling Connector's and RobotWarehouse's steps takes ~14 s on 2 CPU cores.
    from stoix.wrappers.jumanji import make_jumanji_env

    # Connector: the (agents, moves) mask is the task's own; the reward is the team's total.
    env = make_env(env_cfg("jumanji/connector", max_episode_steps=3))[1]
    native, _, _ = make_jumanji_env("Connector-v2")
    key = jax.random.PRNGKey(0)
    _, timestep = env.reset(key)
    native_state, native_timestep = native.reset(key)
    np.testing.assert_array_equal(
        np.asarray(timestep.observation.action_mask),
        np.asarray(native_timestep.observation.action_mask, np.float32),
    )
    action = jnp.zeros((10,), jnp.int32)
    traj = rollout(env, key, jnp.stack([action] * 3))
    _, native_next = native.step(native_state, action)
    np.testing.assert_allclose(float(traj.reward[0]), float(jnp.sum(native_next.reward)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(traj.last()), [0, 0, 1])
    np.testing.assert_array_equal(np.asarray(traj.discount), [1.0, 1.0, 1.0])
    # RobotWarehouse's own limit terminates; the adapter truncates (robots idle, no collision).
    warehouse = make_env(env_cfg("jumanji/robot_warehouse", max_episode_steps=4))[1]
    traj = rollout(warehouse, key, jnp.zeros((4, 4), jnp.int32))
    np.testing.assert_array_equal(np.asarray(traj.last()), [0, 0, 0, 1])
    np.testing.assert_array_equal(np.asarray(traj.discount), [1.0] * 4)


def test_sokoban_needs_no_download_and_a_failed_one_is_one_clear_error(monkeypatch):
    from jumanji.environments.routing.sokoban import generator

    env = make_env(env_cfg("jumanji/sokoban", max_episode_steps=3))[1]
    assert isinstance(env._env.generator, generator.ToyGenerator)
    traj = rollout(env, jax.random.PRNGKey(0), [0, 0, 0])
    np.testing.assert_array_equal(np.asarray(traj.last()), [0, 0, 1])
    np.testing.assert_array_equal(np.asarray(traj.discount), [1.0] * 3)
    np.testing.assert_array_equal(np.asarray(traj.observation.action_mask), np.ones((3, 4)))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(generator, "hf_hub_download", offline)
    with pytest.raises(StoixConfigError, match="env.kwargs.generator=huggingface could not download"):
        make_env(env_cfg("jumanji/sokoban", **{"kwargs.generator": "huggingface"}))
    with pytest.raises(StoixConfigError, match="env.kwargs.generator='boxoban'"):
        make_env(env_cfg("jumanji/sokoban", **{"kwargs.generator": "boxoban"}))


def test_single_discrete_systems_refuse_multi_discrete_actions_in_one_line():
    from jumanji import specs

    from stoix.utils.action_spaces import require_action_space

    spec = specs.MultiDiscreteArray(num_values=np.full((4,), 5, np.int32))
    with pytest.raises(
        StoixConfigError, match="ff_dqn takes one discrete action.*4 sub-actions.*mlp_multidiscrete"
    ):
        require_action_space(spec, "ff_dqn", continuous=False)
    require_action_space(specs.DiscreteArray(5), "ff_dqn", continuous=False)  # one action: fine


# KINETIX


def test_kinetix_is_installed_past_its_own_pins():
    # kinetix-env 3.0.2 asks for jax <= 0.9.0 and jax2d == 1.0.1, whose `jnp.clip(a_min=...)` the
    # locked jax removed; pyproject.toml overrides both (see [tool.uv]).
    from packaging.version import Version

    assert Version(importlib.metadata.version("jax2d")) >= Version("1.0.2")
    assert Version(jax.__version__) > Version("0.9.0"), jax.__version__


def test_kinetix_red_contact_terminates_and_time_limit_truncates():
    """h0_weak_thrust under random discrete commands: the ball meets a red shape (-1, discount
    0) within ~20 steps. h2_one_wheel_car under random continuous commands never finishes: the
    8-step limit truncates (discount 1). Auto-reset keeps each final step count; the metrics
    sum the episode's rewards."""
    discrete = AutoReset(RecordEpisodeMetrics(make_env(env_cfg("kinetix/h0_weak_thrust"))[1]))
    assert discrete.action_spec.num_values == 11
    actions = jax.random.randint(jax.random.PRNGKey(1), (30,), 0, 11)
    traj = rollout(discrete, jax.random.PRNGKey(0), actions)
    last = int(np.nonzero(np.asarray(traj.last()))[0][0])
    assert 5 < last < 29, last
    assert float(traj.discount[last]) == 0.0 and float(traj.reward[last]) < -0.9
    assert np.all(np.asarray(traj.discount)[:last] == 1.0)
    metrics = traj.extras["episode_metrics"]
    assert int(metrics.episode_length[last]) == last + 1
    np.testing.assert_allclose(
        float(metrics.episode_return[last]), float(np.sum(np.asarray(traj.reward)[: last + 1])), rtol=1e-5
    )
    assert int(traj.extras["next_obs"].step_count[last]) == last + 1
    assert int(traj.observation.step_count[last]) == 0, "auto-reset restarted the level"

    cfg = env_cfg("kinetix/h2_one_wheel_car", max_episode_steps=8)
    continuous = AutoReset(RecordEpisodeMetrics(make_env(cfg)[1]))
    spec = continuous.action_spec
    np.testing.assert_array_equal(np.asarray(spec.minimum), -np.ones(spec.shape))
    actions = jax.random.uniform(jax.random.PRNGKey(1), (17, *spec.shape), minval=-1.0, maxval=1.0)
    traj = rollout(continuous, jax.random.PRNGKey(0), actions)
    np.testing.assert_array_equal(np.nonzero(np.asarray(traj.last()))[0], [7, 15])
    np.testing.assert_array_equal(np.asarray(traj.discount), np.ones(17))
    np.testing.assert_array_equal(np.asarray(traj.extras["episode_metrics"].episode_length)[[7, 15]], [8, 8])


def test_kinetix_bad_level_and_action_type_are_one_line():
    with pytest.raises(StoixConfigError, match=r"env.scenario.name='s/h0_weak_thrusts'.*levels"):
        make_env(env_cfg("kinetix/h0_weak_thrust", **{"scenario.name": "s/h0_weak_thrusts"}))
    with pytest.raises(StoixConfigError, match=r"env.kwargs.action_type='multi_discrete'"):
        make_env(env_cfg("kinetix/h0_weak_thrust", **{"kwargs.action_type": "multi_discrete"}))
    with pytest.raises(StoixConfigError, match=r"env.kwargs.observation_type='pixels'"):
        make_env(env_cfg("kinetix/h0_weak_thrust", **{"kwargs.observation_type": "pixels"}))
