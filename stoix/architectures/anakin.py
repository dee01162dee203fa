"""The experiment loop every Anakin system shares: train -> evaluate -> log -> checkpoint.

A system file provides `learner_setup(env, cfg, sizes, key) -> SystemSetup`; this module
validates the config, builds environments, compiles once, runs `arch.num_evaluation` rounds,
re-evaluates the best parameters for the absolute metric and prints a one-line summary.
A researcher who needs a different loop copies this file next to the system.
"""

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from stoix.base_types import SystemSetup
from stoix.evaluator import EvalResult, make_evaluator
from stoix.networks.base import check_torsos_fit
from stoix.utils import compilation_cache, multihost
from stoix.utils.checkpointing import Checkpointer, restore
from stoix.utils.config import TrainingDivergedError, exit_on_config_error, require
from stoix.utils.finite import first_non_finite
from stoix.utils.logger import LogEvent, StoixLogger, describe, new_run_name, validate_logger_config
from stoix.utils.sizes import AnakinSizes, anakin_sizes
from stoix.utils.validation import validate_system
from stoix.wrappers import make_env

SetupFn = Callable[[Any, DictConfig, AnakinSizes, jax.Array], SystemSetup]


def init_learner_state(init_fn: Callable, key: jax.Array, sizes: AnakinSizes) -> Any:
    """Build the learner state for every (device, update batch) slot in one compiled call.

    `init_fn(params_key, slot_key)` builds one slot's state; `params_key` is shared so every
    replica starts from the same parameters, `slot_key` differs so environments and sampling
    differ. Leaves come out shaped (devices, update_batch, ...), already on their devices.
    """
    params_key, slots_key = jax.random.split(key)
    slot_keys = jax.random.split(slots_key, sizes.num_devices * sizes.update_batch_size)
    slot_keys = slot_keys.reshape(sizes.num_devices, sizes.update_batch_size, -1)
    slot_keys = multihost.local_rows(slot_keys)  # this process's devices' slots (multi-host)
    init = jax.pmap(jax.vmap(init_fn, in_axes=(None, 0)), in_axes=(None, 0), axis_name="device")
    return init(params_key, slot_keys)


def map_slots(learner_fn: Callable, sizes: AnakinSizes) -> Callable:
    """`learner_fn` over one device's update-batch slots (leaves shaped (slots, ...)), to be
    `pmap`ped over devices: `vmap`ped with axis name "batch" when a device holds several slots,
    called on the one slot otherwise.

    NOTE: under a `vmap` of size one XLA's CPU backend lays some arrays out around the unit axis
    and copies them back inside the compiled loops (ff_ppo's epoch batch on Breakout: 3.3 MB per
    epoch), so a single slot runs unbatched. Measured per system (docs/benchmarks.md): from no
    change to 2.3x faster; ff_awr, rec_ppo and ff_sampled_mz ran slower or no faster unbatched
    and keep `jax.vmap` of every size.
    """
    if sizes.update_batch_size > 1:
        return jax.vmap(learner_fn, axis_name="batch")

    def one_slot(state: Any) -> Any:
        out = learner_fn(jax.tree.map(lambda x: x[0], state))
        return jax.tree.map(lambda x: x[None], out)

    return one_slot


def _eval_step_cap(cfg: DictConfig, eval_env: Any) -> int:
    if cfg.arch.eval_step_cap is not None:
        cap = int(cfg.arch.eval_step_cap)
        require(cap >= 1, f"arch.eval_step_cap={cap} must be >= 1.")
        return cap
    return int(getattr(eval_env, "max_episode_steps", 10_000))


def _episode_stats(episode_metrics: Any) -> dict[str, float]:
    """Summaries over the episodes that finished during training (others are partial)."""
    metrics = jax.device_get(episode_metrics)
    done = np.asarray(metrics.is_terminal_step, bool)
    out = {}
    for name in ("episode_return", "episode_length"):
        for stat, value in describe(np.asarray(getattr(metrics, name))[done]).items():
            out[f"{name}_{stat}"] = value
    return out


def _quiet(*args: Any, **kwargs: Any) -> None:
    """`print` on every process but the first of a multi-host run."""


class _QuietLogger:
    """The logger of every process but the first of a multi-host run: logs nothing."""

    def __init__(self, run_name: str):
        self.run_name = run_name

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def stop(self, complete: bool = True) -> None:
        pass


def _check_save_dir_is_free(save_dir: Path, start_round: int) -> None:
    """This run saves rounds start_round+1 on; orbax silently skips a save to a round at or
    below one the directory already holds, so such checkpoints would mix two histories."""
    later = sorted(int(p.name) for p in save_dir.glob("*") if p.name.isdigit() and int(p.name) > start_round)
    require(
        not later,
        f"logger.checkpointing.save_dir={save_dir} already holds checkpoints of rounds {later}, after "
        f"round {start_round} where this run starts, and they would not be replaced; point save_dir "
        "at another directory, or resume from the latest checkpoint (logger.checkpointing.load_step=null).",
    )


# The sizes a checkpoint must be resumed with, by the key that sets each: another budget,
# round count, environment count or rollout length would change the step counts and the
# learning-rate schedule under a resumed run without a word.
_RESUME_KEYS = {
    "total_timesteps": "arch.total_timesteps",
    "num_evaluation": "arch.num_evaluation",
    "total_num_envs": "arch.total_num_envs",
    "update_batch_size": "arch.update_batch_size",
    "rollout_length": "system.rollout_length",
}


def _resume_sizes(sizes: AnakinSizes) -> dict[str, int]:
    return {name: int(getattr(sizes, name)) for name in _RESUME_KEYS}


def _check_resumed_sizes(saved: dict[str, int] | None, sizes: AnakinSizes, load_path: str) -> None:
    """Refuse, with the keys to set, a resume whose sizes differ from the checkpoint's
    (checkpoints written before the sizes were recorded are not checked)."""
    if saved is None:
        return
    now = _resume_sizes(sizes)
    differ = [name for name in _RESUME_KEYS if name in saved and int(saved[name]) != now[name]]
    require(
        not differ,
        f"logger.checkpointing.load_path={load_path}: the checkpoint was saved with "
        + ", ".join(f"{_RESUME_KEYS[n]}={saved[n]} (this run: {now[n]})" for n in differ)
        + "; resume with the sizes it was saved with.",
    )


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a finished run hands back to the code that called it (tests, sweeps, notebooks)."""

    metric: float  # the RESULT line's number: the absolute metric if enabled, else the final evaluation
    initial_params: Any  # the evaluation parameters before training (host arrays)
    final_params: Any  # ... and after the last round
    train_metrics: dict[str, float]  # the last round's losses and statistics, averaged


def run_experiment(cfg: DictConfig, learner_setup: SetupFn) -> float:
    """Run one experiment and return its evaluation metric (see `run_summary`)."""
    return run_summary(cfg, learner_setup).metric


def run_summary(cfg: DictConfig, learner_setup: SetupFn) -> RunSummary:
    """Run one experiment and return its metric, parameters before and after, and last losses.

    JAX keeps every compiled program alive in its caches, and each holds ~1,000 memory
    mappings of machine code; a process that runs experiments one after another (a Hydra
    multirun, Optuna, a test session) reaches the kernel's limit of 65,530 mappings after
    ~45 runs and XLA dies with a segmentation fault while compiling. The caches are
    cleared when the experiment ends, however it ends.
    """
    try:
        return _run_experiment(cfg, learner_setup)
    finally:
        jax.clear_caches()


def _run_experiment(cfg: DictConfig, learner_setup: SetupFn) -> RunSummary:
    """Run one experiment; its metric is the absolute metric if enabled.

    Raises StoixConfigError, before anything compiles, for a config that cannot work.
    """
    cfg = copy.deepcopy(cfg)  # nothing below may change the caller's config
    multihost.initialize(cfg.arch)  # before anything touches a device
    compilation_cache.enable(cfg.arch.get("compilation_cache_dir"))  # before anything compiles
    main = multihost.is_main_process()  # only process 0 prints, logs and writes JSON
    say = print if main else _quiet
    validate_system(cfg.system)
    sizes = anakin_sizes(cfg.arch, int(cfg.system.rollout_length), jax.device_count())
    validate_logger_config(cfg)
    ckpt_cfg = cfg.logger.checkpointing
    require(
        not ckpt_cfg.load_model or ckpt_cfg.load_path is not None,
        "logger.checkpointing.load_model=True needs logger.checkpointing.load_path=<dir>.",
    )
    env, eval_env = make_env(cfg.env)
    check_torsos_fit(
        cfg.network,
        env.observation_spec.agent_view.shape,
        f"env={cfg.env.env_name}/{cfg.env.scenario.task_name}",
    )
    step_cap = _eval_step_cap(cfg, eval_env)
    key, setup_key, eval_key = jax.random.split(jax.random.PRNGKey(int(cfg.arch.seed)), 3)

    say(f"Stoix {cfg.system.system_name} on {cfg.env.env_name}/{cfg.env.scenario.name}")
    say(sizes.describe(), flush=True)
    for warning in sizes.warnings():
        say(f"WARNING: {warning}", flush=True)

    setup = learner_setup(env, cfg, sizes, setup_key)
    learner_state = setup.learner_state
    best_params = jax.device_get(setup.actor.eval_params(learner_state))
    best_return, best_round, start_round = -np.inf, -1, 0
    run_name = None
    if ckpt_cfg.load_model:
        load_path = multihost.shard_dir(ckpt_cfg.load_path)
        restored = restore(load_path, ckpt_cfg.load_step, learner_state, best_params)
        learner_state = jax.tree.map(
            lambda new, like: jax.device_put(new, like.sharding), restored.learner_state, learner_state
        )
        best_params = restored.best_params
        _check_resumed_sizes(restored.meta.get("sizes"), sizes, ckpt_cfg.load_path)
        start_round = int(restored.meta["rounds_done"])
        best_return = float(restored.meta["best_return"])
        best_round = int(restored.meta["best_round"])
        # A resumed run is the same run: same name, so the same JSON file (steps numbered on)
        # and, by default, the same checkpoint directory. Checkpoints from before the run name
        # was stored start a new name.
        run_name = restored.meta.get("run_name")
        say(f"Resumed from {ckpt_cfg.load_path} after round {start_round}.", flush=True)
        if run_name is None:
            say(
                "WARNING: the checkpoint does not name its run; this run logs under a new name, so "
                "its JSON file and the original's hold the same seed.",
                flush=True,
            )

    run_name = multihost.agree(run_name or new_run_name(cfg))  # process 0's name for all
    save_dir = Path(ckpt_cfg.save_dir or Path(cfg.logger.base_exp_path) / "checkpoints" / run_name)
    save_dir = Path(multihost.shard_dir(save_dir))
    if ckpt_cfg.save_model:
        _check_save_dir_is_free(save_dir, start_round)
    logger = StoixLogger(cfg, run_name, start_round) if main else _QuietLogger(run_name)
    checkpointer: Checkpointer | None = None
    if ckpt_cfg.save_model:
        checkpointer = Checkpointer(save_dir, int(ckpt_cfg.max_to_keep))
        say(f"Checkpoints: {checkpointer.directory}", flush=True)

    evaluate = make_evaluator(
        eval_env,
        setup.actor.act,
        sizes.eval_episodes_per_device,
        bool(cfg.arch.evaluation_greedy),
        step_cap,
        setup.actor.init_carry,
        setup.actor.uses_env_state,
    )
    initial_params = jax.device_get(setup.actor.eval_params(learner_state))  # after any resume
    train_metrics: dict = {}
    start = time.perf_counter()
    if jax.process_count() == 1:
        learn = setup.learn.lower(learner_state).compile()
    else:
        # NOTE: an ahead-of-time compiled pmap of several processes takes global arrays, while
        # each process holds only its own devices' rows; the plain pmap call takes those (and
        # compiles in round 1, whose time then includes it).
        learn = setup.learn
    compile_s = time.perf_counter() - start
    logger.log({"compile_s": compile_s}, sizes.steps_per_eval * start_round, LogEvent.MISC)

    train_s, round_s = 0.0, []
    eval_return = float("nan")
    for round_index in range(start_round, sizes.num_evaluation):
        round_start = time.perf_counter()
        output = learn(learner_state)
        jax.block_until_ready(output)
        learn_s = time.perf_counter() - round_start
        train_s += learn_s
        learner_state = output.learner_state
        steps = (round_index + 1) * sizes.steps_per_eval
        train_metrics = jax.device_get(output.train_metrics)

        # NaN GUARD: stop before this round is evaluated, logged or checkpointed.
        bad = first_non_finite(train_metrics, getattr(learner_state, "params", learner_state))
        if bad is not None:
            kept = ""
            if checkpointer is not None:
                checkpointer.close()
                if round_index > start_round:
                    kept = f"; the last finite checkpoint is round {round_index} in {checkpointer.directory}"
            logger.stop(complete=False)  # the JSON log keeps its `.partial` name
            raise TrainingDivergedError(
                f"training diverged in round {round_index + 1} of {sizes.num_evaluation} (step {steps}): "
                f"{bad} is NaN or infinite, so the run stopped without a RESULT{kept}. Try a lower "
                "learning rate, a tighter system.max_grad_norm, or check the environment's rewards."
            )

        # EVALUATE
        eval_params = setup.actor.eval_params(learner_state)
        result = multihost.gather(evaluate(eval_params, jax.random.fold_in(eval_key, round_index)))
        eval_return = float(np.mean(result.episode_return))
        if eval_return > best_return:
            best_return, best_round = eval_return, round_index
            best_params = jax.device_get(eval_params)
        round_s.append(time.perf_counter() - round_start)

        # LOG
        rounds_left = sizes.num_evaluation - round_index - 1
        act_metrics = _episode_stats(multihost.gather(output.episode_metrics))
        act_metrics.update(
            steps_per_second=sizes.steps_per_eval / learn_s,
            progress=steps / sizes.total_timesteps,
            eta_s=float(np.mean(round_s)) * rounds_left,
        )
        logger.log(act_metrics, steps, LogEvent.ACT)
        logger.log({k: float(np.mean(v)) for k, v in train_metrics.items()}, steps, LogEvent.TRAIN)
        eval_metrics: dict[str, Any] = {
            "episode_return": np.ravel(result.episode_return),
            "episode_length": np.ravel(result.episode_length),
        }
        eval_metrics.update({f"episode_return_{k}": v for k, v in describe(result.episode_return).items()})
        eval_metrics["episode_length_mean"] = float(np.mean(result.episode_length))
        logger.log(eval_metrics, steps, LogEvent.EVAL)
        num_capped = int(np.sum(result.num_capped))
        if num_capped:
            say(
                f"WARNING: {num_capped} evaluation episodes were still running at the step cap "
                f"({step_cap} steps, arch.eval_step_cap); their returns are partial.",
                flush=True,
            )

        # CHECKPOINT
        if checkpointer is not None:
            meta = {
                "rounds_done": round_index + 1,
                "timesteps": steps,
                "best_return": best_return,
                "best_round": best_round,
                "run_name": logger.run_name,
                "sizes": _resume_sizes(sizes),
            }
            checkpointer.save(round_index + 1, learner_state, best_params, meta)

    metric_name = "episode_return"
    final_metric, source = eval_return, "final evaluation"
    if cfg.arch.absolute_metric and best_round >= 0:
        # NOTE: the per-round evaluator ten times over, not one program for ten times the
        # episodes: its program is compiled already (a CartPole run saves ~0.6 s of compile).
        # The best parameters go back on the devices as the rounds' evaluations had them, so
        # the compiled program is found again (host arrays would compile it anew).
        like = setup.actor.eval_params(learner_state)
        best = jax.tree.map(lambda x, on: jax.device_put(x, on.sharding), best_params, like)
        abs_key = jax.random.fold_in(eval_key, 1_000_003)
        parts = [multihost.gather(evaluate(best, jax.random.fold_in(abs_key, i))) for i in range(10)]
        result = EvalResult(
            episode_return=np.concatenate([p.episode_return for p in parts], axis=1),
            episode_length=np.concatenate([p.episode_length for p in parts], axis=1),
            num_capped=np.sum([p.num_capped for p in parts], axis=0),
        )
        final_metric = float(np.mean(result.episode_return))
        source = (
            f"absolute metric: best parameters (round {best_round + 1}) "
            f"over {result.episode_return.size} episodes"
        )
        # Every per-episode metric an evaluation step carries, for the same episodes.
        abs_metrics: dict[str, Any] = {
            "episode_return": np.ravel(result.episode_return),
            "episode_length": np.ravel(result.episode_length),
        }
        abs_metrics.update({f"episode_return_{k}": v for k, v in describe(result.episode_return).items()})
        abs_metrics["episode_length_mean"] = float(np.mean(result.episode_length))
        logger.log(abs_metrics, sizes.total_timesteps, LogEvent.ABSOLUTE)
    if checkpointer is not None:
        checkpointer.close()
    logger.stop()
    sps = (sizes.num_evaluation - start_round) * sizes.steps_per_eval / max(train_s, 1e-9)
    say(
        f"RESULT {cfg.system.system_name} {cfg.env.scenario.name} seed={cfg.arch.seed}: "
        f"{metric_name}={final_metric:.2f} ({source}); {sizes.total_timesteps} steps, "
        f"{sps:,.0f} steps/s training, compile {compile_s:.1f}s",
        flush=True,
    )
    return RunSummary(
        metric=final_metric,
        initial_params=initial_params,
        final_params=jax.device_get(setup.actor.eval_params(learner_state)),
        train_metrics={k: float(np.mean(v)) for k, v in train_metrics.items()},
    )


def run_from_cli(cfg: DictConfig, learner_setup: SetupFn) -> float:
    """`run_experiment` for a script: a bad config ends the process with one line, not a
    traceback."""
    return exit_on_config_error(run_experiment, cfg, learner_setup)
