"""MuZero (ff_mz.py): n-step value targets by hand (a truncated and a terminated step), the
unroll's targets and weights past an episode end (absorbing after a termination, masked after a
truncation), the two-hot / signed-hyperbolic round trip, the unrolled loss's weights and 1/K
scaling, the halved dynamics gradient, a one- and a two-device run (evaluating with the search
and with the raw policy), and bad input as one line before anything compiles.
"""

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for

from stoix.base_types import Observation
from stoix.systems.search import ff_mz
from stoix.systems.search.ff_az import Transition
from stoix.utils.config import compose_config

GAMMA = 0.9
SCRIPT = str(anakin_script("ff_mz").relative_to(REPO_ROOT))


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.ones((*x.shape[:-1], 2)), jnp.zeros(x.shape[:-1], jnp.int32))


def sequences():
    """Four 4-step sequences (K = 2 unrolled actions, n = 2): (a) a time-limit end at step 1
    (discount 1); (b) a termination at step 0; (c) no end; (d) a time-limit end at step 0.
    `bootstrap` is V(true next observation) of every step."""
    T, F = True, False
    batch = Transition(
        obs=obs(jnp.zeros((4, 4))),
        action=jnp.zeros((4, 4), jnp.int32),
        reward=jnp.asarray(
            [[1.0, 2.0, 3.0, 4.0], [4.0, 5.0, 6.0, 7.0], [1.0, 1.0, 1.0, 1.0], [2.0, 3.0, 3.0, 3.0]]
        ),
        discount=jnp.asarray([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0], [1.0] * 4, [1.0] * 4]),
        done=jnp.asarray([[F, T, F, F], [T, F, F, F], [F, F, F, F], [T, F, F, F]]),
        next_obs=obs(jnp.zeros((4, 4))),
        search_policy=jnp.full((4, 4, 2), 0.5),
    )
    bootstrap = jnp.asarray(
        [[10.0, 20.0, 30.0, 40.0], [50.0, 60.0, 70.0, 80.0], [1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    )
    return batch, bootstrap


def test_value_targets_and_the_unroll_past_an_episode_end_by_hand():
    batch, bootstrap = sequences()
    t = ff_mz.unroll_targets(batch, bootstrap, gamma=GAMMA, n_step=2, unroll_steps=2)
    g = GAMMA
    value = [
        # (a) k=0 ends at the truncation: bootstrap from V(final observation) = 20; k=1 is the
        # truncating step itself; k=2 lies past the time limit (masked, target 0 by convention)
        [1.0 + g * 2.0 + g**2 * 20.0, 2.0 + g * 20.0, 0.0],
        # (b) the termination: nothing after it; k=1, 2 are the absorbing state (target 0)
        [4.0, 0.0, 0.0],
        # (c) no end: plain 2-step returns
        [1.0 + g + g**2 * 2.0, 1.0 + g + g**2 * 3.0, 1.0 + g + g**2 * 4.0],
        # (d) truncated at step 0: one reward and V(final observation) = 5
        [2.0 + g * 5.0, 0.0, 0.0],
    ]
    np.testing.assert_allclose(t.value, value, rtol=1e-6)
    np.testing.assert_allclose(t.value_weight, [[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 0, 0]])
    # Rewards of steps 0 and 1: the absorbing state's reward is 0; past a time limit, no loss.
    np.testing.assert_allclose(t.reward, [[1, 2], [4, 0], [1, 1], [2, 0]])
    np.testing.assert_allclose(t.reward_weight, [[1, 1], [1, 1], [1, 1], [1, 0]])
    # No policy loss at any state after the episode ended, however it ended.
    np.testing.assert_allclose(t.policy_weight, [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    assert t.policy.shape == (4, 3, 2)


def test_two_hot_of_the_signed_hyperbolic_value_round_trips():
    cfg = compose_config("default/anakin/default_ff_mz").system
    tx = ff_mz.value_transform(cfg)  # 41 bins over [-10, 10]: 0.5 apart
    x = jnp.asarray([-80.0, -1.0, 0.0, 0.3, 1.0, 3.0, 42.0, 99.0])
    probs = tx.apply(x)
    np.testing.assert_allclose(jnp.sum(probs, -1), 1.0, rtol=1e-6)
    assert np.all(np.sum(np.asarray(probs) > 0, -1) <= 2)
    np.testing.assert_allclose(tx.apply_inv(probs), x, rtol=1e-4, atol=1e-4)
    # h(3) = sqrt(4) - 1 + 0.001 * 3 = 1.003: between the bins at 1.0 (index 22) and 1.5 (23).
    np.testing.assert_allclose(rlax.signed_hyperbolic(jnp.asarray(3.0)), 1.003, rtol=1e-6)
    np.testing.assert_allclose(probs[5, 22:24], [1.0 - 0.006, 0.006], atol=1e-4)


class StandIn:
    """A model whose every distribution is uniform: each cross-entropy is log(#outcomes)."""

    bins = 41

    @staticmethod
    def represent(params, observation):
        return params * observation.agent_view

    @staticmethod
    def dynamics(params, hidden, action):
        return hidden + 1.0, jnp.zeros((*hidden.shape[:-1], StandIn.bins))

    @staticmethod
    def predict(params, hidden):
        return jnp.zeros((*hidden.shape[:-1], 2)), jnp.zeros((*hidden.shape[:-1], StandIn.bins)) * hidden


def test_the_unrolled_loss_weights_each_step_and_scales_the_dynamics_steps_by_one_over_k():
    batch, bootstrap = sequences()
    targets = ff_mz.unroll_targets(batch, bootstrap, gamma=GAMMA, n_step=2, unroll_steps=2)
    tx = rlax.muzero_pair(-10.0, 10.0, StandIn.bins, rlax.SIGNED_HYPERBOLIC_PAIR)
    model = ff_mz.Model(StandIn.represent, StandIn.dynamics, StandIn.predict, tx)
    _, m = ff_mz.muzero_loss(1.0, batch, targets, model=model, vf_coef=0.25)
    # Root terms weigh 1, each of the K = 2 unrolled ones 1/2; averaged over the 4 sequences.
    per_batch = lambda w: np.mean(w[:, 0] + 0.5 * w[:, 1:].sum(-1))  # noqa: E731
    np.testing.assert_allclose(
        m["policy_loss"], np.log(2) * per_batch(np.asarray(targets.policy_weight)), rtol=1e-5
    )
    np.testing.assert_allclose(
        m["value_loss"], np.log(41) * per_batch(np.asarray(targets.value_weight)), rtol=1e-5
    )
    np.testing.assert_allclose(
        m["reward_loss"], np.log(41) * np.mean(np.asarray(targets.reward_weight).sum(-1)) / 2, rtol=1e-5
    )


def test_the_gradient_into_each_dynamics_step_is_halved():
    x = jnp.asarray(3.0)
    assert ff_mz.scale_gradient(x, 0.5) == 3.0
    assert jax.grad(lambda y: ff_mz.scale_gradient(y, 0.5) ** 2)(x) == 3.0  # half of 2 * 3


@pytest.mark.slow
def test_the_search_runs_on_the_learned_model_and_its_root_noise_is_off_when_greedy():
    cfg = compose_config("default/anakin/default_ff_mz", ["system.num_simulations=4"])
    network = hydra.utils.instantiate(
        cfg.network.model_network, action_dim=2, num_bins=int(cfg.system.support_bins)
    )
    model = ff_mz.make_model(network, cfg.system)
    observation = Observation(
        jnp.asarray([[0.1, 0.2, 0.3, 0.4], [0.0, -0.1, 0.2, 0.0]]),
        jnp.asarray([[1.0, 1.0], [1.0, 0.0]]),
        jnp.zeros(2),
    )
    params = network.init(jax.random.PRNGKey(0), observation, jnp.zeros(2, jnp.int32))
    recurrent_fn = ff_mz.make_recurrent_fn(model, GAMMA)
    out, _ = recurrent_fn(params, None, jnp.asarray([0, 1]), model.represent(params, observation))
    np.testing.assert_allclose(out.discount, [GAMMA, GAMMA])
    np.testing.assert_allclose(out.value, 0.0, atol=1e-3)  # zero-initialised heads: the support's middle
    for method in ("gumbel", "muzero"):
        search_cfg = ff_mz.search_config(cfg.system.copy(), 4, noise=False)._replace(method=method)
        run = lambda key: ff_mz.search(  # noqa: E731
            params, key, observation, model=model, recurrent_fn=recurrent_fn, cfg=search_cfg
        )
        a, b = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
        if method == "gumbel":  # no Gumbel noise: the key does not matter
            np.testing.assert_array_equal(a.action, b.action)
            np.testing.assert_allclose(a.action_weights, b.action_weights, rtol=1e-6)
        else:  # the root's visit counts over 4 simulations (the key only breaks ties)
            counts = np.asarray(a.action_weights) * 4
            np.testing.assert_allclose(counts, np.round(counts), atol=1e-5)
        assert int(a.action[1]) == 0 and int(b.action[1]) == 0  # the illegal action is never taken
        np.testing.assert_allclose(a.action_weights[1], [1.0, 0.0], atol=1e-6)
        np.testing.assert_allclose(jnp.sum(a.action_weights, -1), 1.0, rtol=1e-5)


@pytest.mark.slow  # 36 s: two compiles in subprocesses; the tiny run is also test_systems.py's
def test_a_tiny_run_and_a_two_device_run(tmp_path):
    proc = run_script(SCRIPT, tiny_for("ff_mz"), cwd=tmp_path)  # evaluates with the greedy search
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT ff_mz CartPole-v1" in proc.stdout
    overrides = [
        *tiny_for("ff_mz"),
        "arch.update_batch_size=2",
        "system.search_method=muzero",
        "system.evaluate_with_search=false",  # the raw prediction policy's mode
        "logger.use_console=true",
    ]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert "RESULT ff_mz CartPole-v1" in proc.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "env=gymnax/pendulum",
            "error: ff_mz needs discrete actions, but this environment's are continuous (a box); "
            "use one of ff_sampled_az, ff_sampled_mz, ff_spo_continuous for it.",
        ),
        ("system.num_simulations=0", "error: system.num_simulations=0 must be an integer >= 1."),
        ("system.unroll_steps=0", "error: system.unroll_steps=0 must be an integer >= 1."),
        ("system.n_step=0", "error: system.n_step=0 must be an integer >= 1."),
        (
            "system.search_method=alphago",
            "error: system.search_method='alphago' must be one of gumbel, muzero.",
        ),
    ],
)
def test_bad_input_is_one_line_before_compiling(override, message, tmp_path):
    proc = run_script(SCRIPT, [*tiny_for("ff_mz"), override], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [message], proc.stderr[-2000:]
    assert "compile_s" not in proc.stdout and "RESULT" not in proc.stdout
