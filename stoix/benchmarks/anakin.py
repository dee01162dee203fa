"""Anakin speed benchmark: `make benchmark` (python -m stoix.benchmarks.anakin).

Prints, from one run on this machine:
  (a) pure gymnax CartPole-v1 stepping with random actions in a jitted scan (steps/s), at the
      environment counts the training configs use;
  (b) ff_ppo training steps/s (compilation and evaluation excluded), compile time and whole-
      process wall time, at
      config A: 4 envs x 128 steps, 4 epochs, 4 minibatches, 64x64 tanh MLP, 5e5 steps;
      config B: 256 envs x 128 steps, 4 epochs, 8 minibatches, 256x256 relu MLP, 5e5 steps;
  (c) each training figure as a fraction of (a) at the same number of environments, and as a
      ratio to a minimal PureJaxRL-style PPO (stoix/benchmarks/lean_ppo.py) timed in the
      same run at the same sizes.
  (d) ff_dqn at PureJaxRL's DQN settings (10 envs, buffer 1e4, batch 128, 1e4 random warm-up
      steps, a gradient step every 10 environment steps, 5e5 steps in all), beside pure
      stepping at 10 envs.
  (e) ff_sac at its defaults on Pendulum-v1: training steps/s (compilation excluded) and the
      wall-clock time from launching the process to the first evaluation at or above -250,
      beside the same two figures for a minimal SAC (stoix/benchmarks/lean_sac.py) at the same
      sizes, each run as its own process in the same benchmark run.
  (f) ff_az at its defaults on CartPole-v1 (32 envs, 8 simulations): training steps/s
      (every environment step is one search, so also searches/s while training), beside the
      same batched search timed alone in this process (same network sizes, same simulations,
      32 states at a time): the share of a training step that is search.
  (g) ff_c51, ff_qr_dqn and ff_rainbow (configs C51, QRDQN, RAINBOW) at the same settings as
      (d), each as a ratio of steps/s to ff_dqn run in the same benchmark, interleaved by seed
      (one ff_dqn run per seed serves every row, and row (d) when DQN is selected too).
  (h) ff_ppo with network=cnn on MinAtar Breakout (config BREAKOUT: 16 envs x 128 steps, 4 epochs,
      4 minibatches, 1e5 steps), beside the lean baseline with the same network (its convolution
      as Stoix's matrix product over patches), with nn.Conv (XLA's convolution, as a PureJaxRL-
      style script writes it) and with an MLP (128) on the flattened image, all in this run.
  (i) `make train` (ff_ppo at its defaults: config A's sizes with 20 evaluations and the absolute
      metric) as a whole process, beside the lean baseline at the same sizes as a whole process
      (`python -m stoix.benchmarks.lean_ppo`: import, compile, train; it evaluates nothing).
Each training run is a fresh process of the real script, so start-up and compile are counted
as a user sees them. Timings are medians over --seeds seeds.
"""

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from stoix.utils.config import REPO_ROOT

PPO = str(REPO_ROOT / "stoix/systems/ppo/anakin/ff_ppo.py")
# Training runs compile as on a fresh machine (no persistent compilation cache), except where
# row (i) measures the cache.
FRESH = {**os.environ, "STOIX_NO_COMPILATION_CACHE": "1"}
SAC = str(REPO_ROOT / "stoix/systems/sac/ff_sac.py")
SAC_THRESHOLD = -250.0
DQN = str(REPO_ROOT / "stoix/systems/q_learning/ff_dqn.py")
AZ = str(REPO_ROOT / "stoix/systems/search/ff_az.py")
# The defaults of ff_dqn are PureJaxRL's DQN settings; its 1e4 warm-up steps come on top.
DQN_OVERRIDES = [
    "arch.total_timesteps=490000",
    "arch.num_evaluation=5",
    "logger.use_console=false",
    "logger.use_json=false",
]
# Distributional variants timed beside ff_dqn at DQN_OVERRIDES (row (g)).
DISTRIBUTIONAL = {
    "C51": "stoix/systems/q_learning/ff_c51.py",
    "QRDQN": "stoix/systems/q_learning/ff_qr_dqn.py",
    "RAINBOW": "stoix/systems/q_learning/ff_rainbow.py",
}
# Reported in the Q-learning issue for this machine kind: PureJaxRL's DQN and the original
# Stoix DQN at those settings.
REFERENCE_DQN = (83_000, 79_000)
COMMON = [
    "arch.total_timesteps=500000",
    "arch.num_evaluation=5",
    "logger.use_console=false",
    "logger.use_json=false",
    "system.rollout_length=128",
    "system.epochs=4",
]
CONFIGS: dict[str, list[str]] = {
    "A": [
        "arch.total_num_envs=4",
        "system.num_minibatches=4",
        "network.actor_network.pre_torso.layer_sizes=[64,64]",
        "network.critic_network.pre_torso.layer_sizes=[64,64]",
        "network.actor_network.pre_torso.activation=tanh",
        "network.critic_network.pre_torso.activation=tanh",
    ],
    "B": [
        "arch.total_num_envs=256",
        "system.num_minibatches=8",
        "network.actor_network.pre_torso.layer_sizes=[256,256]",
        "network.critic_network.pre_torso.layer_sizes=[256,256]",
        "network.actor_network.pre_torso.activation=relu",
        "network.critic_network.pre_torso.activation=relu",
    ],
    "BREAKOUT": [
        "env=gymnax/breakout",
        "network=cnn",
        "arch.total_num_envs=16",
        "system.num_minibatches=4",
    ],
}
# Overrides of COMMON per config (hydra refuses the same key twice on one command line).
BUDGET = {"BREAKOUT": 100_000}
NUM_ENVS = {"A": 4, "B": 256, "DQN": 10}
# Reported in the foundation issue for a 2-core CPU of this machine kind (jax 0.5.3,
# compilation excluded, 3 seeds): steps/s of PureJaxRL and of the original Stoix, and
# PureJaxRL's and original Stoix's whole-process wall time for config A.
REFERENCE = {"A": (124_000, 135_000), "B": (72_000, 68_000)}
REFERENCE_WALL_A = (16.0, 28.0)


def pure_stepping(num_envs: int, num_steps: int = 200_000) -> float:
    """Random-action gymnax CartPole-v1 stepping (gymnax's own auto-reset), steps/s."""
    import jax

    from stoix.wrappers.gymnax import make_gymnax_env

    env, params = make_gymnax_env("CartPole-v1")
    length = max(num_steps // num_envs, 1)

    def run(key):
        reset_keys = jax.random.split(key, num_envs)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, params)

        def body(carry, key):
            state, total = carry
            action_key, step_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (num_envs,), 0, 2)
            _, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(step_key, num_envs), state, actions, params
            )
            return (state, total + reward.sum()), None

        (_, total), _ = jax.lax.scan(body, (state, 0.0), jax.random.split(key, length))
        return total

    fn = jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
    jax.block_until_ready(fn(jax.random.PRNGKey(1)))
    best = 0.0
    for seed in range(3):
        start = time.perf_counter()
        jax.block_until_ready(fn(jax.random.PRNGKey(seed + 2)))
        best = max(best, length * num_envs / (time.perf_counter() - start))
    return best


BASELINE_SIZES = {
    "A": dict(num_envs=4, layer_sizes=(64, 64), activation="tanh", num_minibatches=4),
    "B": dict(num_envs=256, layer_sizes=(256, 256), activation="relu", num_minibatches=8),
    "BREAKOUT": dict(
        num_envs=16, layer_sizes=(128,), activation="relu", num_minibatches=4, env_name="Breakout-MinAtar"
    ),
}
BREAKOUT_TORSOS = {
    "cnn": "the same network (convolution over patches)",
    "cnn_xla": "the same network with nn.Conv (XLA)",
    "mlp": "an MLP (128) on the flattened image",
}


def baseline(config: str, seed: int, torso: str = "mlp") -> float:
    """steps/s of the PureJaxRL-style baseline, compilation excluded."""
    import jax

    from stoix.benchmarks.lean_ppo import make_train

    total = BUDGET.get(config, 500_000)
    train_fn, steps = make_train(
        num_steps=128, total_timesteps=total, epochs=4, torso=torso, **BASELINE_SIZES[config]
    )
    compiled = jax.jit(train_fn).lower(jax.random.PRNGKey(seed)).compile()
    start = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.PRNGKey(seed)))
    return steps / (time.perf_counter() - start)


def train(config: str, seed: int) -> dict[str, float]:
    if config == "DQN":
        command = [sys.executable, DQN, *DQN_OVERRIDES, f"arch.seed={seed}"]
    elif config in DISTRIBUTIONAL:
        script = str(REPO_ROOT / DISTRIBUTIONAL[config])
        command = [sys.executable, script, *DQN_OVERRIDES, f"arch.seed={seed}"]
    else:
        common = [o for o in COMMON if not (config in BUDGET and o.startswith("arch.total_timesteps="))]
        budget = [f"arch.total_timesteps={BUDGET[config]}"] if config in BUDGET else []
        command = [sys.executable, PPO, *common, *budget, *CONFIGS[config], f"arch.seed={seed}"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=FRESH)
    wall = time.perf_counter() - start
    match = re.search(r"episode_return=(\S+) .* ([\d,]+) steps/s training, compile ([\d.]+)s", proc.stdout)
    if proc.returncode or not match:
        raise SystemExit(f"config {config} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {
        "sps": float(match.group(2).replace(",", "")),
        "compile_s": float(match.group(3)),
        "wall_s": wall,
        "return": float(match.group(1)),
    }


def timed_evaluations(command: list[str]) -> dict[str, float]:
    """Run `command`, timing each `EVAL step N | episode_return R` line as it arrives; returns
    training steps/s (from its RESULT line) and the seconds and steps to the first R >= -250."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT, env=FRESH
    )
    first = {"time_to_threshold_s": float("nan"), "steps_to_threshold": float("nan")}
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = re.search(r"EVAL\s+step\s+([\d,]+) \| episode_return (-?[\d.]+)", line)
        if match and float(match.group(2)) >= SAC_THRESHOLD and math.isnan(first["time_to_threshold_s"]):
            first = {
                "time_to_threshold_s": time.perf_counter() - start,
                "steps_to_threshold": float(match.group(1).replace(",", "")),
            }
    proc.wait()
    sps = re.search(r"([\d,]+) steps/s training", "".join(lines))
    if proc.returncode or not sps:
        raise SystemExit(f"{command} failed:\n{''.join(lines)[-3000:]}")
    return {"sps": float(sps.group(1).replace(",", "")), **first}


def sac_row(seeds: int) -> None:
    stoix_runs, lean_runs = [], []
    for seed in range(seeds):  # interleaved, so drifts in machine load hit both alike
        stoix_runs.append(
            timed_evaluations([sys.executable, SAC, "logger.use_json=false", f"arch.seed={seed}"])
        )
        lean_runs.append(
            timed_evaluations([sys.executable, "-m", "stoix.benchmarks.lean_sac", f"--seed={seed}"])
        )

    def summary(runs: list[dict]) -> str:
        sps = statistics.median(r["sps"] for r in runs)
        times = ", ".join(f"{r['time_to_threshold_s']:.1f}s@{r['steps_to_threshold']:,.0f}" for r in runs)
        return f"{sps:>8,.0f} steps/s training; first >= {SAC_THRESHOLD:.0f} at (s@steps) {times}"

    ratio = statistics.median(r["sps"] for r in stoix_runs) / statistics.median(r["sps"] for r in lean_runs)
    print(f"(e) ff_sac Pendulum-v1:   {summary(stoix_runs)}")
    print(f"    minimal SAC, same sizes: {summary(lean_runs)}")
    print(f"    ff_sac / minimal SAC steps/s: x{ratio:.2f}")


def search_alone(seed: int, calls: int = 200) -> float:
    """Searches/s of ff_az's training search (its defaults: network, simulations, root noise)
    on a batch of freshly reset CartPole states, jitted and timed alone."""
    import jax

    from stoix.systems.search import ff_az
    from stoix.utils.config import compose_config
    from stoix.wrappers import make_env

    cfg = compose_config("default/anakin/default_ff_az", [f"arch.seed={seed}"])
    env, _ = make_env(cfg.env)
    actor = ff_az.make_actor(cfg.network.actor_network, env.action_spec)
    critic = ff_az.make_critic(cfg.network.critic_network)
    recurrent_fn = ff_az.make_recurrent_fn(
        ff_az.model_env(env), actor.apply, critic.apply, float(cfg.system.gamma)
    )
    search_cfg = ff_az.search_config(cfg.system, int(cfg.system.num_simulations), noise=True)
    num_envs = int(cfg.arch.total_num_envs)
    key, reset_key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 4)
    env_state, timestep = env.reset(jax.random.split(reset_key, num_envs))
    params = ff_az.ActorCriticParams(
        actor.init(actor_key, timestep.observation), critic.init(critic_key, timestep.observation)
    )

    @jax.jit
    def many_searches(params, key):
        def body(key, _):
            key, search_key = jax.random.split(key)
            out = ff_az.search(
                params,
                search_key,
                timestep.observation,
                env_state,
                actor_apply=actor.apply,
                critic_apply=critic.apply,
                recurrent_fn=recurrent_fn,
                cfg=search_cfg,
            )
            return key, out.action

        return jax.lax.scan(body, key, None, calls)[1]

    jax.block_until_ready(many_searches(params, key))  # compile
    start = time.perf_counter()
    jax.block_until_ready(many_searches(params, jax.random.fold_in(key, 1)))
    return calls * num_envs / (time.perf_counter() - start)


def az_row(seeds: int) -> None:
    runs, alone = [], []
    for seed in range(seeds):
        command = [sys.executable, AZ, "logger.use_json=false", f"arch.seed={seed}"]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=FRESH)
        match = re.search(r"episode_return=(\S+) .* ([\d,]+) steps/s training", proc.stdout)
        if proc.returncode or not match:
            raise SystemExit(f"ff_az failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        runs.append((float(match.group(2).replace(",", "")), float(match.group(1))))
        alone.append(search_alone(seed))
    sps = statistics.median(r[0] for r in runs)
    search_sps = statistics.median(alone)
    returns = ", ".join(f"{r[1]:.0f}" for r in runs)
    print(
        f"(f) ff_az CartPole-v1: {sps:>8,.0f} steps/s training = searches/s (8 simulations, "
        f"32 envs; absolute returns {returns})"
    )
    print(
        f"    the same search alone: {search_sps:>8,.0f} searches/s; search is "
        f"{sps / search_sps:.0%} of a training step's time"
    )


def q_learning_rows(configs: list[str], seeds: int) -> dict[str, list[dict[str, float]]]:
    """ff_dqn and the selected distributional variants, interleaved by seed so that drifts in
    machine load hit all alike; prints row (g) and returns ff_dqn's runs for row (d)."""
    variants = [c for c in configs if c in DISTRIBUTIONAL]
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in ["DQN", *variants]}
    for seed in range(seeds):
        for config in runs:
            runs[config].append(train(config, seed))
            print(f"    {config} seed {seed}: {runs[config][-1]['sps']:,.0f} steps/s", flush=True)
    dqn_sps = statistics.median(r["sps"] for r in runs["DQN"])
    for config in variants:
        sps = statistics.median(r["sps"] for r in runs[config])
        returns = ", ".join(f"{r['return']:.0f}" for r in runs[config])
        print(
            f"(g) {DISTRIBUTIONAL[config].rsplit('/', 1)[-1][:-3]:>10}: {sps:>10,.0f} steps/s training "
            f"(compile {statistics.median(r['compile_s'] for r in runs[config]):.1f}s; absolute "
            f"returns {returns}); x{sps / dqn_sps:.2f} ff_dqn's {dqn_sps:,.0f} in this run"
        )
    return runs


def breakout_row(seeds: int) -> None:
    runs, lean = [], {torso: [] for torso in BREAKOUT_TORSOS}
    for seed in range(seeds):  # interleaved, so drifts in machine load hit all alike
        runs.append(train("BREAKOUT", seed))
        for torso in BREAKOUT_TORSOS:
            lean[torso].append(baseline("BREAKOUT", seed, torso))
    sps = statistics.median(r["sps"] for r in runs)
    returns = ", ".join(f"{r['return']:.1f}" for r in runs)
    print(
        f"(h) ff_ppo network=cnn Breakout-MinAtar: {sps:>8,.0f} steps/s training (whole process "
        f"{statistics.median(r['wall_s'] for r in runs):.1f}s; absolute returns {returns})"
    )
    for torso, label in BREAKOUT_TORSOS.items():
        base = statistics.median(lean[torso])
        print(f"    lean baseline, {label}: {base:>8,.0f} steps/s; ff_ppo x{sps / base:.2f}")


def train_row(seeds: int) -> None:
    def whole(command: list[str], env: dict) -> tuple[float, float, float]:
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
        wall = time.perf_counter() - start
        match = re.search(r"(\d+) steps, ([\d,]+) steps/s training, compile ([\d.]+)s", proc.stdout)
        if proc.returncode or not match:
            raise SystemExit(f"{command} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        steps, sps, compile_s = match.groups()
        return wall, int(steps) / float(sps.replace(",", "")), float(compile_s)

    with tempfile.TemporaryDirectory() as cache:
        cached = [f"arch.compilation_cache_dir={cache}"]
        runs: dict[str, list[tuple[float, float, float]]] = {
            "make train, compiling": [],
            "make train, programs from the cache": [],
            "lean PPO, compiling": [],
        }
        ppo = [sys.executable, PPO, "logger.use_json=false"]
        whole([*ppo, *cached, "arch.seed=99"], os.environ)  # fills the cache
        for seed in range(seeds):
            runs["make train, compiling"].append(whole([*ppo, f"arch.seed={seed}"], FRESH))
            runs["make train, programs from the cache"].append(
                whole([*ppo, *cached, f"arch.seed={seed}"], os.environ)
            )
            lean = [sys.executable, "-m", "stoix.benchmarks.lean_ppo", f"--seed={seed}"]
            runs["lean PPO, compiling"].append(whole(lean, FRESH))
    for name, timings in runs.items():
        wall, train_s, compile_s = (statistics.median(t[i] for t in timings) for i in range(3))
        print(
            f"(i) {name}: whole process {wall:.1f}s = compile {compile_s:.1f}s + training "
            f"{train_s:.1f}s + the rest (start-up, evaluation, logging) {wall - compile_s - train_s:.1f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--configs",
        default="A,B,DQN,C51,QRDQN,RAINBOW,SAC,AZ,BREAKOUT,TRAIN",
        help="comma-separated: A, B, DQN, C51, QRDQN, RAINBOW, SAC, AZ, BREAKOUT, TRAIN",
    )
    args = parser.parse_args()

    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x {jax.device_count()}")
    configs = args.configs.split(",")
    stepping = {n: pure_stepping(n) for n in sorted({NUM_ENVS[c] for c in configs if c in NUM_ENVS})}
    for num_envs, sps in stepping.items():
        print(f"(a) pure CartPole-v1 stepping, {num_envs:>4} envs: {sps:>12,.0f} steps/s")
    q_runs = {}
    if any(c in DISTRIBUTIONAL for c in configs):
        q_runs = q_learning_rows(configs, args.seeds)
    for config in configs:
        if config in DISTRIBUTIONAL:
            continue
        if config == "SAC":
            sac_row(args.seeds)
            continue
        if config == "AZ":
            az_row(args.seeds)
            continue
        if config == "BREAKOUT":
            breakout_row(args.seeds)
            continue
        if config == "TRAIN":
            train_row(args.seeds)
            continue
        if config == "DQN":
            runs = q_runs.get(config) or [train(config, seed) for seed in range(args.seeds)]
            sps = statistics.median(r["sps"] for r in runs)
            returns = ", ".join(f"{r['return']:.0f}" for r in runs)
            print(
                f"(d) ff_dqn: {sps:>10,.0f} steps/s training (compile "
                f"{statistics.median(r['compile_s'] for r in runs):.1f}s; absolute returns {returns}); "
                f"{sps / stepping[10]:.3f} of pure stepping at 10 envs; x{sps / max(REFERENCE_DQN):.2f} "
                f"the better figure in the issue (PureJaxRL {REFERENCE_DQN[0]:,}, original Stoix "
                f"{REFERENCE_DQN[1]:,})"
            )
            continue
        # Interleaved by seed, so drifts in machine load hit both alike.
        runs, base_runs = [], []
        for seed in range(args.seeds):
            runs.append(train(config, seed))
            base_runs.append(baseline(config, seed))
        base_sps = statistics.median(base_runs)
        sps = statistics.median(r["sps"] for r in runs)
        compile_s = statistics.median(r["compile_s"] for r in runs)
        wall_s = statistics.median(r["wall_s"] for r in runs)
        returns = ", ".join(f"{r['return']:.0f}" for r in runs)
        purejaxrl, original = REFERENCE[config]
        print(
            f"(b) config {config}: {sps:>10,.0f} steps/s training (compile {compile_s:.1f}s, "
            f"whole process {wall_s:.1f}s; absolute returns {returns})"
        )
        print(
            f"(c) config {config}: {sps / stepping[NUM_ENVS[config]]:.3f} of pure stepping at "
            f"{NUM_ENVS[config]} envs; x{sps / base_sps:.2f} the PureJaxRL-style baseline run here "
            f"({base_sps:,.0f} steps/s); x{sps / max(purejaxrl, original):.2f} the better figure "
            f"reported in the issue (PureJaxRL {purejaxrl:,}, original Stoix {original:,})"
        )
        if config == "A":
            print(
                f"    config A whole process: {wall_s:.1f}s vs PureJaxRL {REFERENCE_WALL_A[0]:.0f}s, "
                f"original Stoix {REFERENCE_WALL_A[1]:.0f}s (from the issue)"
            )


if __name__ == "__main__":
    main()
