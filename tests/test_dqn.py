"""DQN: the loss against hand-computed targets, truncation vs termination, replay splits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_ARCH, TINY_SYSTEM

from stoix.architectures.anakin import run_experiment
from stoix.base_types import Observation
from stoix.systems.q_learning import ff_dqn
from stoix.utils.config import StoixConfigError, compose_config


def linear_q(params, obs):
    """Q(s, a) = params[a] * s[0]: easy to compute by hand."""
    return obs.agent_view[..., :1] * params


def obs_of(values):
    values = jnp.asarray(values, jnp.float32)
    return Observation(values[..., None], jnp.ones((*values.shape, 2)), jnp.zeros(values.shape, jnp.int32))


def batch(reward, discount, done, next_value, n=1):
    """One sample of n transitions from state value 1.0 taking action 0."""
    return ff_dqn.QTransition(
        obs=obs_of(np.ones((1, n))),
        action=jnp.zeros((1, n), jnp.int32),
        reward=jnp.asarray([reward], jnp.float32),
        discount=jnp.asarray([discount], jnp.float32),
        done=jnp.asarray([done], bool),
        next_obs=obs_of(np.asarray([next_value], np.float32)),
    )


def loss_of(b, gamma=0.5):
    online = jnp.array([2.0, 0.0])  # Q(s=1, a=0) = 2
    target = jnp.array([1.0, 3.0])  # max_a Q_target(s') = 3 s' for s' > 0
    loss, _ = ff_dqn.q_learning_loss(
        online, target, b, apply_fn=linear_q, gamma=gamma, loss="l2", huber_delta=1.0
    )
    return float(loss)


def test_truncated_transition_bootstraps_from_the_final_observation():
    # Truncated: discount 1, episode over: target = 1 + 0.5 * 3 * 4 = 7; TD = 5; l2 = 12.5.
    assert loss_of(batch([1.0], [1.0], [True], [4.0])) == pytest.approx(0.5 * 5.0**2)


def test_terminated_transition_does_not_bootstrap():
    # Terminated: target = 1; TD = -1.
    assert loss_of(batch([1.0], [0.0], [True], [4.0])) == pytest.approx(0.5 * 1.0**2)


def test_n_step_target_stops_at_the_episode_end():
    # Two steps, the first truncated: the second transition is another episode's and is ignored.
    b = batch([1.0, 100.0], [1.0, 1.0], [True, False], [4.0, 9.0], n=2)
    assert loss_of(b) == pytest.approx(0.5 * 5.0**2)
    # No end: target = 1 + 0.5 * 1 + 0.25 * 3 * 2 = 3; TD = 1.
    b = batch([1.0, 1.0], [1.0, 1.0], [False, False], [5.0, 2.0], n=2)
    assert loss_of(b) == pytest.approx(0.5 * 1.0**2)


def test_huber_loss_is_rlax_huber():
    online = jnp.array([2.0, 0.0])
    target = jnp.array([1.0, 3.0])
    b = batch([1.0], [1.0], [True], [4.0])
    loss, _ = ff_dqn.q_learning_loss(
        online, target, b, apply_fn=linear_q, gamma=0.5, loss="huber", huber_delta=1.0
    )
    assert float(loss) == pytest.approx(5.0 - 0.5)  # |TD| - delta / 2 beyond delta


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["system.total_buffer_size=255", "arch.update_batch_size=2"],
            r"system.total_buffer_size=255 must be divisible by devices\*arch.update_batch_size=2",
        ),
        (
            ["system.total_buffer_size=250"],
            r"system.total_buffer_size=250 must be divisible by arch.total_num_envs=4",
        ),
        (
            ["system.total_batch_size=15", "arch.update_batch_size=2"],
            r"system.total_batch_size=15 must be divisible",
        ),
        (["system.warmup_steps=66"], r"system.warmup_steps=66 must be divisible by arch.total_num_envs=4"),
        (
            ["system.warmup_steps=4", "system.n_step=3"],
            r"needs at least system.n_step\*arch.total_num_envs=12",
        ),
        (["system.loss=mse"], r"system.loss='mse' must be huber or l2"),
    ],
)
def test_replay_sizes_are_validated_per_slot(overrides, message, tmp_path):
    cfg = compose_config(
        "default/anakin/default_ff_dqn",
        [*TINY_ARCH, *TINY_SYSTEM["q_learning"], f"logger.base_exp_path={tmp_path}", *overrides],
    )
    with pytest.raises(StoixConfigError, match=message):
        run_experiment(cfg, ff_dqn.learner_setup)


@pytest.mark.parametrize("network", ["mlp_dqn", "mlp_dueling_dqn"])
def test_dqn_variants_run_with_n_step_polyak_and_update_batches(network, tmp_path):
    cfg = compose_config(
        "default/anakin/default_ff_dqn",
        [
            *TINY_ARCH,
            *TINY_SYSTEM["q_learning"],
            f"network={network}",
            "system.n_step=3",
            "system.target_update=polyak",
            "system.loss=huber",
            "arch.update_batch_size=2",
            "arch.evaluation_greedy=false",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    metric = run_experiment(cfg, ff_dqn.learner_setup)
    assert 0.0 < metric <= 500.0
    assert jax.device_count() == 1


def test_double_dqn_values_the_online_argmax_with_the_target_network():
    from stoix.systems.q_learning import ff_ddqn

    online = jnp.array([2.0, 0.0])  # at s'=4: online prefers action 0 (8 vs 0)
    target = jnp.array([1.0, 3.0])  # target values action 0 at 4, action 1 at 12
    b = batch([1.0], [1.0], [False], [4.0])
    loss, _ = ff_ddqn.double_q_learning_loss(
        online, target, b, apply_fn=linear_q, gamma=0.5, loss="l2", huber_delta=1.0
    )
    # Double: 1 + 0.5 * 4 - 2 = 1; plain DQN would use max = 12: 1 + 6 - 2 = 5.
    assert float(loss) == pytest.approx(0.5 * 1.0**2)
    assert loss_of(b) == pytest.approx(0.5 * 5.0**2)


def test_munchausen_target_by_hand():
    from stoix.systems.q_learning import ff_mdqn

    online = jnp.array([2.0, 0.0])
    target = jnp.array([1.0, 3.0])
    b = batch([1.0], [1.0], [True], [4.0])  # truncated: bootstrap from s' = 4 with gamma = 0.5
    loss, metrics = ff_mdqn.munchausen_q_loss(
        online,
        target,
        b,
        apply_fn=linear_q,
        gamma=0.5,
        loss="l2",
        huber_delta=1.0,
        entropy_temperature=1.0,
        munchausen_coefficient=0.9,
        clip_value_min=-1.0,
    )
    # log pi(a=0 | s=1) = log softmax([1, 3])[0] = -2.13, clipped to -1: bonus = 0.9 * 1 * -1.
    # Soft value at s' with tau = 1 is logsumexp([4, 12]).
    soft_value = 12.0 + np.log1p(np.exp(-8.0))
    td = 1.0 - 0.9 + 0.5 * soft_value - 2.0
    assert float(metrics["munchausen_bonus"]) == pytest.approx(-0.9)
    assert float(loss) == pytest.approx(0.5 * td**2, rel=1e-5)


def test_dqn_reg_adds_the_q_value_penalty():
    from stoix.systems.q_learning import ff_dqn_reg

    online = jnp.array([2.0, 0.0])
    target = jnp.array([1.0, 3.0])
    b = batch([1.0], [1.0], [True], [4.0])
    loss, _ = ff_dqn_reg.regularised_q_loss(
        online,
        target,
        b,
        apply_fn=linear_q,
        gamma=0.5,
        loss="l2",
        huber_delta=1.0,
        regularizer_coefficient=0.1,
    )
    assert float(loss) == pytest.approx(0.5 * 5.0**2 + 0.1 * 2.0)


def fixed_distribution(params, obs):
    """A 'network' whose C51 logits are its parameters, the same for every state."""
    from stoix.networks.heads import DistributionalQ

    batch_size = obs.agent_view.shape[0]
    atoms = jnp.array([0.0, 1.0, 2.0])
    logits = jnp.broadcast_to(params, (batch_size, *params.shape))
    q_values = jnp.sum(jax.nn.softmax(logits) * atoms, -1)
    return DistributionalQ(q_values, logits, atoms)


def test_c51_target_distribution_for_truncation_and_termination():
    from stoix.systems.q_learning import ff_c51

    online = jnp.log(jnp.array([[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]]))  # action 0: p = 1/8, 2/8, 5/8
    target = jnp.array([[-50.0, -50.0, 50.0], [-50.0, -50.0, 50.0]])  # all mass on return 2

    def ce(reward, discount, done):
        loss, _ = ff_c51.categorical_q_loss(
            online,
            target,
            batch([reward], [discount], [done], [1.0]),
            apply_fn=fixed_distribution,
            gamma=0.5,
            loss="l2",
            huber_delta=1.0,
        )
        return float(loss)

    # Truncated: 0 + 0.5 * 2 = 1 -> atom 1; terminated: 0 -> atom 0.
    assert ce(0.0, 1.0, True) == pytest.approx(-np.log(2 / 8), rel=1e-4)
    assert ce(0.0, 0.0, True) == pytest.approx(-np.log(1 / 8), rel=1e-4)


def test_qr_dqn_bootstraps_truncated_but_not_terminated_episodes():
    from stoix.networks.heads import DistributionalQ
    from stoix.systems.q_learning import ff_qr_dqn

    def constant_quantiles(params, obs):
        quantiles = jnp.broadcast_to(params * obs.agent_view[:, :1, None], (obs.agent_view.shape[0], 2, 4))
        return DistributionalQ(jnp.mean(quantiles, -1), jnp.zeros(()), quantiles)

    def loss(discount, online_scale, target_scale):
        value, _ = ff_qr_dqn.quantile_q_loss(
            jnp.float32(online_scale),
            jnp.float32(target_scale),
            batch([1.0], [discount], [True], [4.0]),
            apply_fn=constant_quantiles,
            gamma=0.5,
            loss="l2",
            huber_delta=0.0,
        )
        return float(value)

    # Online quantiles all 0 at s = 1; target quantiles all 3 * 4 = 12 at s' = 4.
    truncated, terminated = loss(1.0, 0.0, 3.0), loss(0.0, 0.0, 3.0)
    assert truncated / terminated == pytest.approx((1.0 + 0.5 * 12.0) / 1.0, rel=1e-4)


def test_rainbow_importance_weights_by_hand():
    from stoix.systems.q_learning.ff_rainbow import importance_weights

    weights = importance_weights(jnp.array([0.1, 0.2, 0.4]), 0.5)
    np.testing.assert_allclose(weights, [1.0, np.sqrt(0.5), 0.5], rtol=1e-6)


def test_rainbow_item_drawn_with_probability_zero_gets_weight_zero_not_nan():
    # flashbax's sum tree can land on a zero-priority (broken) sequence; 0/0 used to NaN the run.
    from stoix.systems.q_learning.ff_rainbow import importance_weights

    weights = importance_weights(jnp.array([0.1, 0.0, 0.4]), 0.5)
    np.testing.assert_allclose(weights, [1.0, 0.0, 0.5], rtol=1e-6)


def test_noisy_layer_is_deterministic_without_a_noise_rng():
    from stoix.networks.layers import NoisyDense

    layer = NoisyDense(3)
    x = jnp.ones((2, 4))
    params = layer.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}, x)
    mean_out = layer.apply(params, x)
    np.testing.assert_allclose(mean_out, x @ params["params"]["mu_w"] + params["params"]["mu_b"], rtol=1e-6)
    noisy_a = layer.apply(params, x, rngs={"noise": jax.random.PRNGKey(2)})
    noisy_b = layer.apply(params, x, rngs={"noise": jax.random.PRNGKey(3)})
    assert not np.allclose(noisy_a, noisy_b)


def test_pqn_q_lambda_targets_by_hand():
    from stoix.systems.q_learning.ff_pqn import q_lambda_targets

    gamma, lam = 0.5, 0.5
    r = np.array([[1.0], [1.0], [1.0]], np.float32)
    q_next = np.array([[4.0], [10.0], [6.0]], np.float32)  # max_a Q(s'_t)
    d = np.array([[1.0], [1.0], [1.0]], np.float32)
    done = np.array([[0.0], [1.0], [0.0]], np.float32)  # step 1 truncated
    g = q_lambda_targets(r, d, q_next, done, gamma, lam)
    g2 = 1.0 + 0.5 * 6.0  # last step bootstraps fully
    g1 = 1.0 + 0.5 * 10.0  # truncated: the final observation's value, no trace into step 2
    g0 = 1.0 + 0.5 * (0.5 * 4.0 + 0.5 * g1)
    np.testing.assert_allclose(np.ravel(g), [g0, g1, g2], rtol=1e-6)
    terminated = q_lambda_targets(r, np.array([[1.0], [0.0], [1.0]], np.float32), q_next, done, gamma, lam)
    assert float(terminated[1, 0]) == pytest.approx(1.0)


def test_hard_target_update_copies_every_period_and_polyak_moves_by_tau():
    from omegaconf import OmegaConf

    online, target = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([0.0, 0.0])}
    hard = OmegaConf.create({"target_update": "hard", "target_update_period": 3, "tau": 0.1})
    for step, expected in [
        (1, [0.0, 0.0]),
        (2, [0.0, 0.0]),
        (3, [1.0, 2.0]),
        (4, [0.0, 0.0]),
        (6, [1.0, 2.0]),
    ]:
        got = ff_dqn.update_target(online, target, jnp.asarray(step), hard)["w"]
        np.testing.assert_allclose(got, expected, err_msg=f"gradient step {step}")
    polyak = OmegaConf.create({"target_update": "polyak", "target_update_period": 3, "tau": 0.1})
    got = ff_dqn.update_target(online, {"w": jnp.array([10.0, -10.0])}, jnp.asarray(1), polyak)["w"]
    np.testing.assert_allclose(got, [0.9 * 10 + 0.1 * 1, 0.9 * -10 + 0.1 * 2], rtol=1e-6)


def test_rainbow_loss_and_priorities_by_hand():
    """Atoms (-1, 0, 1). The online net prefers action 0 at s' (it selects), the target net
    puts all mass of action 0 on +1 and of action 1 on -1 (double Q: the selected action is
    evaluated by the target). gamma 0.5, reward 0: a truncated step's target is mass at
    0.5 * 1, split half/half onto atoms 0 and 1; a terminated step's is all on atom 0."""
    from stoix.networks.heads import DistributionalQ
    from stoix.systems.q_learning.ff_rainbow import new_priorities, rainbow_loss

    atoms = jnp.array([-1.0, 0.0, 1.0])

    def apply_fn(logits, obs, rngs=None):
        logits = jnp.broadcast_to(logits, (obs.agent_view.shape[0], 2, 3))
        q = jnp.sum(jax.nn.softmax(logits) * atoms, axis=-1)
        return DistributionalQ(q_values=q, logits=logits, atoms=atoms)

    online = jnp.array([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])  # Q(., 0) > 0 > Q(., 1)
    target = jnp.array([[-50.0, -50.0, 50.0], [50.0, -50.0, -50.0]])
    two = ff_dqn.QTransition(
        obs=obs_of(np.ones((2, 1))),
        action=jnp.zeros((2, 1), jnp.int32),
        reward=jnp.zeros((2, 1)),
        discount=jnp.array([[1.0], [0.0]]),  # truncated, terminated
        done=jnp.array([[True], [True]]),
        next_obs=obs_of(np.ones((2, 1))),
    )
    weights = jnp.array([1.0, 0.5])
    loss, (_, per_sample) = rainbow_loss(
        online, target, two, weights, jax.random.PRNGKey(0), apply_fn=apply_fn, gamma=0.5
    )
    log_p = np.log(np.exp([0.0, 0.0, 2.0]) / np.exp([0.0, 0.0, 2.0]).sum())
    truncated = -(0.5 * log_p[1] + 0.5 * log_p[2])
    terminated = -log_p[1]
    np.testing.assert_allclose(per_sample, [truncated, terminated], rtol=1e-4)
    np.testing.assert_allclose(loss, (1.0 * truncated + 0.5 * terminated) / 2, rtol=1e-4)
    # New priorities are the unweighted per-sample losses (+1e-6); a broken item keeps 0.
    np.testing.assert_allclose(
        new_priorities(per_sample, jnp.array([0.3, 0.0])), [truncated + 1e-6, 0.0], rtol=1e-5
    )


class _BufferBuilt(Exception):
    pass


@pytest.mark.parametrize(
    "config_name, module",
    [
        ("default/anakin/default_ff_rainbow", "stoix.systems.q_learning.ff_rainbow"),
        ("default/anakin/default_rec_r2d2", "stoix.systems.q_learning.rec_r2d2"),
    ],
)
def test_prioritised_buffer_is_built_for_this_backend(config_name, module, monkeypatch):
    # flashbax defaults to its CPU sum-tree update (a scan of one-item updates) whatever the
    # backend; the systems must name the backend they run on.
    import importlib

    import flashbax as fbx

    from stoix.utils.sizes import anakin_sizes
    from stoix.wrappers.factory import make_env

    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        raise _BufferBuilt

    system = importlib.import_module(module)
    monkeypatch.setattr(fbx, "make_prioritised_trajectory_buffer", record)
    cfg = compose_config(config_name, [])
    sizes = anakin_sizes(cfg.arch, int(cfg.system.rollout_length), jax.device_count())
    env, _ = make_env(cfg.env)
    with pytest.raises(_BufferBuilt):
        system.learner_setup(env, cfg, sizes, jax.random.PRNGKey(0))
    assert seen["device"] == jax.default_backend()
