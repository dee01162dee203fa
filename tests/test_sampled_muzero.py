"""Sampled MuZero (ff_sampled_mz.py): the unrolled value targets with a truncated and a terminated
step by hand, the unroll's masking past an episode end and the policy term on sampled actions by
hand, the sampling-corrected prior of the sampled arms, the two-hot round trip, the
recurrent_fn mapping an arm to its continuous action through the learned dynamics, one acting
step, bad input before compiling, and (slow) evaluation with the search and with the raw policy
on one and two devices.
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for

from stoix.architectures.anakin import run_experiment
from stoix.base_types import Observation
from stoix.networks.distributions import AffineTanhNormal
from stoix.systems.search import ff_sampled_mz as smz
from stoix.utils.config import StoixConfigError, compose_config

GAMMA = 0.9
SCRIPT = str(anakin_script("ff_sampled_mz").relative_to(REPO_ROOT))


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.ones_like(x), jnp.zeros(x.shape[:-1], jnp.int32))


def batch_of(reward, discount, done, next_obs, num_arms=2, sampled_actions=None, search_policy=None):
    reward = jnp.asarray(reward, jnp.float32)
    b, length = reward.shape
    return smz.Transition(
        obs=obs(jnp.zeros((b, length))),
        action=jnp.zeros((b, length, 1)),
        reward=reward,
        discount=jnp.asarray(discount, jnp.float32),
        done=jnp.asarray(done, bool),
        next_obs=obs(next_obs),
        sampled_actions=jnp.zeros((b, length, num_arms, 1)) if sampled_actions is None else sampled_actions,
        search_policy=jnp.full((b, length, num_arms), 1.0 / num_arms)
        if search_policy is None
        else search_policy,
    )


def test_unroll_targets_with_a_truncated_and_a_terminated_step():
    # U = 2 unrolled steps, n = 2: sequences of 4 transitions; V(obs) = obs.
    # (a) a time-limit end at transition 1 (discount 1, final observation 20);
    # (b) a termination at transition 0; (c) no end.
    batch = batch_of(
        reward=[[1.0, 2.0, 3.0, 4.0], [4.0, 5.0, 6.0, 7.0], [1.0, 1.0, 1.0, 1.0]],
        discount=[[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]],
        done=[[False, True, False, False], [True, False, False, False], [False] * 4],
        next_obs=[[2.0, 20.0, 4.0, 5.0], [30.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0, 4.0]],
    )
    value_fn = lambda params, observation: params * observation.agent_view[..., 0]  # noqa: E731
    targets = smz.unroll_targets(1.0, batch, value_fn=value_fn, gamma=GAMMA, unroll_steps=2)
    g = GAMMA
    np.testing.assert_allclose(
        targets.value,
        [
            # (a) step 0: r0 + g r1, then the truncated episode's final observation, 20;
            #     step 1: r1 + g V(20); step 2 is past the truncation (masked, value unused).
            [1.0 + g * 2.0 + g**2 * 20.0, 2.0 + g * 20.0, targets.value[0, 2]],
            # (b) step 0: r0 alone, no bootstrap; then the absorbing state: 0.
            [4.0, 0.0, 0.0],
            [1.0 + g + g**2 * 2.0, 1.0 + g + g**2 * 3.0, 1.0 + g + g**2 * 4.0],
        ],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(targets.value_mask, [[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(targets.policy_mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    # Step k predicts transition k-1's reward: the truncated transition's own reward counts,
    # past the termination the absorbing state's 0 does.
    np.testing.assert_allclose(targets.reward, [[1.0, 2.0], [4.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(targets.reward_mask, [[1, 1], [1, 1], [1, 1]])


def hand_model(unit_value=False):
    """latent = observation, dynamics adds the action, a N(loc, 1) policy everywhere (loc is
    the parameter), uniform value (5 atoms) and reward (3 atoms) predictions."""

    def predict(loc, latent):
        pi = distrax.MultivariateNormalDiag(jnp.full(latent.shape, loc), jnp.ones(latent.shape))
        return pi, jnp.zeros((*latent.shape[:-1], 5))

    return smz.Model(
        represent=lambda params, observation: observation.agent_view,
        dynamics=lambda params, latent, action: (latent + action, jnp.zeros((*latent.shape[:-1], 3))),
        predict=predict,
        value_support=smz.Support(-2.0, 2.0, 5),
        reward_support=smz.Support(-1.0, 1.0, 3),
    )


def test_the_unrolled_loss_by_hand_and_its_masking_past_an_episode_end():
    # One sequence, U = 1: step 0's arms 0 and 1 weighted 0.25, 0.75; step 1's arms 2 and 0
    # weighted 1, 0. With `ended` the episode is truncated at transition 0, so step 1's policy
    # and value targets belong to the next episode and must not count.
    arms = jnp.asarray([[[0.0], [1.0]], [[2.0], [0.0]], [[0.0], [0.0]]])[None]
    weights = jnp.asarray([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])[None]
    loss_fn = functools.partial(
        smz.muzero_loss, model=hand_model(), unroll_steps=1, vf_coef=0.5, ent_coef=0.1
    )
    targets_fn = functools.partial(
        smz.unroll_targets,
        value_fn=lambda params, observation: jnp.zeros(observation.agent_view.shape[:-1]),
        gamma=GAMMA,
        unroll_steps=1,
    )

    @jax.jit
    def loss_and_grad(loc, batch):
        params = smz.MZParams(None, None, loc)
        return jax.value_and_grad(loss_fn, has_aux=True)(params, batch, targets_fn(params, batch))

    log_z = 0.5 * np.log(2 * np.pi)
    for ended in (False, True):
        batch = batch_of([[1.0] * 3], [[1.0] * 3], [[ended, False, False]], [[0.0] * 3], 2, arms, weights)
        (loss, metrics), _ = loss_and_grad(0.0, batch)
        # -sum_j w_j log N(a_j; 0, 1): 0.25 * log_z + 0.75 * (0.5 + log_z) and 2 + log_z.
        steps = 1 if ended else 2
        cross_entropy = (0.375 + log_z) + (0.0 if ended else 2.0 + log_z)
        entropy = steps * 0.5 * np.log(2 * np.pi * np.e)
        # Uniform predictions: every two-hot cross-entropy is log(atoms), whatever the target.
        value_loss = steps * np.log(5.0)
        reward_loss = np.log(3.0)  # the truncated transition's reward is still its own
        np.testing.assert_allclose(metrics["policy_loss"], cross_entropy, rtol=1e-6)
        np.testing.assert_allclose(metrics["value_loss"], value_loss, rtol=1e-6)
        np.testing.assert_allclose(metrics["reward_loss"], reward_loss, rtol=1e-6)
        np.testing.assert_allclose(
            loss, cross_entropy - 0.1 * entropy + 0.5 * value_loss + reward_loss, rtol=1e-6
        )
        # The policy's gradient: zero at the weighted mean of the counted arms' actions.
        _, grad = loss_and_grad(0.75 if ended else 2.75 / 2.0, batch)
        np.testing.assert_allclose(grad.prediction, 0.0, atol=1e-5)


@pytest.mark.slow  # ~7 s of compiling the real model; the hand-number test above is the fast check
def test_data_past_an_episode_end_do_not_reach_the_loss():
    cfg = compose_config("default/anakin/default_ff_sampled_mz", tiny_for("ff_sampled_mz"))
    from stoix.wrappers import make_env

    env, _ = make_env(cfg.env)
    model, init = smz.make_model(cfg.network, env.action_spec)
    key = jax.random.PRNGKey(0)
    b, length, k = 2, 5, 3  # U = 2, n = 3
    rand = lambda i, shape: jax.random.uniform(jax.random.fold_in(key, i), shape, minval=-2, maxval=2)  # noqa: E731
    observation = Observation(
        rand(1, (b, length, 3)), jnp.ones((b, length, 1)), jnp.zeros((b, length), jnp.int32)
    )
    batch = smz.Transition(
        obs=observation,
        action=rand(2, (b, length, 1)),
        reward=rand(3, (b, length)),
        discount=jnp.ones((b, length)),
        done=jnp.asarray([[False, True, False, False, False], [False] * length]),  # (a) truncated at 1
        next_obs=observation._replace(agent_view=rand(4, (b, length, 3))),
        sampled_actions=rand(5, (b, length, k, 1)),
        search_policy=jax.nn.softmax(rand(6, (b, length, k))),
    )
    params = init(jax.random.PRNGKey(1), jax.tree.map(lambda x: x[:, 0], observation))
    loss_fn = functools.partial(smz.muzero_loss, model=model, unroll_steps=2, vf_coef=0.25, ent_coef=0.01)
    targets_fn = functools.partial(
        smz.unroll_targets, value_fn=functools.partial(smz.value_of, model=model), gamma=0.99, unroll_steps=2
    )

    @jax.jit
    def loss_and_grads(batch):
        return jax.value_and_grad(lambda p: loss_fn(p, batch, targets_fn(p, batch))[0])(params)

    loss, grads = loss_and_grads(batch)
    # Sequence (a)'s step 2 (past the truncation): its arms and weights, and the rewards and
    # next observations from transition 2 on, which belong to the next episode.
    changed = batch._replace(
        sampled_actions=batch.sampled_actions.at[0, 2].set(1.5),
        search_policy=batch.search_policy.at[0, 2].set(jnp.asarray([1.0, 0.0, 0.0])),
        reward=batch.reward.at[0, 2:].set(-9.0),
        next_obs=batch.next_obs._replace(agent_view=batch.next_obs.agent_view.at[0, 2:].set(5.0)),
    )
    loss_after, grads_after = loss_and_grads(changed)
    np.testing.assert_allclose(loss_after, loss, rtol=1e-6)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), grads, grads_after)
    # The same changes in sequence (b), which has no end, do change the loss.
    changed_b = changed._replace(
        sampled_actions=batch.sampled_actions.at[1, 2].set(1.5), reward=batch.reward.at[1, 2:].set(-9.0)
    )
    assert not np.isclose(loss_and_grads(changed_b)[0], loss, rtol=1e-4)


def test_two_hot_values_round_trip_through_the_signed_hyperbolic_support():
    support = smz.Support(-50.0, 50.0, 101)  # mlp_sampled_mz's value support
    x = jnp.asarray([-1500.0, -250.0, -16.3, -0.5, 0.0, 3.0])
    probs = smz.to_two_hot(x, support)
    np.testing.assert_allclose(jnp.sum(probs, -1), 1.0, rtol=1e-6)
    assert int(jnp.max(jnp.sum(probs > 0, -1))) <= 2
    np.testing.assert_allclose(smz.to_scalar(jnp.log(probs + 1e-30), support), x, rtol=1e-3, atol=1e-3)


def squashed(loc, scale):
    """A tanh-Gaussian in [-2, 2] with pre-squash mean `loc` and scale `scale`."""
    return AffineTanhNormal(
        jnp.full((2, 1), loc), jnp.full((2, 1), scale), jnp.asarray([-2.0]), jnp.asarray([2.0])
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_sampled_arms_and_their_sampling_corrected_prior(temperature):
    cfg = smz.SearchConfig("gumbel", 4, 5, temperature, True, 1.0, 0.3, 0.25)
    actions, logits = smz.sample_arms(squashed(0.3, 0.5), jax.random.PRNGKey(0), cfg)
    assert actions.shape == (2, 5, 1) and logits.shape == (2, 5)
    assert np.all(np.abs(actions) <= 2.0) and np.unique(np.asarray(actions)).size == 10
    if temperature == 1.0:  # beta = pi: beta-hat / beta * pi is the samples' own 1/K
        np.testing.assert_allclose(jnp.exp(logits), 0.2, rtol=1e-5)
    else:  # beta = N(0.3, 1.0) before the squash: the prior is N(x; 0.3, 0.5) / N(x; 0.3, 1.0)
        x = jnp.arctanh(actions[..., 0] / 2.0)
        ratio = jnp.exp(distrax.Normal(0.3, 0.5).log_prob(x) - distrax.Normal(0.3, 1.0).log_prob(x))
        np.testing.assert_allclose(jnp.exp(logits), ratio / ratio.sum(-1, keepdims=True), rtol=1e-4)
    # By hand: pi(a_k) = 0.2, 0.4, 0.1 and beta(a_k) = 0.4, 0.2, 0.1, ratios 0.5, 2, 1 (sum 3.5).
    prior = jnp.exp(
        smz.sampled_prior_logits(jnp.log(jnp.asarray([0.2, 0.4, 0.1])), jnp.log(jnp.asarray([0.4, 0.2, 0.1])))
    )
    np.testing.assert_allclose(prior, [0.5 / 3.5, 2.0 / 3.5, 1.0 / 3.5], rtol=1e-6)


def test_the_recurrent_fn_steps_the_learned_dynamics_with_the_arm_action():
    model = hand_model()
    cfg = smz.SearchConfig("gumbel", 4, 3, 1.0, True, 1.0, 0.3, 0.25)
    recurrent_fn = smz.make_recurrent_fn(model, GAMMA, cfg)
    # Arm k of node b stands for the action (b + 1) * (k - 1); arms 2, 0, 1 are taken.
    actions = jnp.asarray([[[(b + 1.0) * (k - 1.0)] for k in range(3)] for b in range(3)])
    latent = jnp.asarray([[0.5], [1.0], [2.0]])
    output, child = recurrent_fn(
        smz.MZParams(None, None, 0.0),
        jax.random.PRNGKey(1),
        jnp.asarray([2, 0, 1]),
        smz.Embedding(latent, actions),
    )
    np.testing.assert_allclose(child.latent[:, 0], [0.5 + 1.0, 1.0 - 2.0, 2.0 + 0.0])
    np.testing.assert_allclose(output.discount, GAMMA)  # the model predicts no terminations
    np.testing.assert_allclose(output.reward, 0.0, atol=1e-6)  # uniform over symmetric supports
    np.testing.assert_allclose(output.value, 0.0, atol=1e-3)  # signed_parabolic's float32 error at 0
    assert child.actions.shape == (3, 3, 1) and output.prior_logits.shape == (3, 3)


@pytest.mark.parametrize("method", ["gumbel", pytest.param("muzero", marks=pytest.mark.slow)])
def test_one_acting_step_stores_the_arms_their_weights_and_takes_the_chosen_arm(method):
    cfg = compose_config(
        "default/anakin/default_ff_sampled_mz",
        [f"system.search_method={method}", "system.num_sampled_actions=4"],
    )
    from stoix.wrappers import make_env

    env, _ = make_env(cfg.env)
    model = hand_model()._replace(represent=lambda params, observation: observation.agent_view[..., :1])
    search_cfg = smz.search_config(cfg.system, 4, noise=True)
    search_fn = functools.partial(
        smz.search, model=model, recurrent_fn=smz.make_recurrent_fn(model, GAMMA, search_cfg), cfg=search_cfg
    )
    _, env_step = smz.get_learner_fn(env, search_fn, None, None, None, cfg, model)
    env_state, timestep = env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    state = smz.LearnerState(
        smz.MZParams(None, None, 0.0), None, None, jax.random.PRNGKey(2), env_state, timestep
    )
    _, (transition, _) = jax.jit(env_step)(state, None)
    assert transition.sampled_actions.shape == (3, 4, 1) and transition.search_policy.shape == (3, 4)
    np.testing.assert_allclose(jnp.sum(transition.search_policy, -1), 1.0, rtol=1e-6)
    distance = jnp.min(jnp.abs(transition.sampled_actions[..., 0] - transition.action), axis=-1)
    np.testing.assert_allclose(distance, 0.0, atol=0.0)  # the action taken is one of the arms
    if method == "muzero":  # the root's visit counts over 4 simulations
        counts = np.asarray(transition.search_policy) * 4
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("system.num_sampled_actions=0", "system.num_sampled_actions=0 must be an integer >= 2."),
        ("system.num_simulations=0", "system.num_simulations=0 must be an integer >= 1."),
        ("system.unroll_steps=0", "system.unroll_steps=0 must be an integer >= 1."),
        (
            "system.warmup_steps=16",
            "system.warmup_steps=16 leaves 4 steps per environment; sampling 5-step sequences needs "
            "at least (system.unroll_steps+system.n_step)*arch.total_num_envs=20.",
        ),
        (
            "network.prediction_network.critic_network.critic_head._target_=stoix.networks.heads.ScalarCriticHead",
            "network.prediction_network.critic_network.critic_head._target_=stoix.networks.heads.ScalarCriticHead "
            "must be a categorical head with v_min, v_max and num_atoms (stoix.networks.heads.CategoricalCriticHead): "
            "value and reward are two-hot.",
        ),
    ],
)
def test_bad_input_is_one_line_before_compiling(override, message, tmp_path):
    overrides = [*tiny_for("ff_sampled_mz"), override, f"logger.base_exp_path={tmp_path}"]
    if "ScalarCriticHead" in override:  # its v_min, v_max and num_atoms go with the old head
        overrides += [
            f"~network.prediction_network.critic_network.critic_head.{key}"
            for key in ("num_atoms", "v_min", "v_max")
        ]
    cfg = compose_config("default/anakin/default_ff_sampled_mz", overrides)
    with pytest.raises(StoixConfigError) as error:
        run_experiment(cfg, smz.learner_setup)
    assert str(error.value) == message


def test_a_discrete_env_names_the_systems_that_fit(tmp_path):
    cfg = compose_config(
        "default/anakin/default_ff_sampled_mz",
        [*tiny_for("ff_sampled_mz"), "env=gymnax/cartpole", f"logger.base_exp_path={tmp_path}"],
    )
    with pytest.raises(StoixConfigError) as error:
        run_experiment(cfg, smz.learner_setup)
    assert str(error.value) == (
        "ff_sampled_mz needs continuous (box) actions, but this environment's are discrete; use one "
        "of ff_az, ff_mz, ff_spo for it."
    )


@pytest.mark.slow
def test_search_evaluation_with_noise_and_a_two_device_run_with_the_raw_policy(tmp_path):
    """The tiny run of test_systems.py evaluates with the greedy search; here the search with
    its root noise (one device, gumbel) and the raw policy's mode (two devices x two update
    batches, muzero)."""
    overrides = [*tiny_for("ff_sampled_mz"), "arch.evaluation_greedy=false", "arch.absolute_metric=false"]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT ff_sampled_mz Pendulum-v1" in proc.stdout
    overrides = [
        *tiny_for("ff_sampled_mz"),
        "arch.update_batch_size=2",
        "system.search_method=muzero",
        "system.evaluate_with_search=false",
        "logger.use_console=true",
    ]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert "RESULT ff_sampled_mz Pendulum-v1" in proc.stdout
