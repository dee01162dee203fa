"""The continuous off-policy family (DDPG, TD3, D4PG, SAC): losses by hand with a truncated
and a terminated transition, actions inside the bounds, bad input, multi-device runs, resume.

Hand-made batches use stand-in networks so every number can be worked out on paper:
actor mu_theta(x) = theta * x, critic k: Q_k(x, a) = w_k * (x + a). Sample 0 is truncated
(done, discount 1: bootstraps from its final observation), sample 1 terminated (discount 0).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for

from stoix.architectures.anakin import run_experiment
from stoix.base_types import Observation
from stoix.networks.heads import DistributionalValue
from stoix.systems.ddpg import ff_d4pg, ff_ddpg, ff_td3
from stoix.systems.sac import ff_sac
from stoix.utils.config import StoixConfigError, compose_config

GAMMA = 0.9
SYSTEMS = ["ff_ddpg", "ff_td3", "ff_d4pg", "ff_sac"]


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.zeros_like(x), jnp.zeros(x.shape[:-1], jnp.int32))


def batch(n_step=1):
    """(B=2, n=1): truncated (x 1 -> 2, a 0.5, r 1) and terminated (x 3 -> 4, a -0.5, r 2)."""
    return ff_ddpg.Transition(
        obs=obs([[1.0], [3.0]]),
        action=jnp.asarray([[[0.5]], [[-0.5]]]),
        reward=jnp.asarray([[1.0], [2.0]]),
        discount=jnp.asarray([[1.0], [0.0]]),
        done=jnp.asarray([[True], [True]]),
        next_obs=obs([[2.0], [4.0]]),
    )


def actor_apply(theta, observation):
    return theta * observation.agent_view


def critic_apply(w, observation, action):  # (critics, B)
    return w[:, None] * (observation.agent_view[..., 0] + action[..., 0])[None]


def test_ddpg_target_bootstraps_a_truncated_but_not_a_terminated_transition():
    params = ff_ddpg.DDPGParams(actor=0.5, critic=None, target_actor=0.5, target_critic=jnp.asarray([2.0]))
    loss, _ = ff_ddpg.critic_loss(
        jnp.asarray([1.0]),
        params,
        batch(),
        jax.random.PRNGKey(0),
        actor_apply=actor_apply,
        critic_apply=critic_apply,
        gamma=GAMMA,
        bounds=None,
    )
    # truncated: target 1 + 0.9 * 2 * (2 + 0.5 * 2) = 6.4, Q = 1.5; terminated: target 2, Q = 2.5
    np.testing.assert_allclose(loss, (0.5 * 4.9**2 + 0.5 * 0.5**2) / 2, rtol=1e-6)


def test_ddpg_n_step_target_sums_rewards_up_to_a_truncation():
    seq = ff_ddpg.Transition(
        obs=obs([[1.0, 5.0]]),
        action=jnp.asarray([[[0.5], [0.0]]]),
        reward=jnp.asarray([[1.0, 1.0]]),
        discount=jnp.asarray([[1.0, 1.0]]),
        done=jnp.asarray([[False, True]]),  # the second step hits the time limit
        next_obs=obs([[5.0, 2.0]]),
    )
    params = ff_ddpg.DDPGParams(actor=0.5, critic=None, target_actor=0.5, target_critic=jnp.asarray([2.0]))
    loss, _ = ff_ddpg.critic_loss(
        jnp.asarray([1.0]),
        params,
        seq,
        None,
        actor_apply=actor_apply,
        critic_apply=critic_apply,
        gamma=GAMMA,
        bounds=None,
    )
    target = 1.0 + 0.9 * 1.0 + 0.81 * 2.0 * (2.0 + 1.0)  # bootstraps from the final observation x=2
    np.testing.assert_allclose(loss, 0.5 * (target - 1.5) ** 2, rtol=1e-6)


def test_ddpg_actor_moves_along_dq_da():
    params = ff_ddpg.DDPGParams(actor=0.5, critic=jnp.asarray([1.0]), target_actor=0.5, target_critic=None)
    loss_fn = lambda theta: ff_ddpg.actor_loss(  # noqa: E731
        theta, params, batch(), None, actor_apply=actor_apply, critic_apply=critic_apply
    )[0]
    # dQ/da = w = 1 for every sample, so the loss is 0.5 and its gradient is -mean(x) = -2:
    # gradient descent raises theta, i.e. raises Q.
    np.testing.assert_allclose(loss_fn(0.5), 0.5, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(loss_fn)(0.5), -2.0, rtol=1e-6)


def test_td3_target_takes_the_smaller_twin_and_clips_the_smoothing_noise():
    params = ff_ddpg.DDPGParams(
        actor=0.5, critic=None, target_actor=0.5, target_critic=jnp.asarray([2.0, 3.0])
    )
    kwargs = dict(actor_apply=actor_apply, critic_apply=critic_apply, gamma=GAMMA, noise_clip=0.5)
    bounds = ff_ddpg.ActionBounds(jnp.asarray([-2.0]), jnp.asarray([2.0]))
    loss, _ = ff_td3.td3_critic_loss(
        jnp.asarray([1.0, 2.0]),
        params,
        batch(),
        jax.random.PRNGKey(0),
        bounds=bounds,
        policy_noise=0.0,
        **kwargs,
    )
    # target: 1 + 0.9 * min(2, 3) * 3 = 6.4 (truncated), 2 (terminated); Q1 = (1.5, 2.5), Q2 = (3, 5)
    expected = (0.5 * 4.9**2 + 0.5 * 0.5**2) / 2 + (0.5 * 3.4**2 + 0.5 * 3.0**2) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # Huge smoothing noise is clipped to noise_clip * half_range = 1: the target action lies in
    # [1 - 1, 1 + 1] for sample 0, so the target stays within the values that range allows.
    for seed in range(5):
        noisy, _ = ff_td3.td3_critic_loss(
            jnp.asarray([1.0, 2.0]),
            params,
            batch(),
            jax.random.PRNGKey(seed),
            bounds=bounds,
            policy_noise=100.0,
            **kwargs,
        )
        low = ff_td3.td3_critic_loss(
            jnp.asarray([1.0, 2.0]),
            params._replace(target_actor=0.0),
            batch(),
            jax.random.PRNGKey(0),
            bounds=bounds,
            policy_noise=0.0,
            **kwargs,
        )[0]
        high = ff_td3.td3_critic_loss(
            jnp.asarray([1.0, 2.0]),
            params._replace(target_actor=1.0),
            batch(),
            jax.random.PRNGKey(0),
            bounds=bounds,
            policy_noise=0.0,
            **kwargs,
        )[0]
        assert low - 1e-5 <= noisy <= high + 1e-5


def test_d4pg_projects_the_target_distribution_for_truncation_and_termination():
    atoms = jnp.asarray([0.0, 5.0, 10.0])

    def dist_apply(logits, observation, action):  # the same distribution for every input
        b = observation.agent_view.shape[0]
        logits_b = jnp.broadcast_to(logits, (1, b, 3))
        return DistributionalValue(jnp.zeros((1, b)), logits_b, jnp.broadcast_to(atoms, (1, 3)))

    params = ff_ddpg.DDPGParams(
        actor=0.5, critic=None, target_actor=0.5, target_critic=jnp.asarray([-100.0, 100.0, -100.0])
    )
    loss, _ = ff_d4pg.d4pg_critic_loss(
        jnp.asarray([0.0, 1.0, 2.0]),
        params,
        batch(),
        None,
        actor_apply=actor_apply,
        critic_apply=dist_apply,
        gamma=GAMMA,
        bounds=None,
    )
    log_p = jax.nn.log_softmax(jnp.asarray([0.0, 1.0, 2.0]))
    # truncated: 1 + 0.9 * 5 = 5.5 -> 0.9 on atom 5, 0.1 on atom 10; terminated: 2 -> 0.6 on 0, 0.4 on 5
    expected = (-(0.9 * log_p[1] + 0.1 * log_p[2]) - (0.6 * log_p[0] + 0.4 * log_p[1])) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


class FixedPolicy:
    """A stand-in policy whose samples are theta * x with log-probability -1."""

    def __init__(self, action):
        self.action = action

    def sample_and_log_prob(self, seed):
        return self.action, -jnp.ones(self.action.shape[:-1])


def test_sac_target_is_the_soft_value_of_the_final_observation_unless_terminated():
    params = ff_sac.SACParams(
        actor=0.5, critic=None, target_critic=jnp.asarray([2.0, 3.0]), log_alpha=jnp.log(0.5)
    )
    loss, _ = ff_sac.critic_loss(
        jnp.asarray([1.0, 2.0]),
        params,
        batch(),
        jax.random.PRNGKey(0),
        actor_apply=lambda theta, o: FixedPolicy(actor_apply(theta, o)),
        critic_apply=critic_apply,
        gamma=GAMMA,
    )
    # truncated: 1 + 0.9 * (min(2, 3) * 3 - 0.5 * -1) = 6.85; terminated: 2
    expected = (0.5 * 5.35**2 + 0.5 * 0.5**2) / 2 + (0.5 * 3.85**2 + 0.5 * 3.0**2) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_sac_temperature_rises_when_entropy_is_below_target_and_falls_above():
    low_entropy = jnp.asarray([2.0, 2.0])  # log pi = 2: entropy -2 < target -1
    high_entropy = jnp.asarray([-3.0, -3.0])
    assert jax.grad(ff_sac.alpha_loss)(0.0, low_entropy, -1.0) < 0  # descent raises log alpha
    assert jax.grad(ff_sac.alpha_loss)(0.0, high_entropy, -1.0) > 0
    np.testing.assert_allclose(ff_sac.alpha_loss(jnp.log(2.0), low_entropy, -1.0), -jnp.log(2.0), rtol=1e-6)


def config(system, tmp_path, *overrides):
    return compose_config(
        f"default/anakin/default_{system}",
        [*tiny_for(system), f"logger.base_exp_path={tmp_path}", *overrides],
    )


def setup_of(system, cfg):
    from stoix.utils.sizes import anakin_sizes
    from stoix.wrappers import make_env

    module = {"ff_ddpg": ff_ddpg, "ff_td3": ff_td3, "ff_d4pg": ff_d4pg, "ff_sac": ff_sac}[system]
    env, _ = make_env(cfg.env)
    sizes = anakin_sizes(cfg.arch, int(cfg.system.rollout_length), jax.device_count())
    return module.learner_setup(env, cfg, sizes, jax.random.PRNGKey(0))


@pytest.mark.parametrize("system", SYSTEMS)
def test_actions_stay_inside_the_bounds_taken_from_the_spec(system, tmp_path):
    # Pendulum's torque is in [-2, 2]: warm-up, noisy exploration and evaluation actions must
    # use all of it (not a hard-coded [-1, 1]) and never leave it, even with huge noise.
    noise = [] if system == "ff_sac" else ["system.exploration_noise=50.0"]
    cfg = config(system, tmp_path, *noise)
    setup = setup_of(system, cfg)
    state, _ = setup.learn(setup.learner_state)[:2]
    stored = np.asarray(state.buffer_state.experience.action)
    assert stored.min() >= -2.0 and stored.max() <= 2.0
    assert np.abs(stored).max() > 1.5
    params = jax.tree.map(lambda x: x[0, 0], setup.actor.eval_params(state))
    view = jnp.asarray(np.random.default_rng(0).uniform(-8, 8, (64, 3)), jnp.float32)
    observation = Observation(view, jnp.ones((64, 1)), jnp.zeros(64, jnp.int32))
    for greedy in (True, False):
        action = np.asarray(setup.actor.act(params, observation, jax.random.PRNGKey(1), greedy))
        assert action.shape == (64, 1) and action.min() >= -2.0 and action.max() <= 2.0


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_discrete_environment_is_a_one_line_error_naming_the_fitting_systems(system, tmp_path):
    cfg = config(system, tmp_path, "env=gymnax/cartpole")
    with pytest.raises(
        StoixConfigError, match=rf"{system} needs continuous \(box\) actions.*use one of ff_dqn.*ff_ppo"
    ):
        setup_of(system, cfg)


def test_replay_sizes_that_do_not_divide_name_the_key(tmp_path):
    cfg = config("ff_td3", tmp_path, "system.total_buffer_size=250")
    with pytest.raises(StoixConfigError, match="system.total_buffer_size=250"):
        setup_of("ff_td3", cfg)


@pytest.mark.parametrize("system", [pytest.param("ff_td3", marks=pytest.mark.slow), "ff_sac"])
def test_two_devices_with_update_batches(system, tmp_path):
    script = anakin_script(system)
    overrides = [*tiny_for(system), "arch.update_batch_size=2", "logger.use_console=true"]
    proc = run_script(str(script.relative_to(REPO_ROOT)), overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert f"RESULT {system} Pendulum-v1" in proc.stdout


def _final_state(directory, step):
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.restore((directory / str(step) / "learner_state").resolve())
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_td3_resume_is_exact_replay_buffer_included(tmp_path):
    rounds = 4
    overrides = [
        f"arch.num_evaluation={rounds}",
        f"arch.total_timesteps={rounds * 2 * 8 * 4}",  # 2 updates of 8 steps x 4 envs a round
        "logger.checkpointing.save_model=true",
        "logger.checkpointing.max_to_keep=10",
    ]

    def run(save_dir, *load):
        cfg = config("ff_td3", tmp_path, *overrides, f"logger.checkpointing.save_dir={save_dir}", *load)
        return run_experiment(cfg, ff_td3.learner_setup)

    straight = run(tmp_path / "straight")
    resumed = run(
        tmp_path / "resumed",
        "logger.checkpointing.load_model=true",
        f"logger.checkpointing.load_path={tmp_path / 'straight'}",
        f"logger.checkpointing.load_step={rounds // 2}",
    )
    a, b = _final_state(tmp_path / "straight", rounds), _final_state(tmp_path / "resumed", rounds)
    paths = [jax.tree_util.keystr(path) for path, _ in a]
    assert paths == [jax.tree_util.keystr(path) for path, _ in b]
    assert any("buffer_state" in p for p in paths) and any("target_critic" in p for p in paths)
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y, err_msg=f"leaf {jax.tree_util.keystr(path)} differs")
    middle = _final_state(tmp_path / "straight", rounds // 2)
    assert any(not np.array_equal(x, y) for (_, x), (_, y) in zip(middle, a)), "the second half trained"
    assert straight == resumed


@pytest.mark.parametrize("system", ["ff_dqn", "ff_ddqn", "ff_rainbow", "ff_pqn"])
def test_a_discrete_system_on_a_continuous_environment_names_the_systems_that_fit(system, tmp_path):
    import importlib

    path = anakin_script(system)
    module = importlib.import_module(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    cfg = compose_config(
        f"default/anakin/default_{system}",
        [
            *tiny_for(system),
            f"logger.base_exp_path={tmp_path}",
            "env=gymnax/pendulum",
            "network=mlp_continuous",
        ],
    )
    with pytest.raises(
        StoixConfigError, match=rf"{system} needs discrete actions.*ff_ddpg, ff_td3, ff_d4pg, ff_sac"
    ):
        run_experiment(cfg, module.learner_setup)


def test_td3_moves_the_actor_every_second_critic_step(tmp_path):
    cfg = config("ff_td3", tmp_path)
    assert int(cfg.system.actor_update_period) == 2
    state = setup_of("ff_td3", cfg).learn(setup_of("ff_td3", cfg).learner_state).learner_state

    def adam_count(opt_state):
        counts = [
            leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
            if jax.tree_util.keystr(path).endswith(".count")
        ]
        return int(np.asarray(counts[0]).ravel()[0])

    critic_steps = int(np.asarray(state.gradient_steps).ravel()[0])
    assert critic_steps > 2 and adam_count(state.opt_states.critic) == critic_steps
    assert adam_count(state.opt_states.actor) == critic_steps // 2
