"""Sampled AlphaZero (ff_sampled_az.py): the sampling-corrected prior over sampled arms by hand,
the recurrent_fn stepping the environment with the arm's real continuous action, the policy
loss on sampled actions by hand, ff_az's value targets on a sampled batch (a truncated and a
terminated step), the stored policy targets and actions of one acting step, evaluation with
the search and with the raw policy, a two-device run, and bad input before compiling.
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for
from omegaconf import OmegaConf

from stoix.architectures.anakin import run_experiment
from stoix.base_types import ActorCriticParams, Observation
from stoix.networks.distributions import AffineTanhNormal
from stoix.systems.search import ff_az, ff_sampled_az
from stoix.utils.config import StoixConfigError, compose_config
from stoix.wrappers import make_env

GAMMA = 0.9
SCRIPT = str(anakin_script("ff_sampled_az").relative_to(REPO_ROOT))


def test_the_prior_over_arms_is_pi_over_beta_normalised():
    # pi(a_k) = 0.2, 0.4, 0.1 and beta(a_k) = 0.4, 0.2, 0.1: ratios 0.5, 2, 1 (sum 3.5).
    log_pi, log_beta = jnp.log(jnp.asarray([0.2, 0.4, 0.1])), jnp.log(jnp.asarray([0.4, 0.2, 0.1]))
    prior = jnp.exp(ff_sampled_az.sampled_prior_logits(log_pi, log_beta))
    np.testing.assert_allclose(prior, [0.5 / 3.5, 2.0 / 3.5, 1.0 / 3.5], rtol=1e-6)


def squashed_actor(params, observation):
    """A tanh-Gaussian in [-2, 2] with pre-squash mean 0.3 and scale 0.5 for every observation."""
    shape = (*observation.agent_view.shape[:-1], 1)
    return AffineTanhNormal(
        jnp.full(shape, 0.3), jnp.full(shape, 0.5), jnp.asarray([-2.0]), jnp.asarray([2.0])
    )


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.ones_like(x), jnp.zeros(x.shape[:-1], jnp.int32))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampled_arms_and_their_prior(temperature):
    arms = functools.partial(
        ff_sampled_az.sample_arms, actor_apply=squashed_actor, num_samples=5, temperature=temperature
    )
    actions, logits = arms(None, obs([0.0, 1.0]), jax.random.PRNGKey(0))
    assert actions.shape == (2, 5, 1) and logits.shape == (2, 5)
    assert np.all(np.abs(actions) <= 2.0) and np.unique(np.asarray(actions)).size == 10
    if temperature == 1.0:  # beta = pi: the empirical distribution of the samples, 1/K each
        np.testing.assert_allclose(jnp.exp(logits), 0.2, rtol=1e-5)
    else:  # beta = N(0.3, 1.0) before the squash: the prior is N(x; 0.3, 0.5) / N(x; 0.3, 1.0)
        x = jnp.arctanh(actions[..., 0] / 2.0)
        ratio = jnp.exp(distrax.Normal(0.3, 0.5).log_prob(x) - distrax.Normal(0.3, 1.0).log_prob(x))
        np.testing.assert_allclose(jnp.exp(logits), ratio / ratio.sum(-1, keepdims=True), rtol=1e-4)


def pendulum():
    env, _ = make_env(OmegaConf.load(REPO_ROOT / "configs/env/gymnax/pendulum.yaml"))
    return env, ff_az.model_env(env)


def test_the_recurrent_fn_steps_the_env_with_the_arm_action():
    env, model = pendulum()
    env_state, timestep = env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    state = ff_az.model_state(env_state)
    # Arm k of environment b stands for the torque (b + 1) * (k - 1): arms 2, 0, 1 below.
    actions = jnp.asarray([[[(b + 1.0) * (k - 1.0)] for k in range(3)] for b in range(3)])
    cfg = ff_sampled_az.SearchConfig("gumbel", 4, 3, 1.0, True, 1.0, 0.3, 0.25)
    critic = lambda params, observation: jnp.sum(observation.agent_view, -1)  # noqa: E731
    recurrent_fn = ff_sampled_az.make_recurrent_fn(model, squashed_actor, critic, GAMMA, cfg)
    output, child = recurrent_fn(
        ActorCriticParams(None, None),
        jax.random.PRNGKey(1),
        jnp.asarray([2, 0, 1]),
        ff_sampled_az.Embedding(state, actions),
    )
    torques = jnp.asarray([[1.0], [-2.0], [0.0]])
    expected_state, expected = jax.vmap(model.step)(state, torques)
    np.testing.assert_allclose(output.reward, expected.reward, rtol=1e-6)
    np.testing.assert_allclose(output.discount, GAMMA * expected.discount)  # Pendulum: never 0
    np.testing.assert_allclose(output.value, critic(None, expected.observation), rtol=1e-6)
    # The same pendulum state (the model draws its own key, so only that differs).
    inner = child.env_state.env_state, expected_state.env_state
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), *inner)
    assert child.actions.shape == (3, 3, 1) and output.prior_logits.shape == (3, 3)


def test_the_policy_loss_is_cross_entropy_on_the_sampled_actions():
    def actor(loc, observation):  # N(loc, 1) for every observation
        shape = (*observation.agent_view.shape[:-1], 1)
        return distrax.MultivariateNormalDiag(jnp.broadcast_to(loc, shape), jnp.ones(shape))

    # Two sequences of 2 steps (only step 0 counts), K = 2 arms each.
    batch = ff_sampled_az.Transition(
        obs=obs([[0.0, 0.0], [0.0, 0.0]]),
        action=jnp.zeros((2, 2, 1)),
        reward=jnp.zeros((2, 2)),
        discount=jnp.ones((2, 2)),
        done=jnp.zeros((2, 2), bool),
        next_obs=obs([[0.0, 0.0], [0.0, 0.0]]),
        sampled_actions=jnp.broadcast_to(
            jnp.asarray([[[0.0], [1.0]], [[2.0], [0.0]]])[:, None], (2, 2, 2, 1)
        ),
        search_policy=jnp.broadcast_to(jnp.asarray([[0.25, 0.75], [1.0, 0.0]])[:, None], (2, 2, 2)),
    )
    log_z = 0.5 * np.log(2 * np.pi)
    # -sum_k w_k log N(a_k; 0, 1): 0.25 * (0 + log_z) + 0.75 * (0.5 + log_z) and 2 + log_z.
    cross_entropy = ((0.375 + log_z) + (2.0 + log_z)) / 2.0
    entropy = 0.5 * np.log(2 * np.pi * np.e)
    loss, metrics = ff_sampled_az.policy_loss(0.0, batch, actor_apply=actor, ent_coef=0.1)
    np.testing.assert_allclose(metrics["policy_loss"], cross_entropy, rtol=1e-6)
    np.testing.assert_allclose(loss, cross_entropy - 0.1 * entropy, rtol=1e-6)
    # Minimised at the weighted mean action, (0.75 + 2) / 2.
    grad = jax.grad(lambda loc: ff_sampled_az.policy_loss(loc, batch, actor_apply=actor, ent_coef=0.1)[0])
    np.testing.assert_allclose(grad(1.375), 0.0, atol=1e-6)


def test_value_targets_are_ff_az_with_a_truncated_and_a_terminated_step():
    assert ff_sampled_az.value_targets is ff_az.value_targets  # tested by hand in test_search.py
    # (a) a time-limit end at step 1 (discount 1, final observation 20); (b) a termination at 0.
    batch = ff_sampled_az.Transition(
        obs=obs([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        action=jnp.zeros((2, 3, 1)),
        reward=jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        discount=jnp.asarray([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]),
        done=jnp.asarray([[False, True, False], [True, False, False]]),
        next_obs=obs([[2.0, 20.0, 4.0], [30.0, 6.0, 7.0]]),
        sampled_actions=jnp.zeros((2, 3, 4, 1)),
        search_policy=jnp.full((2, 3, 4), 0.25),
    )
    critic = lambda w, observation: w * observation.agent_view[..., 0]  # noqa: E731
    targets = ff_sampled_az.value_targets(1.0, batch, critic_apply=critic, gamma=GAMMA)
    np.testing.assert_allclose(targets, [1.0 + GAMMA * 2.0 + GAMMA**2 * 20.0, 4.0], rtol=1e-6)


@pytest.mark.parametrize("method", ["gumbel", "muzero"])
def test_one_acting_step_stores_the_arms_their_weights_and_takes_the_chosen_arm(method):
    cfg = compose_config(
        "default/anakin/default_ff_sampled_az",
        [f"system.search_method={method}", "system.num_sampled_actions=4"],
    )
    env, model = pendulum()
    critic = lambda params, observation: jnp.zeros(observation.agent_view.shape[:-1])  # noqa: E731
    search_cfg = ff_sampled_az.search_config(cfg.system, 4, noise=True)
    search_fn = functools.partial(
        ff_sampled_az.search,
        actor_apply=squashed_actor,
        critic_apply=critic,
        recurrent_fn=ff_sampled_az.make_recurrent_fn(model, squashed_actor, critic, GAMMA, search_cfg),
        cfg=search_cfg,
    )
    _, env_step = ff_sampled_az.get_learner_fn(env, search_fn, None, None, None, cfg, squashed_actor, critic)
    env_state, timestep = env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    state = ff_sampled_az.LearnerState(
        ActorCriticParams(None, None), None, None, jax.random.PRNGKey(2), env_state, timestep
    )
    _, (transition, _) = jax.jit(env_step)(state, None)
    assert transition.sampled_actions.shape == (3, 4, 1) and transition.search_policy.shape == (3, 4)
    np.testing.assert_allclose(jnp.sum(transition.search_policy, -1), 1.0, rtol=1e-6)
    # The action taken is one of the root's sampled actions.
    distance = jnp.min(jnp.abs(transition.sampled_actions[..., 0] - transition.action), axis=-1)
    np.testing.assert_allclose(distance, 0.0, atol=0.0)
    if method == "muzero":  # the root's visit counts over 4 simulations
        counts = np.asarray(transition.search_policy) * 4
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("system.num_sampled_actions=1", "system.num_sampled_actions=1 must be an integer >= 2."),
        ("system.num_simulations=0", "system.num_simulations=0 must be an integer >= 1."),
    ],
)
def test_bad_sizes_are_errors_before_compiling(override, message, tmp_path):
    cfg = compose_config(
        "default/anakin/default_ff_sampled_az",
        [*tiny_for("ff_sampled_az"), override, f"logger.base_exp_path={tmp_path}"],
    )
    with pytest.raises(StoixConfigError, match=f"^{message}$".replace(".", r"\.")):
        run_experiment(cfg, ff_sampled_az.learner_setup)


def test_a_discrete_env_is_one_line_before_compiling(tmp_path):
    proc = run_script(SCRIPT, [*tiny_for("ff_sampled_az"), "env=gymnax/cartpole"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    message = "error: ff_sampled_az needs continuous (box) actions, but this environment's are discrete; "
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert "compile_s" not in proc.stdout and "RESULT" not in proc.stdout


@pytest.mark.slow
def test_sampled_search_evaluation_and_a_two_device_run_with_the_raw_policy(tmp_path):
    """The tiny run of test_systems.py evaluates with the greedy search; here the search with
    its root noise (one device, gumbel) and the raw policy's mode (two devices x two update
    batches, muzero)."""
    overrides = [*tiny_for("ff_sampled_az"), "arch.evaluation_greedy=false", "arch.absolute_metric=false"]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT ff_sampled_az Pendulum-v1" in proc.stdout
    overrides = [
        *tiny_for("ff_sampled_az"),
        "arch.update_batch_size=2",
        "system.search_method=muzero",
        "system.evaluate_with_search=false",
        "logger.use_console=true",
    ]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert "RESULT ff_sampled_az Pendulum-v1" in proc.stdout
