"""The scripts as a user runs them: any directory, overrides, multirun, several devices, errors."""

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, TINY, anakin_script, device_env, run_script, tiny_for

PPO = "stoix/systems/ppo/anakin/ff_ppo.py"


def test_runs_from_another_directory_with_the_readme_overrides(tmp_path):
    overrides = [
        *TINY,
        "env=gymnax/acrobot",
        "system.rollout_length=32",
        "arch.total_num_envs=64",
        "arch.total_timesteps=8192",
        "logger.use_console=true",
    ]
    proc = run_script(PPO, overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT ff_ppo Acrobot-v1" in proc.stdout
    assert "ACT" in proc.stdout and "EVAL" in proc.stdout and "eta" in proc.stdout
    assert (tmp_path / "results").is_dir(), "outputs go under the working directory's results/"
    assert not (REPO_ROOT / "outputs").exists()


def test_multirun_runs_every_combination(tmp_path):
    proc = run_script(PPO, ["-m", *TINY, "arch.seed=1,2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "seed=1:" in proc.stdout and "seed=2:" in proc.stdout


def test_bad_value_is_one_line_without_traceback(tmp_path):
    proc = run_script(PPO, [*TINY, "system.num_minibatches=3"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: system.num_minibatches=3")


def test_mistyped_key_is_one_line_naming_the_nearest_key(tmp_path):
    proc = run_script(PPO, [*TINY, "arch.totl_num_envs=8"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "error: arch.totl_num_envs=8: arch.totl_num_envs is not a key of this config; "
        "did you mean arch.total_num_envs?"
    ]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("system.learning_rat=1e-3", "did you mean system.learning_rate or system.decay_learning_rates?"),
        ("sytem.gamma=0.9", "did you mean system.gamma?"),
        ("env=gymnax/cartpol", "there is no env option 'gymnax/cartpol'; did you mean env=gymnax/cartpole?"),
        ("network=mlp_contnuous", "did you mean network=mlp_continuous?"),
    ],
)
def test_override_error_messages(override, expected, capsys):
    from stoix.utils.config import check_overrides

    with pytest.raises(SystemExit):
        check_overrides("default/anakin/default_ff_ppo", [*TINY, override])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {override}: ") and expected in lines[0], lines
    if override.startswith("env="):
        assert "the options: " in lines[0] and "gymnax/acrobot" in lines[0]


def test_valid_overrides_and_hydra_flags_pass_the_check():
    from stoix.utils.config import check_overrides

    check_overrides("default/anakin/default_ff_ppo", [*TINY, "env=gymnax/acrobot", "system.gamma=0.9"])
    check_overrides(
        "default/anakin/default_ff_ppo", ["-m", "arch.seed=1,2", "system.learning_rat=1"]
    )  # Hydra's


# One per learner template (ff_dpo and ff_reinforce only change ff_ppo's actor loss), plus
# PPO-penalty, whose loss state is averaged across replicas.
@pytest.mark.parametrize(
    "system",
    [
        # ff_ppo's and ff_dqn's two-device updates: tests/test_gradient_averaging.py (stronger).
        pytest.param("ff_ppo", marks=pytest.mark.slow),
        pytest.param("ff_dqn", marks=pytest.mark.slow),
        pytest.param("ff_rainbow", marks=pytest.mark.slow),
        "ff_ppo_penalty",
    ],
)
def test_two_devices_with_update_batches(system, tmp_path):
    script = anakin_script(system)
    overrides = [*tiny_for(system), "arch.update_batch_size=2", "logger.use_console=true"]
    proc = run_script(str(script.relative_to(REPO_ROOT)), overrides, cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 2" in proc.stdout  # devices x update batch
    assert f"RESULT {system} CartPole-v1" in proc.stdout


def test_replicas_stay_identical_across_four_devices(tmp_path):
    """Gradients are averaged over devices and update batches, so every replica must hold
    the same parameters after learning, while environments differ."""
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from stoix.utils.config import compose_config
        from stoix.utils.sizes import anakin_sizes
        from stoix.wrappers import make_env
        from stoix.systems.ppo.anakin import ff_ppo
        assert jax.device_count() == 4
        cfg = compose_config("default/anakin/default_ff_ppo", {TINY!r} + ["arch.total_num_envs=8", "arch.update_batch_size=2"])
        sizes = anakin_sizes(cfg.arch, 16, 4)
        env, _ = make_env(cfg.env)
        setup = ff_ppo.learner_setup(env, cfg, sizes, jax.random.PRNGKey(0))
        out = setup.learn(setup.learner_state)
        params = jax.device_get(out.learner_state.params)
        for leaf in jax.tree.leaves(params):
            assert leaf.shape[:2] == (4, 2)
            np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[:1, :1], leaf.shape))
        obs = jax.device_get(out.learner_state.timestep.observation.agent_view)
        assert not np.allclose(obs[0, 0], obs[1, 0]), "environments must differ across replicas"
        print("OK")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=device_env(4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.slow  # 38 s; multirun stays in the fast suite
def test_optuna_sweep_runs_trials(tmp_path):
    proc = run_script(
        PPO,
        [
            "-m",
            *TINY,
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.direction=maximize",
            "system.learning_rate=interval(1e-4,1e-3)",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RESULT ff_ppo") == 2
    assert "Best value" in proc.stdout + proc.stderr
