"""The MPO family (MPO and V-MPO, discrete and continuous): E-steps, M-steps and duals by
hand, the KLs, critic targets and advantages on a truncated and a terminated step, replicas
that stay identical on two devices, and the wrong action space as one line."""

import subprocess
import sys
import textwrap

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, device_env, tiny_for

from stoix.architectures.anakin import run_experiment
from stoix.base_types import Observation
from stoix.networks.distributions import AffineTanhNormal
from stoix.systems.ddpg.ff_ddpg import Transition
from stoix.systems.mpo import ff_mpo, ff_mpo_continuous, ff_vmpo
from stoix.utils.config import StoixConfigError, compose_config
from stoix.utils.multistep import truncated_gae


def config(system, tmp_path, *overrides):
    return compose_config(
        f"default/anakin/default_{system}",
        [*tiny_for(system), f"logger.base_exp_path={tmp_path}", *overrides],
    )


def duals(temperature, alpha, alpha_std=1.0):
    return ff_vmpo.VMPODuals(
        *(jnp.asarray(ff_vmpo.unproject_dual(v), jnp.float32) for v in (temperature, alpha, alpha_std))
    )


def test_dual_projection_round_trips():
    for value in (1e-3, 0.5, 1.0, 20.0):
        np.testing.assert_allclose(ff_vmpo.project_dual(ff_vmpo.unproject_dual(value)), value, rtol=1e-5)


def test_categorical_kl_and_decoupled_gaussian_kls_by_hand():
    old = distrax.Categorical(probs=jnp.asarray([0.5, 0.5]))
    new = distrax.Categorical(probs=jnp.asarray([0.25, 0.75]))
    kl, kl_std = ff_vmpo.policy_kls(old, new)
    np.testing.assert_allclose(kl, 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75), rtol=1e-6)
    assert kl_std is None

    # Two action dimensions; old N(0, 1), new N(0.5, 2) in the first, unchanged in the second.
    one, two = jnp.ones(2), jnp.full(2, 2.0)
    old = AffineTanhNormal(jnp.zeros(2), one, -two, two)
    new = AffineTanhNormal(jnp.asarray([0.5, 0.0]), jnp.asarray([2.0, 1.0]), -two, two)
    kl_mean, kl_std = ff_vmpo.policy_kls(old, new)
    np.testing.assert_allclose(kl_mean, 0.5**2 / 2, rtol=1e-6)  # (mu - mu_old)^2 / (2 s_old^2)
    np.testing.assert_allclose(
        kl_std, np.log(2.0) + 1 / 8 - 0.5, rtol=1e-6
    )  # log(s/s_old) + s_old^2/(2 s^2) - 1/2


def _batch(advantage, action):
    advantage = jnp.asarray(advantage)
    return ff_vmpo.VMPOBatch(obs=None, action=jnp.asarray(action), advantage=advantage, target=None)


def _loss(actor_probs, old_probs, batch, dual, **kw):
    apply = lambda probs, obs: distrax.Categorical(probs=jnp.broadcast_to(probs, (batch.action.shape[0], 2)))  # noqa: E731
    kwargs = dict(epsilon_temperature=0.1, epsilon_alpha=0.01, epsilon_alpha_std=1e-4, top_k_fraction=0.5)
    kwargs.update(kw)
    return ff_vmpo.vmpo_policy_loss(actor_probs, dual, old_probs, batch, apply_fn=apply, **kwargs)


def test_vmpo_loss_by_hand_top_half_softmax_weights():
    # Advantages 2, 1, 0, -1 with temperature 1: the E-step keeps 2 and 1, weighted
    # e^2/(e^2+e) and e/(e^2+e). Policy = behaviour policy, so both KLs are 0.
    probs = jnp.asarray([0.25, 0.75])
    batch = _batch([2.0, 1.0, 0.0, -1.0], [0, 1, 0, 1])
    loss, metrics = _loss(probs, probs, batch, duals(1.0, 1.0))
    w0, w1 = np.e**2 / (np.e**2 + np.e), np.e / (np.e**2 + np.e)
    policy = -(w0 * np.log(0.25) + w1 * np.log(0.75))
    temperature = 1.0 * (0.1 + np.log((np.e**2 + np.e) / 2))
    alpha_term = 1.0 * 0.01  # alpha * (eps - KL) with KL 0
    np.testing.assert_allclose(metrics["actor_loss"], policy, rtol=1e-5)
    np.testing.assert_allclose(metrics["temperature_loss"], temperature, rtol=1e-5)
    np.testing.assert_allclose(loss, policy + temperature + alpha_term, rtol=1e-5)


def test_vmpo_dual_gradients_point_the_right_way():
    batch = _batch([2.0, 1.0, 0.0, -1.0], [0, 1, 0, 1])
    old, new = jnp.asarray([0.5, 0.5]), jnp.asarray([0.1, 0.9])  # KL(old || new) ~ 0.51 >> 0.01
    grad = jax.grad(lambda d: _loss(new, old, batch, d)[0])(duals(1.0, 1.0))
    assert grad.alpha < 0  # KL above its bound: descent raises alpha
    grad = jax.grad(lambda d: _loss(old, old, batch, d)[0])(duals(1.0, 1.0))
    assert grad.alpha > 0  # KL 0, below its bound: descent lowers alpha
    # A tiny temperature makes the weights far sharper than eps_eta allows: descent raises it;
    # a huge one makes them uniform (KL to uniform 0 < eps_eta): descent lowers it.
    assert jax.grad(lambda d: _loss(old, old, batch, d)[0])(duals(0.05, 1.0)).temperature < 0
    assert jax.grad(lambda d: _loss(old, old, batch, d)[0])(duals(100.0, 1.0)).temperature > 0


def test_vmpo_policy_gradient_moves_towards_the_top_advantage_actions():
    batch = _batch([2.0, 1.0, -1.0, -2.0], [1, 1, 0, 0])  # action 1 is the better one
    logits = jnp.zeros(2)
    apply = lambda lg, obs: distrax.Categorical(logits=jnp.broadcast_to(lg, (4, 2)))  # noqa: E731
    grad = jax.grad(
        lambda lg: ff_vmpo.vmpo_policy_loss(
            lg,
            duals(1.0, 1.0),
            jnp.zeros(2),
            batch,
            apply_fn=apply,
            epsilon_temperature=0.1,
            epsilon_alpha=0.01,
            epsilon_alpha_std=1e-4,
            top_k_fraction=0.5,
        )[0]
    )(logits)
    assert grad[1] < 0 < grad[0]


def test_vmpo_advantages_bootstrap_at_truncation_not_termination():
    # ff_vmpo's advantages are truncated_gae's; gamma 0.9, lambda 0.5:
    # t0 r=1 -> t1 r=1 truncated (final observation worth 5) -> t2 r=2 terminated -> t3 r=1
    # (the rollout's last step, next observation worth 10); every V(s_t) is 0.5.
    reward = jnp.asarray([1.0, 1.0, 2.0, 1.0])
    discount = 0.9 * jnp.asarray([1.0, 1.0, 0.0, 1.0])
    done = jnp.asarray([False, True, True, False])
    v_tm1 = jnp.full(4, 0.5)
    v_t = jnp.asarray([0.5, 5.0, 7.0, 10.0])
    advantage, target = truncated_gae(reward, discount, v_tm1, v_t, done, 0.5)
    d1 = 1.0 + 0.9 * 5.0 - 0.5  # truncated: bootstraps from the final observation
    d0 = 1.0 + 0.9 * 0.5 - 0.5
    expected = [d0 + 0.9 * 0.5 * d1, d1, 2.0 - 0.5, 1.0 + 0.9 * 10.0 - 0.5]  # terminated: no bootstrap
    np.testing.assert_allclose(advantage, expected, rtol=1e-6)
    np.testing.assert_allclose(target, np.asarray(expected) + 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    "system, env, fix",
    [
        ("ff_vmpo", "gymnax/pendulum", "network=mlp_continuous"),
        ("ff_vmpo_continuous", "gymnax/cartpole", "network=mlp"),
    ],
)
def test_the_wrong_action_space_is_a_one_line_error(system, env, fix, tmp_path):
    with pytest.raises(StoixConfigError, match=fix):
        run_experiment(config(system, tmp_path, f"env={env}"), ff_vmpo.learner_setup)


def test_top_k_that_keeps_nothing_is_a_one_line_error(tmp_path):
    with pytest.raises(StoixConfigError, match=r"system.top_k_fraction=0.01 keeps no sample"):
        run_experiment(config("ff_vmpo", tmp_path, "system.top_k_fraction=0.01"), ff_vmpo.learner_setup)


@pytest.mark.parametrize(
    "system",
    [
        pytest.param("ff_vmpo", marks=pytest.mark.slow),  # its continuous twin runs the same learner
        "ff_vmpo_continuous",
        pytest.param("ff_mpo", marks=pytest.mark.slow),
        "ff_mpo_continuous",
    ],
)
def test_replicas_stay_identical_on_two_devices_with_update_batches(system, tmp_path):
    """Gradients (duals included) are averaged over devices and update batches: after
    learning every replica holds the same parameters, and they moved from the start."""
    overrides = [*tiny_for(system), "arch.total_num_envs=8", "arch.update_batch_size=2"]
    module = "ff_vmpo" if system.startswith("ff_vmpo") else system
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from stoix.utils.config import compose_config
        from stoix.utils.sizes import anakin_sizes
        from stoix.wrappers import make_env
        from stoix.systems.mpo import {module} as module
        assert jax.device_count() == 2
        cfg = compose_config("default/anakin/default_{system}", {overrides!r})
        sizes = anakin_sizes(cfg.arch, int(cfg.system.rollout_length), 2)
        env, _ = make_env(cfg.env)
        setup = module.learner_setup(env, cfg, sizes, jax.random.PRNGKey(0))
        before = jax.device_get(setup.learner_state.params)
        out = setup.learn(setup.learner_state)
        after = jax.device_get(out.learner_state.params)
        for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
            assert a.shape[:2] == (2, 2)
            flat = a.reshape(4, -1)
            assert np.array_equal(flat, np.broadcast_to(flat[0], flat.shape)), "replicas differ"
        assert not np.allclose(before.duals.temperature, after.duals.temperature)
        assert not np.allclose(jax.tree.leaves(before.actor)[0], jax.tree.leaves(after.actor)[0])
        print("OK")
        """
    )
    env = device_env(2)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


# MPO ------------------------------------------------------------------------------------


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.ones((*x.shape[:-1], 2)), jnp.zeros(x.shape[:-1], jnp.int32))


def mpo_batch(action):
    """(B=2, n=1): truncated (x 1 -> 2, r 1) and terminated (x 3 -> 4, r 2)."""
    return Transition(
        obs=obs([[1.0], [3.0]]),
        action=jnp.asarray(action),
        reward=jnp.asarray([[1.0], [2.0]]),
        discount=jnp.asarray([[1.0], [0.0]]),
        done=jnp.asarray([[True], [True]]),
        next_obs=obs([[2.0], [4.0]]),
    )


def categorical_actor(probs, observation):
    return distrax.Categorical(probs=jnp.broadcast_to(probs, (*observation.agent_view.shape[:-1], 2)))


def q_table(w, observation):  # Q(s, a) = w * x * (a + 1) for actions 0, 1
    return w * observation.agent_view * jnp.asarray([1.0, 2.0])


def mpo_params(**kw):
    values = dict(actor=None, critic=None, duals=duals(1.0, 1.0), target_actor=None, target_critic=None)
    values.update(kw)
    return ff_mpo.MPOParams(**values)


def test_mpo_critic_target_is_the_target_policys_expectation_and_stops_at_termination():
    params = mpo_params(target_actor=jnp.asarray([0.25, 0.75]), target_critic=1.0)
    loss, _ = ff_mpo.critic_loss(
        2.0,
        params,
        mpo_batch([[1], [0]]),
        None,
        actor_apply=categorical_actor,
        critic_apply=q_table,
        gamma=0.9,
    )
    # truncated: 1 + 0.9 * (0.25 * 2 + 0.75 * 4) = 4.15 against Q = 2 * 1 * 2 = 4;
    # terminated: 2 against Q = 2 * 3 * 1 = 6.
    np.testing.assert_allclose(loss, (0.5 * 0.15**2 + 0.5 * 4.0**2) / 2, rtol=1e-5)


def test_mpo_discrete_e_and_m_step_by_hand():
    prior = jnp.asarray([0.25, 0.75])
    params = mpo_params(target_actor=prior, critic=1.0)
    batch = mpo_batch([[0], [0]])
    loss, metrics = ff_mpo.policy_loss(
        (prior, duals(2.0, 1.0)),
        params,
        batch,
        None,
        actor_apply=categorical_actor,
        critic_apply=q_table,
        epsilon_temperature=0.1,
        epsilon_alpha=0.01,
    )
    # State x: q(a) ~ prior(a) exp(Q(x, a) / 2) with Q = (x, 2x).
    m_step, log_partition = 0.0, 0.0
    for x in (1.0, 3.0):
        unnormalised = np.asarray([0.25 * np.exp(x / 2), 0.75 * np.exp(x)])
        weights = unnormalised / unnormalised.sum()
        m_step += -(weights * np.log([0.25, 0.75])).sum() / 2
        log_partition += np.log(unnormalised.sum()) / 2
    temperature_loss = 2.0 * (0.1 + log_partition)
    np.testing.assert_allclose(metrics["actor_loss"], m_step, rtol=1e-5)
    np.testing.assert_allclose(metrics["temperature_loss"], temperature_loss, rtol=1e-5)
    np.testing.assert_allclose(loss, m_step + temperature_loss + 1.0 * 0.01, rtol=1e-5)  # KL 0


def test_mpo_dual_gradients_point_the_right_way():
    batch = mpo_batch([[0], [0]])

    def loss_of(actor, prior, dual):
        return ff_mpo.policy_loss(
            (actor, dual),
            mpo_params(target_actor=prior, critic=1.0),
            batch,
            None,
            actor_apply=categorical_actor,
            critic_apply=q_table,
            epsilon_temperature=0.1,
            epsilon_alpha=0.01,
        )[0]

    even, skewed = jnp.asarray([0.5, 0.5]), jnp.asarray([0.05, 0.95])
    assert jax.grad(lambda d: loss_of(skewed, even, d))(duals(1.0, 1.0)).alpha < 0  # KL > bound: raise alpha
    assert jax.grad(lambda d: loss_of(even, even, d))(duals(1.0, 1.0)).alpha > 0  # KL 0: lower it
    assert jax.grad(lambda d: loss_of(even, even, d))(duals(0.05, 1.0)).temperature < 0
    assert jax.grad(lambda d: loss_of(even, even, d))(duals(100.0, 1.0)).temperature > 0
    # The M-step moves the policy towards the action with the larger Q (action 1).
    logits_grad = jax.grad(
        lambda lg: ff_mpo.policy_loss(
            (lg, duals(1.0, 1e-3)),
            mpo_params(target_actor=jnp.zeros(2), critic=1.0),
            batch,
            None,
            actor_apply=lambda lg, o: distrax.Categorical(logits=jnp.broadcast_to(lg, (2, 2))),
            critic_apply=q_table,
            epsilon_temperature=0.1,
            epsilon_alpha=0.01,
        )[0]
    )(jnp.zeros(2))
    assert logits_grad[1] < 0 < logits_grad[0]


def gaussian_actor(loc_and_scale, observation):
    loc, scale = loc_and_scale
    shape = (*observation.agent_view.shape[:-1], 1)
    return AffineTanhNormal(
        jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape), jnp.full(1, -2.0), jnp.full(1, 2.0)
    )


def test_mpo_continuous_critic_target_stops_at_termination():
    # A critic that ignores the action makes the sampled expectation exact: Q(s, a) = w * x.
    critic = lambda w, o, a: (w * o.agent_view[..., 0])[None]  # noqa: E731
    params = mpo_params(target_actor=(0.0, 1.0), target_critic=1.0)
    loss, _ = ff_mpo_continuous.critic_loss(
        2.0,
        params,
        mpo_batch([[[0.5]], [[-0.5]]]),
        jax.random.PRNGKey(0),
        actor_apply=gaussian_actor,
        critic_apply=critic,
        gamma=0.9,
        num_samples=4,
    )
    # truncated: 1 + 0.9 * 2 = 2.8 against Q = 2; terminated: 2 against Q = 6.
    np.testing.assert_allclose(loss, (0.5 * 0.8**2 + 0.5 * 4.0**2) / 2, rtol=1e-5)


def test_mpo_continuous_m_step_is_decoupled_and_climbs_q():
    critic = lambda w, o, a: (w * a[..., 0])[None]  # noqa: E731  Q = a: larger actions are better
    batch = mpo_batch([[[0.0]], [[0.0]]])
    kwargs = dict(
        actor_apply=gaussian_actor,
        critic_apply=critic,
        epsilon_temperature=0.1,
        epsilon_alpha=0.01,
        epsilon_alpha_std=1e-5,
        num_samples=64,
    )
    target = (jnp.asarray(0.0), jnp.asarray(1.0))
    params = mpo_params(target_actor=target, critic=1.0)

    def loss_of(actor):
        return ff_mpo_continuous.policy_loss(
            (actor, duals(1.0, 1e-6, 1e-6)), params, batch, jax.random.PRNGKey(1), **kwargs
        )

    loss, metrics = loss_of(target)
    np.testing.assert_allclose([metrics["kl"], metrics["kl_scale"]], [0.0, 0.0], atol=1e-7)
    grad_loc, _ = jax.grad(lambda a: loss_of(a)[0])(target)
    assert grad_loc < 0  # descent moves the mean towards larger Q
    # Q = -a^2 puts the weight on samples near 0: descent shrinks the scale.
    peaked = dict(kwargs, critic_apply=lambda w, o, a: (-w * a[..., 0] ** 2)[None])
    _, grad_scale = jax.grad(
        lambda a: ff_mpo_continuous.policy_loss(
            (a, duals(1.0, 1e-6, 1e-6)), params, batch, jax.random.PRNGKey(1), **peaked
        )[0]
    )(target)
    assert grad_scale > 0
    # Decoupling: the mean's KL does not see the scale, the scale's KL does not see the mean.
    moved = (jnp.asarray(0.3), jnp.asarray(1.5))
    _, m = loss_of(moved)
    np.testing.assert_allclose(m["kl"], 0.3**2 / 2, rtol=1e-5)
    np.testing.assert_allclose(m["kl_scale"], np.log(1.5) + 1 / (2 * 1.5**2) - 0.5, rtol=1e-5)
