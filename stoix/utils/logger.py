"""Logging to the console, JSON (marl-eval format), TensorBoard, Weights & Biases and Neptune.

Each backend is switched on in `configs/logger/`. Metrics arrive tagged with an event:
ACT (episodes finished while training), TRAIN (losses), EVAL (evaluation episodes),
ABSOLUTE (the best parameters re-evaluated at the end) and MISC (timing and progress).
Optional backends are imported only when switched on.
"""

import itertools
import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stoix.utils.config import StoixConfigError, require


class LogEvent(Enum):
    ACT = "actor"
    TRAIN = "trainer"
    EVAL = "evaluator"
    ABSOLUTE = "absolute"
    MISC = "misc"


def describe(values: Any) -> dict[str, float]:
    """mean/std/min/max of an array of per-episode values (empty when there are none)."""
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        return {}
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


class BaseBackend:
    def log(self, metrics: dict[str, Any], step: int, event: LogEvent) -> None:
        raise NotImplementedError

    def stop(self, complete: bool = True) -> None:
        pass


class ConsoleBackend(BaseBackend):
    """One readable line per event; `progress` renders as a percentage and `eta_s` as h:mm:ss."""

    _COLOURS: ClassVar[dict[LogEvent, str]] = {
        LogEvent.ACT: "\033[94m",
        LogEvent.TRAIN: "\033[95m",
        LogEvent.EVAL: "\033[92m",
        LogEvent.ABSOLUTE: "\033[96m",
        LogEvent.MISC: "\033[93m",
    }

    def __init__(self) -> None:
        self._colour = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None

    def log(self, metrics: dict[str, Any], step: int, event: LogEvent) -> None:
        parts = []
        for key, value in metrics.items():
            if isinstance(value, (list, np.ndarray)):
                continue
            if key.endswith("_mean") and key[: -len("_mean")] + "_std" in metrics:
                base = key[: -len("_mean")]
                parts.append(f"{base} {value:.2f}±{metrics[base + '_std']:.2f}")
            elif key.endswith(("_std", "_min", "_max")):
                continue
            elif key == "eta_s":
                parts.append(f"eta {_hms(value)}")
            elif key == "progress":
                parts.append(f"{100 * value:5.1f}%")
            elif isinstance(value, float):
                parts.append(f"{key} {value:.4g}")
            else:
                parts.append(f"{key} {value}")
        tag = f"{event.name:<8}"
        if self._colour:
            tag = f"{self._COLOURS[event]}{tag}\033[0m"
        print(f"{tag} step {step:>10,} | " + " | ".join(parts), flush=True)


def _hms(seconds: float) -> str:
    seconds = round(float(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# NOTE: marl-eval's pipeline reads every top-level key as an environment, every key of a run
# but "absolute_metrics" as an evaluation step (and the run's last key as the absolute block),
# and averages every entry of a step: no key can be added anywhere in the tree without it
# misreading the file. So completeness is in the file name instead: a run writes
# `<name>.json.partial` while it goes and renames it to `<name>.json` when it finishes.
# A crashed, stopped or diverged run keeps the `.partial` name, which marl-eval's reader
# (files ending in .json) and `python -m stoix.plot` (with a warning naming it) both skip.
PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path) -> Path:
    """Where the JSON file of a run that has not finished is written."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


class JsonBackend(BaseBackend):
    """The marl-eval layout, for rliable-style aggregation across runs:
    {env: {task: {algorithm: {"seed_N": {"step_i": {"step_count": t, metric: [per episode]},
    "absolute_metrics": {metric: [...]}}}}}}. Only EVAL and ABSOLUTE events are written;
    "absolute_metrics" is always the run's last key, as marl-eval expects.

    `start_round > 0` continues a resumed run: its file (finished or not) is read back, the
    steps from `start_round` on and the absolute block are dropped (they belong to the part of
    the run the checkpoint is before), and the next evaluation is `step_{start_round}`.
    """

    def __init__(
        self, path: Path, env_name: str, task_name: str, system_name: str, seed: int, start_round: int = 0
    ):
        self.path = path
        self.partial_path = partial_path(path)
        self._keys = (env_name, task_name, system_name, f"seed_{seed}")
        self._steps: dict[str, Any] = {}
        self._absolute: dict[str, Any] | None = None
        self._step_index = start_round
        path.parent.mkdir(parents=True, exist_ok=True)
        if start_round > 0:
            self._steps = self._read_back(start_round)

    def _read_back(self, start_round: int) -> dict[str, Any]:
        """The first `start_round` steps of this run from its file, newest of partial/finished."""
        found = [p for p in (self.partial_path, self.path) if p.is_file()]
        if not found:
            print(
                f"WARNING: resuming after round {start_round}, but the run's JSON log is not at "
                f"{self.path} (nor {self.partial_path.name}); this file will hold rounds "
                f"{start_round + 1} on only (step_{start_round}, ...).",
                flush=True,
            )
            return {}
        source = max(found, key=lambda p: p.stat().st_mtime)
        run: Any = json.loads(source.read_text())
        for key in self._keys:
            run = run.get(key, {}) if isinstance(run, dict) else {}
        kept = {f"step_{i}": run[f"step_{i}"] for i in range(start_round) if f"step_{i}" in run}
        if len(kept) < start_round:
            print(
                f"WARNING: resuming after round {start_round}, but {source} holds only "
                f"{len(kept)} of its evaluations; the missing steps stay missing.",
                flush=True,
            )
        return kept

    def log(self, metrics: dict[str, Any], step: int, event: LogEvent) -> None:
        if event not in (LogEvent.EVAL, LogEvent.ABSOLUTE):
            return
        per_episode = {
            k: [float(x) for x in np.ravel(v)]
            for k, v in metrics.items()
            if isinstance(v, (list, np.ndarray))
        }
        if event == LogEvent.EVAL:
            self._steps[f"step_{self._step_index}"] = {"step_count": int(step), **per_episode}
            self._step_index += 1
        else:
            self._absolute = per_episode
        self._write(self.partial_path)

    def _write(self, path: Path) -> None:
        run = dict(self._steps)
        if self._absolute is not None:
            run["absolute_metrics"] = self._absolute  # last, as marl-eval reads it
        data: Any = run
        for key in reversed(self._keys):
            data = {key: data}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    def stop(self, complete: bool = True) -> None:
        """A finished run moves its log to the final name; an unfinished one leaves `.partial`."""
        if complete:
            self._write(self.path)
            self.partial_path.unlink(missing_ok=True)


class TensorboardBackend(BaseBackend):
    def __init__(self, log_dir: Path):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(log_dir))

    def log(self, metrics: dict[str, Any], step: int, event: LogEvent) -> None:
        for key, value in _scalars(metrics).items():
            self._writer.add_scalar(f"{event.value}/{key}", value, step)

    def stop(self, complete: bool = True) -> None:
        self._writer.close()


class WandbBackend(BaseBackend):
    def __init__(self, cfg: DictConfig, run_dir: Path, run_name: str):
        try:
            import wandb
        except ImportError as e:  # pragma: no cover - wandb is a core dependency
            raise StoixConfigError("logger.use_wandb=True needs `wandb`: run `make install`.") from e
        mode = cfg.logger.kwargs.wandb_mode
        run_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=cfg.logger.kwargs.project,
            entity=cfg.logger.kwargs.entity,
            name=run_name,
            tags=list(cfg.logger.kwargs.tags),
            config=OmegaConf.to_container(cfg, resolve=True),
            dir=str(run_dir),
            mode=mode,
            reinit=True,
        )

    def log(self, metrics: dict[str, Any], step: int, event: LogEvent) -> None:
        self._run.log({f"{event.value}/{k}": v for k, v in _scalars(metrics).items()}, step=step)

    def stop(self, complete: bool = True) -> None:
        self._run.finish()


class NeptuneBackend(BaseBackend):
    def __init__(self, cfg: DictConfig, run_dir: Path, run_name: str):
        import neptune

        run_dir.mkdir(parents=True, exist_ok=True)
        # NOTE: Neptune writes its offline queue under the working directory's `.neptune`;
        # switch there only for the call so the run's own working directory is untouched.
        cwd = os.getcwd()
        os.chdir(run_dir)
        try:
            self._run = neptune.init_run(
                project=cfg.logger.kwargs.project,
                name=run_name,
                tags=list(cfg.logger.kwargs.tags),
                mode=cfg.logger.kwargs.neptune_mode,
                capture_hardware_metrics=False,
                capture_stdout=False,
                capture_stderr=False,
            )
        finally:
            os.chdir(cwd)
        self._run["config"] = _flat_config(OmegaConf.to_container(cfg, resolve=True))

    def log(self, metrics: dict[str, Any], step: int, event: LogEvent) -> None:
        for key, value in _scalars(metrics).items():
            self._run[f"{event.value}/{key}"].append(value, step=step)

    def stop(self, complete: bool = True) -> None:
        self._run.stop()


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if not isinstance(v, (list, np.ndarray))}


def _flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: str(tree) if not isinstance(tree, (int, float, bool)) else tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat_config(value, f"{prefix}{key}/"))
    return out


def validate_logger_config(cfg: DictConfig) -> None:
    """Check before compiling that every backend switched on has what it needs, and that the
    results and checkpoint directories can be created (they are, here)."""
    ckpt_cfg = cfg.logger.get("checkpointing")
    directories = [("logger.base_exp_path", cfg.logger.base_exp_path)]
    if ckpt_cfg is not None and ckpt_cfg.get("save_model") and ckpt_cfg.get("save_dir"):
        directories.append(("logger.checkpointing.save_dir", ckpt_cfg.save_dir))
    for key, directory in directories:
        try:
            Path(str(directory)).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoixConfigError(
                f"{key}={directory}: the directory cannot be created ({e.strerror or e}); "
                "point it at a writable directory."
            ) from None
    kwargs = cfg.logger.kwargs
    if cfg.logger.use_wandb:
        require(
            kwargs.wandb_mode in ("online", "offline", "disabled"),
            f"logger.kwargs.wandb_mode={kwargs.wandb_mode!r} must be online, offline or disabled.",
        )
        require(
            kwargs.project is not None or kwargs.wandb_mode != "online",
            "logger.use_wandb=True needs logger.kwargs.project=<your W&B project> "
            "(or logger.kwargs.wandb_mode=offline to log without an account).",
        )
    if cfg.logger.use_neptune:
        require(
            kwargs.neptune_mode in ("async", "sync", "offline", "debug"),
            f"logger.kwargs.neptune_mode={kwargs.neptune_mode!r} must be async, sync, offline or debug.",
        )
        online = kwargs.neptune_mode in ("async", "sync")
        require(
            not online or (kwargs.project is not None and "/" in str(kwargs.project)),
            "logger.use_neptune=True needs logger.kwargs.project=<workspace>/<project> "
            "(or logger.kwargs.neptune_mode=offline).",
        )
        require(
            not online or os.environ.get("NEPTUNE_API_TOKEN"),
            "logger.use_neptune=True needs the NEPTUNE_API_TOKEN environment variable "
            "(or logger.kwargs.neptune_mode=offline).",
        )


# Runs started by one process in the same second (tests, sweeps in-process) get a suffix.
_RUNS_STARTED = itertools.count()


def algorithm_name(cfg: DictConfig) -> str:
    """What logs and plots call the run's algorithm: the system's name on Anakin, prefixed with
    its architecture elsewhere (`sebulba_ff_ppo`), so that `python -m stoix.plot` keeps Sebulba
    runs apart from the Anakin runs of the same system (as `make results` rows and Hydra's
    output folders already do)."""
    architecture = cfg.arch.get("architecture_name", "anakin")
    system = cfg.system.system_name
    return system if architecture == "anakin" else f"{architecture}_{system}"


def new_run_name(cfg: DictConfig) -> str:
    """`<algorithm>_<env>_<task>_seed<N>_<date-time>_<pid>`, unique on this machine: the
    process id keeps two runs started in the same second apart, a counter two runs of one
    process."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}"
    count = next(_RUNS_STARTED)
    if count:
        stamp += f"_{count}"
    return (
        f"{algorithm_name(cfg)}_{cfg.env.env_name}_{cfg.env.scenario.task_name}"
        f"_seed{int(cfg.arch.seed)}_{stamp}"
    )


class StoixLogger:
    """Fans metrics out to every backend switched on in `cfg.logger`.

    A resumed run passes the `run_name` stored in its checkpoint and the round it resumes
    after (`start_round`), so it keeps writing the same JSON file with its steps numbered on.
    """

    def __init__(self, cfg: DictConfig, run_name: str | None = None, start_round: int = 0):
        validate_logger_config(cfg)
        env_name = cfg.env.env_name
        task_name = cfg.env.scenario.task_name
        algorithm = algorithm_name(cfg)
        seed = int(cfg.arch.seed)
        run_name = run_name or new_run_name(cfg)
        base = Path(cfg.logger.base_exp_path)
        self.run_name = run_name
        self._backends: list[BaseBackend] = []
        self.json_path: Path | None = None
        if cfg.logger.use_console:
            self._backends.append(ConsoleBackend())
        if cfg.logger.use_json:
            json_path = cfg.logger.kwargs.json_path
            path = Path(json_path) if json_path else base / "json" / f"{run_name}.json"
            if start_round == 0 and (path.exists() or partial_path(path).exists()):
                print(f"WARNING: {path} exists and this new run will replace it.", flush=True)
            self._backends.append(JsonBackend(path, env_name, task_name, algorithm, seed, start_round))
            self.json_path = path
        if cfg.logger.use_tb:
            self._backends.append(TensorboardBackend(base / "tensorboard" / run_name))
        if cfg.logger.use_wandb:
            self._backends.append(WandbBackend(cfg, base / "wandb", run_name))
        if cfg.logger.use_neptune:
            self._backends.append(NeptuneBackend(cfg, base / "neptune", run_name))

    def log(self, metrics: dict[str, Any], step: int, event: LogEvent) -> None:
        for backend in self._backends:
            backend.log(metrics, step, event)

    def stop(self, complete: bool = True) -> None:
        """`complete=False` for a run that did not finish (it diverged): its JSON file keeps
        the `.partial` name."""
        for backend in self._backends:
            backend.stop(complete)
