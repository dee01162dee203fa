"""The grid launcher (launcher.py): a local grid end to end, the no-SLURM fallback, validation
before submission, and the config -> submitit/sbatch parameter mapping.

The launcher runs in a subprocess from a temporary directory, as a user would run it, so each
run gets a fresh Hydra and its files land under tmp_path.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stoix.utils.config import REPO_ROOT, StoixConfigError

LAUNCHER = REPO_ROOT / "launcher.py"
SYSTEM = "stoix/systems/ppo/anakin/ff_ppo.py"
# Enough to compile, train one round and evaluate: a few seconds per run after compilation.
TINY = (
    '["arch.total_timesteps=4096","arch.num_evaluation=1","arch.num_eval_episodes=4",'
    '"system.rollout_length=16","logger.use_json=false"]'
)


def load_launcher() -> ModuleType:
    # launcher.py is a script at the repo root, not part of the `stoix` package.
    spec = importlib.util.spec_from_file_location("launcher", LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_launcher(
    tmp_path: Path, *overrides: str, path: str | None = None, timeout: int = 60
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, str(LAUNCHER), f"log_dir={tmp_path / 'logs'}", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,  # the tests assert on the exit code themselves
    )


def path_without_slurm() -> str:
    """PATH minus any directory holding sbatch or srun, so the test means the same on a
    cluster login node."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    keep = [d for d in dirs if not any((Path(d) / x).exists() for x in ("sbatch", "srun"))]
    return os.pathsep.join(keep)


def submitted_job_dirs(tmp_path: Path) -> list[Path]:
    # Hydra's own files (.hydra/, launcher.log) sit in log_dir too; job folders are the rest.
    logs = tmp_path / "logs"
    return [p for p in logs.iterdir() if p.is_dir() and p.name != ".hydra"] if logs.exists() else []


@pytest.mark.slow  # 33 s
def test_local_grid_runs_every_env(tmp_path: Path) -> None:
    proc = run_launcher(
        tmp_path,
        "executor=local",
        "local_parallel=2",
        f"experiments.systems=[{SYSTEM}]",
        "experiments.envs=[gymnax/cartpole,gymnax/acrobot]",
        "experiments.seeds=[0]",
        f"overrides={TINY}",
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {
        env: [line for line in proc.stdout.splitlines() if line.startswith(f"{SYSTEM} {env} ")]
        for env in ("gymnax/cartpole", "gymnax/acrobot")
    }
    for env, scenario in (("gymnax/cartpole", "CartPole-v1"), ("gymnax/acrobot", "Acrobot-v1")):
        assert len(lines[env]) == 1, proc.stdout
        assert f"seed=0  OK      RESULT ff_ppo {scenario} seed=0: episode_return=" in lines[env][0]
    # The runs wrote their results where the launcher was started, not in the repo.
    assert (tmp_path / "results").is_dir()


def test_failed_job_is_reported_and_exit_is_nonzero(tmp_path: Path) -> None:
    proc = run_launcher(
        tmp_path,
        "executor=local",
        "experiments.seeds=[0]",
        'overrides=["arch.num_evaluation=0"]',
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED  experiment exited with code 2" in proc.stdout
    assert "arch.num_evaluation=0" in proc.stdout  # the script's own error, quoted
    assert "1 of 1 job failed." in proc.stderr


def test_without_slurm_points_to_local(tmp_path: Path) -> None:
    proc = run_launcher(tmp_path, "executor=slurm", "slurm.partition=gpu", path=path_without_slurm())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "SLURM was not found" in proc.stderr
    assert "slurm.partition=gpu executor=local" in proc.stderr  # the user's overrides kept
    assert "Traceback" not in proc.stderr
    assert submitted_job_dirs(tmp_path) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("experiments.systems=[stoix/systems/nope.py]", "experiments.systems: stoix/systems/nope.py"),
        ("experiments.envs=[gymnax/nope]", "experiments.envs: gymnax/nope"),
        ('overrides=["env=gymnax/acrobot"]', "overrides: env=gymnax/acrobot"),
    ],
)
def test_bad_grid_errors_before_submission(tmp_path: Path, override: str, message: str) -> None:
    # executor=local would start jobs at once, so an empty log_dir proves validation came first.
    proc = run_launcher(tmp_path, "executor=local", override)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error_lines = proc.stderr.strip().splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith(f"error: {message}"), proc.stderr
    assert submitted_job_dirs(tmp_path) == []


def test_slurm_submission_script(tmp_path: Path) -> None:
    """Against stand-in sbatch/srun, the generated sbatch script carries the configured
    resources and the whole grid goes in as one job array."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\ncp "$1" "$(dirname "$0")/submitted.sh"\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    proc = run_launcher(
        tmp_path,
        "slurm.partition=gpu",
        "slurm.account=rl",
        "slurm.qos=high",
        "slurm.time=00:30:00",
        "slurm.mem_gb=16",
        path=f"{bin_dir}{os.pathsep}{path_without_slurm()}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Submitted 3 jobs to SLURM" in proc.stdout
    assert f"{SYSTEM} gymnax/cartpole seed=2  job 4242_2" in proc.stdout
    script = (bin_dir / "submitted.sh").read_text()
    for line in (
        "--partition=gpu",
        "--account=rl",
        "--qos=high",
        "--time=30",
        "--mem=16GB",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--array=0-2",
    ):
        assert f"#SBATCH {line}" in script, script


def test_slurm_parameter_mapping() -> None:
    launcher = load_launcher()
    slurm = {
        "job_name": "stoix",
        "account": "rl",
        "qos": None,
        "partition": "gpu",
        "nodes": 1,
        "gpus_per_node": 2,
        "cpus_per_task": 8,
        "mem_gb": None,
        "time": "01:30:00",
        "array_parallelism": None,
        "setup": [],
        "additional_parameters": {"constraint": "a100"},
    }
    assert launcher.slurm_parameters(slurm) == {
        "name": "stoix",
        "timeout_min": 90,
        "nodes": 1,
        "gpus_per_node": 2,
        "cpus_per_task": 8,
        "slurm_partition": "gpu",
        "slurm_account": "rl",
        "slurm_additional_parameters": {"constraint": "a100"},
    }  # None and empty values are left out, so sbatch uses the cluster's defaults
    assert launcher.local_parameters(slurm) == {"timeout_min": 90, "gpus_per_node": 2}
    assert launcher.local_parameters({**slurm, "gpus_per_node": None})["gpus_per_node"] == 0


@pytest.mark.parametrize(
    "value, minutes",
    [("00:30:00", 30), ("12:00:00", 720), ("00:00:01", 1), ("00:10:30", 11), ("2-01:00:00", 2940)],
)
def test_parse_time(value: str, minutes: int) -> None:
    assert load_launcher().parse_time(value) == minutes


@pytest.mark.parametrize("value", [43200, "30", "12:00", "00:61:00", "00:00:00", None])
def test_parse_time_rejects(value: object) -> None:
    with pytest.raises(StoixConfigError, match="slurm.time"):
        load_launcher().parse_time(value)


def test_multi_node_grid_joins_one_anakin_run_per_job() -> None:
    """slurm.nodes > 1: one task per node, each running the same command with
    arch.multi_host=true (the processes find each other through SLURM's variables); a Sebulba
    system is refused before anything is submitted."""
    from omegaconf import OmegaConf

    launcher = load_launcher()
    cfg = OmegaConf.create(
        {
            "experiments": {"systems": [SYSTEM], "envs": ["gymnax/cartpole"], "seeds": [0]},
            "overrides": [],
            "executor": "slurm",
            "slurm": {"nodes": 2, "time": "00:10:00"},
        }
    )
    (point,) = launcher.build_grid(cfg)
    assert point.command[-1] == "arch.multi_host=true"
    assert launcher.slurm_parameters({"nodes": 2, "time": "00:10:00"})["tasks_per_node"] == 1
    assert "tasks_per_node" not in launcher.slurm_parameters({"nodes": 1, "time": "00:10:00"})
    cfg.experiments.systems = ["stoix/systems/ppo/sebulba/ff_ppo.py"]
    with pytest.raises(StoixConfigError, match="multi-node runs are Anakin-only"):
        launcher.build_grid(cfg)
