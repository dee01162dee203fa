"""XLA compiler flags that one system's process sets for itself, before JAX starts a backend.

XLA reads `XLA_FLAGS` once, when the first backend starts, and aborts on a flag its version
does not know; so a flag is added only for the jaxlib versions it was checked on, never over
a value the user set for the same flag, and only from a system's `__main__` (an import must not
change how other code in the process compiles).

`YNN_REDUCE_OFF`: jaxlib 0.10's CPU compiler hands some reductions to YNNPACK, which ran
QR-DQN's quantile Huber loss (reductions over the (batch, N, N) pairwise errors) far slower
than XLA's own loops: ff_qr_dqn on CartPole, 2-core CPU, 6e4 steps, seed 42, 10,517 ->
35,728 steps/s with it off (32 quantiles; the batched loss at 64: 598 -> 16,413), ff_dqn 63,565 ->
67,876 and ff_c51 22,305 -> 23,472 (docs/benchmarks.md, row (g)). Not set for every system:
ff_ppo's config B ran 34,137 -> 28,234 steps/s with it in the same comparison.

`YNN_OFF` (every YNNPACK fusion off): ff_c51, same settings, 1e5 steps, seed 42, four pairs of
runs: 20,496 -> 23,339, 18,910 -> 25,995, 21,859 -> 25,201 and (6e4 steps) 22,305 -> 24,468
steps/s; ff_dqn went 63,565 -> 57,354 and ff_rainbow 8,149 -> 7,490 with it, so they do not set it.
"""

import os
from importlib import metadata

YNN_REDUCE_OFF = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="  # every YNNPACK fusion type off
# jaxlib versions (prefixes) on which each flag was checked to exist and to help.
CHECKED_ON = {YNN_REDUCE_OFF: ("0.10.",), YNN_OFF: ("0.10.",)}


def add(flag: str) -> bool:
    """Append `flag` to XLA_FLAGS for this process. Returns whether it was added: not when
    the installed jaxlib is not one it was checked on, or when XLA_FLAGS already sets that
    flag (the user's value wins)."""
    name = flag.split("=", 1)[0]
    current = os.environ.get("XLA_FLAGS", "")
    if any(existing.split("=", 1)[0] == name for existing in current.split()):
        return False
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if not version.startswith(CHECKED_ON.get(flag, ())):
        return False
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()
    return True
