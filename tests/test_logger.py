"""The logger's backends, each written to a temporary folder and read back.

W&B and Neptune run in their offline modes only: these tests never need the network.
"""

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from stoix.utils.config import REPO_ROOT, StoixConfigError, compose_config
from stoix.utils.logger import LogEvent, StoixLogger, algorithm_name, validate_logger_config

CONFIG = "default/anakin/default_ff_ppo"
# Every backend off except those a test switches on.
ALL_OFF = [
    "logger.use_console=false",
    "logger.use_json=false",
    "logger.use_tb=false",
    "logger.use_wandb=false",
    "logger.use_neptune=false",
]

EVAL_0 = {
    "episode_return": np.array([1.0, 2.0, 3.0]),
    "episode_length": np.array([10, 20, 30]),
    "episode_return_mean": 2.0,
    "episode_return_std": float(np.std([1.0, 2.0, 3.0])),
}
EVAL_1 = {
    "episode_return": np.array([4.0, 6.0]),
    "episode_length": np.array([40, 60]),
    "episode_return_mean": 5.0,
    "episode_return_std": 1.0,
}
ABSOLUTE = {
    "episode_return": np.array([7.0, 8.0, 9.0, 10.0]),
    "episode_length": np.array([70, 80, 90, 100]),
    "episode_return_mean": 8.5,
}
ACT = {"episode_return": np.array([-1.0, -2.0]), "episode_return_mean": -1.5}
TRAIN = {"total_loss": 0.5, "entropy": 0.1}


def _cfg(tmp_path: Path, *overrides: str):
    return compose_config(CONFIG, [*ALL_OFF, f"logger.base_exp_path={tmp_path / 'results'}", *overrides])


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run from an empty folder, with every W&B and Neptune path and mode under tmp_path."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        path = tmp_path / var.lower()
        path.mkdir()
        monkeypatch.setenv(var, str(path))
    for var in (
        "WANDB_MODE",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_API_KEY",
        "WANDB_BASE_URL",
        "NEPTUNE_API_TOKEN",
        "NEPTUNE_PROJECT",
        "NEPTUNE_MODE",
    ):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.mark.parametrize(
    "config, expected",
    [("default/anakin/default_ff_ppo", "ff_ppo"), ("default/sebulba/default_ff_ppo", "sebulba_ff_ppo")],
)
def test_sebulba_runs_are_logged_as_their_own_algorithm(isolated, config, expected):
    # Same system, another architecture: plots must not average the two into one algorithm.
    cfg = compose_config(
        config, [*ALL_OFF, f"logger.base_exp_path={isolated / 'results'}", "logger.use_json=true"]
    )
    logger = StoixLogger(cfg)
    logger.log(EVAL_0, 100, LogEvent.EVAL)
    logger.stop()
    assert algorithm_name(cfg) == expected
    assert logger.run_name.startswith(f"{expected}_{cfg.env.env_name}_")
    data = json.loads(logger.json_path.read_text())
    assert list(data[cfg.env.env_name][cfg.env.scenario.task_name]) == [expected]


def test_json_backend_writes_marl_eval_layout(isolated):
    cfg = _cfg(isolated, "logger.use_json=true", "arch.seed=42")
    logger = StoixLogger(cfg)
    logger.log(ACT, 50, LogEvent.ACT)
    logger.log(TRAIN, 50, LogEvent.TRAIN)
    logger.log(EVAL_0, 100, LogEvent.EVAL)
    logger.log(ACT, 150, LogEvent.ACT)
    logger.log(TRAIN, 150, LogEvent.TRAIN)
    logger.log(EVAL_1, 200, LogEvent.EVAL)
    logger.log(ABSOLUTE, 200, LogEvent.ABSOLUTE)
    logger.log(ACT, 250, LogEvent.ACT)
    logger.log({"compile_s": 1.0}, 250, LogEvent.MISC)
    logger.stop()

    files = list((isolated / "results" / "json").glob("*.json"))
    assert files == [logger.json_path]
    data = json.loads(files[0].read_text())

    env, task, system = cfg.env.env_name, cfg.env.scenario.task_name, cfg.system.system_name
    assert list(data) == [env]
    assert list(data[env]) == [task]
    assert list(data[env][task]) == [system]
    assert list(data[env][task][system]) == ["seed_42"]
    run = data[env][task][system]["seed_42"]
    # ACT and TRAIN events leave no trace, and do not advance the step index.
    assert sorted(run) == ["absolute_metrics", "step_0", "step_1"]
    assert run["step_0"] == {
        "step_count": 100,
        "episode_return": [1.0, 2.0, 3.0],
        "episode_length": [10.0, 20.0, 30.0],
    }
    assert run["step_1"] == {
        "step_count": 200,
        "episode_return": [4.0, 6.0],
        "episode_length": [40.0, 60.0],
    }
    assert run["absolute_metrics"] == {
        "episode_return": [7.0, 8.0, 9.0, 10.0],
        "episode_length": [70.0, 80.0, 90.0, 100.0],
    }
    assert not list(files[0].parent.glob("*.tmp"))


def test_console_backend_formats(isolated, capsys):
    logger = StoixLogger(_cfg(isolated, "logger.use_console=true"))
    logger.log(EVAL_0, 12345, LogEvent.EVAL)
    logger.log({"progress": 0.25, "eta_s": 3725.0, "steps_per_second": 1500.0}, 12345, LogEvent.MISC)
    logger.log(TRAIN, 12345, LogEvent.TRAIN)
    logger.stop()
    assert logger.json_path is None  # JSON is off
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    eval_line, misc_line, train_line = lines

    assert eval_line.startswith("EVAL")
    assert "12,345" in eval_line
    assert f"episode_return 2.00±{np.std([1.0, 2.0, 3.0]):.2f}" in eval_line
    # Per-episode arrays and the _std key are folded into mean±std, not printed raw.
    assert "episode_return_std" not in eval_line
    assert "episode_length" not in eval_line
    assert "[" not in eval_line

    assert misc_line.startswith("MISC")
    assert "25.0%" in misc_line
    assert "eta 1:02:05" in misc_line
    assert "progress" not in misc_line and "eta_s" not in misc_line

    assert train_line.startswith("TRAIN")
    assert "total_loss 0.5" in train_line
    assert "\033[" not in "".join(lines)  # no colour when stdout is not a terminal


def _read_tfevents(path: Path) -> dict[str, list[tuple]]:
    """Scalars in a TensorBoard events file: {tag: [(step, value), ...]}."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple]] = {}
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        # TFRecord: uint64 length, uint32 masked crc, payload, uint32 masked crc.
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        payload = data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4
        event = event_pb2.Event.FromString(payload)
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    assert offset == len(data), "truncated events file"
    return scalars


@pytest.mark.timeout(120)
def test_tensorboard_backend_writes_scalars(isolated):
    logger = StoixLogger(_cfg(isolated, "logger.use_tb=true"))
    logger.log(EVAL_0, 100, LogEvent.EVAL)
    logger.log(TRAIN, 100, LogEvent.TRAIN)
    logger.log(EVAL_1, 200, LogEvent.EVAL)
    logger.stop()

    files = list((isolated / "results" / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(files) == 1
    assert files[0].parent.name == logger.run_name
    assert files[0].stat().st_size > 0
    scalars = _read_tfevents(files[0])
    assert scalars["evaluator/episode_return_mean"] == [(100, 2.0), (200, 5.0)]
    assert scalars["trainer/total_loss"] == [(100, 0.5)]
    # Per-episode arrays are not scalars.
    assert not any(tag.endswith("/episode_return") for tag in scalars)


@pytest.mark.timeout(180)
def test_wandb_offline(isolated):
    import wandb

    logger = StoixLogger(_cfg(isolated, "logger.use_wandb=true", "logger.kwargs.wandb_mode=offline"))
    logger.log(EVAL_0, 100, LogEvent.EVAL)
    logger.log(TRAIN, 150, LogEvent.TRAIN)
    logger.stop()
    assert wandb.run is None  # finished, not left active

    wandb_dir = isolated / "results" / "wandb"
    runs = list(wandb_dir.rglob("offline-run-*"))
    assert len(runs) == 1 and runs[0].is_dir()
    records = list(runs[0].glob("run-*.wandb"))
    assert len(records) == 1
    # finish() returns once the run is closed; wandb's service flushes the record file
    # just after, so wait for it a little.
    deadline = time.monotonic() + 60
    while b"evaluator/episode_return_mean" not in records[0].read_bytes():
        assert time.monotonic() < deadline, "the offline run's records were never written"
        time.sleep(0.1)
    assert not list((isolated / "cwd").iterdir())


@pytest.mark.timeout(180)
def test_neptune_offline(isolated):
    repo_neptune = REPO_ROOT / ".neptune"
    repo_had_neptune = repo_neptune.exists()
    logger = StoixLogger(
        _cfg(
            isolated,
            "logger.use_neptune=true",
            "logger.kwargs.neptune_mode=offline",
            "logger.kwargs.project=stoix/test",
        )
    )
    assert Path.cwd() == isolated / "cwd"  # the logger switched back after init
    logger.log(EVAL_0, 100, LogEvent.EVAL)
    logger.log(EVAL_1, 200, LogEvent.EVAL)
    logger.stop()

    offline = isolated / "results" / "neptune" / ".neptune" / "offline"
    runs = [p for p in offline.iterdir() if p.is_dir()]
    assert len(runs) == 1
    ops = [json.loads(line)["obj"] for line in (runs[0] / "data-1.log").read_text().splitlines()]
    logged = [
        value
        for op in ops
        if op["path"] == ["evaluator", "episode_return_mean"]
        for value in op.get("values", [])
    ]
    assert [(v["step"], v["value"]) for v in logged] == [(100, 2.0), (200, 5.0)]
    assert not list((isolated / "cwd").iterdir())
    assert repo_neptune.exists() == repo_had_neptune


def test_wandb_online_without_project_is_rejected(isolated):
    cfg = _cfg(
        isolated,
        "logger.use_wandb=true",
        "logger.kwargs.wandb_mode=online",
        "logger.kwargs.project=null",
    )
    with pytest.raises(StoixConfigError, match=r"logger\.kwargs\.project"):
        StoixLogger(cfg)
    assert not (isolated / "results" / "wandb").exists()


def test_bad_wandb_mode_is_rejected(isolated):
    cfg = _cfg(isolated, "logger.use_wandb=true", "logger.kwargs.wandb_mode=sometimes")
    with pytest.raises(StoixConfigError, match=r"wandb_mode='sometimes'"):
        StoixLogger(cfg)


@pytest.mark.parametrize("mode", ["read-only", "online"])
def test_bad_neptune_mode_is_rejected(isolated, mode):
    cfg = _cfg(
        isolated,
        "logger.use_neptune=true",
        f"logger.kwargs.neptune_mode={mode}",
        "logger.kwargs.project=stoix/test",
    )
    with pytest.raises(StoixConfigError, match=rf"neptune_mode='{mode}'"):
        StoixLogger(cfg)


def test_neptune_async_needs_api_token(isolated, monkeypatch):
    cfg = _cfg(
        isolated,
        "logger.use_neptune=true",
        "logger.kwargs.neptune_mode=async",
        "logger.kwargs.project=stoix/test",
    )
    with pytest.raises(StoixConfigError, match="NEPTUNE_API_TOKEN"):
        StoixLogger(cfg)
    assert not (isolated / "results" / "neptune").exists()
    # With a token the same config validates (checked without starting a run).
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "not-a-real-token")
    validate_logger_config(cfg)


def test_neptune_online_needs_workspace_project(isolated, monkeypatch):
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "not-a-real-token")
    cfg = _cfg(
        isolated,
        "logger.use_neptune=true",
        "logger.kwargs.neptune_mode=async",
        "logger.kwargs.project=no_workspace",
    )
    with pytest.raises(StoixConfigError, match=r"logger\.kwargs\.project"):
        validate_logger_config(cfg)


def _seed_run(path: Path, cfg) -> dict:
    data = json.loads(path.read_text())
    return data[cfg.env.env_name][cfg.env.scenario.task_name][cfg.system.system_name][f"seed_{cfg.arch.seed}"]


def test_json_log_is_partial_until_the_run_finishes(isolated):
    """A run that has not finished (running, crashed, diverged) writes `<name>.json.partial`;
    only a finished run's `stop()` puts the log at its name."""
    cfg = _cfg(isolated, "logger.use_json=true")
    logger = StoixLogger(cfg)
    partial = logger.json_path.with_name(logger.json_path.name + ".partial")
    logger.log(EVAL_0, 100, LogEvent.EVAL)
    assert partial.is_file() and not logger.json_path.exists()
    assert list(_seed_run(partial, cfg)) == ["step_0"]
    logger.stop(complete=False)  # what a diverged run does
    assert partial.is_file() and not logger.json_path.exists()

    finished = StoixLogger(cfg)
    finished.log(EVAL_0, 100, LogEvent.EVAL)
    finished.stop()
    assert finished.json_path.is_file()
    assert not finished.json_path.with_name(finished.json_path.name + ".partial").exists()


def test_a_resumed_json_log_continues_its_file(isolated):
    """Resuming after round 1 keeps step_0, drops what the first run logged after it (its
    step_1 and absolute block) and numbers the new evaluations on from step_1."""
    cfg = _cfg(isolated, "logger.use_json=true")
    first = StoixLogger(cfg)
    first.log(EVAL_0, 100, LogEvent.EVAL)
    first.log(EVAL_1, 200, LogEvent.EVAL)
    first.log(ABSOLUTE, 200, LogEvent.ABSOLUTE)
    first.stop()

    resumed = StoixLogger(cfg, run_name=first.run_name, start_round=1)
    assert resumed.json_path == first.json_path
    resumed.log(EVAL_1 | {"episode_return": np.array([9.0])}, 200, LogEvent.EVAL)
    resumed.log(EVAL_1, 300, LogEvent.EVAL)
    resumed.log(ABSOLUTE, 300, LogEvent.ABSOLUTE)
    resumed.stop()
    assert list((isolated / "results" / "json").iterdir()) == [first.json_path]
    run = _seed_run(first.json_path, cfg)
    assert list(run) == ["step_0", "step_1", "step_2", "absolute_metrics"]
    assert run["step_0"]["step_count"] == 100 and run["step_0"]["episode_return"] == [1.0, 2.0, 3.0]
    assert run["step_1"]["episode_return"] == [9.0]
    assert [run[f"step_{i}"]["step_count"] for i in range(3)] == [100, 200, 300]


def test_run_names_are_unique_even_within_one_process_and_second(isolated):
    cfg = _cfg(isolated, "logger.use_json=true")
    names = {StoixLogger(cfg).run_name for _ in range(3)}
    assert len(names) == 3
