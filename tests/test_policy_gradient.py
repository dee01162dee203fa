"""PPO's loss variants (DPO, REINFORCE, PPO-penalty): losses by hand, Monte-Carlo returns with a truncated
and a terminated step, one-line errors for the wrong action space or sizes."""

import distrax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_for

from stoix.architectures.anakin import run_experiment
from stoix.systems.ppo.anakin import ff_dpo, ff_ppo
from stoix.systems.vpg import ff_reinforce
from stoix.utils.config import StoixConfigError, compose_config
from stoix.utils.multistep import truncated_gae


def test_dpo_drift_at_known_ratios():
    ratio = jnp.asarray([1.5, 0.5, 1.0, 0.8, 2.0])
    advantage = jnp.asarray([1.0, -1.0, 3.0, 1.0, -1.0])
    drift = ff_dpo.drift(ratio, advantage, alpha=2.0, beta=0.6)
    # 0.5 - 2 tanh(0.25); log(2) - 0.6 tanh(log(2) / 0.6); zero at ratio 1; the relu keeps a
    # ratio moving against the advantage free (0.8 with A > 0, 2.0 with A < 0).
    np.testing.assert_allclose(drift, [0.0101626752, 0.2014566037, 0.0, 0.0, 0.0], atol=1e-7)


def test_dpo_loss_at_ratio_one_is_minus_the_mean_advantage():
    logits = jnp.log(jnp.asarray([[0.25, 0.75], [0.25, 0.75]]))
    batch = ff_ppo.PPOBatch(
        obs=None,
        action=jnp.asarray([1, 0]),
        log_prob=jnp.log(jnp.asarray([0.75, 0.25])),  # the behaviour policy is the current one
        value=None,
        advantage=jnp.asarray([2.0, -1.0]),
        target=None,
    )
    loss, _ = ff_dpo.dpo_actor_loss(
        None,
        batch,
        apply_fn=lambda p, o: distrax.Categorical(logits=logits),
        alpha=2.0,
        beta=0.6,
        ent_coef=0.0,
        standardize_advantages=False,
    )
    np.testing.assert_allclose(loss, -0.5, rtol=1e-6)


def test_reinforce_loss_by_hand():
    logits = jnp.log(jnp.asarray([[0.25, 0.75], [0.25, 0.75]]))
    batch = ff_ppo.PPOBatch(None, jnp.asarray([1, 0]), None, None, jnp.asarray([2.0, -1.0]), None)
    loss, _ = ff_reinforce.reinforce_loss(
        None,
        batch,
        apply_fn=lambda p, o: distrax.Categorical(logits=logits),
        ent_coef=0.0,
        standardize_advantages=False,
    )
    np.testing.assert_allclose(loss, -(2 * np.log(0.75) - np.log(0.25)) / 2, rtol=1e-6)


def test_reinforce_returns_bootstrap_at_truncation_and_rollout_end_but_not_termination():
    # gamma 0.9, lambda 1 (REINFORCE's Monte-Carlo returns over the rollout):
    # t0 r=1 -> t1 r=1 truncated (final observation worth 5) -> t2 r=2 terminated -> t3 r=1,
    # the rollout's last step (next observation worth 10).
    reward = jnp.asarray([1.0, 1.0, 2.0, 1.0])
    discount = 0.9 * jnp.asarray([1.0, 1.0, 0.0, 1.0])
    done = jnp.asarray([False, True, True, False])
    v_tm1 = jnp.asarray([0.5, 0.5, 0.5, 0.5])
    v_t = jnp.asarray([0.5, 5.0, 7.0, 10.0])
    advantage, target = truncated_gae(reward, discount, v_tm1, v_t, done, 1.0)
    expected = [1.0 + 0.9 * (1.0 + 0.9 * 5.0), 1.0 + 0.9 * 5.0, 2.0, 1.0 + 0.9 * 10.0]
    np.testing.assert_allclose(target, expected, rtol=1e-6)
    np.testing.assert_allclose(advantage, np.asarray(expected) - 0.5, rtol=1e-6)


def config(system, tmp_path, *overrides):
    return compose_config(
        f"default/anakin/default_{system}",
        [*tiny_for(system), f"logger.base_exp_path={tmp_path}", *overrides],
    )


def test_reinforce_refuses_several_epochs(tmp_path):
    with pytest.raises(StoixConfigError, match=r"system.epochs=4: REINFORCE takes one gradient step"):
        run_experiment(config("ff_reinforce", tmp_path, "system.epochs=4"), ff_reinforce.learner_setup)


@pytest.mark.parametrize(
    "system, env, fix",
    [
        ("ff_dpo", "gymnax/pendulum", "network=mlp_continuous"),
        ("ff_dpo_continuous", "gymnax/cartpole", "network=mlp"),
        ("ff_reinforce", "gymnax/pendulum", "network=mlp_continuous"),
        ("ff_reinforce_continuous", "gymnax/cartpole", "network=mlp"),
        ("ff_ppo_penalty", "gymnax/pendulum", "network=mlp_continuous"),
        ("ff_ppo_penalty_continuous", "gymnax/cartpole", "network=mlp"),
    ],
)
def test_the_wrong_action_space_is_a_one_line_error(system, env, fix, tmp_path):
    from stoix.systems.ppo.anakin import ff_ppo_penalty

    setup = {"dpo": ff_dpo, "reinforce": ff_reinforce, "penalty": ff_ppo_penalty}
    setup = next(module for key, module in setup.items() if key in system).learner_setup
    with pytest.raises(StoixConfigError, match=fix):
        run_experiment(config(system, tmp_path, f"env={env}"), setup)


def test_ppo_penalty_loss_by_hand():
    from stoix.systems.ppo.anakin import ff_ppo_penalty

    logits = jnp.log(jnp.asarray([[0.25, 0.75], [0.25, 0.75]]))
    batch = ff_ppo.PPOBatch(
        None, jnp.asarray([1, 0]), jnp.log(jnp.asarray([0.5, 0.5])), None, jnp.asarray([2.0, -1.0]), None
    )
    loss, metrics = ff_ppo_penalty.penalty_actor_loss(
        None,
        batch,
        loss_state=jnp.asarray(2.0),
        apply_fn=lambda p, o: distrax.Categorical(logits=logits),
        ent_coef=0.0,
        standardize_advantages=False,
    )
    # r = (1.5, 0.5); KL = mean((r - 1) - log r) = 0.1438410; -mean(r A) = -1.25
    np.testing.assert_allclose(
        metrics["approx_kl"], 0.5 * ((0.5 - np.log(1.5)) + (-0.5 - np.log(0.5))), rtol=1e-6
    )
    np.testing.assert_allclose(loss, -1.25 + 2.0 * 0.1438410362, rtol=1e-6)


def test_ppo_penalty_kl_coefficient_adaptation_rule():
    from stoix.systems.ppo.anakin.ff_ppo_penalty import adapt_kl_coef

    for kl, expected in [(0.001, 0.5), (0.1, 2.0), (0.012, 1.0), (0.0067, 1.0), (0.0066, 0.5), (0.0151, 2.0)]:
        got = adapt_kl_coef(jnp.asarray(1.0), jnp.asarray(kl), kl_target=0.01)
        assert float(got) == expected, (kl, float(got))


def test_ppo_penalty_measures_the_kl_of_the_updated_policy_on_the_whole_rollout():
    from stoix.systems.ppo.anakin.ff_ppo_penalty import update_kl_coef

    new_probs = jnp.asarray([[0.25, 0.75], [0.25, 0.75]])
    batch = ff_ppo.PPOBatch(None, jnp.asarray([1, 0]), jnp.log(jnp.asarray([0.5, 0.5])), None, None, None)
    apply_fn = lambda p, o: distrax.Categorical(probs=new_probs)  # noqa: E731
    # the KL estimate is 0.1438: above 1.5 x 0.05 beta doubles; inside [0.2 / 1.5, 1.5 x 0.2]
    # it stays; below 0.5 / 1.5 it halves.
    assert float(update_kl_coef(jnp.asarray(1.0), None, batch, apply_fn, (), kl_target=0.05)) == 2.0
    assert float(update_kl_coef(jnp.asarray(1.0), None, batch, apply_fn, (), kl_target=0.2)) == 1.0
    assert float(update_kl_coef(jnp.asarray(1.0), None, batch, apply_fn, (), kl_target=0.5)) == 0.5


def test_ppo_penalty_carries_beta_in_the_learner_state(tmp_path):
    import jax

    from stoix.systems.ppo.anakin import ff_ppo_penalty
    from stoix.utils.sizes import anakin_sizes
    from stoix.wrappers import make_env

    cfg = config("ff_ppo_penalty", tmp_path, "system.init_kl_coef=3.0")
    env, _ = make_env(cfg.env)
    sizes = anakin_sizes(cfg.arch, int(cfg.system.rollout_length), jax.device_count())
    setup = ff_ppo_penalty.learner_setup(env, cfg, sizes, jax.random.PRNGKey(0))
    assert float(setup.learner_state.loss_state[0, 0]) == 3.0
    output = setup.learn(setup.learner_state)
    beta = np.asarray(output.learner_state.loss_state)
    assert beta.shape == (1, 1) and beta[0, 0] != 3.0  # the tiny updates' KL is far from 0.01
    np.testing.assert_allclose(np.asarray(output.train_metrics["kl_coef"])[0, 0, 0], 3.0)


def test_ppo_clipped_objective_by_hand():
    from stoix.systems.ppo.anakin.ff_ppo import clipped_objective

    # ratios 2 and 0.5 with advantages +1 and -1: the first is clipped to 1.2, the second's
    # clipped term (0.8 * -1) is the smaller, so the objective is mean(1.2, -0.8) = 0.2.
    loss, metrics = clipped_objective(
        jnp.log(jnp.asarray([0.5, 0.3])),
        jnp.log(jnp.asarray([0.25, 0.6])),
        jnp.asarray([1.0, -1.0]),
        jnp.asarray([1.0, 2.0]),
        clip_eps=0.2,
        ent_coef=0.1,
        standardize_advantages=False,
    )
    np.testing.assert_allclose(metrics["actor_loss"], -0.2, rtol=1e-5)
    np.testing.assert_allclose(loss, -0.2 - 0.1 * 1.5, rtol=1e-5)
    np.testing.assert_allclose(metrics["clip_fraction"], 1.0)
    np.testing.assert_allclose(metrics["approx_kl"], ((1 - np.log(2)) + (-0.5 - np.log(0.5))) / 2, rtol=1e-5)


def test_ppo_value_loss_clips_around_the_old_values_by_hand():
    from stoix.systems.ppo.anakin.ff_ppo import value_loss

    value, old, target = jnp.asarray([1.0, 3.0]), jnp.asarray([0.0, 2.9]), jnp.asarray([2.0, 3.0])
    # Clipped: 0 + 0.2 -> (0.2 - 2)^2 = 3.24 beats (1 - 2)^2 = 1; 2.9 + 0.1 = 3.0 -> 0.
    clipped, _ = value_loss(value, old, target, clip_eps=0.2, clip_value=True)
    np.testing.assert_allclose(clipped, 0.5 * (3.24 + 0.0) / 2, rtol=1e-5)
    plain, _ = value_loss(value, old, target, clip_eps=0.2, clip_value=False)
    np.testing.assert_allclose(plain, 0.5 * (1.0 + 0.0) / 2, rtol=1e-5)
