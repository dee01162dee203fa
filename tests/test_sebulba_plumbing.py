"""Sebulba plumbing (threads, parameter server, pipeline) and the gymnasium wrapper's
semantics. Every wait here is bounded: nothing in this file can hang."""

import threading
import time

import gymnasium as gym
import numpy as np
import pytest

from stoix.architectures.sebulba_threads import (
    Lifetime,
    ParamsServer,
    Pipeline,
    ThreadFailed,
    join_all,
    start_thread,
)
from stoix.utils.config import StoixConfigError
from stoix.wrappers.gymnasium import GymnasiumVecEnv, make_gymnasium_envs

pytestmark = pytest.mark.timeout(60)


def test_an_exception_in_a_thread_stops_every_thread_and_reaches_the_main_thread():
    lifetime = Lifetime()
    pipeline = Pipeline(max_size=1, lifetime=lifetime)

    def producer():  # blocks on the full queue until the run stops
        while pipeline.put("rollout"):
            pass

    def failing_actor():
        time.sleep(0.1)
        raise ValueError("env exploded")

    threads = [start_thread("producer", producer, lifetime), start_thread("actor", failing_actor, lifetime)]
    start = time.perf_counter()
    assert lifetime.wait(5.0), "the failure must stop the lifetime"
    assert join_all(threads, timeout_s=2.0) == []
    assert time.perf_counter() - start < 3.0
    with pytest.raises(ThreadFailed, match="thread 'actor' failed: ValueError: env exploded"):
        lifetime.raise_if_failed()


def test_pipeline_drain_unblocks_a_producer_and_get_times_out():
    lifetime = Lifetime()
    pipeline = Pipeline(max_size=2, lifetime=lifetime)
    assert pipeline.put(1) and pipeline.put(2)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (pipeline.put(3), done.set()), daemon=True)
    thread.start()
    assert not done.wait(0.2), "a full pipeline blocks the producer"
    assert pipeline.drain() == 2
    assert done.wait(2.0), "draining makes room"
    assert pipeline.get(timeout_s=0.5) == 3
    start = time.perf_counter()
    assert pipeline.get(timeout_s=0.2) is None
    assert time.perf_counter() - start < 1.0


def test_params_server_versions_and_waiting_gives_up_when_stopped():
    lifetime = Lifetime()
    server = ParamsServer(lifetime)
    assert server.publish({"w": 1}) == 0
    threading.Timer(0.1, lambda: server.publish({"w": 2})).start()
    params, version = server.wait_for(1)
    assert params == {"w": 2} and version == 1
    threading.Timer(0.1, lifetime.stop).start()
    assert server.wait_for(5) is None


class Scripted(gym.Env):
    """obs = [t]; reward 1 + t; action 1 terminates; TimeLimit truncates."""

    observation_space = gym.spaces.Box(0.0, 1e4, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        reward = 1.0 + self.t
        self.t += 1
        return np.array([self.t], np.float32), reward, bool(action == 1), False, {}


gym.register("StoixScripted-v0", entry_point=Scripted, max_episode_steps=3)


def test_gymnasium_wrapper_matches_the_jax_semantics():
    env = GymnasiumVecEnv(make_gymnasium_envs("StoixScripted-v0", num_envs=2, seed=0), seed=0)
    env.reset()
    steps = [env.step(np.array(a)) for a in ([0, 1], [0, 0], [0, 0], [0, 0])]
    # Env 0 truncates after 3 steps: discount 1, next_obs keeps the final observation 3.
    np.testing.assert_array_equal([s.last[0] for s in steps], [0, 0, 1, 0])
    np.testing.assert_array_equal([s.discount[0] for s in steps], [1, 1, 1, 1])
    np.testing.assert_array_equal([s.next_obs.agent_view[0, 0] for s in steps], [1, 2, 3, 1])
    np.testing.assert_array_equal([s.observation.agent_view[0, 0] for s in steps], [1, 2, 0, 1])
    # Env 1 terminates at once: discount 0, episode return 1, then a new episode.
    assert steps[0].last[1] and steps[0].discount[1] == 0.0
    assert steps[0].episode_metrics.is_terminal_step[1] and steps[0].episode_metrics.episode_return[1] == 1.0
    assert steps[2].episode_metrics.episode_return[0] == 1.0 + 2.0 + 3.0
    assert not steps[1].episode_metrics.is_terminal_step[0]


def test_missing_optional_package_is_a_clear_error(monkeypatch):
    from gymnasium.error import DependencyNotInstalled

    def broken_make(*args, **kwargs):
        raise DependencyNotInstalled("Box2D is not installed, run `pip install gymnasium[box2d]`")

    monkeypatch.setattr(gym, "make", broken_make)
    with pytest.raises(StoixConfigError, match=r"LunarLander-v3 needs an optional package.*box2d"):
        make_gymnasium_envs("LunarLander-v3", num_envs=1, seed=0)


def test_async_evaluator_returns_results_in_order_and_reports_failures():
    from stoix.architectures.sebulba_threads import AsyncEvaluator

    lifetime = Lifetime()
    evaluator = AsyncEvaluator(lambda params, step: (time.sleep(0.05), params * 10)[1], lifetime)
    for step, params in enumerate([1, 2, 3]):
        evaluator.submit(params, step)
    results = evaluator.finish(timeout_s=5.0)
    assert [(step, result) for step, _, result in results] == [(0, 10), (1, 20), (2, 30)]
    assert not evaluator.thread.is_alive()

    failing = AsyncEvaluator(lambda params, step: 1 / 0, lifetime2 := Lifetime())
    failing.submit(1, 0)
    assert lifetime2.wait(5.0)
    with pytest.raises(ThreadFailed, match="evaluator"):
        lifetime2.raise_if_failed()


def test_async_evaluator_finish_gives_each_job_its_own_timeout():
    from stoix.architectures.sebulba_threads import AsyncEvaluator

    evaluator = AsyncEvaluator(lambda params, step: (time.sleep(0.3), params)[1], Lifetime())
    for step in range(3):
        evaluator.submit(step, step)
    # 0.9 s of work in all, but no single job takes 0.6 s: everything finishes.
    assert [step for step, _, _ in evaluator.finish(timeout_s=0.6)] == [0, 1, 2]
    assert evaluator.outstanding == 0

    lifetime = Lifetime()
    stuck = AsyncEvaluator(lambda params, step: (time.sleep(5.0 if step else 0.0), params)[1], lifetime)
    stuck.submit(0, 0)
    stuck.submit(1, 1)
    start = time.perf_counter()
    assert [step for step, _, _ in stuck.finish(timeout_s=0.3)] == [0]
    assert stuck.outstanding == 1 and time.perf_counter() - start < 2.0
    lifetime.stop()


def test_evaluation_cut_by_the_step_cap_counts_partial_returns():
    """CartPole pays 1 per step and always pushing left ends each episode after 8-12 steps
    (L_i). With a step cap c an episode's return is min(L_i, c): finished episodes keep their
    own return (not the next episode's), unfinished ones count what they scored so far."""
    import jax
    import numpy as np

    from stoix.architectures.sebulba import evaluate
    from stoix.utils.config import compose_config

    def push_left(params, observation, key):
        return np.zeros(observation.agent_view.shape[0], np.int32), None, key

    def returns_with_cap(cap):
        cfg = compose_config(
            "default/sebulba/default_ff_ppo", ["env=gymnasium/cartpole", f"arch.eval_step_cap={cap}"]
        )
        return evaluate(cfg, push_left, None, jax.devices()[0], 6, seed=11)

    lengths = returns_with_cap(200)
    assert np.all((lengths >= 8) & (lengths <= 12)) and len(set(lengths.tolist())) > 1, lengths
    for cap in (5, int(np.median(lengths))):
        np.testing.assert_array_equal(returns_with_cap(cap), np.minimum(lengths, cap))


@pytest.mark.parametrize("max_truncations", [1, 3])
def test_ppo_values_in_one_critic_pass_equal_two_passes_on_a_recorded_rollout(max_truncations):
    # Sebulba PPO takes Anakin's one pass over a rollout's observations: that needs a step that
    # did not end an episode to have the next step's observation as its true next one.
    import jax
    import jax.numpy as jnp

    from stoix.systems.ppo.sebulba import ff_ppo

    env = GymnasiumVecEnv(make_gymnasium_envs("StoixScripted-v0", num_envs=3, seed=0), seed=0)
    timestep, steps = env.reset(), []
    for action in ([0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]):
        next_timestep = env.step(np.array(action))
        steps.append(ff_ppo.record(timestep.observation, np.array(action), np.zeros(3), next_timestep))
        timestep = next_timestep
    traj = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)), *steps)  # on the device, as the learner has it
    assert (traj.done & (traj.discount > 0)).sum() > 1 and (traj.discount == 0).any()  # both kinds of end

    def critic(obs):
        return jnp.sin(3.0 * obs.agent_view[..., 0]) + obs.agent_view[..., 0]

    # max_truncations=1 takes the branch that runs the critic over every next observation.
    v_tm1, v_t = ff_ppo.trajectory_values(critic, traj, max_truncations)
    np.testing.assert_allclose(v_tm1, critic(traj.obs), rtol=1e-6)
    # At terminated steps the next value is multiplied by a zero discount wherever it is used.
    live = traj.discount > 0
    np.testing.assert_allclose(
        np.where(live, v_t, 0.0), np.where(live, critic(traj.next_obs), 0.0), rtol=1e-6
    )
