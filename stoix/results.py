"""Train each system's results row on N seeds and publish the table: `make results`.

    python -m stoix.results                      # every row, 5 seeds (hours on a CPU)
    python -m stoix.results --seeds 3 --only ff_ppo,ff_dqn

Each run is the system's own command (as a user types it) with `arch.seed=S`, greedy
evaluation, the absolute metric and JSON logging under `--runs`. The table, written to
`docs/results.md`, gives per row the IQM of the absolute metric over seeds with a 95%
stratified-bootstrap interval (rliable), every seed's number, the budget, the mean wall time
and the command; the plots of `python -m stoix.plot` over the same JSON go to `docs/images/`.
Rows that were not run keep their previous lines in the table (the table says when each row
was run), so a subset can be refreshed on its own. The README's results table (between its
`<!-- results:start -->` and `<!-- results:end -->` lines) is rewritten from the same numbers.
"""

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
_RESULT = re.compile(r"^RESULT (\S+) (\S+) seed=(-?\d+): \w+=(-?[\d.]+|nan) .*?; (\d+) steps")


@dataclass(frozen=True)
class Row:
    name: str  # unique, used by --only
    script: str  # relative to the repo root
    overrides: tuple[str, ...] = ()

    def command(self) -> str:
        return " ".join(["python", self.script, *self.overrides])


# The README's results rows: each system at its defaults on its reference task.
ROWS = [
    Row("ff_ppo", "stoix/systems/ppo/anakin/ff_ppo.py"),
    Row("ff_ppo_continuous", "stoix/systems/ppo/anakin/ff_ppo_continuous.py"),
    Row("ff_ppo_penalty", "stoix/systems/ppo/anakin/ff_ppo_penalty.py"),
    Row("ff_ppo_penalty_continuous", "stoix/systems/ppo/anakin/ff_ppo_penalty_continuous.py"),
    Row("ff_dpo", "stoix/systems/ppo/anakin/ff_dpo.py"),
    Row("ff_dpo_continuous", "stoix/systems/ppo/anakin/ff_dpo_continuous.py"),
    Row("ff_reinforce", "stoix/systems/vpg/ff_reinforce.py"),
    Row("ff_reinforce_continuous", "stoix/systems/vpg/ff_reinforce_continuous.py"),
    Row("ff_dqn", "stoix/systems/q_learning/ff_dqn.py", ("arch.total_timesteps=290000",)),
    Row("ff_ddqn", "stoix/systems/q_learning/ff_ddqn.py", ("arch.total_timesteps=290000",)),
    Row("ff_mdqn", "stoix/systems/q_learning/ff_mdqn.py", ("arch.total_timesteps=290000",)),
    Row("ff_dqn_reg", "stoix/systems/q_learning/ff_dqn_reg.py", ("arch.total_timesteps=290000",)),
    Row("ff_c51", "stoix/systems/q_learning/ff_c51.py", ("arch.total_timesteps=290000",)),
    Row("ff_qr_dqn", "stoix/systems/q_learning/ff_qr_dqn.py", ("arch.total_timesteps=290000",)),
    Row("ff_rainbow", "stoix/systems/q_learning/ff_rainbow.py", ("arch.total_timesteps=290000",)),
    Row("ff_pqn", "stoix/systems/q_learning/ff_pqn.py"),
    Row("ff_ddpg", "stoix/systems/ddpg/ff_ddpg.py"),
    Row("ff_td3", "stoix/systems/ddpg/ff_td3.py"),
    Row("ff_d4pg", "stoix/systems/ddpg/ff_d4pg.py"),
    Row("ff_sac", "stoix/systems/sac/ff_sac.py"),
    Row("ff_awr", "stoix/systems/awr/ff_awr.py"),
    Row("ff_awr_continuous", "stoix/systems/awr/ff_awr_continuous.py"),
    Row("ff_mpo", "stoix/systems/mpo/ff_mpo.py"),
    Row("ff_mpo_continuous", "stoix/systems/mpo/ff_mpo_continuous.py"),
    Row("ff_vmpo", "stoix/systems/mpo/ff_vmpo.py"),
    Row("ff_vmpo_continuous", "stoix/systems/mpo/ff_vmpo_continuous.py"),
    Row("ff_az", "stoix/systems/search/ff_az.py"),
    Row("ff_mz", "stoix/systems/search/ff_mz.py"),
    Row("ff_sampled_az", "stoix/systems/search/ff_sampled_az.py"),
    Row("ff_sampled_mz", "stoix/systems/search/ff_sampled_mz.py"),
    Row("ff_spo", "stoix/systems/spo/ff_spo.py"),
    Row("ff_spo_continuous", "stoix/systems/spo/ff_spo_continuous.py"),
    Row("rec_ppo", "stoix/systems/ppo/anakin/rec_ppo.py"),
    Row("rec_r2d2", "stoix/systems/q_learning/rec_r2d2.py"),
    Row("sebulba_ff_ppo", "stoix/systems/ppo/sebulba/ff_ppo.py"),
    Row("sebulba_ff_ppo_continuous", "stoix/systems/ppo/sebulba/ff_ppo_continuous.py"),
    Row("sebulba_ff_impala", "stoix/systems/impala/sebulba/ff_impala.py"),
    Row("sebulba_rec_impala", "stoix/systems/impala/sebulba/rec_impala.py"),
]


@dataclass
class Outcome:
    row: Row
    seed: int
    metric: float
    steps: int
    task: str
    wall_s: float
    ran_on: str


def run_one(row: Row, seed: int, runs: Path) -> Outcome:
    """One seed of one row, as its command runs; a failure is an error naming the command."""
    command = [
        sys.executable,
        str(REPO_ROOT / row.script),
        *row.overrides,
        f"arch.seed={seed}",
        "arch.evaluation_greedy=true",
        "arch.absolute_metric=true",
        "logger.use_console=false",
        "logger.use_json=true",
        f"logger.base_exp_path={runs / row.name}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    match = next((m for m in map(_RESULT.match, proc.stdout.splitlines()) if m), None)
    if proc.returncode != 0 or match is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{row.command()} arch.seed={seed} failed ({proc.returncode}): {' | '.join(tail)}")
    _, task, _, metric, steps = match.groups()
    today = datetime.date.today().isoformat()
    return Outcome(row, seed, float(metric), int(steps), task, wall, today)


def summarise(outcomes: list[Outcome], reps: int = 2000) -> dict:
    """IQM over seeds with a 95% stratified-bootstrap interval, per row (rliable)."""
    from rliable import metrics

    from stoix.plot import interval_estimates

    scores = np.array([[o.metric] for o in outcomes])  # (runs, 1 task)
    points, cis = interval_estimates({"row": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps, 0)
    first = outcomes[0]
    return {
        "name": first.row.name,
        "system": first.row.name.removeprefix("sebulba_"),
        "architecture": "Sebulba" if "sebulba" in first.row.script else "Anakin",
        "task": first.task,
        "steps": first.steps,
        "iqm": float(points["row"][0]),
        "ci": [float(cis["row"][0][0]), float(cis["row"][1][0])],
        "seeds": {str(o.seed): o.metric for o in outcomes},
        "wall_s": float(np.mean([o.wall_s for o in outcomes])),
        "command": first.row.command(),
        "ran_on": first.ran_on,
    }


def write_table(summaries: dict[str, dict], docs: Path) -> Path:
    lines = [
        "# Results",
        "",
        "Written by `make results` (`python -m stoix.results`); do not edit by hand. Each row is the",
        "system's command at its defaults, run once per seed on this project's 2-core CPU, greedy",
        "evaluation; the number is the absolute metric (the best round's parameters re-evaluated",
        "over 10x the episodes). IQM over seeds with a 95% stratified-bootstrap interval (rliable);",
        "with few seeds the interval is wide and mostly shows the spread of the seeds listed.",
        "",
        "| system | arch | task | steps | IQM [95% CI] | per seed | wall (mean) | command | run on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {row.name: i for i, row in enumerate(ROWS)}
    for name in sorted(summaries, key=lambda n: order.get(n, len(order))):
        s = summaries[name]
        seeds = ", ".join(f"{k}: {v:.1f}" for k, v in s["seeds"].items())
        lines.append(
            f"| `{s['system']}` | {s['architecture']} | {s['task']} | {s['steps']:,} | "
            f"{s['iqm']:.1f} [{s['ci'][0]:.1f}, {s['ci'][1]:.1f}] | {seeds} | {s['wall_s']:.0f} s | "
            f"`{s['command']}` | {s['ran_on']} |"
        )
    out = docs / "results.md"
    out.write_text("\n".join(lines) + "\n")
    return out


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(summaries: dict[str, dict], readme: Path) -> bool:
    """Rewrite the README's results block from the summaries; False when it has no block."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    lines = [
        README_START,
        "| system | arch | task | steps | IQM [95% CI] over seeds | seeds | wall per run "
        "| command (+ `arch.seed=S`) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {row.name: i for i, row in enumerate(ROWS)}
    for name in sorted(summaries, key=lambda n: order.get(n, len(order))):
        s = summaries[name]
        seeds = ", ".join(s["seeds"])
        lines.append(
            f"| `{s['system']}` | {s['architecture']} | {s['task']} | {s['steps']:,} | "
            f"{s['iqm']:.1f} [{s['ci'][0]:.1f}, {s['ci'][1]:.1f}] | {seeds} | {s['wall_s']:.0f} s | "
            f"`{s['command']}` |"
        )
    lines.append(README_END)
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + "\n".join(lines) + tail)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stoix.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per row: 0..N-1 (default 5)")
    parser.add_argument("--only", default="", help="comma-separated row names (default: every row)")
    parser.add_argument("--runs", default="results/published", help="where the runs' JSON goes")
    parser.add_argument("--docs", default="docs", help="where results.md and images/ go")
    parser.add_argument(
        "--readme", default=str(REPO_ROOT / "README.md"), help="whose results block to rewrite"
    )
    parser.add_argument(
        "--no-plot",
        action="store_true",
        help="skip the plots (minutes of bootstrap over every pair of rows); refresh them later "
        "with a run that plots, or with make plot RESULTS=results/published PLOTS=docs/images",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - {row.name for row in ROWS})
    if unknown or args.seeds < 1:
        problem = f"--only names no row {unknown}" if unknown else f"--seeds={args.seeds} must be >= 1"
        print(f"stoix.results: error: {problem}; rows: {', '.join(r.name for r in ROWS)}", file=sys.stderr)
        return 2
    rows = [row for row in ROWS if not names or row.name in names]
    runs, docs = Path(args.runs), Path(args.docs)
    store = docs / "results.json"  # every row's summary, so a subset refreshes only its rows
    summaries = json.loads(store.read_text()) if store.exists() else {}
    start = time.perf_counter()
    for row in rows:
        # A re-run replaces the row's runs (its old JSON would be a second copy of each seed).
        shutil.rmtree(runs / row.name, ignore_errors=True)
        outcomes = []
        for seed in range(args.seeds):
            outcome = run_one(row, seed, runs)
            print(f"{row.name} seed={seed}: {outcome.metric:.2f} ({outcome.wall_s:.0f} s)", flush=True)
            outcomes.append(outcome)
        summaries[row.name] = summarise(outcomes)
        docs.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(summaries, indent=1) + "\n")  # kept after every row
        write_table(summaries, docs)
        update_readme(summaries, Path(args.readme))
    written = []
    if not args.no_plot:
        from stoix.plot import DEFAULT_NORMALISATION, plot

        written = plot([str(runs)], docs / "images", DEFAULT_NORMALISATION, "episode_return", 2000, 0)
    print(
        f"wrote {docs / 'results.md'} and {len(written)} plots in {docs / 'images'} "
        f"({len(rows)} rows x {args.seeds} seeds in {time.perf_counter() - start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
