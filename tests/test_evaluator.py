"""The evaluator: how many episodes, what it returns, and the step cap."""

import jax
import jax.numpy as jnp
import numpy as np
from scripted_env import ScriptedEnv

from stoix.evaluator import make_evaluator
from stoix.wrappers.gymnax import GymnaxToJumanji


def scripted(max_steps):
    env = ScriptedEnv()
    return GymnaxToJumanji(env, env.default_params.replace(max_steps_in_episode=max_steps))


def act_after(step_to_quit):
    """A policy that terminates the episode at a given step (action 1), greedy or not."""

    def act(params, observation, key, greedy):
        time = observation.agent_view[:, 0]
        return jnp.where(time + 1 >= step_to_quit + params, 1, 0)

    return act


def params_for(num_episodes_offsets):
    # eval_params leaves are (devices, update_batch, ...); here a per-device scalar offset.
    return jnp.asarray(num_episodes_offsets, jnp.float32).reshape(1, 1)


def test_runs_exactly_the_requested_episodes():
    evaluate = make_evaluator(scripted(100), act_after(3), episodes_per_device=6, greedy=True, step_cap=50)
    result = jax.device_get(evaluate(params_for(0.0), jax.random.PRNGKey(0)))
    assert result.episode_return.shape == (1, 6)
    np.testing.assert_array_equal(result.episode_length, 3)
    np.testing.assert_allclose(result.episode_return, 1.0 + 2.0 + 3.0)
    assert int(result.num_capped.sum()) == 0


def test_time_limit_ends_evaluation_episodes():
    evaluate = make_evaluator(scripted(4), act_after(1000), episodes_per_device=2, greedy=True, step_cap=50)
    result = jax.device_get(evaluate(params_for(0.0), jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(result.episode_length, 4)
    assert int(result.num_capped.sum()) == 0


def test_step_cap_stops_an_environment_that_never_ends():
    never_ends = scripted(10**9)
    evaluate = make_evaluator(never_ends, act_after(10**6), episodes_per_device=3, greedy=False, step_cap=25)
    result = jax.device_get(evaluate(params_for(0.0), jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(result.episode_length, 25)
    assert int(result.num_capped.sum()) == 3


def test_episodes_ending_at_different_steps_across_two_devices_count_only_their_own_steps():
    """Each episode ends at its own random step (and each device's policy differs), so many
    keep running after others ended: a finished episode must add no more reward or length."""
    import subprocess
    import sys
    import textwrap

    from conftest import REPO_ROOT, device_env

    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, sys
        sys.path.insert(0, "tests")
        from scripted_env import ScriptedEnv
        from stoix.evaluator import make_evaluator
        from stoix.wrappers.gymnax import GymnaxToJumanji

        env = ScriptedEnv()
        env = GymnaxToJumanji(env, env.default_params.replace(max_steps_in_episode=100))

        def act(params, observation, key, greedy):
            # quit with probability `params` per step, independently per episode
            return jax.random.bernoulli(key, params, observation.agent_view.shape[:1]).astype(jnp.int32)

        evaluate = make_evaluator(env, act, episodes_per_device=16, greedy=True, step_cap=100)
        params = jnp.asarray([[0.1], [0.3]], jnp.float32)  # (devices, update batch)
        result = jax.device_get(evaluate(params, jax.random.PRNGKey(0)))
        lengths, returns = result.episode_length, result.episode_return
        assert lengths.shape == (2, 16) and int(result.num_capped.sum()) == 0
        assert len(np.unique(lengths)) >= 5, lengths  # episodes really end at different steps
        assert lengths[0].mean() > lengths[1].mean()  # and the devices' policies differ
        # The reward of step t is 1 + t, so an episode of length L returns L (L + 1) / 2.
        np.testing.assert_allclose(returns, lengths * (lengths + 1) / 2)
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
