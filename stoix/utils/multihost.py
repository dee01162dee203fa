"""Multi-host Anakin: several processes (one per node, or several on one machine) train one run.

With `arch.multi_host=true` every process calls `jax.distributed.initialize`; Anakin's `pmap`
then spans the devices of all processes, so `pmean` averages gradients over all of them. Each
process feeds and reads only its own (local) devices: it builds the learner state of its own
slots, from the same per-slot keys a single process with all the devices would use, so a run
on 2 processes x 1 device computes what 1 process x 2 devices computes. Only process 0 prints,
logs and writes JSON; every process checkpoints its own shard of the learner state (its own
environments and replay) under `process_<i>/` and restores it on resume.
"""

from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from stoix.utils.config import require

_KEYS = ("multi_host", "coordinator_address", "num_processes", "process_id")
_JOINED = {"done": False}


def join_from_argv(argv: list[str]) -> None:
    """Join a multi-host run named by `arch.multi_host=true` (and the coordinator keys) on the
    command line. JAX must join before anything touches a device, and importing the
    environment suites does (they build arrays at import), so every system script calls this
    from its first import (stoix.utils.interrupt), before the config is composed."""
    given = {}
    for token in argv[1:]:
        key, sep, value = token.lstrip("+").partition("=")
        if sep and key.startswith("arch.") and key[len("arch.") :] in _KEYS:
            given[key[len("arch.") :]] = None if value in ("null", "None", "") else value
    if str(given.get("multi_host", "false")).lower() != "true":
        return
    _join(given.get("coordinator_address"), _int(given.get("num_processes")), _int(given.get("process_id")))


def initialize(arch: DictConfig) -> None:
    """Join the multi-process run described by `arch` (no-op unless `arch.multi_host`).

    The coordinator, process count and this process's index come from
    `arch.coordinator_address`, `arch.num_processes` and `arch.process_id`; left null, JAX reads
    them from the cluster environment (SLURM's variables in a multi-node `srun` job).
    """
    if not bool(arch.get("multi_host", False)) or _JOINED["done"]:
        return
    _join(arch.get("coordinator_address"), _int(arch.get("num_processes")), _int(arch.get("process_id")))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _join(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    explicit = [coordinator, num_processes, process_id]
    require(
        all(v is None for v in explicit) or all(v is not None for v in explicit),
        "arch.multi_host=true takes arch.coordinator_address, arch.num_processes and "
        "arch.process_id together (or none of them, read from SLURM's environment).",
    )
    if num_processes is not None:
        require(
            num_processes >= 1 and 0 <= process_id < num_processes,
            f"arch.process_id={process_id} must be in [0, arch.num_processes={num_processes}).",
        )
    # CPU devices of different processes talk through gloo; GPUs and TPUs bring their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if coordinator is None:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(
                coordinator_address=str(coordinator), num_processes=num_processes, process_id=process_id
            )
    except RuntimeError as error:
        if "must be called before" not in str(error):
            raise
        require(
            False,
            "arch.multi_host=true must be given on the command line of a Stoix script (JAX joins "
            "the other processes before anything touches a device, and the environment suites "
            "do at import); in your own code call stoix.utils.multihost.join_from_argv(sys.argv) "
            "before importing Stoix.",
        )
    _JOINED["done"] = True


def is_main_process() -> bool:
    return jax.process_index() == 0


def local_rows(x: np.ndarray) -> np.ndarray:
    """This process's rows of an array with one row per global device (process-major)."""
    if jax.process_count() == 1:
        return x
    per_process = jax.local_device_count()
    start = jax.process_index() * per_process
    return x[start : start + per_process]


def gather(tree: Any) -> Any:
    """A tree of per-device host results from every process, stacked in device order (the
    same as one process with all the devices would return); unchanged in a single process."""
    tree = jax.device_get(tree)
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(tree)  # (processes, local devices, ...)
    return jax.tree.map(lambda x: np.reshape(x, (-1, *x.shape[2:])), gathered)


def shard_dir(path: Any) -> str:
    """Where this process keeps its checkpoint shard: `path` itself in a single process,
    `path/process_<i>` in a multi-host run."""
    if jax.process_count() == 1:
        return str(path)
    return f"{path}/process_{jax.process_index()}"


def agree(name: str, max_len: int = 256) -> str:
    """Process 0's `name` on every process (run names carry a time stamp and a pid)."""
    if jax.process_count() == 1:
        return name
    from jax.experimental import multihost_utils

    encoded = name.encode()[:max_len]
    buffer = np.zeros(max_len, np.uint8)
    buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    agreed = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(agreed[agreed > 0].astype(np.uint8)).decode()
