"""Launch a grid of Stoix experiments (system file x environment x seed) with submitit.

    python launcher.py slurm.partition=gpu slurm.time=02:00:00
    python launcher.py executor=local 'overrides=["arch.total_timesteps=20480"]'

The grid, the overrides shared by every run and the SLURM resources live in
configs/launcher/slurm.yaml (see docs/launcher.md). Each job runs one system script in a
subprocess, `python <system> env=<env> arch.seed=<seed> *overrides`, so a job behaves exactly
like the same command typed by hand, and returns the script's `RESULT ...` line.
"""

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import submitit
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from submitit.core.utils import (
    FailedJobError,
    FailedSubmissionError,
    UncompletedJobError,
)

from stoix.utils.config import CONFIG_DIR, REPO_ROOT, StoixConfigError, require

EXECUTORS = ("slurm", "local")
# Set per job from the grid; an entry in `overrides` would silently fight the grid value.
GRID_KEYS = ("env", "arch.seed")
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")
_FAILURE_PREFIX = "experiment exited with code"


@dataclass(frozen=True)
class GridPoint:
    """One job of the grid: the names as the user wrote them and the command that runs it."""

    system: str
    env: str
    seed: int
    command: tuple[str, ...]

    def label(self) -> str:
        return f"{self.system} {self.env} seed={self.seed}"


class RunExperiment:
    """A submitit job: run one system script as a subprocess and return its RESULT line.

    The command is an argument list, never a shell string, so env names and overrides reach
    Hydra exactly as written. Output is echoed line by line into the job's log so a running
    job shows its progress; a non-zero exit, or a run that prints no RESULT line, raises.
    """

    def __init__(self, command: Sequence[str], cwd: str) -> None:
        self.command = list(command)
        self.cwd = cwd

    def __call__(self) -> str:
        result_line = None
        tail: deque[str] = deque(maxlen=15)
        # stderr goes into the same stream so the failure message below can quote the
        # script's own one-line error (e.g. a StoixConfigError).
        with subprocess.Popen(
            self.command,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                tail.append(line.rstrip())
                if line.startswith("RESULT "):
                    result_line = line.strip()
            code = process.wait()
        if code != 0:
            # The last few lines carry the script's error; Hydra's "set HYDRA_FULL_ERROR" hint
            # after them would crowd out the useful part.
            lines = [x.strip() for x in tail if x.strip() and "HYDRA_FULL_ERROR" not in x]
            last = " | ".join(lines[-3:])
            raise RuntimeError(f"{_FAILURE_PREFIX} {code}: {last}")
        if result_line is None:
            raise RuntimeError("experiment finished without printing a RESULT line")
        return result_line


def plural(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def parse_time(value: Any) -> int:
    """SLURM's 'HH:MM:SS' or 'D-HH:MM:SS' -> whole minutes (rounded up, never below what was
    asked) for submitit's `timeout_min`."""
    # An int here usually means YAML read an unquoted 12:00:00 as base-60 seconds (43200);
    # guessing its unit would be wrong half the time, so ask for the string form instead.
    match = _TIME_RE.match(value) if isinstance(value, str) else None
    require(
        match is not None,
        f"slurm.time={value!r} must be a string 'HH:MM:SS' or 'D-HH:MM:SS' "
        '(quote it in YAML, e.g. time: "02:00:00").',
    )
    assert match is not None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    require(
        minutes < 60 and seconds < 60,
        f"slurm.time={value!r}: minutes and seconds must be below 60.",
    )
    total_minutes = math.ceil((((days * 24 + hours) * 60 + minutes) * 60 + seconds) / 60)
    require(total_minutes > 0, f"slurm.time={value!r} must be longer than zero.")
    return total_minutes


def slurm_parameters(slurm: Mapping[str, Any]) -> dict[str, Any]:
    """The `slurm:` config section -> keyword arguments for `AutoExecutor.update_parameters`.

    Shared names (timeout_min, nodes, ...) are submitit's generic ones; SLURM-only options
    carry the `slurm_` prefix. None means "not set": the key is left out, so sbatch falls back
    to the cluster's default instead of receiving an empty option.
    """
    params: dict[str, Any] = {
        "name": slurm.get("job_name"),
        "timeout_min": parse_time(slurm.get("time")),
        "nodes": slurm.get("nodes"),
        "tasks_per_node": 1 if (slurm.get("nodes") or 1) > 1 else None,  # one process per node
        "gpus_per_node": slurm.get("gpus_per_node"),
        "cpus_per_task": slurm.get("cpus_per_task"),
        "mem_gb": slurm.get("mem_gb"),
        "slurm_partition": slurm.get("partition"),
        "slurm_account": slurm.get("account"),
        "slurm_qos": slurm.get("qos"),
        "slurm_array_parallelism": slurm.get("array_parallelism"),
        "slurm_setup": list(slurm.get("setup") or []) or None,
        "slurm_additional_parameters": dict(slurm.get("additional_parameters") or {}) or None,
    }
    return {key: value for key, value in params.items() if value is not None}


def local_parameters(slurm: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for submitit's LocalExecutor from the same `slurm:` section.

    Only the time limit and the GPU count mean something locally: without `timeout_min`
    submitit kills local jobs after 2 minutes, and `gpus_per_node` sets CUDA_VISIBLE_DEVICES.
    """
    return {
        "timeout_min": parse_time(slurm.get("time")),
        "gpus_per_node": int(slurm.get("gpus_per_node") or 0),
    }


def resolve_system(system: str) -> Path:
    """A system path from the config (relative to the repo root) -> the absolute script path."""
    path = Path(system)
    path = path if path.is_absolute() else REPO_ROOT / path
    require(
        path.is_file(),
        f"experiments.systems: {system} does not exist (paths are relative to {REPO_ROOT}).",
    )
    return path


def check_env(env: str) -> None:
    require(
        (Path(CONFIG_DIR) / "env" / f"{env}.yaml").is_file(),
        f"experiments.envs: {env} has no config configs/env/{env}.yaml.",
    )


def check_overrides(overrides: Sequence[Any]) -> list[str]:
    """The shared overrides, as strings, none of which sets a key the grid sets per job."""
    checked = []
    for override in overrides:
        require(
            isinstance(override, str),
            f"overrides: {override!r} must be a string such as 'arch.total_timesteps=20480'.",
        )
        key = override.split("=", 1)[0].lstrip("+~")
        require(
            key not in GRID_KEYS,
            f"overrides: {override} sets {key}, which the grid sets per job; "
            "list values under experiments.envs / experiments.seeds instead.",
        )
        checked.append(override)
    return checked


def build_grid(cfg: DictConfig) -> list[GridPoint]:
    """Validate the whole grid, then expand it; nothing is submitted if any entry is wrong."""
    systems = list(cfg.experiments.systems or [])
    envs = list(cfg.experiments.envs or [])
    seeds = list(cfg.experiments.seeds or [])
    for key, values in (("systems", systems), ("envs", envs), ("seeds", seeds)):
        require(len(values) > 0, f"experiments.{key} is empty; list at least one value.")
    paths = {system: resolve_system(system) for system in systems}
    for env in envs:
        check_env(env)
    for seed in seeds:
        require(
            isinstance(seed, int) and not isinstance(seed, bool),
            f"experiments.seeds: {seed!r} must be an integer.",
        )
    overrides = check_overrides(list(cfg.overrides or []))
    nodes = int(cfg.slurm.get("nodes") or 1)
    if nodes > 1 and cfg.executor == "slurm":
        # Multi-node: every node runs the same command (one task each) and the processes join
        # one run through jax.distributed, which reads the coordinator from SLURM's variables.
        sebulba = [system for system in systems if "sebulba" in Path(system).parts]
        require(
            not sebulba,
            f"slurm.nodes={nodes}: multi-node runs are Anakin-only; {', '.join(sebulba)} is a "
            "Sebulba system (use slurm.nodes=1).",
        )
        overrides = [*overrides, "arch.multi_host=true"]
    return [
        GridPoint(
            system,
            env,
            seed,
            (sys.executable, str(paths[system]), f"env={env}", f"arch.seed={seed}", *overrides),
        )
        for system in systems
        for env in envs
        for seed in seeds
    ]


def slurm_available() -> bool:
    # submitit's SlurmExecutor needs both: sbatch submits, srun starts the job's task.
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def local_command_hint() -> str:
    """The command line that reruns this launch with executor=local, other overrides kept."""
    kept = [o for o in HydraConfig.get().overrides.task if not o.startswith("executor=")]
    return shlex.join(["python", sys.argv[0], *kept, "executor=local"])


def make_executor(kind: str, log_dir: str, slurm: Mapping[str, Any]) -> submitit.AutoExecutor:
    # `%j` gives every job its own folder (submission script, stdout, stderr, result pickle).
    executor = submitit.AutoExecutor(folder=str(Path(log_dir) / "%j"), cluster=kind)
    if kind == "slurm":
        executor.update_parameters(**slurm_parameters(slurm))
    else:
        executor.update_parameters(**local_parameters(slurm))
    return executor


def submit_slurm(executor: submitit.AutoExecutor, grid: Sequence[GridPoint], cwd: str) -> list[Any]:
    # One job array: a single sbatch call however large the grid, and the scheduler limits
    # how many run at once (slurm.array_parallelism).
    jobs = []
    with executor.batch():
        for point in grid:
            jobs.append(executor.submit(RunExperiment(point.command, cwd)))
    return jobs


def submit_local(
    executor: submitit.AutoExecutor,
    grid: Sequence[GridPoint],
    cwd: str,
    parallel: int,
    jobs: list[Any],
) -> None:
    """Start the grid's jobs, appending each to `jobs` as it starts (so an interrupted launch
    can still cancel the ones already running)."""
    # LocalExecutor starts every job at once; several JAX processes on one GPU each try to
    # preallocate most of its memory, so start a new job only when a slot is free.
    for point in grid:
        while sum(not job.done() for job in jobs) >= parallel:
            time.sleep(0.5)
        jobs.append(executor.submit(RunExperiment(point.command, cwd)))


def failure_reason(error: BaseException) -> str:
    """One line from a failed job's error: our own message when the script failed, else the
    first line of submitit's (which carries the whole remote traceback)."""
    text = str(error)
    for line in reversed(text.splitlines()):
        if _FAILURE_PREFIX in line or "without printing a RESULT line" in line:
            return line.split("RuntimeError: ", 1)[-1].strip()
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def wait_and_report(grid: Sequence[GridPoint], jobs: Sequence[Any]) -> int:
    """Wait for every job, print one line each, and return how many failed."""
    failed = 0
    for point, job in zip(grid, jobs):
        try:
            line = f"OK      {job.result()}"
        # FailedJobError: the script failed; UncompletedJobError: killed (timeout, preemption).
        except (FailedJobError, UncompletedJobError) as error:
            failed += 1
            line = f"FAILED  {failure_reason(error)} (log: {job.paths.stdout})"
        print(f"{point.label()}  {line}", flush=True)
    return failed


def launch(cfg: DictConfig) -> None:
    """Validate, submit and (for local runs, or with wait=true) collect the grid."""
    require(cfg.executor in EXECUTORS, f"executor={cfg.executor} must be one of {EXECUTORS}.")
    require(
        isinstance(cfg.local_parallel, int) and cfg.local_parallel > 0,
        f"local_parallel={cfg.local_parallel} must be a positive integer.",
    )
    grid = build_grid(cfg)
    slurm = OmegaConf.to_container(cfg.slurm, resolve=True)
    assert isinstance(slurm, dict)
    slurm_parameters(slurm)  # fail on a bad slurm section (e.g. its time) before anything runs

    if cfg.executor == "slurm" and not slurm_available():
        print(
            f"SLURM was not found (no `sbatch` or `srun` on PATH); nothing was submitted.\n"
            f"To run the same {plural(len(grid))} on this machine:\n  {local_command_hint()}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)

    executor = make_executor(cfg.executor, cfg.log_dir, slurm)
    cwd = os.getcwd()  # jobs write results/ where the launcher was started, as by hand
    jobs: list[Any] = []
    if cfg.executor == "slurm":
        try:
            jobs = submit_slurm(executor, grid, cwd)
        except (FailedJobError, FailedSubmissionError) as error:
            print(f"error: sbatch refused the jobs: {str(error).strip()}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"Submitted {plural(len(jobs))} to SLURM; logs in {cfg.log_dir}", flush=True)
        for point, job in zip(grid, jobs):
            print(f"{point.label()}  job {job.job_id}", flush=True)
        if not cfg.wait:
            return

    try:
        if cfg.executor == "local":
            print(f"Running {plural(len(grid))} locally; logs in {cfg.log_dir}", flush=True)
            submit_local(executor, grid, cwd, int(cfg.local_parallel), jobs)
        failed = wait_and_report(grid, jobs)
    except KeyboardInterrupt:
        if cfg.executor == "local":  # local jobs would otherwise outlive the launcher
            for job in jobs:
                job.cancel(check=False)
        raise SystemExit(130) from None
    if failed:
        print(f"{failed} of {plural(len(jobs))} failed.", file=sys.stderr, flush=True)
        raise SystemExit(1)


@hydra.main(config_path=CONFIG_DIR, config_name="launcher/slurm", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        launch(cfg)
    except StoixConfigError as error:
        # A config mistake is one line, like the training scripts' own errors, not a traceback.
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
