"""JAX's persistent compilation cache, on by default (`arch.compilation_cache_dir`).

A run compiles its learner, its evaluator and a few small programs; a later run with the same
shapes (another seed, a rerun, the next job of a multirun over seeds or learning rates) loads
them from disk instead. `make train` (ff_ppo's defaults, 2-core CPU, medians of 3 seeds): 13.7 s
as a whole process when it compiles, 8.2 s when it loads (compile 3.3 s -> 0.9 s; row (i) of
docs/benchmarks.md).
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
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only home, say: the run goes on, compiling as usual
        print(
            f"WARNING: arch.compilation_cache_dir={cache_dir} cannot be created ({error.strerror}); "
            "running without the compilation cache. Set it to a writable folder, or null.",
            flush=True,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
