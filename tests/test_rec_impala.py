"""Recurrent IMPALA on Sebulba: the loss by hand (one truncated and one terminated step), the
bootstrap value from the continued memory, the learner replaying what the actor recorded from
the memory it sent, evaluation carrying memory, tiny runs, and the one-line network error."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_script

from stoix.architectures.sebulba import RecurrentTrajectory, actor_thread, evaluate, specs_of
from stoix.architectures.sebulba_threads import Lifetime, ParamsServer, Pipeline
from stoix.base_types import ActorCriticParams, Observation
from stoix.networks.recurrent import make_recurrent_actor, make_recurrent_critic
from stoix.systems.impala.sebulba import rec_impala
from stoix.utils.config import compose_config
from stoix.utils.sizes import sebulba_sizes
from stoix.wrappers import make_host_envs

pytestmark = pytest.mark.timeout(300)

SCRIPT = "stoix/systems/impala/sebulba/rec_impala.py"
TINY = [
    "arch.total_num_envs=4",
    "arch.total_timesteps=1024",
    "arch.num_evaluation=2",
    "arch.num_eval_episodes=4",
    "arch.eval_step_cap=50",
    "system.rollout_length=16",
    "network.actor_network.rnn.hidden_size=16",
    "network.critic_network.rnn.hidden_size=16",
    "logger.use_console=false",
    "logger.use_json=false",
]


def obs_of(agent_view):
    """Observation (T, B, F) with a two-action mask."""
    agent_view = jnp.asarray(agent_view, jnp.float32)
    return Observation(
        agent_view, jnp.ones((*agent_view.shape[:2], 2)), jnp.zeros(agent_view.shape[:2], jnp.int32)
    )


def summing_critic(params, carry, observation, reset):
    """A 'recurrent critic' whose memory is the sum of the episode's observations so far and
    whose value is params * memory: (carry (B, 1), obs (T, B, 1), reset (T, B))."""

    def step(carry, inputs):
        x, r = inputs
        carry = jnp.where(r[:, None], 0.0, carry) + x
        return carry, params * carry[:, 0]

    return jax.lax.scan(step, carry, (observation.agent_view, reset))


def uniform_actor(params, carry, observation, reset):
    return carry, distrax.Categorical(logits=jnp.zeros((*reset.shape, 2)))


def test_loss_by_hand_with_a_truncated_and_a_terminated_step():
    # One environment, three steps, gamma 0.5, reward 1 each, behaviour = target (rho = 1).
    # Step 1 is truncated (discount 1) with final observation 8; step 2 starts a new episode
    # (reset) and terminates (discount 0). Critic memory = running sum of observations:
    #   v_tm1 = [1, 1+2, 4 (reset)]; v_t = [1+2, 1+2+8 (continued memory, no reset), 4+16].
    steps = rec_impala.Trajectory(
        obs=obs_of([[[1.0]], [[2.0]], [[4.0]]]),
        reset=jnp.array([[False], [False], [True]]),
        action=jnp.zeros((3, 1), jnp.int32),
        log_prob=jnp.full((3, 1), jnp.log(0.5)),
        reward=jnp.ones((3, 1)),
        discount=jnp.array([[1.0], [1.0], [0.0]]),
        done=jnp.array([[False], [True], [True]]),
        next_obs=obs_of([[[2.0]], [[8.0]], [[16.0]]]),
    )
    carry = rec_impala.RNNCarry(actor=jnp.zeros((1, 1, 1)), critic=jnp.zeros((1, 1, 1)))
    traj = RecurrentTrajectory(initial_carry=carry, steps=steps)
    params = ActorCriticParams(actor=None, critic=jnp.float32(1.0))
    kwargs = dict(actor_apply=uniform_actor, critic_apply=summing_critic)

    _, v_tm1, v_t = rec_impala.replay(params, traj, **kwargs)
    np.testing.assert_allclose(v_tm1[:, 0], [1.0, 3.0, 4.0])
    np.testing.assert_allclose(v_t[:, 0], [3.0, 11.0, 20.0])

    loss, metrics = rec_impala.rec_impala_loss(
        params,
        traj,
        gamma=0.5,
        trace_lambda=1.0,
        clip_rho=1.0,
        clip_pg_rho=1.0,
        ent_coef=0.0,
        vf_coef=1.0,
        **kwargs,
    )
    # Targets: step 2: 1 (terminated); step 1: 1 + 0.5 * 11 = 6.5 (truncated: the final
    # observation's value, trace cut); step 0: 1 + 0.5 * 6.5 = 4.25.
    # Advantages: 4.25 - 1 = 3.25, 6.5 - 3 = 3.5, 1 - 4 = -3.
    value_loss = 0.5 * np.mean([(4.25 - 1.0) ** 2, (6.5 - 3.0) ** 2, (1.0 - 4.0) ** 2])
    actor_loss = -np.log(0.5) * np.mean([3.25, 3.5, -3.0])
    assert float(metrics["value_loss"]) == pytest.approx(value_loss, rel=1e-6)
    assert float(metrics["actor_loss"]) == pytest.approx(actor_loss, rel=1e-6)
    assert float(metrics["mean_rho"]) == pytest.approx(1.0)
    assert float(loss) == pytest.approx(actor_loss + value_loss, rel=1e-6)


@pytest.mark.parametrize("cell_type", ["gru", "lstm"])
def test_v_t_of_a_truncated_step_comes_from_the_continued_memory(cell_type):
    cfg = compose_config(
        "default/sebulba/default_rec_impala", [f"network.critic_network.rnn.cell_type={cell_type}"]
    )
    critic = make_recurrent_critic(cfg.network.critic_network)
    T, B = 5, 2
    rng = np.random.default_rng(0)
    obs = obs_of(rng.normal(size=(T, B, 4)))
    next_obs = obs_of(np.concatenate([np.asarray(obs.agent_view[1:]), rng.normal(size=(1, B, 4))]))
    # Environment 0 is truncated after step 1: its next observation is the final one, and step 2
    # starts a new episode.
    final = rng.normal(size=4)
    next_obs = next_obs._replace(agent_view=next_obs.agent_view.at[1, 0].set(final))
    reset = jnp.zeros((T, B), bool).at[2, 0].set(True)
    done = jnp.zeros((T, B), bool).at[1, 0].set(True)
    steps = rec_impala.Trajectory(
        obs,
        reset,
        jnp.zeros((T, B), jnp.int32),
        jnp.zeros((T, B)),
        jnp.ones((T, B)),
        jnp.ones((T, B)),
        done,
        next_obs,
    )
    key = jax.random.PRNGKey(1)
    # A non-zero initial memory, as a later rollout's would be.
    initial = jax.tree.map(lambda x: jax.random.normal(key, x.shape), critic.initial_carry(B))
    params = ActorCriticParams(actor=None, critic=critic.init(key, initial, obs, reset))
    traj = RecurrentTrajectory(
        jax.tree.map(lambda x: x[None], rec_impala.RNNCarry(actor=None, critic=initial)), steps
    )
    _, v_tm1, v_t = rec_impala.replay(
        params, traj, actor_apply=lambda p, c, o, r: (c, None), critic_apply=critic.apply
    )

    # v_tm1 is the critic's own scan over the whole rollout.
    _, whole = critic.apply(params.critic, initial, obs, reset)
    np.testing.assert_allclose(v_tm1, whole, rtol=1e-5, atol=1e-5)
    # A step that does not end its episode bootstraps from the next step's value.
    np.testing.assert_allclose(v_t[:-1, 1], v_tm1[1:, 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_t[[0, 2, 3], 0], v_tm1[[1, 3, 4], 0], rtol=1e-5, atol=1e-5)
    # The truncated step: the final observation after the episode's own memory (no reset) ...
    seq = jax.tree.map(lambda o, n: jnp.concatenate([o[:2, :1], n[1:2, :1]]), obs, next_obs)
    row = jax.tree.map(lambda x: x[:1], initial)
    _, values = critic.apply(params.critic, row, seq, jnp.zeros((3, 1), bool))
    assert float(v_t[1, 0]) == pytest.approx(float(values[2, 0]), abs=1e-5)
    # ... not the next episode's first value.
    assert abs(float(v_t[1, 0]) - float(v_tm1[2, 0])) > 1e-4
    # The rollout's last step continues the memory into the next rollout's first observation.
    seq = jax.tree.map(lambda o, n: jnp.concatenate([o, n[-1:]]), obs, next_obs)
    _, values = critic.apply(params.critic, initial, seq, jnp.concatenate([reset, jnp.zeros((1, B), bool)]))
    np.testing.assert_allclose(v_t[-1], values[-1], rtol=1e-5, atol=1e-5)


def test_the_learner_replays_what_the_actor_recorded_from_the_memory_it_sent(tmp_path):
    cfg = compose_config(
        "default/sebulba/default_rec_impala",
        [*TINY, "system.rollout_length=32", "arch.synchronous=true", f"logger.base_exp_path={tmp_path}"],
    )
    sizes = sebulba_sizes(cfg.arch, int(cfg.system.rollout_length), [0])
    probe = make_host_envs(cfg.env, 1, 0)
    action_spec, dummy = specs_of(probe)
    probe.close()
    system = rec_impala.learner_setup(cfg, sizes, action_spec, dummy, jax.random.PRNGKey(0))
    lifetime = Lifetime()
    params_server, pipeline = ParamsServer(lifetime), Pipeline(2, lifetime)
    params_server.publish(jax.device_get(system.params))
    params_server.publish(jax.device_get(system.params))  # the second rollout's "update"
    actor_thread(0, jax.devices()[0], cfg, sizes, system, params_server, pipeline, lifetime, 2)
    first, second = pipeline.get(1.0).trajectory, pipeline.get(1.0).trajectory
    actor = make_recurrent_actor(cfg.network.actor_network, action_spec)
    critic = make_recurrent_critic(cfg.network.critic_network)

    steps = first.steps
    assert steps.reset[0].all() and not np.asarray(first.initial_carry.actor).any()
    np.testing.assert_array_equal(steps.reset[1:], steps.done[:-1])
    np.testing.assert_array_equal(second.steps.reset[0], steps.done[-1])
    assert steps.done.any(), "the rollouts must cross an episode end for the resets to count"
    for traj in (first, second):
        replayed = jax.tree.map(jnp.asarray, traj)
        pi, _, _ = rec_impala.replay(
            system.params, replayed, actor_apply=actor.apply, critic_apply=critic.apply
        )
        # Same parameters: the learner's log-probabilities are the actor's (rho = 1).
        np.testing.assert_allclose(pi.log_prob(traj.steps.action), traj.steps.log_prob, atol=1e-5)
    # The second rollout starts from the memory the first one ended with.
    start = jax.tree.map(lambda x: x[0], first.initial_carry.actor)
    end, _ = actor.apply(system.params.actor, start, steps.obs, steps.reset)
    np.testing.assert_allclose(second.initial_carry.actor[0], end, rtol=1e-5, atol=1e-5)
    _, metrics = rec_impala.rec_impala_loss(
        system.params,
        jax.tree.map(jnp.asarray, second),
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        gamma=0.99,
        trace_lambda=1.0,
        clip_rho=1.0,
        clip_pg_rho=1.0,
        ent_coef=0.01,
        vf_coef=0.5,
    )
    assert float(metrics["mean_rho"]) == pytest.approx(1.0, abs=1e-5)


def test_evaluation_carries_the_memory_through_each_episode(tmp_path):
    cfg = compose_config("default/sebulba/default_rec_impala", [*TINY, "arch.eval_step_cap=40"])
    calls = []

    def act(params, observation, key, carry, reset):  # memory: steps since the episode began
        calls.append((np.asarray(carry).copy(), np.asarray(reset).copy()))
        carry = np.where(reset, 0, carry) + 1
        return np.zeros(4, np.int64), None, key, carry  # always push left: episodes end fast

    returns = evaluate(cfg, act, None, jax.devices()[0], 4, seed=3, init_carry=lambda n: np.full(n, -1))
    assert (returns > 0).all()
    carries, resets = zip(*calls, strict=True)
    assert resets[0].all() and (carries[0] == -1).all()
    for t in range(1, len(calls)):
        # Each call gets the memory the previous one returned, reset only at an episode start.
        expected = np.where(resets[t - 1], 0, carries[t - 1]) + 1
        np.testing.assert_array_equal(carries[t], expected)
    assert any(r.any() for r in resets[1:]), "an episode must end within the cap"


def test_tiny_asynchronous_run(tmp_path):
    from stoix.architectures.sebulba import run_experiment

    cfg = compose_config("default/sebulba/default_rec_impala", [*TINY, f"logger.base_exp_path={tmp_path}"])
    assert cfg.arch.synchronous is False and cfg.env.env_name == "gymnasium"
    metric = run_experiment(cfg, rec_impala.learner_setup)
    assert 0.0 < metric <= 50.0


def test_two_learner_devices_split_the_batch_and_its_initial_memory(tmp_path):
    overrides = [
        *TINY,
        "arch.learner.device_ids=[0,1]",
        "arch.actor.actor_per_device=2",
        "logger.use_console=true",
    ]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT rec_impala CartPole-v1" in proc.stdout and "mean_rho" in proc.stdout


def test_a_feed_forward_network_is_a_one_line_error(tmp_path):
    proc = run_script(SCRIPT, [*TINY[:6], "network=mlp"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "rec_impala needs recurrent networks" in lines[0], proc.stderr
    assert lines[0].endswith("pick them with network=rnn."), proc.stderr
