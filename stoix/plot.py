"""Plots and tables from Stoix's JSON logs, with rliable's statistics.

    python -m stoix.plot results/json [more folders or files] --out plots/

Reads every `*.json` log under the paths (the marl-eval layout written by
`stoix/utils/logger.py`: env -> task -> algorithm -> seed_N -> step_i / absolute_metrics),
merges them run by run, and writes to --out:

    aggregate.png                 median, IQM, mean and optimality gap per algorithm, 95% CIs
    sample_efficiency.png         IQM against each algorithm's own environment-step counts
    performance_profile.png       fraction of runs scoring above each threshold
    probability_of_improvement.png  P(X > Y) for every pair of algorithms (two or more)
    task_<env>_<task>.png         return against steps per algorithm: mean and 95% CI over seeds
    results.csv, results.md       the numbers behind aggregate.png, overall and per task
    runs.json                     every run used, merged (marl-eval layout)

Confidence intervals are rliable's stratified bootstrap (runs resampled within each task).
Scores are normalised per task with configs/plot/normalisation.yaml: (return - random) /
(best - random). A run that has not finished (`*.json.partial`: still running, crashed or
diverged) is skipped with a warning naming its file; two files holding the same seed of the
same algorithm and task are reported and the newer kept. No JAX here: copy the logs anywhere.
"""

import argparse
import csv
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NORMALISATION = REPO_ROOT / "configs" / "plot" / "normalisation.yaml"
PARTIAL_SUFFIX = ".partial"  # stoix.utils.logger.PARTIAL_SUFFIX (not imported: it pulls omegaconf)
SEED_DEPTH = 4  # env, task, algorithm, seed
METRICS = ("median", "iqm", "mean", "optimality_gap")
TITLES = {"median": "Median", "iqm": "IQM", "mean": "Mean", "optimality_gap": "Optimality gap"}
HOW_TO_LOG = (
    "train with JSON logging on (the default), e.g. `python stoix/systems/ppo/anakin/ff_ppo.py "
    "-m arch.seed=0,1,2`, which writes results/json/<run>.json"
)


class PlotError(Exception):
    """A problem with the command line or the logs that stops the plot; one line."""


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    env: str
    task: str
    algorithm: str
    seed: str
    source: Path
    steps: np.ndarray  # (evaluations,) environment steps at each evaluation
    curve: np.ndarray  # (evaluations,) the metric's mean over each evaluation's episodes
    absolute: float | None  # its mean over the absolute metric's episodes, if the run has one

    @property
    def task_id(self) -> str:
        return f"{self.env}/{self.task}"

    def at(self, steps: np.ndarray) -> np.ndarray:
        """The curve at these step counts (each one the run was evaluated at)."""
        by_step = dict(zip(self.steps.tolist(), self.curve.tolist()))
        return np.array([by_step[int(step)] for step in steps])


# READ AND MERGE


def find_logs(paths: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) log files under `paths`, each file once."""
    finished: set[Path] = set()
    unfinished: set[Path] = set()
    for name in paths:
        path = Path(name)
        if path.is_dir():
            finished.update(p.resolve() for p in path.rglob("*.json") if p.is_file())
            unfinished.update(p.resolve() for p in path.rglob(f"*.json{PARTIAL_SUFFIX}") if p.is_file())
        elif path.is_file():
            (unfinished if path.name.endswith(PARTIAL_SUFFIX) else finished).add(path.resolve())
        else:
            raise PlotError(f"{name}: no such file or folder; {HOW_TO_LOG}.")
    if not finished and not unfinished:
        raise PlotError(f"no JSON logs under {', '.join(paths)}; {HOW_TO_LOG}.")
    return sorted(finished), sorted(unfinished)


def merge_logs(logs: Sequence[tuple[Path, Any]]) -> tuple[dict, dict[tuple, Path]]:
    """Merge log trees key by key down to the seeds; returns (merged tree, source of each run).

    Two files holding the same (env, task, algorithm, seed) are one seed logged twice (a re-run
    into the same folder, a copy): reported, and the file written last is kept, never renamed
    into another seed. A file whose tree is not the marl-eval layout is skipped with a warning.
    """
    merged: dict = {}
    sources: dict[tuple, Path] = {}
    for path, tree in sorted(logs, key=lambda log: log[0].stat().st_mtime):
        runs = _runs_of(tree)
        if runs is None:
            warn(f"skipping {path}: not a Stoix JSON log (env -> task -> algorithm -> seed -> step_i).")
            continue
        for keys, run in runs:
            if keys in sources:
                warn(
                    f"{'/'.join(keys)} is in two files, {sources[keys]} and {path}: one seed logged "
                    f"twice (a re-run into the same folder?); keeping {path}, the newer."
                )
            node = merged
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = run
            sources[keys] = path
    return merged, sources


def _runs_of(tree: Any, keys: tuple = ()) -> list[tuple[tuple, dict]] | None:
    """Every (env, task, algorithm, seed) run in a log tree, or None if it is not one."""
    if not isinstance(tree, dict) or not tree:
        return None
    if len(keys) == SEED_DEPTH - 1:
        if not all(isinstance(run, dict) for run in tree.values()):
            return None
        return [((*keys, seed), run) for seed, run in tree.items()]
    found = []
    for key, subtree in tree.items():
        runs = _runs_of(subtree, (*keys, key))
        if runs is None:
            return None
        found += runs
    return found


def read_runs(paths: Sequence[str], metric: str) -> tuple[list[Run], dict]:
    """The finished runs under `paths` (warning for each unfinished file and unreadable one)."""
    finished, unfinished = find_logs(paths)
    for path in unfinished:
        warn(
            f"skipping {path}: the run did not finish (still running, crashed or diverged); "
            "resume it from its checkpoint to complete it."
        )
    logs = []
    for path in finished:
        try:
            logs.append((path, json.loads(path.read_text())))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            warn(f"skipping {path}: not readable JSON ({e}).")
    merged, sources = merge_logs(logs)
    runs = []
    for keys, source in sources.items():
        run = merged[keys[0]][keys[1]][keys[2]][keys[3]]
        steps = sorted(
            (int(name[len("step_") :]), value)
            for name, value in run.items()
            if name.startswith("step_") and name[len("step_") :].isdigit() and isinstance(value, dict)
        )
        evaluations = [(s["step_count"], np.mean(s[metric])) for _, s in steps if s.get(metric)]
        if not evaluations:
            warn(f"skipping {'/'.join(keys)} in {source}: no evaluation with `{metric}`.")
            continue
        absolute = run.get("absolute_metrics", {}).get(metric)
        runs.append(
            Run(
                *keys,
                source=source,
                steps=np.array([step for step, _ in evaluations], np.int64),
                curve=np.array([value for _, value in evaluations], np.float64),
                absolute=float(np.mean(absolute)) if absolute else None,
            )
        )
    if not runs:
        raise PlotError(f"no finished run with `{metric}` under {', '.join(paths)}; {HOW_TO_LOG}.")
    return runs, merged


# SCORES


def load_normalisation(path: Path) -> dict[str, tuple[float, float]]:
    """{"env/task": (random, best)} from the YAML file."""
    try:
        table = yaml.safe_load(Path(path).read_text()) or {}
        return {
            f"{env}/{task}": (float(ref["random"]), float(ref["best"]))
            for env, tasks in table.items()
            for task, ref in tasks.items()
        }
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise PlotError(
            f"--normalisation {path}: not a table of env: task: {{random: x, best: y}} ({e})."
        ) from None


@dataclass
class Scores:
    """Per algorithm: its tasks, and (runs, tasks) final scores and (runs, tasks, steps) curves."""

    tasks: dict[str, list[str]]
    final: dict[str, np.ndarray]
    curves: dict[str, np.ndarray]
    curve_steps: dict[str, np.ndarray]
    normalised: dict[str, bool]  # per task


def build_scores(runs: list[Run], reference: dict[str, tuple[float, float]]) -> tuple[Scores, str]:
    """Normalised score matrices per algorithm, and which score they hold ("absolute metric"
    or "final evaluation")."""
    use_absolute = all(run.absolute is not None for run in runs)
    if not use_absolute:
        missing = sum(run.absolute is None for run in runs)
        warn(
            f"{missing} of {len(runs)} runs have no absolute metric (arch.absolute_metric=false); "
            "every run is scored by its final evaluation instead."
        )
    normalised = {}
    for task_id in sorted({run.task_id for run in runs}):
        normalised[task_id] = task_id in reference
        if not normalised[task_id]:
            warn(
                f"{task_id} has no reference scores in the normalisation file: its scores are raw "
                "returns (aggregates over several tasks then mix scales)."
            )

    def norm(task_id: str, x: np.ndarray | float) -> Any:
        if task_id not in reference:
            return x
        random, best = reference[task_id]
        return (np.asarray(x) - random) / (best - random)

    scores = Scores({}, {}, {}, {}, normalised)
    for algorithm in sorted({run.algorithm for run in runs}):
        by_task: dict[str, list[Run]] = {}
        for run in runs:
            if run.algorithm == algorithm:
                by_task.setdefault(run.task_id, []).append(run)
        tasks = sorted(by_task)
        # rliable's bootstrap needs as many runs on every task: the first n seeds of each.
        n = min(len(by_task[t]) for t in tasks)
        for task_id in tasks:
            by_task[task_id].sort(key=lambda run: _seed_number(run.seed))
            if len(by_task[task_id]) > n:
                dropped = ", ".join(run.seed for run in by_task[task_id][n:])
                warn(
                    f"{algorithm} has only {n} runs on some task; its extra runs on {task_id} "
                    f"({dropped}) are left out of the aggregates."
                )
                by_task[task_id] = by_task[task_id][:n]
        final = [[run.absolute if use_absolute else run.curve[-1] for run in by_task[t]] for t in tasks]
        scores.tasks[algorithm] = tasks
        scores.final[algorithm] = np.stack([norm(t, f) for t, f in zip(tasks, final)], axis=1)
        # Sample efficiency at the step counts every run of the algorithm was evaluated at.
        common = set.intersection(*(set(run.steps.tolist()) for t in tasks for run in by_task[t]))
        steps = np.array(sorted(common), np.int64)
        if steps.size == 0:
            warn(f"the runs of {algorithm} share no evaluation step count: no sample-efficiency curve.")
            continue
        curves = [[norm(t, run.at(steps)) for run in by_task[t]] for t in tasks]
        scores.curves[algorithm] = np.asarray(curves).transpose(1, 0, 2)  # (runs, tasks, steps)
        scores.curve_steps[algorithm] = steps
    return scores, "absolute metric" if use_absolute else "final evaluation"


def _seed_number(seed: str) -> tuple[int, str]:
    digits = seed.rsplit("_", 1)[-1]
    return (int(digits), seed) if digits.isdigit() else (sys.maxsize, seed)


# STATISTICS (rliable)


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
    """rliable's median, IQM, mean and optimality gap of a (runs, tasks) score matrix."""
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_median(scores),
            metrics.aggregate_iqm(scores),
            metrics.aggregate_mean(scores),
            metrics.aggregate_optimality_gap(scores),
        ]
    )


def interval_estimates(
    score_dict: dict[str, Any], func: Callable, reps: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Point estimates and 95% stratified-bootstrap intervals (rows: low, high)."""
    from rliable import library

    with warnings.catch_warnings():
        # NOTE: rliable 1.2.0 seeds arch's bootstrap through `random_state`, which arch 7
        # deprecates (arch 8 drops it, hence rliable's arch<8): quiet, and still seeded.
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
        return library.get_interval_estimates(
            score_dict, func, reps=reps, random_state=np.random.RandomState(seed)
        )


def per_step(metric: Callable) -> Callable:
    return lambda x: np.array([metric(x[..., i]) for i in range(x.shape[-1])])


# FIGURES (matplotlib's Agg canvas; no pyplot, so no global backend is touched)


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _colours(algorithms: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {algorithm: cmap(i % 10) for i, algorithm in enumerate(algorithms)}


def plot_aggregate(points: dict, cis: dict, colours: dict, xlabel: str, out: Path) -> None:
    algorithms = list(points)
    fig, axes = _figure(3.2 * len(METRICS), 0.6 * len(algorithms) + 1.4, ncols=len(METRICS))
    for m, (ax, metric) in enumerate(zip(axes, METRICS)):
        for i, algorithm in enumerate(algorithms):
            low, high = cis[algorithm][:, m]
            if np.isnan(points[algorithm][m]):
                ax.text(low if np.isfinite(low) else 0.5, i, "n/a", va="center")
                continue
            ax.barh(i, high - low, left=low, height=0.6, color=colours[algorithm], alpha=0.75)
            ax.vlines(points[algorithm][m], i - 0.3, i + 0.3, color="black", linewidth=1.5)
        ax.set_title(TITLES[metric])
        ax.set_yticks(range(len(algorithms)), algorithms if m == 0 else [""] * len(algorithms))
        ax.set_ylim(-0.6, len(algorithms) - 0.4)
        ends = np.array([[*cis[a][:, m], points[a][m]] for a in algorithms], np.float64)
        if np.isfinite(ends).any():
            low, high = np.nanmin(ends), np.nanmax(ends)
            pad = 0.1 * (high - low) or 0.05  # an interval of one run has no width
            ax.set_xlim(low - pad, high + pad)
        ax.grid(axis="x", alpha=0.3)
    fig.supxlabel(xlabel)
    fig.savefig(out)


def plot_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    colours: dict,
    title: str,
    ylabel: str,
    out: Path,
    xlabel: str = "environment steps",
) -> None:
    """One line per algorithm with its 95% CI band; curves: {algorithm: (steps, point, (2, steps) CI)}."""
    fig, (ax,) = _figure(6.4, 4.2)
    for algorithm, (steps, point, ci) in curves.items():
        ax.plot(
            steps,
            point,
            marker="o" if len(steps) < 30 else "",
            markersize=3,
            color=colours[algorithm],
            label=algorithm,
        )
        ax.fill_between(steps, ci[0], ci[1], color=colours[algorithm], alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(out)


def plot_probability_of_improvement(points: dict, cis: dict, out: Path) -> None:
    pairs = list(points)
    fig, (ax,) = _figure(6.4, 0.5 * len(pairs) + 1.4)
    for i, pair in enumerate(pairs):
        low, high = cis[pair][:, 0]
        ax.barh(i, high - low, left=low, height=0.6, color="tab:blue", alpha=0.6)
        ax.vlines(points[pair], i - 0.3, i + 0.3, color="black", linewidth=1.5)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(pairs)), [" > ".join(pair.split(",", 1)) for pair in pairs])
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(X > Y): the chance a run of X scores above a run of Y on a task")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(out)


# TABLES


def write_tables(rows: list[dict[str, Any]], source: str, out: Path) -> None:
    columns = ["scope", "algorithm", "tasks", "runs", "normalised"]
    for metric in METRICS:
        columns += [metric, f"{metric}_low", f"{metric}_high"]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: row[k] for k in columns} for row in rows)

    def cell(row: dict, metric: str) -> str:
        if np.isnan(row[metric]):
            return "n/a"
        return f"{row[metric]:.3f} [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]"

    header = "| algorithm | tasks | runs | " + " | ".join(TITLES[m] for m in METRICS) + " |"
    rule = "|---" * (3 + len(METRICS)) + "|"
    lines = [
        "# Results",
        "",
        f"Scores: the {source} of each run, normalised per task as (return - random) / "
        "(best - random) where the normalisation file has the task. Point estimates with "
        "95% stratified-bootstrap confidence intervals (rliable).",
        "",
        "## All tasks",
        "",
        header,
        rule,
    ]
    for row in rows:
        if row["scope"] == "all":
            lines.append(
                f"| {row['algorithm']} | {row['tasks']} | {row['runs']} | " + _cells(row, cell) + " |"
            )
    lines += ["", "## Per task", "", "| task | " + header[2:], "|---" + rule]
    for row in rows:
        if row["scope"] != "all":
            task = row["scope"] + ("" if row["normalised"] else " (raw return)")
            lines.append(f"| {task} | {row['algorithm']} | 1 | {row['runs']} | " + _cells(row, cell) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _cells(row: dict, cell: Callable) -> str:
    return " | ".join(cell(row, metric) for metric in METRICS)


# THE COMMAND


def plot(
    paths: Sequence[str], out: Path, normalisation: Path, metric: str, reps: int, seed: int
) -> list[Path]:
    """Everything the module docstring lists, written to `out`; returns the files written."""
    from rliable import library, metrics

    runs, merged = read_runs(paths, metric)
    scores, source = build_scores(runs, load_normalisation(normalisation))
    out.mkdir(parents=True, exist_ok=True)
    algorithms = list(scores.final)
    colours = _colours(algorithms)
    all_normalised = {a: all(scores.normalised[t] for t in scores.tasks[a]) for a in algorithms}
    written = []

    # (a) AGGREGATE METRICS: the optimality gap only means something on normalised scores.
    points, cis = interval_estimates(scores.final, aggregate_metrics, reps, seed)
    for algorithm in algorithms:
        if not all_normalised[algorithm]:
            points[algorithm][3] = np.nan
    plot_aggregate(points, cis, colours, f"normalised score ({source})", out / "aggregate.png")
    rows = [
        _row("all", a, len(scores.tasks[a]), scores.final[a].shape[0], all_normalised[a], points[a], cis[a])
        for a in algorithms
    ]
    for task_id in sorted(scores.normalised):
        per_task = {
            a: scores.final[a][:, [scores.tasks[a].index(task_id)]]
            for a in algorithms
            if task_id in scores.tasks[a]
        }
        task_points, task_cis = interval_estimates(per_task, aggregate_metrics, reps, seed)
        for a in per_task:
            if not scores.normalised[task_id]:
                task_points[a][3] = np.nan
            rows.append(
                _row(
                    task_id,
                    a,
                    1,
                    per_task[a].shape[0],
                    scores.normalised[task_id],
                    task_points[a],
                    task_cis[a],
                )
            )
    write_tables(rows, source, out)
    written += [out / "aggregate.png", out / "results.csv", out / "results.md"]

    # (b) SAMPLE EFFICIENCY: IQM at each algorithm's own evaluation step counts.
    if scores.curves:
        iqm, iqm_cis = interval_estimates(scores.curves, per_step(metrics.aggregate_iqm), reps, seed)
        curves = {a: (scores.curve_steps[a], iqm[a], iqm_cis[a]) for a in scores.curves}
        plot_curves(
            curves,
            colours,
            "Sample efficiency (IQM)",
            "normalised score (IQM)",
            out / "sample_efficiency.png",
        )
        written.append(out / "sample_efficiency.png")

    # (c) PERFORMANCE PROFILES: the fraction of runs above each threshold.
    everything = np.concatenate([s.ravel() for s in scores.final.values()])
    taus = np.linspace(min(0.0, everything.min()), max(1.0, everything.max()), 101)
    profile, profile_cis = interval_estimates(
        scores.final, lambda x: library.score_distributions(x, taus), reps, seed
    )
    plot_curves(
        {a: (taus, profile[a], profile_cis[a]) for a in algorithms},
        colours,
        "Performance profile",
        "fraction of runs with score > tau",
        out / "performance_profile.png",
        xlabel=f"normalised score threshold tau ({source})",
    )
    written.append(out / "performance_profile.png")

    # (d) PROBABILITY OF IMPROVEMENT between every pair, on the tasks both ran.
    pairs = {}
    for i, x in enumerate(algorithms):
        for y in algorithms[i + 1 :]:
            common = [t for t in scores.tasks[x] if t in scores.tasks[y]]
            if not common:
                warn(f"{x} and {y} share no task: no probability of improvement between them.")
                continue
            pairs[f"{x},{y}"] = tuple(
                scores.final[a][:, [scores.tasks[a].index(t) for t in common]] for a in (x, y)
            )
    if pairs:
        poi, poi_cis = interval_estimates(pairs, metrics.probability_of_improvement, reps, seed)
        plot_probability_of_improvement(poi, poi_cis, out / "probability_of_improvement.png")
        written.append(out / "probability_of_improvement.png")

    # (e) PER TASK: raw return, mean and CI over seeds, at the step counts all its runs share.
    for task_id in sorted(scores.normalised):
        curves = {}
        for algorithm in algorithms:
            task_runs = [r for r in runs if r.task_id == task_id and r.algorithm == algorithm]
            if not task_runs:
                continue
            steps = np.array(sorted(set.intersection(*(set(r.steps.tolist()) for r in task_runs))), np.int64)
            if steps.size == 0:
                continue
            values = np.stack([r.at(steps) for r in task_runs])[:, None, :]  # (runs, 1 task, steps)
            mean, mean_cis = interval_estimates(
                {algorithm: values}, per_step(metrics.aggregate_mean), reps, seed
            )
            curves[algorithm] = (steps, mean[algorithm], mean_cis[algorithm])
        path = out / f"task_{task_id.replace('/', '_')}.png"
        plot_curves(curves, colours, task_id, f"{metric} (mean over seeds, 95% CI)", path)
        written.append(path)

    (out / "runs.json").write_text(json.dumps(merged, indent=1))
    written.append(out / "runs.json")
    return written


def _row(scope: str, algorithm: str, tasks: int, runs: int, normalised: bool, point, ci) -> dict:
    row: dict[str, Any] = {
        "scope": scope,
        "algorithm": algorithm,
        "tasks": tasks,
        "runs": runs,
        "normalised": normalised,
    }
    for m, metric in enumerate(METRICS):
        nan = np.isnan(point[m])
        row[metric] = float(point[m])
        row[f"{metric}_low"] = np.nan if nan else float(ci[0, m])
        row[f"{metric}_high"] = np.nan if nan else float(ci[1, m])
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stoix.plot", description=__doc__.split("\n\n")[0].strip()
    )
    parser.add_argument("paths", nargs="+", help="folders (searched recursively) or JSON files")
    parser.add_argument("--out", default="plots", help="output folder (default: plots)")
    parser.add_argument("--normalisation", default=str(DEFAULT_NORMALISATION), help="reference scores (YAML)")
    parser.add_argument("--metric", default="episode_return", help="the per-episode metric to score")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    try:
        if args.reps < 1:
            raise PlotError(f"--reps={args.reps} must be at least 1.")
        written = plot(
            args.paths, Path(args.out), Path(args.normalisation), args.metric, args.reps, args.seed
        )
    except PlotError as e:
        print(f"stoix.plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
