"""R2D2: n-step rescaled double-Q targets by hand (a truncated and a terminated step, no return
across an episode end), the bootstrap value of a final observation read with its episode's
memory, burn-in steps out of the loss and the gradient, the priority mixture, tiny runs (one
and two devices) and the one-line errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for

from stoix.base_types import Observation
from stoix.networks.heads import DiscreteQNetworkHead
from stoix.networks.recurrent import RecurrentQNetwork, ScannedRNN
from stoix.networks.torso import MLPTorso
from stoix.systems.q_learning import rec_r2d2

SCRIPT = str(anakin_script("rec_r2d2").relative_to(REPO_ROOT))
GAMMA = 0.9
h = functools.partial(rlax.signed_hyperbolic, eps=1e-3)
h_inv = functools.partial(rlax.signed_parabolic, eps=1e-3)


def column(values, dtype=jnp.float32):
    return jnp.asarray(values, dtype)[:, None]  # (T,) -> (T, B=1)


def test_n_step_targets_stop_at_episode_ends_and_bootstrap_only_truncations():
    """Step 1 hits the time limit (done, discount 1), step 3 terminates (discount 0); step 4
    is the sequence's last. v_t is the value of each transition's true next observation."""
    r = [1.0, 2.0, 3.0, 4.0, 5.0]
    v = [10.0, 20.0, 30.0, 40.0, 50.0]
    done = [False, True, False, True, False]
    discount = [1.0, 1.0, 1.0, 0.0, 1.0]
    targets = rec_r2d2.n_step_targets(
        column(r), column(discount), column(done, bool), column(v), gamma=GAMMA, n_step=3
    )
    expected = [
        1.0 + 0.9 * 2.0 + 0.81 * 20.0,  # stops at the truncation, bootstraps from its final observation
        2.0 + 0.9 * 20.0,
        3.0 + 0.9 * 4.0,  # stops at the termination: no bootstrap
        4.0,
        5.0 + 0.9 * 50.0,  # the sequence ends: bootstrap from its last next observation
    ]
    np.testing.assert_allclose(targets[:, 0], expected, rtol=1e-6)
    # The next episode's rewards and values never reach the steps before an end.
    changed = rec_r2d2.n_step_targets(
        column([1.0, 2.0, 300.0, 4.0, 5.0]),
        column(discount),
        column(done, bool),
        column([10.0, 20.0, 300.0, 40.0, 50.0]),
        gamma=GAMMA,
        n_step=3,
    )
    np.testing.assert_allclose(changed[:2, 0], expected[:2], rtol=1e-6)


def test_without_episode_ends_the_targets_are_rlax_transformed_n_step_q_learning():
    key = jax.random.PRNGKey(0)
    steps, actions = 9, 3
    q_tm1, q_t = jax.random.normal(key, (2, steps, actions)) * 5.0
    a_tm1 = jnp.arange(steps) % actions
    a_t = (jnp.arange(steps) + 1) % actions
    r = jax.random.uniform(jax.random.PRNGKey(1), (steps,))
    v = h_inv(q_t[jnp.arange(steps), a_t])
    for n in (1, 3, 5):
        ours = (
            h(
                rec_r2d2.n_step_targets(
                    r[:, None],
                    jnp.ones((steps, 1)),
                    jnp.zeros((steps, 1), bool),
                    v[:, None],
                    gamma=GAMMA,
                    n_step=n,
                )[:, 0]
            )
            - q_tm1[jnp.arange(steps), a_tm1]
        )
        theirs = rlax.transformed_n_step_q_learning(
            q_tm1, a_tm1, q_t, a_t, r, GAMMA * jnp.ones(steps), n, tx_pair=rlax.SIGNED_HYPERBOLIC_PAIR
        )
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_priorities_mix_the_max_and_the_mean():
    abs_td = jnp.asarray([[1.0, 0.0], [4.0, 2.0], [1.0, 2.0]])  # (T=3, B=2)
    np.testing.assert_allclose(
        rec_r2d2.sequence_priorities(abs_td, 0.9),
        [0.9 * 4.0 + 0.1 * 2.0, 0.9 * 2.0 + 0.1 * 4.0 / 3.0],
        rtol=1e-6,
    )


def value_q(params, carry, obs, reset):
    """A memoryless stand-in network: Q(s, a) = params * s[a]."""
    return carry, params * obs.agent_view


def obs_of(values):
    values = jnp.asarray(values, jnp.float32)  # (B, T, A)
    return Observation(values, jnp.ones(values.shape), jnp.zeros(values.shape[:2], jnp.int32))


def sequence(rewards, discount, done, obs, next_obs, action, reset=None, carry_size=1):
    batch, steps = np.shape(rewards)
    return rec_r2d2.R2D2Transition(
        obs=obs_of(obs),
        reset=jnp.zeros((batch, steps), bool) if reset is None else jnp.asarray(reset, bool),
        carry=jnp.zeros((batch, steps, carry_size)),
        action=jnp.asarray(action, jnp.int32),
        reward=jnp.asarray(rewards, jnp.float32),
        discount=jnp.asarray(discount, jnp.float32),
        done=jnp.asarray(done, bool),
        next_obs=obs_of(next_obs),
    )


def loss_kwargs(q_apply, burn_in_length=0, n_step=2):
    return dict(
        q_apply=q_apply,
        gamma=GAMMA,
        n_step=n_step,
        burn_in_length=burn_in_length,
        priority_eta=0.9,
        rescaling_eps=1e-3,
    )


def test_loss_bootstraps_a_truncation_from_its_final_observation_and_not_a_termination():
    """Two sequences of two steps, 2-step returns. Sequence 0: step 0 is truncated, its final
    observation is worth [4, 6] to the target net ([1, 2] online picks action 1: double Q);
    step 1 begins the next episode. Sequence 1: step 0 terminates."""
    obs = [[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 3.0]]]
    next_obs = [[[1.0, 2.0], [5.0, 7.0]], [[9.0, 9.0], [0.0, 1.0]]]
    batch = sequence(
        rewards=[[1.0, 2.0], [3.0, 4.0]],
        discount=[[1.0, 1.0], [0.0, 1.0]],
        done=[[True, False], [True, False]],
        obs=obs,
        next_obs=next_obs,
        action=[[0, 1], [0, 1]],
    )
    online, target = jnp.float32(1.0), jnp.float32(3.0)  # target Q = 3 * s
    weights = jnp.asarray([1.0, 0.5])
    loss, (metrics, priorities) = rec_r2d2.r2d2_loss(online, target, batch, weights, **loss_kwargs(value_q))
    # Targets: h(r + 0.9 * h^-1(Q_target(next, argmax Q_online(next)))) with Q_target = 3 * s.
    t00 = h(1.0 + 0.9 * h_inv(3.0 * 2.0))  # truncated: the final observation [1, 2], action 1
    t01 = h(2.0 + 0.9 * h_inv(3.0 * 7.0))  # the new episode's own bootstrap
    t10 = h(3.0)  # terminated: the next observation's value [9, 9] must not count
    t11 = h(4.0 + 0.9 * h_inv(3.0 * 1.0))
    td = np.asarray([[t00 - 1.0, t01 - 1.0], [t10 - 2.0, t11 - 3.0]])
    per_sequence = np.mean(0.5 * td**2, axis=1)
    np.testing.assert_allclose(loss, np.mean(np.asarray(weights) * per_sequence), rtol=1e-5)
    abs_td = np.abs(td)
    np.testing.assert_allclose(priorities, 0.9 * abs_td.max(1) + 0.1 * abs_td.mean(1), rtol=1e-5)


def recurrent_q(hidden=8, actions=3):
    return RecurrentQNetwork(
        pre_torso=MLPTorso([8]),
        rnn=ScannedRNN("gru", hidden),
        post_torso=MLPTorso([8]),
        q_head=DiscreteQNetworkHead(action_dim=actions),
    )


def random_sequence(key, batch=2, steps=6, features=3, actions=3, hidden=8):
    keys = jax.random.split(key, 6)
    obs = jax.random.normal(keys[0], (batch, steps, features))
    return rec_r2d2.R2D2Transition(
        obs=Observation(obs, jnp.ones((batch, steps, actions)), jnp.zeros((batch, steps), jnp.int32)),
        reset=jnp.zeros((batch, steps), bool),
        carry=jax.random.normal(keys[1], (batch, steps, hidden)),
        action=jax.random.randint(keys[2], (batch, steps), 0, actions),
        reward=jax.random.uniform(keys[3], (batch, steps)),
        discount=jnp.ones((batch, steps)),
        done=jnp.zeros((batch, steps), bool),
        next_obs=Observation(
            jax.random.normal(keys[4], (batch, steps, features)),
            jnp.ones((batch, steps, actions)),
            jnp.zeros((batch, steps), jnp.int32),
        ),
    )


def init_params(network, batch):
    view = batch.obs.agent_view
    obs = Observation(view[:1, :1], batch.obs.action_mask[:1, :1], batch.obs.step_count[:1, :1])
    return network.init(jax.random.PRNGKey(7), network.initial_carry(1), obs, jnp.zeros((1, 1), bool))


def test_the_final_observation_is_read_with_the_memory_of_its_episode():
    """next_q_values at a truncated step equals the Q-values the episode would have had had it
    gone on to its final observation; at other steps, the next step's Q-values."""
    network = recurrent_q()
    batch = random_sequence(jax.random.PRNGKey(3))
    params = init_params(network, batch)
    seq = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch._replace(carry=None))
    reset = seq.reset.at[3].set(True)  # the episode ended (truncated) at step 2
    start = batch.carry[:, 0]
    q, carries = rec_r2d2.unroll(network.apply, params, start, seq.obs, reset)
    q_next = rec_r2d2.next_q_values(network.apply, params, carries, seq.next_obs)
    # Continue the first episode with step 2's final observation instead of the new episode.
    continued = jax.tree.map(lambda o, n: jnp.concatenate([o[:3], n[2:3]]), seq.obs, seq.next_obs)
    q_cont, _ = rec_r2d2.unroll(network.apply, params, start, continued, jnp.zeros((4, 2), bool))
    np.testing.assert_allclose(q_next[2], q_cont[3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(q_next[2], q[3], atol=1e-4)  # not the new episode's first Q-values
    # The next observation of a step inside an episode is the next step (here next_obs = obs[t+1]).
    inside = jax.tree.map(lambda o: jnp.concatenate([o[1:], o[-1:]]), seq.obs)
    q_next_inside = rec_r2d2.next_q_values(network.apply, params, carries, inside)
    np.testing.assert_allclose(q_next_inside[3:5], q[4:6], rtol=1e-5, atol=1e-6)


def test_burn_in_steps_are_out_of_the_loss_and_the_gradient():
    network = recurrent_q()
    batch = random_sequence(jax.random.PRNGKey(4))
    params = init_params(network, batch)
    target = jax.tree.map(lambda p: p * 0.9, params)
    weights = jnp.ones(2)
    burn_in = 2
    kwargs = loss_kwargs(network.apply, burn_in_length=burn_in, n_step=3)

    @jax.jit
    def loss_of(b):
        return rec_r2d2.r2d2_loss(params, target, b, weights, **kwargs)[0]

    loss = loss_of(batch)
    # Rewards, actions, discounts and ends of the burn-in steps do not enter the loss.
    other = batch._replace(
        reward=batch.reward.at[:, :burn_in].set(100.0),
        action=(batch.action.at[:, :burn_in].add(1)) % 3,
        discount=batch.discount.at[:, :burn_in].set(0.0),
        done=batch.done.at[:, :burn_in].set(True),
    )
    np.testing.assert_allclose(loss_of(other), loss, rtol=1e-6)
    # Their observations do (they warm the memory up) ...
    moved = batch._replace(obs=batch.obs._replace(agent_view=batch.obs.agent_view.at[:, 0].add(1.0)))
    assert abs(float(loss_of(moved)) - float(loss)) > 1e-6
    # ... but no gradient flows back into them, nor into the stored memory.
    grad_view, grad_carry = jax.jit(
        jax.grad(
            lambda view, carry: loss_of(batch._replace(obs=batch.obs._replace(agent_view=view), carry=carry)),
            argnums=(0, 1),
        )
    )(batch.obs.agent_view, batch.carry)
    assert np.all(np.asarray(grad_view[:, :burn_in]) == 0.0) and np.any(
        np.asarray(grad_view[:, burn_in:]) != 0.0
    )
    assert np.all(np.asarray(grad_carry) == 0.0)
    # The parameter gradient equals that of the remaining steps started from the warmed-up memory.
    seq = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch._replace(carry=None))
    _, carries = rec_r2d2.unroll(network.apply, params, batch.carry[:, 0], seq.obs, seq.reset)
    rest = jax.tree.map(lambda x: x[:, burn_in:], batch)
    rest = rest._replace(carry=jnp.broadcast_to(carries[burn_in - 1][:, None], rest.carry.shape))
    no_burn = dict(kwargs, burn_in_length=0)

    def online_loss(p, b, kw, tgt):
        return rec_r2d2.r2d2_loss(p, tgt, b, weights, **kw)[0]

    # Same target memory too: give the target network the online parameters in both.
    grads = jax.jit(jax.grad(functools.partial(online_loss, kw=kwargs)))(params, batch, tgt=params)
    grads_rest = jax.jit(jax.grad(functools.partial(online_loss, kw=no_burn)))(params, rest, tgt=params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, grads_rest)


@pytest.mark.slow  # 30 s; the tiny run is also test_systems.py's
def test_a_tiny_run_learns_and_writes_a_result(tmp_path):
    proc = run_script(SCRIPT, [*tiny_for("rec_r2d2"), f"logger.base_exp_path={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT rec_r2d2 CartPole-v1" in proc.stdout


def test_two_devices_with_update_batches(tmp_path):
    overrides = [*tiny_for("rec_r2d2"), "arch.update_batch_size=2", "logger.use_console=true"]
    proc = run_script(SCRIPT, [*overrides, f"logger.base_exp_path={tmp_path}"], cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert "RESULT rec_r2d2 CartPole-v1" in proc.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["system.burn_in_length=8"], "system.burn_in_length=8 must be < system.sample_sequence_length=8"),
        (["network=mlp_dqn"], "this system needs a recurrent Q-network"),
        (["network=rnn"], "is not a Q-value head; pick a recurrent Q-network with network=rnn_dqn"),
        (["env=gymnax/pendulum"], "rec_r2d2 needs discrete actions"),
        (["system.sequence_period=3"], "system.sequence_period=3 must be <= system.sample_sequence_length=8"),
        (["system.priority_eta=1.5"], "system.priority_eta=1.5 must be a number in [0, 1]"),
    ],
)
def test_bad_input_is_one_line(overrides, message, tmp_path):
    proc = run_script(
        SCRIPT, [*tiny_for("rec_r2d2"), *overrides, f"logger.base_exp_path={tmp_path}"], tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
