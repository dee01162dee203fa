"""IMPALA: V-trace targets against a loop version (lagged behaviour policy, truncation), a
tiny asynchronous run, and learning."""

import numpy as np
import pytest
import rlax
from conftest import run_script

from stoix.systems.impala.sebulba.ff_impala import vtrace_targets
from stoix.utils.config import compose_config

pytestmark = pytest.mark.timeout(300)


def loop_vtrace(v_tm1, v_t, r, d, rho, lam, clip_rho=1.0, clip_pg_rho=1.0):
    """Espeholt et al.'s definitions, one step at a time, with v_t the true next value."""
    T = len(r)
    vs = np.zeros(T)
    for t in reversed(range(T)):
        delta = min(clip_rho, rho[t]) * (r[t] + d[t] * v_t[t] - v_tm1[t])
        later = (vs[t + 1] - v_tm1[t + 1]) if t + 1 < T else 0.0
        vs[t] = v_tm1[t] + delta + d[t] * lam[t] * min(1.0, rho[t]) * later
    adv = np.zeros(T)
    for t in range(T):
        nxt = vs[t + 1] if t + 1 < T else v_t[t]
        boot = lam[t] * nxt + (1 - lam[t]) * v_t[t]
        adv[t] = min(clip_pg_rho, rho[t]) * (r[t] + d[t] * boot - v_tm1[t])
    return vs, adv


@pytest.mark.parametrize("seed", [0, 1])
def test_vtrace_corrects_a_lagged_behaviour_policy(seed):
    rng = np.random.default_rng(seed)
    T = 12
    v_tm1 = rng.normal(size=T).astype(np.float32)
    v_t = np.concatenate([v_tm1[1:], rng.normal(size=1)]).astype(np.float32)
    r = rng.normal(size=T).astype(np.float32)
    d = np.full(T, 0.9, np.float32)
    # A lagged actor: importance ratios well away from 1, some above the clip.
    rho = np.exp(rng.normal(scale=0.7, size=T)).astype(np.float32)
    lam = np.ones(T, np.float32)
    targets, adv = vtrace_targets(v_tm1, v_t, r, d, rho, lam, clip_rho=1.0, clip_pg_rho=1.0)
    expected_vs, expected_adv = loop_vtrace(v_tm1, v_t, r, d, rho, lam)
    np.testing.assert_allclose(targets, expected_vs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(adv, expected_adv, rtol=1e-4, atol=1e-5)
    # Without episode ends the policy-gradient advantage is rlax's.
    reference = rlax.vtrace_td_error_and_advantage(v_tm1, v_t, r, d, rho, 1.0, 1.0, 1.0)
    np.testing.assert_allclose(adv, reference.pg_advantage, rtol=1e-4, atol=1e-5)


def test_vtrace_bootstraps_a_truncated_episode_from_its_final_observation():
    # Step 1 is truncated: its next value is the final observation's (10), not the next
    # episode's first state (v_tm1[2] = 7), and no trace crosses into step 2.
    v_tm1 = np.array([2.0, 4.0, 7.0], np.float32)
    v_t = np.array([4.0, 10.0, 6.0], np.float32)
    r = np.ones(3, np.float32)
    d = np.full(3, 0.5, np.float32)
    rho = np.ones(3, np.float32)
    lam = np.array([1.0, 0.0, 1.0], np.float32)
    targets, adv = vtrace_targets(v_tm1, v_t, r, d, rho, lam, clip_rho=1.0, clip_pg_rho=1.0)
    assert float(targets[1]) == pytest.approx(1.0 + 0.5 * 10.0)
    assert float(adv[1]) == pytest.approx(1.0 + 0.5 * 10.0 - 4.0)
    expected_vs, expected_adv = loop_vtrace(v_tm1, v_t, r, d, rho, lam)
    np.testing.assert_allclose(targets, expected_vs, rtol=1e-6)
    np.testing.assert_allclose(adv, expected_adv, rtol=1e-6)


TINY = [
    "arch.total_num_envs=4",
    "arch.total_timesteps=1024",
    "arch.num_evaluation=2",
    "arch.num_eval_episodes=4",
    "arch.eval_step_cap=50",
    "system.rollout_length=16",
    "logger.use_console=false",
    "logger.use_json=false",
]


def test_tiny_asynchronous_run(tmp_path):
    from stoix.architectures.sebulba import run_experiment
    from stoix.systems.impala.sebulba import ff_impala

    cfg = compose_config("default/sebulba/default_ff_impala", [*TINY, f"logger.base_exp_path={tmp_path}"])
    assert cfg.arch.synchronous is False
    metric = run_experiment(cfg, ff_impala.learner_setup)
    assert 0.0 < metric <= 50.0


def test_roles_split_over_three_devices(tmp_path):
    overrides = [
        *TINY,
        "arch.actor.device_ids=[0]",
        "arch.actor.actor_per_device=2",
        "arch.learner.device_ids=[1]",
        "arch.evaluator_device_id=2",
        "logger.use_console=true",
    ]
    proc = run_script("stoix/systems/impala/sebulba/ff_impala.py", overrides, cwd=tmp_path, devices=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT ff_impala CartPole-v1" in proc.stdout and "mean_rho" in proc.stdout


@pytest.mark.learning
def test_impala_learns_envpool_cartpole(tmp_path):
    # python stoix/systems/impala/sebulba/ff_impala.py  (env=envpool/cartpole by default;
    # 3e5 requested, 296,960 run)
    from stoix.architectures.sebulba import run_experiment
    from stoix.systems.impala.sebulba import ff_impala

    cfg = compose_config("default/sebulba/default_ff_impala", [f"logger.base_exp_path={tmp_path}"])
    assert cfg.env.env_name == "envpool" and cfg.env.scenario.name == "CartPole-v1"
    assert int(cfg.arch.total_timesteps) <= 300_000
    assert run_experiment(cfg, ff_impala.learner_setup) >= 195.0
