"""Recurrent networks and recurrent PPO: the memory is reset exactly at episode starts, is
carried across calls, GAE with a truncated and a terminated step by hand, whole sequences in
each minibatch, partially observable environments, tiny runs (one and two devices) and the
one-line errors."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, TINY, device_env, run_script
from omegaconf import OmegaConf

from stoix.base_types import Observation
from stoix.networks.heads import ScalarCriticHead
from stoix.networks.recurrent import CELL_TYPES, RecurrentCritic, ScannedRNN
from stoix.networks.torso import MLPTorso
from stoix.systems.ppo.anakin import rec_ppo
from stoix.wrappers import make_env

REC_PPO = "stoix/systems/ppo/anakin/rec_ppo.py"
T, B, F = 7, 3, 5


def _inputs(seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (T, B, F))


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_a_reset_mid_sequence_gives_the_outputs_of_a_fresh_start(cell_type):
    rnn = ScannedRNN(cell_type=cell_type, hidden_size=8)
    x = _inputs()
    reset = jnp.zeros((T, B), bool).at[3, 1].set(True)  # env 1's episode starts at step 3
    params = rnn.init(jax.random.PRNGKey(1), rnn.initial_carry(B), x, reset)
    # Start from a non-zero memory, so a missing reset would show.
    carry = jax.tree.map(lambda c: c + 0.5, rnn.initial_carry(B))
    _, out = rnn.apply(params, carry, x, reset)
    _, fresh = rnn.apply(params, rnn.initial_carry(B), x[3:], jnp.zeros((T - 3, B), bool))
    np.testing.assert_allclose(out[3:, 1], fresh[:, 1], rtol=1e-5, atol=1e-6)
    # Other environments keep their memory: their outputs differ from a fresh start.
    assert not np.allclose(out[3:, 0], fresh[:, 0], atol=1e-4)
    # Before the reset, env 1 saw its old memory.
    _, no_reset = rnn.apply(params, carry, x, jnp.zeros((T, B), bool))
    np.testing.assert_allclose(out[:3, 1], no_reset[:3, 1], rtol=1e-6)
    assert not np.allclose(out[3:, 1], no_reset[3:, 1], atol=1e-4)


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_memory_carries_across_calls(cell_type):
    rnn = ScannedRNN(cell_type=cell_type, hidden_size=8)
    x, reset = _inputs(2), jnp.zeros((T, B), bool).at[0].set(True)
    params = rnn.init(jax.random.PRNGKey(1), rnn.initial_carry(B), x, reset)
    whole_carry, whole = rnn.apply(params, rnn.initial_carry(B), x, reset)
    carry, first = rnn.apply(params, rnn.initial_carry(B), x[:4], reset[:4])
    carry, second = rnn.apply(params, carry, x[4:], reset[4:])
    np.testing.assert_allclose(jnp.concatenate([first, second]), whole, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), carry, whole_carry)


def test_gae_bootstraps_a_truncation_from_its_next_value_and_not_a_termination():
    """Step 1 hits the time limit (done, discount 1, next value 20: the critic's value of the
    true final observation), step 2 terminates (next value 30 must not count)."""
    gamma, lam = 0.9, 0.5
    traj = rec_ppo.RecPPOTransition(
        obs=None,
        reset=None,
        action=None,
        log_prob=None,
        value=jnp.asarray([[1.0], [2.0], [3.0], [4.0]]),
        next_value=jnp.asarray([[2.0], [20.0], [30.0], [5.0]]),
        reward=jnp.asarray([[1.0], [2.0], [3.0], [4.0]]),
        discount=jnp.asarray([[1.0], [1.0], [0.0], [1.0]]),
        done=jnp.asarray([[False], [True], [True], [False]]),
        episode_metrics=None,
    )
    advantage, target = rec_ppo.advantages_and_targets(traj, gamma, lam)
    a3 = 4.0 + 0.9 * 5.0 - 4.0
    a2 = 3.0 - 3.0
    a1 = 2.0 + 0.9 * 20.0 - 2.0
    a0 = 1.0 + 0.9 * 2.0 - 1.0 + 0.9 * 0.5 * a1
    np.testing.assert_allclose(advantage[:, 0], [a0, a1, a2, a3], rtol=1e-6)
    np.testing.assert_allclose(target[:, 0], [a0 + 1, a1 + 2, a2 + 3, a3 + 4], rtol=1e-6)


def test_the_bootstrap_value_continues_the_episode_memory():
    """The critic's value of the true final observation, read from the memory after the
    last step (no reset), equals its value at that position of the continued sequence."""
    critic = RecurrentCritic(MLPTorso([8]), ScannedRNN("gru", 8), MLPTorso([8]), ScalarCriticHead())
    x = _inputs(3)
    obs = Observation(x, jnp.ones((T, B, 2)), jnp.zeros((T, B), jnp.int32))
    reset = jnp.zeros((T, B), bool)
    params = critic.init(jax.random.PRNGKey(0), critic.initial_carry(B), obs, reset)
    carry, _ = critic.apply(params, critic.initial_carry(B), jax.tree.map(lambda a: a[:-1], obs), reset[:-1])
    _, boot = critic.apply(params, carry, jax.tree.map(lambda a: a[-1:], obs), reset[-1:])
    _, whole = critic.apply(params, critic.initial_carry(B), obs, reset)
    np.testing.assert_allclose(boot[0], whole[-1], rtol=1e-5, atol=1e-6)


def test_minibatches_hold_whole_sequences_with_their_memory():
    n_envs, n_minibatches = 4, 2
    steps = jnp.arange(T * n_envs, dtype=jnp.float32).reshape(T, n_envs)  # value = t * n_envs + env
    batch = rec_ppo.SequenceBatch(
        carry=rec_ppo.RNNCarry(jnp.arange(n_envs)[:, None] * 1.0, jnp.arange(n_envs)[:, None] * 10.0),
        obs=Observation(steps[..., None], jnp.ones((T, n_envs, 2)), jnp.zeros((T, n_envs), jnp.int32)),
        reset=jnp.zeros((T, n_envs), bool),
        action=steps,
        log_prob=steps,
        value=steps,
        advantage=steps,
        target=steps,
    )
    permutation = jnp.asarray([2, 0, 3, 1])
    mb = rec_ppo.split_sequences(batch, permutation, n_minibatches)
    assert mb.action.shape == (n_minibatches, T, n_envs // n_minibatches)
    assert mb.obs.agent_view.shape == (n_minibatches, T, n_envs // n_minibatches, 1)
    for m in range(n_minibatches):
        for j in range(n_envs // n_minibatches):
            env = int(permutation[m * (n_envs // n_minibatches) + j])
            np.testing.assert_array_equal(mb.action[m, :, j], steps[:, env])  # the whole sequence
            assert float(mb.carry.actor[m, j, 0]) == env and float(mb.carry.critic[m, j, 0]) == 10 * env


def test_stateless_cartpole_hides_the_velocities():
    env, eval_env = make_env(OmegaConf.load("configs/env/gymnax/cartpole_stateless.yaml"))
    full, _ = make_env(OmegaConf.load("configs/env/gymnax/cartpole.yaml"))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    (_, ts), (_, full_ts) = env.reset(keys), full.reset(keys)
    assert env.observation_spec.agent_view.shape == (2,) == eval_env.observation_spec.agent_view.shape
    np.testing.assert_array_equal(ts.observation.agent_view, full_ts.observation.agent_view[:, [0, 2]])
    state, ts = env.reset(keys)
    full_state, full_ts = full.reset(keys)
    for _ in range(3):
        state, ts = env.step(state, jnp.ones(2, jnp.int32))
        full_state, full_ts = full.step(full_state, jnp.ones(2, jnp.int32))
        np.testing.assert_array_equal(ts.observation.agent_view, full_ts.observation.agent_view[:, [0, 2]])
        np.testing.assert_array_equal(
            ts.extras["next_obs"].agent_view, full_ts.extras["next_obs"].agent_view[:, [0, 2]]
        )


def test_memory_chain_takes_its_memory_length_from_config():
    cfg = OmegaConf.load("configs/env/gymnax/memory_chain.yaml")
    cfg.env_params.memory_length = 4
    env, _ = make_env(cfg)
    state, ts = env.reset(jax.random.split(jax.random.PRNGKey(0), 1))
    lengths = 0
    for _ in range(10):
        state, ts = env.step(state, jnp.zeros(1, jnp.int32))
        lengths += 1
        if bool(ts.last()[0]):
            break
    assert lengths == 5 and float(ts.discount[0]) == 0.0  # memory_length + 1 steps, terminated
    assert abs(float(ts.reward[0])) == 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["env=gymnax/cartpole_stateless", "env.observation_indices=[0,7]"],
            "env.observation_indices=[0, 7] must be",
        ),
        (
            ["env=gymnax/memory_chain", "+env.env_params.memory_lenght=3"],
            "env.env_params.memory_lenght=3: MemoryChain-bsuite has no parameter",
        ),
        (["network=mlp"], "this system needs a recurrent network"),
        (["network.actor_network.rnn.cell_type=rnn"], "network rnn.cell_type='rnn' is not known"),
        (["system.num_minibatches=3"], "system.num_minibatches=3 must divide the environments per slot"),
        (["env=gymnax/pendulum"], "network=rnn_continuous"),
    ],
)
def test_bad_input_is_one_line(overrides, message, tmp_path):
    result = run_script(REC_PPO, [*TINY, *overrides, f"logger.base_exp_path={tmp_path}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]


@pytest.mark.slow  # 28 s; averaging itself: tests/test_gradient_averaging.py
def test_two_devices_with_update_batches_keep_replicas_identical(tmp_path):
    """Gradients are averaged over devices and update batches: every replica ends with the
    same (changed) parameters, while each keeps its own environments' memory; the script's
    own evaluation carries the memory through its episodes."""
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from stoix.utils.config import compose_config
        from stoix.utils.sizes import anakin_sizes
        from stoix.wrappers import make_env
        from stoix.systems.ppo.anakin import rec_ppo
        cfg = compose_config("default/anakin/default_rec_ppo", {TINY!r} + ["arch.total_num_envs=8", "arch.update_batch_size=2", "system.num_minibatches=1"])
        sizes = anakin_sizes(cfg.arch, 16, 2)
        env, _ = make_env(cfg.env)
        setup = rec_ppo.learner_setup(env, cfg, sizes, jax.random.PRNGKey(0))
        before = jax.device_get(setup.learner_state.params)
        out = setup.learn(setup.learner_state)
        params = jax.device_get(out.learner_state.params)
        for old, leaf in zip(jax.tree.leaves(before), jax.tree.leaves(params)):
            assert leaf.shape[:2] == (2, 2)
            np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[:1, :1], leaf.shape))
        assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params)))
        carry = jax.device_get(out.learner_state.carry.actor)
        assert carry.shape == (2, 2, 2, 128) and not np.allclose(carry[0, 0], carry[1, 0])
        print("OK")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=device_env(2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    result = run_script(
        REC_PPO,
        [
            *TINY,
            "arch.total_num_envs=8",
            "arch.update_batch_size=2",
            "system.num_minibatches=1",
            "env=gymnax/memory_chain",
            "logger.use_console=true",
            f"logger.base_exp_path={tmp_path}",
        ],
        tmp_path,
        devices=2,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 x 2" in result.stdout and "RESULT rec_ppo MemoryChain-bsuite" in result.stdout
