"""AlphaZero-style search (ff_az.py): n-step value targets and the policy loss by hand (with a
truncated and a terminated step), the environment as the search's model (discount 0 only at a
termination, no auto-reset inside the tree), policy targets that are the search's action
weights, evaluation with the search or the raw policy, a one- and a two-device run, and bad
input as one line before anything compiles.

Hand-made batches use a stand-in critic V(x) = w * x on one-number observations.
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, anakin_script, run_script, tiny_for
from scripted_env import ScriptedEnv

from stoix.base_types import ActorCriticParams, Observation
from stoix.systems.search import ff_az
from stoix.utils.config import compose_config
from stoix.wrappers.core import AutoReset, RecordEpisodeMetrics, VmapWrapper
from stoix.wrappers.gymnax import GymnaxToJumanji

GAMMA = 0.9
SCRIPT = str(anakin_script("ff_az").relative_to(REPO_ROOT))


def obs(x):
    x = jnp.asarray(x, jnp.float32)[..., None]
    return Observation(x, jnp.ones_like(x), jnp.zeros(x.shape[:-1], jnp.int32))


def critic_apply(w, observation):
    return w * observation.agent_view[..., 0]


def actor_apply(logits, observation):  # the same categorical policy for every observation
    return distrax.Categorical(logits=jnp.broadcast_to(logits, (*observation.agent_view.shape[:-1], 2)))


def sequences():
    """Three 3-step sequences: (a) mid-episode, then a time-limit end at step 1 (discount 1; its
    true final observation is 20, the next step belongs to a new episode); (b) a termination at
    step 0 (its final observation 30 must not count); (c) no end."""
    return ff_az.Transition(
        obs=obs([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
        action=jnp.zeros((3, 3), jnp.int32),
        reward=jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [1.0, 1.0, 1.0]]),
        discount=jnp.asarray([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]),
        done=jnp.asarray([[False, True, False], [True, False, False], [False, False, False]]),
        next_obs=obs([[2.0, 20.0, 4.0], [30.0, 6.0, 7.0], [8.0, 9.0, 10.0]]),
        search_policy=jnp.full((3, 3, 2), 0.5),
    )


def test_value_targets_bootstrap_a_truncation_from_its_final_observation_and_not_a_termination():
    targets = ff_az.value_targets(1.0, sequences(), critic_apply=critic_apply, gamma=GAMMA)
    truncated = 1.0 + GAMMA * 2.0 + GAMMA**2 * 20.0  # V(20), the true final observation
    terminated = 4.0  # nothing after a termination
    no_end = 1.0 + GAMMA * 1.0 + GAMMA**2 * 1.0 + GAMMA**3 * 10.0
    np.testing.assert_allclose(targets, [truncated, terminated, no_end], rtol=1e-6)


def test_critic_and_policy_losses_by_hand():
    batch = sequences()
    targets = jnp.asarray([3.0, 4.0, 7.0])  # V(s_0) = 1, 4, 7: errors 2, 0, 0
    loss, metrics = ff_az.critic_loss(1.0, batch, targets, critic_apply=critic_apply)
    np.testing.assert_allclose(loss, 0.5 * 4.0 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["mean_value"], 4.0, rtol=1e-6)

    # Targets (0.25, 0.75), (1, 0) and (0.5, 0.5) against pi = (0.5, 0.5).
    weights = jnp.asarray([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])
    batch = batch._replace(search_policy=jnp.broadcast_to(weights[:, None], (3, 3, 2)))
    loss, _ = ff_az.policy_loss(jnp.zeros(2), batch, actor_apply=actor_apply)
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
    # Minimised at pi = the mean target (0.583, 0.417); an illegal action (logit -inf, weight 0)
    # adds nothing instead of 0 * -inf = NaN.
    grad = jax.grad(lambda lg: ff_az.policy_loss(lg, batch, actor_apply=actor_apply)[0])
    np.testing.assert_allclose(grad(jnp.log(jnp.asarray([7.0, 5.0]) / 12.0)), 0.0, atol=1e-6)
    masked = batch._replace(search_policy=jnp.broadcast_to(jnp.asarray([1.0, 0.0]), (3, 3, 2)))
    loss, _ = ff_az.policy_loss(jnp.asarray([0.0, -jnp.inf]), masked, actor_apply=actor_apply)
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)


def scripted_training_env(max_steps):
    """The scripted environment (action 1 terminates, the time limit truncates) in the training
    stack, and its bare single environment: the search's model."""
    env = ScriptedEnv()
    bare = GymnaxToJumanji(env, env.default_params.replace(max_steps_in_episode=max_steps))
    return VmapWrapper(AutoReset(RecordEpisodeMetrics(bare))), bare


def uniform_actor(params, observation):
    return distrax.Categorical(logits=jnp.zeros((*observation.agent_view.shape[:-1], 2)))


def time_critic(params, observation):
    return observation.agent_view[..., 0]


def test_the_model_step_is_terminal_only_at_a_termination_and_never_auto_resets():
    train_env, bare = scripted_training_env(max_steps=3)
    assert ff_az.model_env(train_env) is bare
    env_state, _ = train_env.reset(jax.random.split(jax.random.PRNGKey(0), 2))
    for _ in range(2):
        env_state, _ = train_env.step(env_state, jnp.zeros(2, jnp.int32))  # both at time 2
    recurrent_fn = ff_az.make_recurrent_fn(bare, uniform_actor, time_critic, GAMMA)
    state = ff_az.model_state(env_state)
    params = ActorCriticParams(None, None)
    output, next_state = recurrent_fn(params, jax.random.PRNGKey(1), jnp.asarray([1, 0]), state)
    # env 0 terminates: discount 0; env 1 reaches the time limit: not a terminal in the model.
    np.testing.assert_allclose(output.discount, [0.0, GAMMA])
    np.testing.assert_allclose(output.reward, [3.0, 3.0])
    # The model does not auto-reset: the tree continues from the final state (time 3), where
    # the training env starts a new episode (time 0).
    np.testing.assert_array_equal(next_state.env_state.time, [3, 3])
    np.testing.assert_allclose(output.value, [3.0, 3.0])
    _, real_timestep = train_env.step(env_state, jnp.asarray([1, 0]))
    np.testing.assert_allclose(real_timestep.discount, [0.0, 1.0])
    np.testing.assert_array_equal(real_timestep.observation.agent_view[:, 0], [0.0, 0.0])


def search_step(method, num_simulations):
    """The learner's acting step on the scripted environment, with a tiny search."""
    cfg = compose_config(
        "default/anakin/default_ff_az",
        [f"system.search_method={method}", f"system.num_simulations={num_simulations}"],
    )
    train_env, bare = scripted_training_env(max_steps=5)
    recurrent_fn = ff_az.make_recurrent_fn(bare, uniform_actor, time_critic, float(cfg.system.gamma))
    search_fn = functools.partial(
        ff_az.search,
        actor_apply=uniform_actor,
        critic_apply=time_critic,
        recurrent_fn=recurrent_fn,
        cfg=ff_az.search_config(cfg.system, num_simulations, noise=True),
    )
    _, env_step = ff_az.get_learner_fn(
        train_env, search_fn, None, None, None, cfg, uniform_actor, time_critic
    )
    env_state, timestep = train_env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    params = ActorCriticParams(None, None)
    state = ff_az.LearnerState(params, None, None, jax.random.PRNGKey(2), env_state, timestep)
    return state, env_step, search_fn


@pytest.mark.parametrize("method", ["gumbel", "muzero"])
def test_the_policy_target_is_the_search_action_weights(method):
    state, env_step, search_fn = search_step(method, num_simulations=4)
    _, (transition, _) = jax.jit(env_step)(state, None)
    _, search_key = jax.random.split(state.key)
    output = search_fn(state.params, search_key, state.timestep.observation, state.env_state)
    np.testing.assert_allclose(transition.search_policy, output.action_weights, rtol=1e-6)
    np.testing.assert_array_equal(transition.action, output.action)
    np.testing.assert_allclose(jnp.sum(transition.search_policy, -1), 1.0, rtol=1e-6)
    if method == "muzero":  # the root's visit counts over 4 simulations
        counts = np.asarray(transition.search_policy) * 4
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-5)
    else:  # action 1 terminates (reward 1, then nothing), action 0 goes on: the improved
        # policy of a uniform prior prefers going on
        assert np.all(np.asarray(transition.search_policy)[:, 0] > 0.5)


@pytest.mark.slow  # 26 s
def test_evaluation_samples_from_the_search(tmp_path):
    """The search evaluates with its root noise here (arch.evaluation_greedy=false); the tiny
    run below evaluates with the greedy search and the two-device run with the raw policy."""
    from stoix.architectures.anakin import run_experiment

    cfg = compose_config(
        "default/anakin/default_ff_az",
        [
            *tiny_for("ff_az"),
            "arch.evaluation_greedy=false",
            "arch.absolute_metric=false",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    assert cfg.system.evaluate_with_search
    metric = run_experiment(cfg, ff_az.learner_setup)
    assert 1.0 <= metric <= 500.0


@pytest.mark.slow  # 78 s; the tiny run is also test_systems.py's
def test_a_tiny_run_and_a_two_device_run(tmp_path):
    proc = run_script(SCRIPT, tiny_for("ff_az"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT ff_az CartPole-v1" in proc.stdout
    overrides = [
        *tiny_for("ff_az"),
        "arch.update_batch_size=2",
        "system.search_method=muzero",
        "system.evaluate_with_search=false",
        "logger.use_console=true",
    ]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert "RESULT ff_az CartPole-v1" in proc.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "env=gymnax/pendulum",
            "error: ff_az needs discrete actions, but this environment's are continuous (a box); ",
        ),
        ("system.num_simulations=0", "error: system.num_simulations=0 must be an integer >= 1."),
        (
            "system.search_method=alphago",
            "error: system.search_method='alphago' must be one of gumbel, muzero.",
        ),
    ],
)
def test_bad_input_is_one_line_before_compiling(override, message, tmp_path):
    proc = run_script(SCRIPT, [*tiny_for("ff_az"), override], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert "compile_s" not in proc.stdout and "RESULT" not in proc.stdout


def test_the_model_sees_what_the_agent_sees_on_a_partially_observed_task():
    from omegaconf import OmegaConf

    from stoix.wrappers import make_env

    env, _ = make_env(OmegaConf.load("configs/env/gymnax/cartpole_stateless.yaml"))
    model = ff_az.model_env(env)
    state, _ = env.reset(jax.random.split(jax.random.PRNGKey(0), 2))
    _, timestep = jax.vmap(model.step)(ff_az.model_state(state), jnp.zeros(2, jnp.int32))
    assert timestep.observation.agent_view.shape == (2, 2)  # position and angle only
