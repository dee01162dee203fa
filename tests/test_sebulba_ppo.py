"""Sebulba PPO: tiny runs on one device and on split devices, failure handling, learning."""

import time

import pytest
from conftest import run_script

from stoix.architectures.sebulba import run_experiment
from stoix.architectures.sebulba_threads import ThreadFailed
from stoix.utils.config import StoixConfigError, compose_config

pytestmark = pytest.mark.timeout(300)

TINY = [
    "arch.total_num_envs=4",
    "arch.total_timesteps=512",
    "arch.num_evaluation=2",
    "arch.num_eval_episodes=4",
    "arch.eval_step_cap=50",
    "system.rollout_length=16",
    "system.num_minibatches=2",
    "system.epochs=1",
    "logger.use_console=false",
    "logger.use_json=false",
]
SCRIPT = "stoix/systems/ppo/sebulba/ff_ppo.py"


def run_ppo(cfg):
    from stoix.systems.ppo.sebulba import ff_ppo

    return run_experiment(cfg, ff_ppo.learner_setup)


def config(tmp_path, *overrides):
    return compose_config(
        "default/sebulba/default_ff_ppo", [*TINY, f"logger.base_exp_path={tmp_path}", *overrides]
    )


def test_tiny_run_on_one_device_with_two_actor_threads(tmp_path):

    metric = run_ppo(config(tmp_path, "arch.actor.actor_per_device=2"))
    assert 0.0 < metric <= 50.0  # returns are capped by eval_step_cap=50


def test_tiny_run_on_envpool_cartpole(tmp_path):

    metric = run_ppo(config(tmp_path, "env=envpool/cartpole"))
    assert 0.0 < metric <= 50.0


@pytest.mark.slow  # ~60 s of ResNet compile; the ResNet itself is in test_networks.py
def test_seed_command_trains_pong_with_the_visual_resnet(tmp_path):
    # The seed README's command, shrunk to two updates of 2 envs x 8 steps.
    seed_command = ["arch=sebulba", "env=envpool/pong", "network=visual_resnet"]
    shrink = [
        "arch.total_timesteps=32",
        "arch.total_num_envs=2",
        "system.rollout_length=8",
        "arch.num_evaluation=2",
        "arch.num_eval_episodes=2",
        "arch.eval_step_cap=20",
        "arch.absolute_metric=false",
        "logger.use_json=false",
    ]
    proc = run_script(SCRIPT, [*seed_command, *shrink], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("TRAIN    step") == 2, proc.stdout
    assert "RESULT ff_ppo Pong-v5" in proc.stdout


def test_roles_split_over_three_devices(tmp_path):
    overrides = [
        *TINY,
        "arch.actor.device_ids=[0]",
        "arch.learner.device_ids=[1]",
        "arch.evaluator_device_id=2",
        "logger.use_console=true",
    ]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path, devices=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT ff_ppo CartPole-v1" in proc.stdout and "EVAL" in proc.stdout
    # Progress before the first update's numbers: a slow first compile never looks hung.
    waiting = proc.stdout.index("waiting for their first rollouts")
    compiling = proc.stdout.index("compiling and running the learner step (update 1 of")
    took = proc.stdout.index("update 1 took")
    assert waiting < compiling < took < proc.stdout.index("TRAIN")


def test_two_learner_devices_split_the_batch(tmp_path):
    proc = run_script(SCRIPT, [*TINY, "arch.learner.device_ids=[0,1]"], cwd=tmp_path, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "learner devices           2" in proc.stdout


def test_an_actor_exception_ends_the_run_with_that_error_within_seconds(tmp_path, monkeypatch):
    from stoix.wrappers.gymnasium import GymnasiumVecEnv

    calls = {"n": 0}
    real_step = GymnasiumVecEnv.step

    def exploding_step(self, actions):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("simulator crashed")
        return real_step(self, actions)

    monkeypatch.setattr(GymnasiumVecEnv, "step", exploding_step)
    start = time.perf_counter()
    with pytest.raises(ThreadFailed, match="simulator crashed"):
        run_ppo(config(tmp_path, "arch.total_timesteps=100000"))
    assert time.perf_counter() - start < 60


def _sebulba_threads():
    import threading

    return {t for t in threading.enumerate() if t.name.startswith(("actor", "evaluator"))}


def test_a_learner_exception_stops_every_thread_and_keeps_the_checkpoints(tmp_path, monkeypatch):
    """The learner (main thread) fails after the first evaluation's checkpoint: the error
    reaches the caller within seconds, no actor or evaluator thread is left, and the
    checkpoint written before the failure restores."""
    import stoix.architectures.sebulba as sebulba
    from stoix.utils.checkpointing import restore

    calls = {"n": 0}
    real_check = sebulba.first_non_finite

    def failing_learner_step(*args):
        calls["n"] += 1
        if calls["n"] == 12:  # update 12 of 16; the checkpoint of update 8 is written
            raise RuntimeError("learner step failed")
        return real_check(*args)

    monkeypatch.setattr(sebulba, "first_non_finite", failing_learner_step)
    ckpt = tmp_path / "ckpt"
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="learner step failed"):
        run_ppo(
            config(
                tmp_path,
                "arch.total_timesteps=1024",
                "logger.checkpointing.save_model=true",
                f"logger.checkpointing.save_dir={ckpt}",
            )
        )
    assert time.perf_counter() - start < 60
    assert not _sebulba_threads(), _sebulba_threads()
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["1"]
    assert restore(str(ckpt), 1, None, None).meta["updates_done"] == 8


def test_an_evaluator_exception_ends_the_run_with_that_error_within_seconds(tmp_path, monkeypatch):
    import stoix.architectures.sebulba as sebulba

    def failing_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation environment crashed")

    monkeypatch.setattr(sebulba, "evaluate_episodes", failing_evaluation)
    start = time.perf_counter()
    with pytest.raises(ThreadFailed, match="evaluation environment crashed"):
        run_ppo(config(tmp_path, "arch.total_timesteps=2048", "arch.num_evaluation=4"))
    assert time.perf_counter() - start < 60
    assert not _sebulba_threads(), _sebulba_threads()


def test_ctrl_c_stops_every_thread_and_exits_with_one_line(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from stoix.utils.config import REPO_ROOT

    long_run = [
        *TINY,
        "arch.total_timesteps=100000000",
        "arch.num_evaluation=100000",
        "logger.use_console=true",
    ]
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / SCRIPT), *long_run],
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 120
            while "ACT" not in out.read_text():  # training is under way
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130
    assert "interrupted: run stopped" in err.read_text()
    assert "Traceback" not in err.read_text()


@pytest.mark.slow  # 27 s; a resumed Sebulba run: tests/test_plot.py (and test_guards.py)
def test_checkpoints_resume_parameters_and_best_parameters(tmp_path, capsys):

    ckpt = tmp_path / "ckpt"
    run = [
        "arch.total_timesteps=1024",
        "logger.use_console=true",
        "logger.checkpointing.max_to_keep=5",
    ]
    full = run_ppo(
        config(
            tmp_path, *run, "logger.checkpointing.save_model=true", f"logger.checkpointing.save_dir={ckpt}"
        )
    )
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["1", "2"]
    load = ["logger.checkpointing.load_model=true", f"logger.checkpointing.load_path={ckpt}"]
    # From the last checkpoint nothing is left to train, and the absolute metric re-evaluates
    # the restored best parameters with the same seed: the same number.
    capsys.readouterr()
    assert run_ppo(config(tmp_path, *run, *load)) == full
    assert "nothing left to train" in capsys.readouterr().out
    # From the first, only the second half runs.
    run_ppo(config(tmp_path, *run, *load, "logger.checkpointing.load_step=1"))
    out = capsys.readouterr().out
    assert "Resumed from" in out and "after update 8." in out
    assert out.count("EVAL     step") == 1 and "EVAL     step      1,024" in out
    # The restored state is what the learner trains on: with a learning rate of ~0 the
    # parameters saved after the resumed half equal the loaded ones, while the optimiser's
    # step count goes on from the checkpoint's.
    frozen = tmp_path / "frozen"
    run_ppo(
        config(
            tmp_path,
            *run,
            *load,
            "logger.checkpointing.load_step=1",
            "system.learning_rate=1e-30",  # > 0 (validated), and too small to move a float32
            "logger.checkpointing.save_model=true",
            f"logger.checkpointing.save_dir={frozen}",
        )
    )
    import jax
    import numpy as np

    from stoix.utils.checkpointing import restore

    def read(path, step):
        raw = restore(str(path), step, None, None)
        return raw.learner_state, raw.meta

    first, first_meta = read(ckpt, 1)
    after, after_meta = read(frozen, 2)
    for a, b in zip(jax.tree.leaves(first["params"]), jax.tree.leaves(after["params"])):
        np.testing.assert_array_equal(a, b)
    counts = lambda state: sorted({int(x) for x in jax.tree.leaves(state["opt_state"]) if np.ndim(x) == 0})
    assert counts(first) == [16] and counts(after) == [32]  # 8 updates x 1 epoch x 2 minibatches
    assert first_meta["updates_done"] == 8 and after_meta["updates_done"] == 16
    # A checkpoint from a run with other sizes is refused with the keys to fix.
    with pytest.raises(StoixConfigError, match="resume with the system.rollout_length"):
        run_ppo(config(tmp_path, *run, *load, "system.rollout_length=8"))
    with pytest.raises(StoixConfigError, match="no such directory"):
        run_ppo(config(tmp_path, *load[:1], f"logger.checkpointing.load_path={tmp_path / 'nowhere'}"))


def test_an_evaluation_finishing_at_once_still_gets_its_checkpoint(tmp_path, monkeypatch):
    from stoix.architectures.sebulba_threads import AsyncEvaluator

    submit = AsyncEvaluator.submit

    def submit_then_pause(self, params, step):  # the learner is descheduled after submitting
        submit(self, params, step)
        time.sleep(0.5)

    monkeypatch.setattr(AsyncEvaluator, "submit", submit_then_pause)
    ckpt = tmp_path / "ckpt"
    run_ppo(
        config(
            tmp_path,
            "arch.total_timesteps=1024",
            "arch.absolute_metric=false",
            "logger.checkpointing.save_model=true",
            f"logger.checkpointing.save_dir={ckpt}",
        )
    )
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["1", "2"]


def test_actor_threads_and_evaluations_get_disjoint_environment_seeds():
    from stoix.architectures.sebulba import env_seed
    from stoix.wrappers.envpool import make_envpool_envs

    cfg = compose_config("default/sebulba/default_ff_ppo", ["arch.seed=42"])
    seeds = [env_seed(cfg, stream) for stream in (0, 1, 1_000_000)]
    first_obs = [make_envpool_envs("CartPole-v1", 8, seed=s).reset()[0] for s in seeds]
    rows = {tuple(row) for obs in first_obs for row in obs.round(6)}
    assert len(rows) == 3 * 8  # pools seeded seed*1000 + i used to share 7 of 8 environments


def test_missing_device_is_a_clear_error(tmp_path):

    with pytest.raises(
        StoixConfigError, match=r"arch.learner.device_ids has 3, which does not exist; devices present: \[0\]"
    ):
        run_ppo(config(tmp_path, "arch.learner.device_ids=[3]"))


def test_image_env_with_an_mlp_is_a_clear_error(tmp_path):

    with pytest.raises(StoixConfigError, match="env=envpool/pong gives images shaped"):
        run_ppo(config(tmp_path, "env=envpool/pong"))


def test_anakin_env_is_rejected_with_a_hint(tmp_path):

    with pytest.raises(StoixConfigError, match="use env=gymnasium/"):
        run_ppo(config(tmp_path, "env=gymnax/cartpole"))


@pytest.mark.learning
def test_sebulba_ppo_learns_gymnasium_cartpole(tmp_path):
    # python stoix/systems/ppo/sebulba/ff_ppo.py  (3e5 requested, 286,720 run)

    cfg = compose_config("default/sebulba/default_ff_ppo", [f"logger.base_exp_path={tmp_path}"])
    assert int(cfg.arch.total_timesteps) <= 300_000
    assert run_ppo(cfg) >= 400.0


def test_any_integer_seed_gives_environment_seeds(tmp_path):
    # arch.seed=-1 was a 54-line thread traceback (SeedSequence wants a non-negative integer).
    from stoix.architectures.sebulba import env_seed

    seeds = {
        seed: env_seed(compose_config("default/sebulba/default_ff_ppo", [f"arch.seed={seed}"]), 0)
        for seed in (-1, 1, -(2**40), 2**40)
    }
    assert len(set(seeds.values())) == 4 and all(0 <= s < 2**30 for s in seeds.values())
    assert 0.0 < run_ppo(config(tmp_path, "arch.seed=-1")) <= 50.0
