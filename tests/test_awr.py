"""Advantage-Weighted Regression: TD(lambda) returns, weights and losses by hand (with a
truncated and a terminated step), replicas in step, stored actions with finite
log-probabilities, a two-device run and the wrong action space.

Hand-made batches use a stand-in critic V(x) = w * x on one-number observations.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for

from stoix.architectures.anakin import run_experiment
from stoix.base_types import Observation
from stoix.systems.awr import ff_awr, ff_awr_continuous
from stoix.utils.config import StoixConfigError, compose_config

GAMMA, LAMBDA = 0.9, 0.5


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.ones_like(x), jnp.zeros(x.shape[:-1], jnp.int32))


def critic_apply(w, observation):
    return w * observation.agent_view[..., 0]


def sequence():
    """One sequence (B=1, T=4) of observations 1 -> 2 -> 3 -> 4 -> 5: step 1 hits the time limit
    (done, discount 1; its true final observation is 20, the reset state is 3), step 2
    terminates (discount 0; its final observation 30 must not count), step 3 is mid-episode."""
    return ff_awr.Transition(
        obs=obs([[1.0, 2.0, 3.0, 4.0]]),
        action=jnp.asarray([[0, 1, 1, 0]]),
        reward=jnp.asarray([[1.0, 2.0, 3.0, 4.0]]),
        discount=jnp.asarray([[1.0, 1.0, 0.0, 1.0]]),
        done=jnp.asarray([[False, True, True, False]]),
        next_obs=obs([[2.0, 20.0, 30.0, 5.0]]),
    )


def test_lambda_returns_bootstrap_a_truncation_from_its_final_observation_and_not_a_termination():
    returns, advantages = ff_awr.returns_and_advantages(
        1.0, sequence(), critic_apply=critic_apply, gamma=GAMMA, td_lambda=LAMBDA
    )
    g3 = 4.0 + 0.9 * 5.0  # the sequence's last step bootstraps from its own next observation
    g2 = 3.0  # terminated: no bootstrap
    g1 = 2.0 + 0.9 * 20.0  # truncated: V of the true final observation, no trace into step 2
    g0 = 1.0 + 0.9 * ((1 - LAMBDA) * 2.0 + LAMBDA * g1)
    np.testing.assert_allclose(returns, [[g0, g1, g2, g3]], rtol=1e-6)
    np.testing.assert_allclose(advantages, [[g0 - 1.0, g1 - 2.0, g2 - 3.0, g3 - 4.0]], rtol=1e-6)


def test_lambda_returns_match_rlax_and_a_loop_within_an_episode():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=(3, 6)).astype(np.float32)
    ones, no_end = np.ones((3, 6), np.float32), np.zeros((3, 6), bool)
    ours = ff_awr.lambda_returns(r, ones, no_end, v, gamma=GAMMA, td_lambda=LAMBDA)
    theirs = jax.vmap(rlax.lambda_returns, in_axes=(0, 0, 0, None))(r, GAMMA * ones, v, LAMBDA)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    loop = np.zeros_like(r)
    for b in range(3):
        g = v[b, -1]
        for t in reversed(range(6)):
            g = r[b, t] + GAMMA * ((1 - LAMBDA) * v[b, t] + LAMBDA * g)
            loop[b, t] = g
    np.testing.assert_allclose(ours, loop, rtol=1e-5)


def test_critic_loss_by_hand():
    batch = ff_awr.Transition(obs([[1.0, 2.0]]), None, None, None, None, None)
    returns = jnp.asarray([[3.0, 3.0]])
    loss_fn = lambda w: ff_awr.critic_loss(w, batch, returns, critic_apply=critic_apply)[0]  # noqa: E731
    # errors 3 - 1 = 2 and 3 - 2 = 1: 0.5 * mean(4, 1); d/dw = -mean(2 * 1, 1 * 2)
    np.testing.assert_allclose(loss_fn(1.0), 1.25, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(loss_fn)(1.0), -2.0, rtol=1e-6)


def actor_apply(logits, observation):  # the same categorical policy for every observation
    return distrax.Categorical(logits=jnp.broadcast_to(logits, (*observation.agent_view.shape[:-1], 2)))


def test_weights_are_capped_and_the_actor_loss_is_weighted_log_likelihood():
    # pi = (0.25, 0.75); actions 0, 1, 1 with advantages 0, 1, 10 and beta 0.5:
    # weights exp(0) = 1, exp(2), exp(20) capped at 20.
    logits = jnp.log(jnp.asarray([0.25, 0.75]))
    batch = ff_awr.Transition(obs([[1.0, 2.0, 3.0]]), jnp.asarray([[0, 1, 1]]), None, None, None, None)
    advantages = jnp.asarray([[0.0, 1.0, 10.0]])
    kwargs = dict(actor_apply=actor_apply, beta=0.5, max_weight=20.0, normalize_advantages=False)
    loss, metrics = ff_awr.actor_loss(logits, batch, advantages, **kwargs)
    weights = np.asarray([1.0, np.exp(2.0), 20.0])
    expected = -(weights[0] * np.log(0.25) + (weights[1] + weights[2]) * np.log(0.75)) / 3
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["mean_weight"], weights.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["capped_fraction"], 1 / 3, rtol=1e-6)
    # A huge advantage is capped, not inf; standardised advantages use the batch's mean and std.
    huge = ff_awr.advantage_weights(
        jnp.asarray([1e6]), beta=0.01, max_weight=20.0, normalize_advantages=False
    )
    np.testing.assert_allclose(huge, [20.0], rtol=1e-6)
    a = jnp.asarray([1.0, 2.0, 3.0, 10.0])
    z = (a - a.mean()) / a.std()
    np.testing.assert_allclose(
        ff_awr.advantage_weights(a, beta=2.0, max_weight=20.0, normalize_advantages=True),
        np.minimum(np.exp(z / 2.0), 20.0),
        rtol=1e-5,
    )
    # Gradient ascent on log pi of the heavily weighted action 1: descent raises its logit.
    grad = jax.grad(lambda lg: ff_awr.actor_loss(lg, batch, advantages, **kwargs)[0])(logits)
    assert grad[1] < 0 < grad[0]


def config(system, tmp_path, *overrides):
    return compose_config(
        f"default/anakin/default_{system}",
        [*tiny_for(system), f"logger.base_exp_path={tmp_path}", *overrides],
    )


def test_replicas_stay_identical_and_stored_actions_have_finite_log_probabilities(tmp_path):
    from stoix.networks.base import make_actor
    from stoix.utils.sizes import anakin_sizes
    from stoix.wrappers import make_env

    cfg = config("ff_awr_continuous", tmp_path, "arch.update_batch_size=2")
    env, _ = make_env(cfg.env)
    sizes = anakin_sizes(cfg.arch, int(cfg.system.rollout_length), jax.device_count())
    setup = ff_awr_continuous.learner_setup(env, cfg, sizes, jax.random.PRNGKey(0))
    state = setup.learn(setup.learner_state).learner_state
    for leaf in jax.tree.leaves(state.params):  # (devices, update_batch, ...)
        np.testing.assert_array_equal(leaf[:, 0], leaf[:, 1])
    assert not np.array_equal(*np.asarray(state.buffer_state.experience.reward)[0])

    # Pendulum's torque is in [-2, 2]; every stored action lies a sliver inside it, where the
    # squashed Gaussian's log-probability is finite.
    experience = jax.tree.map(lambda x: x[0, 0], state.buffer_state.experience)
    stored = np.asarray(experience.action)
    margin = 2.0 * ff_awr.BOUND_MARGIN
    assert stored.min() >= -2.0 + margin * 0.999 and stored.max() <= 2.0 - margin * 0.999
    assert np.abs(stored).max() > 1.9
    params = jax.tree.map(lambda x: x[0, 0], setup.actor.eval_params(state))
    actor = make_actor(cfg.network.actor_network, env.action_spec)
    log_probs = np.asarray(actor.apply(params, experience.obs).log_prob(experience.action))
    assert np.all(np.isfinite(log_probs))
    for greedy in (True, False):
        action = np.asarray(setup.actor.act(params, experience.obs, jax.random.PRNGKey(1), greedy))
        assert action.min() >= -2.0 and action.max() <= 2.0


def test_two_devices_with_update_batches(tmp_path):
    script = anakin_script("ff_awr")
    overrides = [*tiny_for("ff_awr"), "arch.update_batch_size=2", "logger.use_console=true"]
    proc = run_script(str(script.relative_to(REPO_ROOT)), overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert "RESULT ff_awr CartPole-v1" in proc.stdout


@pytest.mark.parametrize(
    "system, env, message",
    [
        (
            "ff_awr",
            "gymnax/pendulum",
            r"^ff_awr needs discrete actions.*use one of ff_ddpg.*ff_awr_continuous",
        ),
        (
            "ff_awr_continuous",
            "gymnax/cartpole",
            r"^ff_awr_continuous needs continuous \(box\) actions.*use one of ff_dqn.*ff_awr.* for it\.$",
        ),
    ],
)
def test_the_wrong_action_space_is_a_one_line_error(system, env, message, tmp_path):
    setup = {"ff_awr": ff_awr, "ff_awr_continuous": ff_awr_continuous}[system].learner_setup
    with pytest.raises(StoixConfigError, match=message) as error:
        run_experiment(config(system, tmp_path, f"env={env}"), setup)
    assert "\n" not in str(error.value)
