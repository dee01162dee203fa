"""Save and restore the whole learner state with orbax, so a stopped run resumes exactly.

A checkpoint holds the learner state (parameters, optimiser states, environment states, keys,
observation statistics: every leaf, as host arrays), the best evaluation parameters kept for
the absolute metric, and a small JSON record (evaluation rounds done, steps, best return).
Checkpoints are numbered by evaluation round; the last `max_to_keep` are kept.
"""

import logging
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from stoix.utils.config import StoixConfigError


class Restored(NamedTuple):
    learner_state: Any
    best_params: Any
    meta: dict[str, Any]


def _quiet_orbax() -> None:
    # NOTE: orbax logs every save step at INFO through absl, and Hydra shows INFO: ~500 lines
    # per checkpoint on the console, plus benign warnings on every restore. Errors still show
    # (and failures raise).
    logging.getLogger("absl").setLevel(logging.ERROR)


def _host(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x), jax.device_get(tree))


def _on_its_own(ocp: Any) -> dict[str, Any]:
    """Each process of a multi-host run writes and reads its own shard of the learner state
    (its own folder, host arrays), so its checkpoint manager neither waits for nor defers to
    the other processes (orbax's default lets only process 0 write)."""
    import jax

    if jax.process_count() == 1:
        return {}
    me = jax.process_index()
    return {
        "multiprocessing_options": ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"stoix_process_{me}"
        )
    }


class Checkpointer:
    """Writes one checkpoint per evaluation round under `directory`."""

    def __init__(self, directory: Path, max_to_keep: int):
        import orbax.checkpoint as ocp

        _quiet_orbax()
        self._ocp = ocp
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False, **_on_its_own(ocp)
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, round_index: int, learner_state: Any, best_params: Any, meta: dict[str, Any]) -> None:
        ocp = self._ocp
        self._manager.save(
            round_index,
            args=ocp.args.Composite(
                learner_state=ocp.args.StandardSave(_host(learner_state)),
                best_params=ocp.args.StandardSave(_host(best_params)),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def restore(path: str, step: int | None, learner_state_like: Any, best_params_like: Any) -> Restored:
    """Read a checkpoint written by `Checkpointer`; the `*_like` trees give the structure.

    Raises StoixConfigError (naming `logger.checkpointing.load_path`) when the directory is
    missing, holds no checkpoint, or the checkpoint cannot be read into this run's structure.
    """
    directory = Path(path).expanduser().resolve()
    key = "logger.checkpointing.load_path"
    if not directory.is_dir():
        raise StoixConfigError(
            f"{key}={path}: no such directory. Point it at the checkpoint directory a run "
            "printed when it started with logger.checkpointing.save_model=True."
        )
    import orbax.checkpoint as ocp

    _quiet_orbax()
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(read_only=True, create=False, **_on_its_own(ocp)),
    )
    steps = manager.all_steps()
    if not steps:
        raise StoixConfigError(f"{key}={path}: the directory holds no Stoix checkpoint.")
    if step is None:
        step = max(steps)
    if step not in steps:
        raise StoixConfigError(
            f"logger.checkpointing.load_step={step} is not in {path}; available: {sorted(steps)}."
        )
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                learner_state=ocp.args.StandardRestore(_host(learner_state_like)),
                best_params=ocp.args.StandardRestore(_host(best_params_like)),
                meta=ocp.args.JsonRestore(),
            ),
        )
    except Exception as e:  # orbax raises many types for unreadable or mismatched data
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise StoixConfigError(
            f"{key}={path}: checkpoint {step} could not be read ({type(e).__name__}: "
            f"{first_line[:200]}). It is corrupt or was written by a run with a different "
            "system, network or arch.total_num_envs/update_batch_size/devices."
        ) from None
    finally:
        manager.close()
    for name, got, like in (
        ("learner_state", restored.learner_state, learner_state_like),
        ("best_params", restored.best_params, best_params_like),
    ):
        mismatch = None if like is None else first_mismatch(got, _host(like))  # None: read as saved
        if mismatch is not None:
            raise StoixConfigError(
                f"{key}={path}: checkpoint {step} does not fit this run: {name}{mismatch}. It was "
                "written with a different system, network or arch.total_num_envs/update_batch_size/"
                "devices; resume with the same ones, or start afresh without load_model."
            )
    return Restored(restored.learner_state, restored.best_params, dict(restored.meta))


def first_mismatch(restored: Any, like: Any) -> str | None:
    """Where a restored tree differs from the one this run builds: a different number of
    leaves (with the keys only one of them has), or the first leaf, by this run's path, whose
    shape or dtype differs; None when they match. Leaves are compared in order, since orbax
    may hand back dicts where this run has named tuples."""
    got = jax.tree_util.tree_flatten_with_path(restored)[0]
    want = jax.tree_util.tree_flatten_with_path(like)[0]
    if len(got) != len(want):
        saved = {jax.tree_util.keystr(p) for p, _ in got}
        here = {jax.tree_util.keystr(p) for p, _ in want}
        return (
            f" has {len(got)} entries in the checkpoint but {len(want)} in this run (only in the "
            f"checkpoint: {sorted(saved - here)[:3]}; only in this run: {sorted(here - saved)[:3]})"
        )
    for (path, x), (_, y) in zip(want, got, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return (
                f"{jax.tree_util.keystr(path)} is {y.dtype}{list(y.shape)} in the checkpoint but "
                f"{x.dtype}{list(x.shape)} in this run"
            )
    return None
