"""Ctrl-C at any moment: exit code 130, one line on stderr, no native abort, and no checkpoint
that a resume would read half-written.

The fast suite interrupts an Anakin script in three phases (its imports, compilation,
training with checkpoints); `make test-slow` interrupts 20 runs at random moments."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY

SCRIPT = REPO_ROOT / "stoix/systems/ppo/anakin/ff_ppo.py"
LONG_RUN = [
    *TINY,
    "arch.total_timesteps=20000000",
    "arch.num_evaluation=2000",
    "logger.use_console=true",
    "logger.use_json=true",
    "logger.checkpointing.save_model=true",
    "logger.checkpointing.max_to_keep=2",
]


def _interrupt(tmp_path: Path, when) -> tuple[subprocess.CompletedProcess, Path]:
    """Start a long run, wait until `when(stdout_so_far, seconds)` holds, send SIGINT."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    ckpt = tmp_path / "ckpt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                *LONG_RUN,
                f"logger.base_exp_path={tmp_path}",
                f"logger.checkpointing.save_dir={ckpt}",
            ],
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        start = time.monotonic()
        try:
            while not when(out.read_text(), time.monotonic() - start):
                assert proc.poll() is None, err.read_text()[-2000:]
                assert time.monotonic() - start < 120, "the phase to interrupt never came"
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    return result, ckpt


def _assert_clean_exit(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 130, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1:] == ["interrupted: run stopped (Ctrl-C)"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "terminate called" not in result.stderr


def _assert_checkpoints_complete(ckpt: Path) -> None:
    """Every numbered checkpoint directory is whole (orbax renames it into place when done);
    an unfinished one may only remain under orbax's temporary name."""
    if not ckpt.exists():
        return
    for step_dir in ckpt.iterdir():
        if not step_dir.name.isdigit():
            assert "tmp" in step_dir.name, f"unexpected entry {step_dir}"
            continue
        meta = json.loads((step_dir / "meta" / "metadata").read_text())
        assert meta["rounds_done"] == int(step_dir.name), meta
        assert (step_dir / "learner_state").is_dir() and (step_dir / "best_params").is_dir()


def _json_is_whole(tmp_path: Path) -> list[Path]:
    """A run's metrics file (`.json.partial` until the run finishes) is whole JSON whenever it
    exists: it is written to a temporary file and renamed."""
    paths = [p for p in (tmp_path / "json").glob("*.json*") if not p.name.endswith(".tmp")]
    for path in paths:
        json.loads(path.read_text())
    return paths


PHASES = {
    "import": lambda out, s: s > 0.8,
    "compile": lambda out, s: "environment steps" in out,  # the sizes block, printed before compiling
    "training": lambda out, s: out.count("EVAL") >= 2,  # checkpoints are being written
}


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_ctrl_c_is_one_line_and_exit_130(phase, tmp_path):
    result, ckpt = _interrupt(tmp_path, PHASES[phase])
    _assert_clean_exit(result)
    _assert_checkpoints_complete(ckpt)
    written = _json_is_whole(tmp_path)
    if phase == "training":  # evaluations were logged: the unfinished run's file exists
        assert [p.name.endswith(".json.partial") for p in written] == [True], written


@pytest.mark.slow
def test_twenty_interrupts_at_random_moments(tmp_path):
    rng = random.Random(0)
    for i in range(20):
        delay = rng.uniform(0.2, 12.0)
        run_dir = tmp_path / f"run_{i}"
        run_dir.mkdir()
        result, ckpt = _interrupt(run_dir, lambda out, s, delay=delay: s > delay)
        _assert_clean_exit(result)
        _assert_checkpoints_complete(ckpt)
        _json_is_whole(run_dir)
