"""JAX's persistent compilation cache, on by default (`arch.compilation_cache_dir`).

A run compiles its learner, its evaluator and a few small programs; a later run with the same
shapes (another seed, a rerun, the next job of a multirun over seeds or learning rates) loads
them from disk instead. `make train` (ff_ppo's defaults, 2-core CPU): 16.5 s as a whole
process when it compiles, 9.1-9.9 s when it loads (compile 4.2 s -> 1.1 s; docs/benchmarks.md).
Programs are keyed by their HLO, compile options, device kind and jax version, so a stale
entry is never used.
"""

import os
from pathlib import Path

import jax

# Tests and CI set this so that each run compiles as a fresh machine would.
DISABLE_ENV = "STOIX_NO_COMPILATION_CACHE"
MAX_BYTES = 2 * 1024**3  # least recently used entries go beyond this


def enable(cache_dir: str | None) -> Path | None:
    """Point JAX's persistent cache at `cache_dir` (`~` expanded; None: leave it off) and cache
    every program that took 0.2 s or more to compile. Only a single-process run uses it.
    Returns the directory used, or None. Must run before the run's first compilation."""
    if cache_dir is None or os.environ.get(DISABLE_ENV) or jax.process_count() > 1:
        return None
    path = Path(os.path.expanduser(str(cache_dir)))
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
