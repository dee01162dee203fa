"""SPO (ff_spo.py, ff_spo_continuous.py): the SMC potential and the value targets by hand (with a
truncated and a terminated step), resampling that keeps the weighted distribution, the root
distribution and the policy losses by hand, the planner on a scripted environment, evaluation
with the planner and with the network, a two-device run, and bad input as one line.

Hand-made batches use a stand-in critic V(x) = w * x on one-number observations.
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for
from scripted_env import ScriptedEnv

from stoix.base_types import Observation
from stoix.systems.spo import ff_spo, ff_spo_continuous
from stoix.utils.config import compose_config
from stoix.wrappers.core import AutoReset, RecordEpisodeMetrics, VmapWrapper
from stoix.wrappers.gymnax import GymnaxToJumanji

GAMMA = 0.9
SCRIPT = str(anakin_script("ff_spo").relative_to(REPO_ROOT))
SCRIPT_CONTINUOUS = str(anakin_script("ff_spo_continuous").relative_to(REPO_ROOT))


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.ones_like(x), jnp.zeros(x.shape[:-1], jnp.int32))


def critic_apply(w, observation):
    return w * observation.agent_view[..., 0]


def test_the_potential_stops_after_an_end_and_bootstraps_only_a_truncation():
    # Particles: mid-episode, a truncation (an end with discount 1), a termination (discount 0),
    # and one whose episode ended earlier.
    reward = jnp.asarray([1.0, 2.0, 3.0, 5.0])
    discount = jnp.asarray([1.0, 1.0, 0.0, 1.0])
    last = jnp.asarray([False, True, True, False])
    value = jnp.asarray([10.0, 10.0, 10.0, 10.0])
    next_value = jnp.asarray([12.0, 20.0, 30.0, 40.0])
    alive = jnp.asarray([True, True, True, False])
    increment, still_alive = ff_spo.potential(
        reward, discount, last, value, next_value, alive, gamma=GAMMA, temperature=2.0
    )
    expected = [
        (1.0 + GAMMA * 12.0 - 10.0) / 2.0,
        (2.0 + GAMMA * 20.0 - 10.0) / 2.0,  # truncated: V(final observation) counts
        (3.0 - 10.0) / 2.0,  # terminated: nothing after it
        0.0,  # already ended: adds nothing
    ]
    np.testing.assert_allclose(increment, expected, rtol=1e-6)
    np.testing.assert_array_equal(still_alive, [True, False, False, False])


def test_value_targets_bootstrap_a_truncation_from_its_final_observation_and_not_a_termination():
    # (a) a time-limit end at step 1 (true final observation 20); (b) a termination at step 0
    # (its final observation 30 must not count); (c) no end.
    batch = ff_spo.Transition(
        obs=obs([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
        action=jnp.zeros((3, 3), jnp.int32),
        reward=jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [1.0, 1.0, 1.0]]),
        discount=jnp.asarray([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]),
        done=jnp.asarray([[False, True, False], [True, False, False], [False, False, False]]),
        next_obs=obs([[2.0, 20.0, 4.0], [30.0, 6.0, 7.0], [8.0, 9.0, 10.0]]),
        search_policy=jnp.full((3, 3, 2), 0.5),
    )
    targets = ff_spo.value_targets(1.0, batch, critic_apply=critic_apply, gamma=GAMMA)
    truncated = 1.0 + GAMMA * 2.0 + GAMMA**2 * 20.0
    terminated = 4.0
    no_end = 1.0 + GAMMA * 1.0 + GAMMA**2 * 1.0 + GAMMA**3 * 10.0
    np.testing.assert_allclose(targets, [truncated, terminated, no_end], rtol=1e-6)


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resampling_keeps_the_weighted_distribution(method):
    weights = jnp.asarray([0.05, 0.15, 0.0, 0.3, 0.5])
    log_w = jnp.log(jnp.repeat(weights, 200))  # 1,000 particles, 200 of each kind
    kinds = jnp.repeat(jnp.arange(5), 200)
    # unnormalised log-weights (+ 7): the resampler normalises them itself
    ancestors = ff_spo.resample(jax.random.PRNGKey(3), log_w + 7.0, method)
    share = np.bincount(np.asarray(kinds[ancestors]), minlength=5) / 1000
    assert share[2] == 0.0  # a zero-weight particle is never an ancestor
    if method == "systematic":  # each kind is kept floor or ceil of N * w times
        np.testing.assert_allclose(share, weights, atol=1.0 / 1000)
    else:
        np.testing.assert_allclose(share, weights, atol=0.05)


def test_root_policy_is_the_weighted_histogram_of_first_actions():
    output = ff_spo.SMCOutput(
        root_actions=jnp.asarray([[0, 2, 2, 1]]), weights=jnp.asarray([[0.1, 0.2, 0.3, 0.4]])
    )
    np.testing.assert_allclose(ff_spo.root_policy(output, 3), [[0.1, 0.4, 0.5]], rtol=1e-6)


def categorical(logits, observation):
    return distrax.Categorical(logits=jnp.broadcast_to(logits, (*observation.agent_view.shape[:-1], 2)))


def test_discrete_policy_loss_by_hand():
    batch = ff_spo.Transition(
        obs=obs(jnp.zeros((2, 1))),
        action=None,
        reward=None,
        discount=None,
        done=None,
        next_obs=None,
        search_policy=jnp.asarray([[[0.25, 0.75]], [[1.0, 0.0]]]),
    )
    dual = jnp.asarray(ff_spo.unproject_dual(2.0))
    loss_fn = functools.partial(ff_spo.policy_loss, actor_apply=categorical, epsilon_kl=0.1)
    # pi = target = uniform: KL 0, cross-entropy log 2, alpha's loss alpha * epsilon_kl
    loss, metrics = loss_fn((jnp.zeros(2), dual), jnp.zeros(2), batch)
    np.testing.assert_allclose(metrics["policy_loss"], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(metrics["kl"], 0.0, atol=1e-7)
    np.testing.assert_allclose(loss, np.log(2.0) + 2.0 * 0.1, rtol=1e-5)
    # KL below its bound: the multiplier's gradient is positive, so descent shrinks it
    _, dual_grad = jax.grad(lambda p: loss_fn(p, jnp.zeros(2), batch)[0])((jnp.zeros(2), dual))
    assert dual_grad > 0
    # A policy far from its target: KL(target || pi) by hand, pulled back by alpha = 2
    logits = jnp.log(jnp.asarray([0.9, 0.1]))
    _, metrics = loss_fn((logits, dual), jnp.zeros(2), batch)
    kl = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5)


def test_continuous_policy_loss_is_weighted_maximum_likelihood_of_the_particles():
    def gaussian(mean, observation):
        shape = (*observation.agent_view.shape[:-1], 1)
        return distrax.MultivariateNormalDiag(jnp.broadcast_to(mean, shape), jnp.ones(shape))

    particles = ff_spo.SMCOutput(
        root_actions=jnp.asarray([[[[0.0], [1.0], [2.0]]]]),  # (B=1, n=1, N=3, A=1)
        weights=jnp.asarray([[[0.5, 0.25, 0.25]]]),
    )
    batch = ff_spo.Transition(obs(jnp.zeros((1, 1))), None, None, None, None, None, particles)
    loss_fn = functools.partial(ff_spo_continuous.policy_loss, actor_apply=gaussian, epsilon_kl=0.1)
    _, metrics = loss_fn((jnp.zeros(1), jnp.asarray(0.0)), jnp.zeros(1), batch)
    log_n = lambda a: -0.5 * a**2 - 0.5 * np.log(2 * np.pi)  # noqa: E731
    nll = -(0.5 * log_n(0.0) + 0.25 * log_n(1.0) + 0.25 * log_n(2.0))
    np.testing.assert_allclose(metrics["policy_loss"], nll, rtol=1e-6)
    # Minimised, without the trust region, at the weighted mean of the particles (0.75)
    grad = jax.grad(lambda m: loss_fn((m, jnp.asarray(-30.0)), jnp.asarray([0.75]), batch)[0])
    np.testing.assert_allclose(grad(jnp.asarray([0.75])), 0.0, atol=1e-5)


def uniform_actor(params, observation):
    return distrax.Categorical(logits=jnp.zeros((*observation.agent_view.shape[:-1], 2)))


def time_critic(params, observation):
    return observation.agent_view[..., 0]


def test_the_planner_prefers_going_on_over_terminating_on_a_scripted_env():
    """ScriptedEnv: action 1 terminates (reward 1 + time, then nothing), action 0 goes on; with
    V = time, going on has the larger potential, so the root histogram puts more on action 0."""
    env = ScriptedEnv()
    bare = GymnaxToJumanji(env, env.default_params.replace(max_steps_in_episode=5))
    train_env = VmapWrapper(AutoReset(RecordEpisodeMetrics(bare)))
    env_state, timestep = train_env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    cfg = ff_spo.SMCConfig(
        num_particles=64,
        search_depth=3,
        resample_period=1,
        resampling="systematic",
        temperature=1.0,
        gamma=GAMMA,
    )
    output = jax.jit(
        functools.partial(
            ff_spo.smc, actor_apply=uniform_actor, critic_apply=time_critic, model_env=bare, cfg=cfg
        )
    )(ff_spo.SPOParams(None, None, None, None), jax.random.PRNGKey(1), timestep.observation, env_state)
    np.testing.assert_allclose(jnp.sum(output.weights, -1), 1.0, rtol=1e-5)
    probs = np.asarray(ff_spo.root_policy(output, 2))
    assert np.all(probs[:, 0] > 0.8), probs


@pytest.mark.slow  # 8-10 s each (an in-process tiny run); the fast file stays near 20 s
@pytest.mark.parametrize("with_search", [True, False])
def test_evaluation_with_the_planner_and_with_the_network(with_search, tmp_path):
    from stoix.architectures.anakin import run_experiment

    cfg = compose_config(
        "default/anakin/default_ff_spo",
        [
            *tiny_for("ff_spo"),
            f"system.evaluate_with_search={str(with_search).lower()}",
            "arch.evaluation_greedy=true",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    assert cfg.system.evaluate_with_search is with_search
    metric = run_experiment(cfg, ff_spo.learner_setup)
    assert 1.0 <= metric <= 500.0


@pytest.mark.slow  # 14 s in a subprocess with two forced CPU devices
def test_a_two_device_run():
    import tempfile
    from pathlib import Path

    overrides = [*tiny_for("ff_spo"), "arch.update_batch_size=2", "logger.use_console=true"]
    with tempfile.TemporaryDirectory() as tmp:
        proc = run_script(SCRIPT, overrides, cwd=Path(tmp), devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert "RESULT ff_spo CartPole-v1" in proc.stdout


@pytest.mark.parametrize(
    "script, override, message",
    [
        (SCRIPT, "env=gymnax/pendulum", "error: ff_spo needs discrete actions, but this environment's are"),
        (
            SCRIPT_CONTINUOUS,
            "env=gymnax/cartpole",
            "error: ff_spo_continuous needs continuous (box) actions, but this environment's are",
        ),
        (SCRIPT, "system.num_particles=0", "error: system.num_particles=0 must be an integer >= 1."),
        (
            SCRIPT,
            "system.resampling=stratified",
            "error: system.resampling='stratified' must be one of systematic, multinomial.",
        ),
    ],
)
def test_bad_input_is_one_line_before_compiling(script, override, message, tmp_path):
    name = "ff_spo_continuous" if script == SCRIPT_CONTINUOUS else "ff_spo"
    proc = run_script(script, [*tiny_for(name), override], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert "compile_s" not in proc.stdout and "RESULT" not in proc.stdout
