"""Sebulba speed benchmark: `make benchmark-sebulba` (python -m stoix.benchmarks.sebulba).

Prints, from one run on this machine, for each number of environments N:
  (a) raw envpool CartPole-v1 stepping with random actions, N envs in one synchronous pool
      (envpool's own next-step resets; no Python per environment), steps/s;
  (b) the same through Stoix's envpool wrapper (same-step resets, episode metrics), steps/s;
  (c) Sebulba PPO training on envpool CartPole-v1 with N envs (one actor thread, the default
      PPO system: 128-step rollouts, 4 epochs, 4 minibatches, 64x64 MLPs), steps/s after the
      first update (compilation excluded; one evaluation, at the end), and its ratio to (a).
Each training run is a fresh process of the real script. Medians over --seeds seeds.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

from stoix.utils.config import REPO_ROOT

SCRIPT = str(REPO_ROOT / "stoix/systems/ppo/sebulba/ff_ppo.py")
COMMON = [
    "env=envpool/cartpole",
    "arch.total_timesteps=300000",
    "arch.num_evaluation=1",
    "arch.num_eval_episodes=8",
    "arch.absolute_metric=false",
    "logger.use_console=false",
    "logger.use_json=false",
]


def raw_stepping(num_envs: int, seconds: float = 3.0, wrapped: bool = False) -> float:
    """Random-action envpool CartPole-v1 steps/s, raw or through Stoix's wrapper."""
    from stoix.wrappers.envpool import EnvPoolVecEnv, make_envpool_envs

    envs = make_envpool_envs("CartPole-v1", num_envs, seed=0)
    env = EnvPoolVecEnv(envs) if wrapped else envs
    if wrapped:
        env.reset()
    else:
        envs.reset()
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, num_envs).astype(np.int32) for _ in range(64)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            env.step(a)
        steps += len(actions) * num_envs
    return steps / (time.perf_counter() - start)


def train(num_envs: int, seed: int) -> dict[str, float]:
    command = [sys.executable, SCRIPT, *COMMON, f"arch.total_num_envs={num_envs}", f"arch.seed={seed}"]
    # Compiles as on a fresh machine: no persistent compilation cache.
    env = {**os.environ, "STOIX_NO_COMPILATION_CACHE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    match = re.search(
        r"episode_return=(\S+) .* ([\d,]+) steps/s \(Sebulba.*; ([\d,]+) steps/s training", proc.stdout
    )
    if proc.returncode or not match:
        raise SystemExit(f"N={num_envs} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {
        "sps": float(match.group(3).replace(",", "")),
        "sps_all": float(match.group(2).replace(",", "")),
        "return": float(match.group(1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-envs", default="16,64", help="comma-separated environment counts")
    args = parser.parse_args()

    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x {jax.device_count()}")
    for num_envs in (int(n) for n in args.num_envs.split(",")):
        raw = statistics.median(raw_stepping(num_envs) for _ in range(args.seeds))
        wrapped = statistics.median(raw_stepping(num_envs, wrapped=True) for _ in range(args.seeds))
        runs = [train(num_envs, seed) for seed in range(args.seeds)]
        sps = statistics.median(r["sps"] for r in runs)
        sps_all = statistics.median(r["sps_all"] for r in runs)
        returns = ", ".join(f"{r['return']:.0f}" for r in runs)
        print(f"N={num_envs:>3} (a) raw envpool stepping:        {raw:>12,.0f} steps/s")
        print(
            f"N={num_envs:>3} (b) through Stoix's wrapper:     {wrapped:>12,.0f} steps/s "
            f"({wrapped / raw:.2f} of raw)"
        )
        print(
            f"N={num_envs:>3} (c) Sebulba PPO training:        {sps:>12,.0f} steps/s "
            f"= {sps / raw:.3f} of raw stepping (whole run incl. compile and evaluation: "
            f"{sps_all:,.0f} steps/s; final evaluation returns {returns})",
            flush=True,
        )


if __name__ == "__main__":
    main()
