"""`python -m stoix.plot` on real logs, and the JSON logs it reads: the marl-eval layout, the
absolute block, unfinished files, duplicate seeds, and a resumed run continuing its own file.

The logs come from real runs: tiny ff_ppo and ff_dqn, three seeds each (a Hydra multirun per
system, the two in parallel), once for the module.
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, TINY_SYSTEM, run_script

from stoix import plot

SEEDS = (0, 1, 2)
SCRIPTS = {"ff_ppo": "stoix/systems/ppo/anakin/ff_ppo.py", "ff_dqn": "stoix/systems/q_learning/ff_dqn.py"}
LOGGED = [
    "arch.total_num_envs=4",
    "arch.total_timesteps=768",
    "arch.num_evaluation=3",
    "arch.num_eval_episodes=4",
    "logger.use_console=false",
    "logger.use_json=true",
]
FAST = ["--reps", "200"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """results/json of 2 systems x 3 seeds."""
    root = tmp_path_factory.mktemp("logs")

    def run(system: str) -> subprocess.CompletedProcess:
        family = "ppo" if system == "ff_ppo" else "q_learning"
        overrides = ["-m", f"arch.seed={','.join(map(str, SEEDS))}", *LOGGED, *TINY_SYSTEM[family]]
        return run_script(SCRIPTS[system], [*overrides, f"logger.base_exp_path={root}"], cwd=root)

    # NOTE: seeds differ only in values, so with JAX's persistent compilation cache the later
    # seeds of each multirun reuse the first one's compiled programs (half the time).
    with pytest.MonkeyPatch.context() as env, ThreadPoolExecutor(2) as pool:
        env.setenv("JAX_COMPILATION_CACHE_DIR", str(root / "jax_cache"))
        env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        env.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        for proc in pool.map(run, SCRIPTS):
            assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "json"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def marl_eval_walk(data: dict) -> int:
    """Walk a log as marl-eval's data_process_pipeline and create_matrices_for_rliable do:
    env -> task -> algorithm -> run -> step_i..., then "absolute_metrics" as the run's last
    key; every entry of a step a list of numbers it averages, but "step_count" (the steps,
    increasing). Returns the number of runs."""
    count = 0
    for tasks in data.values():
        for algorithms in tasks.values():
            for runs in algorithms.values():
                for steps in runs.values():
                    keys = list(steps)
                    assert keys[-1] == "absolute_metrics", keys
                    assert keys[:-1] == [f"step_{i}" for i in range(len(keys) - 1)], keys
                    previous = -1
                    for metrics in steps.values():
                        for name, values in metrics.items():
                            if "step_count" in name:
                                assert isinstance(values, int) and values > previous
                                previous = values
                                continue
                            assert isinstance(values, list) and values, (name, values)
                            assert all(
                                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
                            )
                            assert np.isfinite(np.mean(values))
                    count += 1
    return count


def test_every_run_writes_one_finished_file_that_marl_eval_can_walk(logs):
    files = sorted(logs.iterdir())
    assert len(files) == len(SCRIPTS) * len(SEEDS), [f.name for f in files]
    assert all(f.name.endswith(".json") for f in files), "a finished run leaves no .partial file"
    seeds = set()
    for path in files:
        data = _load(path)
        assert marl_eval_walk(data) == 1
        ((env, tasks),) = data.items()
        ((task, algorithms),) = tasks.items()
        ((algorithm, runs),) = algorithms.items()
        ((seed, run),) = runs.items()
        assert (env, task) == ("gymnax", "cartpole")
        seeds.add((algorithm, seed))
        # One step per evaluation round, at that round's environment step count.
        counts = [run[f"step_{i}"]["step_count"] for i in range(3)]
        assert counts == [counts[0] * (i + 1) for i in range(3)] and counts[0] > 0
    assert seeds == {(a, f"seed_{s}") for a in SCRIPTS for s in SEEDS}


def test_absolute_metrics_hold_every_per_episode_metric_of_a_step(logs):
    for path in logs.iterdir():
        ((run,),) = [list(algo.values()) for task in _load(path)["gymnax"].values() for algo in task.values()]
        step_metrics = set(run["step_0"]) - {"step_count"}
        assert step_metrics == {"episode_return", "episode_length"}
        absolute = run["absolute_metrics"]
        assert set(absolute) == step_metrics
        # The same episodes: 10x the evaluation's, each with its return and its length.
        assert len(absolute["episode_length"]) == len(absolute["episode_return"]) == 40
        assert all(1 <= length <= 500 for length in absolute["episode_length"])


def _numpy_estimates(scores: np.ndarray) -> dict[str, float]:
    """IQM, mean, median and optimality gap of a (runs, tasks) matrix, computed directly."""
    flat = np.sort(scores.ravel())
    cut = int(0.25 * flat.size)
    per_task = scores.mean(axis=0)
    return {
        "iqm": flat[cut : flat.size - cut].mean(),
        "mean": per_task.mean(),
        "median": np.median(per_task),
        "optimality_gap": np.mean(1 - np.minimum(scores, 1)),
    }


def _table(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    import csv

    with open(out / "results.csv") as f:
        return {(row["scope"], row["algorithm"]): row for row in csv.DictReader(f)}


def _assert_picture(path: Path) -> None:
    from matplotlib.image import imread

    assert path.stat().st_size > 10_000, f"{path.name} is only {path.stat().st_size} bytes"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.05, f"{path.name} is (nearly) one colour"


def test_plot_writes_figures_and_a_table_that_numpy_agrees_with(logs, tmp_path):
    out = tmp_path / "plots"
    code = (
        "import sys; from stoix.plot import main; rc = main(sys.argv[1:]); "
        "assert 'jax' not in sys.modules, 'stoix.plot imported jax'; sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(logs), "--out", str(out), *FAST],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr
    for name in (
        "aggregate",
        "sample_efficiency",
        "performance_profile",
        "probability_of_improvement",
        "task_gymnax_cartpole",
    ):
        _assert_picture(out / f"{name}.png")

    random, best = plot.load_normalisation(plot.DEFAULT_NORMALISATION)["gymnax/cartpole"]
    table = _table(out)
    for algorithm in SCRIPTS:
        returns = [
            np.mean(
                _load(path)["gymnax"]["cartpole"][algorithm][f"seed_{seed}"]["absolute_metrics"][
                    "episode_return"
                ]
            )
            for seed in SEEDS
            for path in logs.glob(f"{algorithm}_gymnax_cartpole_seed{seed}_*.json")
        ]
        assert len(returns) == len(SEEDS)
        scores = (np.array(returns)[:, None] - random) / (best - random)  # (runs, 1 task)
        for scope in ("all", "gymnax/cartpole"):
            row = table[(scope, algorithm)]
            assert int(row["runs"]) == len(SEEDS)
            for metric, expected in _numpy_estimates(scores).items():
                assert float(row[metric]) == pytest.approx(expected, abs=1e-9), (scope, algorithm, metric)
                assert float(row[f"{metric}_low"]) <= float(row[f"{metric}_high"])
    markdown = (out / "results.md").read_text()
    assert "| ff_ppo | 1 | 3 |" in markdown and "| gymnax/cartpole | ff_dqn | 1 | 3 |" in markdown
    assert marl_eval_walk(_load(out / "runs.json")) == len(SCRIPTS) * len(SEEDS)


def _write_log(directory: Path, algorithm: str, task: str, seed: int, returns: list[list[float]], absolute):
    """A log written by the real JSON backend: one evaluation per entry of `returns`."""
    from stoix.utils.logger import JsonBackend, LogEvent

    backend = JsonBackend(directory / f"{algorithm}_{task}_{seed}.json", "gymnax", task, algorithm, seed)
    for i, episode_returns in enumerate(returns):
        backend.log({"episode_return": np.array(episode_returns)}, 100 * (i + 1), LogEvent.EVAL)
    if absolute is not None:
        backend.log({"episode_return": np.array(absolute)}, 100 * len(returns), LogEvent.ABSOLUTE)
    backend.stop()


def test_aggregates_over_several_tasks_match_numpy(tmp_path):
    """Two tasks and five seeds, so IQM, mean and median all differ."""
    rng = np.random.default_rng(0)
    reference = {"cartpole": (0.0, 500.0), "acrobot": (-500.0, -100.0)}
    normalisation = tmp_path / "norm.yaml"
    normalisation.write_text(
        "gymnax:\n" + "".join(f"  {t}: {{random: {r}, best: {b}}}\n" for t, (r, b) in reference.items())
    )
    scores = {}
    for algorithm in ("a", "b"):
        matrix = rng.uniform(0.0, 1.2, size=(5, 2))
        for j, task in enumerate(reference):
            random, best = reference[task]
            for seed in range(5):
                final = random + matrix[seed, j] * (best - random)
                _write_log(
                    tmp_path / "logs", algorithm, task, seed, [[random, random + 1.0]], [final - 1, final + 1]
                )
        scores[algorithm] = matrix
    out = tmp_path / "plots"
    plot.plot([str(tmp_path / "logs")], out, normalisation, "episode_return", reps=100, seed=0)
    table = _table(out)
    for algorithm, matrix in scores.items():
        row = table[("all", algorithm)]
        assert (row["tasks"], row["runs"]) == ("2", "5")
        for metric, expected in _numpy_estimates(matrix).items():
            assert float(row[metric]) == pytest.approx(expected, abs=1e-9), (algorithm, metric)
        for j, task in enumerate(reference):
            row = table[(f"gymnax/{task}", algorithm)]
            assert float(row["mean"]) == pytest.approx(matrix[:, j].mean(), abs=1e-9)


def test_an_unfinished_file_is_skipped_with_one_warning_naming_it(logs, tmp_path, capsys):
    folder = tmp_path / "logs"
    shutil.copytree(logs, folder)
    # A fourth seed whose run stopped after one evaluation, as a crash leaves it.
    source = next(folder.glob("ff_ppo_*seed0_*.json"))
    data = _load(source)
    run = data["gymnax"]["cartpole"]["ff_ppo"].pop("seed_0")
    data["gymnax"]["cartpole"]["ff_ppo"]["seed_3"] = {"step_0": run["step_0"]}
    crashed = folder / "ff_ppo_gymnax_cartpole_seed3_crashed.json.partial"
    crashed.write_text(json.dumps(data))
    plot.plot([str(folder)], tmp_path / "plots", plot.DEFAULT_NORMALISATION, "episode_return", 50, 0)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and str(crashed) in warnings[0] and "did not finish" in warnings[0], warnings
    assert _table(tmp_path / "plots")[("all", "ff_ppo")]["runs"] == "3"


def test_the_same_seed_in_two_files_is_reported_not_made_a_second_seed(logs, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(logs, first)
    second.mkdir()
    original = next(first.glob("ff_dqn_*seed1_*.json"))
    rerun = second / "ff_dqn_gymnax_cartpole_seed1_rerun.json"
    shutil.copy(original, rerun)
    os.utime(rerun, (original.stat().st_mtime + 10,) * 2)
    plot.plot(
        [str(first), str(second)], tmp_path / "plots", plot.DEFAULT_NORMALISATION, "episode_return", 50, 0
    )
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, warnings
    assert "gymnax/cartpole/ff_dqn/seed_1" in warnings[0]
    assert str(original) in warnings[0] and str(rerun) in warnings[0]
    assert _table(tmp_path / "plots")[("all", "ff_dqn")]["runs"] == "3"
    merged = _load(tmp_path / "plots" / "runs.json")
    assert sorted(merged["gymnax"]["cartpole"]["ff_dqn"]) == ["seed_0", "seed_1", "seed_2"]


def test_merge_is_recursive_and_keeps_every_distinct_run(tmp_path):
    def log(name, env, task, algorithm, seed):
        path = tmp_path / name
        path.write_text("{}")
        return path, {env: {task: {algorithm: {seed: {"step_0": {"step_count": 1, "r": [1.0]}}}}}}

    logs = [
        log("a.json", "gymnax", "cartpole", "ff_ppo", "seed_0"),
        log("b.json", "gymnax", "cartpole", "ff_ppo", "seed_1"),
        log("c.json", "gymnax", "cartpole", "ff_dqn", "seed_0"),
        log("d.json", "gymnax", "acrobot", "ff_ppo", "seed_0"),
        log("e.json", "envpool", "pong", "ff_ppo", "seed_0"),
    ]
    merged, sources = plot.merge_logs(logs)
    assert sorted(merged) == ["envpool", "gymnax"]
    assert sorted(merged["gymnax"]) == ["acrobot", "cartpole"]
    assert sorted(merged["gymnax"]["cartpole"]) == ["ff_dqn", "ff_ppo"]
    assert sorted(merged["gymnax"]["cartpole"]["ff_ppo"]) == ["seed_0", "seed_1"]
    assert sources[("gymnax", "cartpole", "ff_ppo", "seed_1")] == tmp_path / "b.json"
    assert len(sources) == 5


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_nothing_to_plot_is_one_line(kind, tmp_path, capsys):
    path = tmp_path / "results" / "json"
    if kind == "empty":
        path.mkdir(parents=True)
    assert plot.main([str(path), "--out", str(tmp_path / "plots")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stoix.plot: error: ") and str(path) in lines[0], lines
    assert "logger.use_json" in lines[0] or "python stoix/systems" in lines[0]
    assert not (tmp_path / "plots").exists()


def test_a_resumed_run_continues_its_own_file(tmp_path, monkeypatch):
    """A run that stops after round 2 of 4 (a forced divergence) leaves its log `.partial`;
    resumed from its checkpoint it writes on into the same file: steps 2 and 3, then the
    absolute block, under the same run name, as one seed."""
    from stoix.architectures import anakin
    from stoix.systems.ppo.anakin import ff_ppo
    from stoix.utils.config import StoixConfigError, compose_config

    overrides = [
        *LOGGED,
        "arch.seed=5",
        "arch.num_evaluation=4",
        f"arch.total_timesteps={4 * 2 * 16 * 4}",  # 2 updates of 16 steps x 4 envs a round
        *TINY_SYSTEM["ppo"],
        f"logger.base_exp_path={tmp_path}",
        "logger.checkpointing.save_model=true",
        "logger.checkpointing.max_to_keep=10",
    ]
    checks = []
    real_check = anakin.first_non_finite

    def diverge_in_round_3(*args):
        checks.append(1)
        return "the parameter (forced)" if len(checks) == 3 else real_check(*args)

    monkeypatch.setattr(anakin, "first_non_finite", diverge_in_round_3)
    with pytest.raises(anakin.TrainingDivergedError, match="round 3 of 4"):
        anakin.run_experiment(
            compose_config("default/anakin/default_ff_ppo", overrides), ff_ppo.learner_setup
        )
    monkeypatch.setattr(anakin, "first_non_finite", real_check)
    (partial,) = (tmp_path / "json").iterdir()
    assert partial.name.endswith(".json.partial")
    before = _load(partial)["gymnax"]["cartpole"]["ff_ppo"]["seed_5"]
    assert list(before) == ["step_0", "step_1"]
    run_name = partial.name[: -len(".json.partial")]
    checkpoints = tmp_path / "checkpoints" / run_name
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit()) == ["1", "2"]

    def resume(*extra):
        cfg = compose_config(
            "default/anakin/default_ff_ppo",
            [
                *overrides,
                "logger.checkpointing.load_model=true",
                f"logger.checkpointing.load_path={checkpoints}",
                *extra,
            ],
        )
        return anakin.run_experiment(cfg, ff_ppo.learner_setup)

    resume()
    (finished,) = (tmp_path / "json").iterdir()
    assert finished.name == f"{run_name}.json"
    data = _load(finished)
    assert marl_eval_walk(data) == 1
    run = data["gymnax"]["cartpole"]["ff_ppo"]["seed_5"]
    assert list(run) == ["step_0", "step_1", "step_2", "step_3", "absolute_metrics"]
    assert [run[f"step_{i}"]["step_count"] for i in range(4)] == [128, 256, 384, 512]
    assert run["step_0"] == before["step_0"] and run["step_1"] == before["step_1"]
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [1, 2, 3, 4]

    # Resuming from an earlier round into the same folder would mix two histories there
    # (orbax skips a save to a round the folder already holds); it stops before compiling.
    # (Into another save_dir it branches: tests/test_logger.py checks the log drops the rounds
    # after the resumed one.)
    with pytest.raises(StoixConfigError, match=r"save_dir=.*already holds checkpoints of rounds \[2, 3, 4\]"):
        resume("logger.checkpointing.load_step=1")


def test_a_resumed_sebulba_run_continues_its_own_file_with_episode_lengths(tmp_path, monkeypatch):
    """Sebulba keeps the same promises: a run whose learner fails in round 3 of 4 leaves its
    `.partial` log and the checkpoints of rounds 1 and 2; resumed, it writes on into the same
    file, and every evaluation (absolute block included) carries episode lengths."""
    import stoix.architectures.sebulba as sebulba
    from stoix.systems.ppo.sebulba import ff_ppo
    from stoix.utils.config import compose_config

    overrides = [
        "arch.total_num_envs=4",
        "arch.total_timesteps=1024",  # 16 updates of 16 steps x 4 envs, 4 a round
        "arch.num_evaluation=4",
        "arch.num_eval_episodes=4",
        "arch.eval_step_cap=50",
        "arch.seed=6",
        *TINY_SYSTEM["ppo"],
        "logger.use_console=false",
        "logger.use_json=true",
        f"logger.base_exp_path={tmp_path}",
        "logger.checkpointing.save_model=true",
        "logger.checkpointing.max_to_keep=10",
    ]
    checks = []
    real_check = sebulba.first_non_finite

    def fail_in_round_3(*args):
        checks.append(1)
        if len(checks) == 10:
            raise RuntimeError("learner step failed")
        return real_check(*args)

    monkeypatch.setattr(sebulba, "first_non_finite", fail_in_round_3)
    with pytest.raises(RuntimeError, match="learner step failed"):
        sebulba.run_experiment(
            compose_config("default/sebulba/default_ff_ppo", overrides), ff_ppo.learner_setup
        )
    monkeypatch.setattr(sebulba, "first_non_finite", real_check)
    (partial,) = (tmp_path / "json").iterdir()
    assert partial.name.endswith(".json.partial")
    run_name = partial.name[: -len(".json.partial")]
    checkpoints = tmp_path / "checkpoints" / run_name
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit()) == ["1", "2"]
    # Sebulba runs are their own algorithm in logs and plots, apart from Anakin's ff_ppo.
    assert run_name.startswith("sebulba_ff_ppo_gymnasium_cartpole_seed6_")
    before = _load(partial)["gymnasium"]["cartpole"]["sebulba_ff_ppo"]["seed_6"]

    resumed = [
        *overrides,
        "logger.checkpointing.load_model=true",
        f"logger.checkpointing.load_path={checkpoints}",
    ]
    sebulba.run_experiment(compose_config("default/sebulba/default_ff_ppo", resumed), ff_ppo.learner_setup)
    (finished,) = (tmp_path / "json").iterdir()
    assert finished.name == f"{run_name}.json"
    data = _load(finished)
    assert marl_eval_walk(data) == 1
    run = data["gymnasium"]["cartpole"]["sebulba_ff_ppo"]["seed_6"]
    assert list(run) == ["step_0", "step_1", "step_2", "step_3", "absolute_metrics"]
    assert [run[f"step_{i}"]["step_count"] for i in range(4)] == [256, 512, 768, 1024]
    assert all(run[k] == before[k] for k in before)
    for entry in run.values():
        assert len(entry["episode_length"]) == len(entry["episode_return"]) > 0
        assert all(1 <= n <= 50 for n in entry["episode_length"])
