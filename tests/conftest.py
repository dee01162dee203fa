"""Shared test helpers: tiny-budget overrides and a runner for scripts in a subprocess."""

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Enough for every code path (a few updates, one evaluation) and nothing more.
TINY_ARCH = [
    "arch.total_num_envs=4",
    "arch.total_timesteps=1024",
    "arch.num_evaluation=2",
    "arch.num_eval_episodes=4",
    "logger.use_console=false",
    "logger.use_json=false",
]
TINY_SYSTEM = {
    "ppo": ["system.rollout_length=16", "system.num_minibatches=2", "system.epochs=1"],
    "q_learning": [
        "system.rollout_length=8",
        "system.total_buffer_size=256",
        "system.total_batch_size=16",
        "system.warmup_steps=64",
    ],
    "vpg": ["system.rollout_length=16", "system.num_minibatches=1", "system.epochs=1"],
    "ddpg": [
        "system.rollout_length=8",
        "system.total_buffer_size=256",
        "system.total_batch_size=16",
        "system.warmup_steps=64",
    ],
    "sac": [
        "system.rollout_length=8",
        "system.total_buffer_size=256",
        "system.total_batch_size=16",
        "system.warmup_steps=64",
    ],
    "awr": [
        "system.rollout_length=8",
        "system.epochs=2",
        "system.total_buffer_size=256",
        "system.total_batch_size=8",
        "system.sample_sequence_length=4",
        "system.warmup_steps=64",
    ],
    "mpo": [
        "system.rollout_length=8",
        "system.total_buffer_size=256",
        "system.total_batch_size=16",
        "system.warmup_steps=64",
    ],
    "search": [
        "system.rollout_length=4",
        "system.total_buffer_size=256",
        "system.total_batch_size=8",
        "system.warmup_steps=32",
        "system.num_simulations=4",
        "system.num_eval_simulations=4",
    ],
    "spo": [
        "system.rollout_length=4",
        "system.total_buffer_size=256",
        "system.total_batch_size=8",
        "system.warmup_steps=32",
        "system.num_particles=4",
        "system.search_depth=2",
        "system.resample_period=1",
    ],
    # Systems whose keys differ from their family's, by system name.
    "ff_sampled_az": [
        "system.rollout_length=4",
        "system.total_buffer_size=256",
        "system.total_batch_size=8",
        "system.warmup_steps=32",
        "system.num_simulations=4",
        "system.num_eval_simulations=4",
        "system.num_sampled_actions=4",
    ],
    "ff_sampled_mz": [
        "system.rollout_length=4",
        "system.total_buffer_size=256",
        "system.total_batch_size=8",
        "system.warmup_steps=32",
        "system.num_simulations=4",
        "system.num_eval_simulations=4",
        "system.num_sampled_actions=4",
        "system.unroll_steps=2",
        "system.n_step=3",
    ],
    "ff_mz": [
        "system.rollout_length=4",
        "system.total_buffer_size=256",
        "system.total_batch_size=8",
        "system.warmup_steps=32",
        "system.num_simulations=4",
        "system.num_eval_simulations=4",
        "system.unroll_steps=2",
        "system.n_step=3",
    ],
    "ff_vmpo": ["system.rollout_length=16", "system.num_minibatches=2", "system.epochs=1"],
    "ff_vmpo_continuous": ["system.rollout_length=16", "system.num_minibatches=2", "system.epochs=1"],
    "ff_pqn": ["system.rollout_length=16", "system.num_minibatches=2", "system.epochs=1"],
    "rec_r2d2": [
        "system.rollout_length=8",
        "system.total_buffer_size=256",
        "system.total_batch_size=8",
        "system.warmup_steps=64",
        "system.sample_sequence_length=8",
        "system.burn_in_length=2",
        "system.sequence_period=4",
    ],
}
TINY = [*TINY_ARCH, *TINY_SYSTEM["ppo"]]


def anakin_script(system_name: str) -> Path:
    """The Anakin system file named `system_name` (Sebulba files may share the stem)."""
    (path,) = [p for p in REPO_ROOT.glob(f"stoix/systems/**/{system_name}.py") if "sebulba" not in p.parts]
    return path


def tiny_for(system_name: str) -> list:
    """TINY_ARCH plus the tiny sizes of the system (or of its family, by its file's folder)."""
    if system_name in TINY_SYSTEM:
        return [*TINY_ARCH, *TINY_SYSTEM[system_name]]
    path = anakin_script(system_name)
    family = path.relative_to(REPO_ROOT / "stoix" / "systems").parts[0]
    return [*TINY_ARCH, *TINY_SYSTEM[family]]


def train_tiny(system_name: str, overrides: Sequence[str]) -> None:
    """Train the Anakin system in-process on its default config with `overrides` (tiny sizes
    included by the caller); the result must be finite and some parameter must have moved."""
    import importlib

    import jax
    import numpy as np

    from stoix.architectures.anakin import run_summary
    from stoix.utils.config import compose_config

    cfg = compose_config(f"default/anakin/default_{system_name}", list(overrides))
    path = anakin_script(system_name)
    module = importlib.import_module(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    summary = run_summary(cfg, module.learner_setup)
    assert np.isfinite(summary.metric)
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(summary.initial_params), jax.tree.leaves(summary.final_params))
    ]
    assert any(moved), "no parameter changed in training"


# The fast suite spends most of its time compiling tiny programs, not running them. XLA's CPU
# backend without its expensive LLVM passes, and with its older loop emitters in place of the
# MLIR fusion emitters, compiles them about twice as fast (brax/humanoid's tiny run: 19.6 s of
# XLA compilation with the first two flags, 11.6 s with all three; the whole fast suite 665 s ->
# 616 s on 2 cores with the 14 Brax, Craftax and POPGym Arcade configs added to it). Learning
# runs and benchmarks, which measure what the default compiler gives, keep the defaults.
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
    "--xla_cpu_use_fusion_emitters=false"
)


def pytest_configure(config: pytest.Config) -> None:
    # Every run compiles as on a fresh machine (and nothing is written under ~/.cache); the
    # persistent compilation cache has its own test, which turns it back on.
    os.environ["STOIX_NO_COMPILATION_CACHE"] = "1"
    markexpr = config.getoption("markexpr") or ""
    measures = any(m in markexpr and f"not {m}" not in markexpr for m in ("learning", "benchmark"))
    if not measures and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAGS}".strip()


def device_env(devices: int) -> dict:
    """This process's environment with `devices` forced CPU devices (other XLA flags kept)."""
    env = dict(os.environ)
    kept = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])
    return env


def run_script(
    script: str, overrides: Sequence[str], cwd: Path, devices: int = 1, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run a Stoix script as a user would, with `devices` forced CPU devices."""
    env = device_env(devices)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    """TINY overrides writing anything they write under tmp_path."""
    return [*TINY, f"logger.base_exp_path={tmp_path}"]


@pytest.fixture(autouse=True)
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test.

    Each compiled program keeps ~1,000 memory mappings of machine code alive in JAX's caches; a
    test worker that compiles a few hundred programs reaches the kernel's 65,530-mapping limit
    and XLA segfaults in the middle of a later compile.
    """
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
