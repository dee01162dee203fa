"""The Sebulba run loop every Sebulba system shares: actor threads, learner, evaluation, checkpoints.

Actor threads each own a batch of host environments (stoix/wrappers/host.py) and run the
policy on their actor device; they send fixed-length rollouts through bounded pipelines. The
learner (main thread) joins one rollout from every actor, splits it over the learner devices,
runs the system's `update` in one `pmap`ped call and publishes the new parameters. With
`arch.synchronous=true` actors wait for those parameters before the next rollout, so a run is
reproducible. Evaluation runs in its own thread on `arch.evaluator_device_id` (AsyncEvaluator),
so the learner never waits for it.

A system file provides `learner_setup(cfg, sizes, action_spec, dummy_obs, key) -> SebulbaSystem`:
its initial parameters and optimiser state, how its actors act and what they record per step,
and its learner update. A researcher who needs a different loop copies this file.
"""

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig

from stoix.architectures.sebulba_threads import (
    AsyncEvaluator,
    Lifetime,
    ParamsServer,
    Pipeline,
    join_all,
    start_thread,
)
from stoix.base_types import Observation
from stoix.networks.base import check_torsos_fit
from stoix.utils import compilation_cache
from stoix.utils.checkpointing import Checkpointer, restore
from stoix.utils.config import TrainingDivergedError, exit_on_config_error, require
from stoix.utils.finite import first_non_finite
from stoix.utils.light_import import import_module_lightly
from stoix.utils.logger import LogEvent, StoixLogger, describe, validate_logger_config
from stoix.utils.sizes import SebulbaSizes, sebulba_sizes
from stoix.utils.validation import validate_system
from stoix.wrappers import make_host_envs
from stoix.wrappers.host import HostTimeStep, HostVecEnv


class SebulbaSystem(NamedTuple):
    """Everything the Sebulba run loop needs from a system file.

    `act(params, observation, key) -> (action, aux, key)` is jitted and runs on an actor
    device; `aux` (e.g. the action's log-probability) is handed to `record`, which turns one
    step into one time step of the system's trajectory type (host arrays). The loop stacks the
    steps of a rollout along axis 0, concatenates the actors' rollouts along the environment
    axis and splits them over the learner devices.
    `update(params, opt_state, trajectory, key) -> (params, opt_state, metrics)` is `pmap`ped
    over the learner devices with axis name "device" (average gradients over it).

    A recurrent system sets `init_carry(num_envs)`, the memory an episode starts from. Its
    `act` and `act_eval` then take and return that memory:
    `(params, observation, key, carry, reset) -> (action, aux, key, carry)`, where `reset`
    (envs,) marks observations that start an episode (the memory is zeroed before them). Actor
    threads keep the memory from one rollout to the next, and `update` gets a
    `RecurrentTrajectory`: the stacked steps and the memory the rollout started from.
    """

    params: Any  # initial parameters, one copy
    opt_state: Any
    learn_key: chex.PRNGKey  # split once per update
    act: Callable[[Any, Observation, chex.PRNGKey], tuple[Any, Any, chex.PRNGKey]]
    act_eval: Callable[[Any, Observation, chex.PRNGKey], tuple[Any, Any, chex.PRNGKey]]
    record: Callable[[Observation, np.ndarray, Any, HostTimeStep], Any]
    update: Callable[[Any, Any, Any, chex.PRNGKey], tuple[Any, Any, dict]]
    init_carry: Callable[[int], Any] | None = None  # None: a feed-forward system


class RecurrentTrajectory(NamedTuple):
    """A recurrent system's rollout: its steps and the memory `act` held before the first one."""

    # Leaves shaped (1, envs, ...): the environment axis is axis 1, as in `steps`, so the loop
    # concatenates actors' rollouts and splits them over learner devices the same way.
    initial_carry: Any
    steps: Any  # the system's trajectory type, leaves shaped (rollout_length, envs, ...)


def act_step(act: Callable, params: Any, observation: Any, key: Any, carry: Any, reset: Any) -> tuple:
    """One call of a system's `act` -> (action, aux, key, carry); a feed-forward system (carry
    None) is called without memory and None passes through."""
    if carry is None:
        return (*act(params, observation, key), None)
    return act(params, observation, key, carry, reset)


def policy_act(actor_apply: Callable, greedy: bool) -> Callable:
    """A jitted `act` for a stochastic policy over ActorCriticParams: (params, observation, key)
    -> (action, log_prob, next key); the mode when `greedy`. The key is split inside the jitted
    call, which saves a dispatch per environment step. PPO and IMPALA both act this way."""

    def act(params: Any, observation: Observation, key: chex.PRNGKey) -> tuple:
        key, policy_key = jax.random.split(key)
        pi = actor_apply(params.actor, observation)
        action = pi.mode() if greedy else pi.sample(seed=policy_key)
        return action, pi.log_prob(action), key

    return jax.jit(act)


SetupFn = Callable[[DictConfig, SebulbaSizes, Any, Observation, chex.PRNGKey], SebulbaSystem]


class Rollout(NamedTuple):
    """What an actor sends through its pipeline."""

    trajectory: Any  # the system's trajectory type, leaves shaped (rollout_length, envs, ...)
    episode_return: np.ndarray  # returns of the episodes that finished in this rollout
    params_version: int


def specs_of(env: HostVecEnv, env_label: str = "this environment") -> tuple[Any, Observation]:
    """The action spec for the network builders and a dummy observation, from a host env:
    a DiscreteArray for a discrete space, a BoundedArray for a flat box with finite bounds
    (as the JAX adapters give), so `make_actor` picks and checks the head the same way."""
    specs = import_module_lightly("jumanji.specs", ["jumanji"])
    space = env.single_action_space
    obs_space = env.single_observation_space
    if hasattr(space, "n"):
        spec, mask_size = specs.DiscreteArray(int(space.n)), int(space.n)
    else:
        shape = tuple(getattr(space, "shape", None) or ())
        low = np.asarray(getattr(space, "low", np.nan), np.float32)
        high = np.asarray(getattr(space, "high", np.nan), np.float32)
        require(
            len(shape) == 1 and np.all(np.isfinite(low)) and np.all(np.isfinite(high)),
            f"{env_label} has actions {space}; Sebulba systems take discrete actions or a flat box "
            "with finite bounds: pick another env.",
        )
        low, high = np.broadcast_to(low, shape), np.broadcast_to(high, shape)
        spec, mask_size = specs.BoundedArray(shape, np.float32, low, high, "action"), shape[0]
    dummy = Observation(
        jnp.zeros((1, *obs_space.shape), obs_space.dtype),
        jnp.ones((1, mask_size)),
        jnp.zeros((1,), jnp.int32),
    )
    return spec, dummy


def env_seed(cfg: DictConfig, stream: int) -> int:
    """Seed of host env pool `stream` (actor thread i: i; evaluations: large ids).

    A pool seeds its environment j with seed + j, so pools seeded seed*1000 + i would share all
    but one environment; each pool gets its own pseudo-random base instead. Any integer seed
    works (SeedSequence wants non-negative entropy, so a negative seed is taken modulo 2**64,
    which keeps distinct 64-bit seeds distinct).
    """
    entropy = [int(cfg.arch.seed) % 2**64, stream]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % 2**30)


def actor_thread(
    index: int,
    device: Any,
    cfg: DictConfig,
    sizes: SebulbaSizes,
    system: SebulbaSystem,
    params_server: ParamsServer,
    pipeline: Pipeline,
    lifetime: Lifetime,
    num_rollouts: int,
) -> None:
    """Collect `num_rollouts` rollouts (fewer if the run stops)."""
    seed = env_seed(cfg, index)
    env = make_host_envs(cfg.env, sizes.envs_per_actor, seed)
    key = jax.device_put(jax.random.PRNGKey(seed), device)
    timestep = env.reset()
    # A recurrent system's memory lives here between rollouts; `reset` flags the observations
    # that start an episode: all at first, then the previous step's `last` (with same-step
    # auto-reset the observation after an end is the next episode's first).
    carry = None if system.init_carry is None else jax.device_put(system.init_carry(env.num_envs), device)
    reset = np.ones(env.num_envs, bool)
    params, version = None, -1
    for update in range(num_rollouts):
        # NOTE: synchronous actors wait for the parameters of update `update`; asynchronous ones
        # take whatever is newest (the learner is then at most `pipeline_size` rollouts behind).
        latest = params_server.wait_for(update if cfg.arch.synchronous else 0)
        if latest is None:
            return
        if latest[1] != version:
            params, version = jax.device_put(latest[0], device), latest[1]
        steps, episode_returns, initial_carry = [], [], carry
        for _ in range(sizes.rollout_length):
            observation = jax.device_put(timestep.observation, device)
            action, aux, key, carry = act_step(system.act, params, observation, key, carry, reset)
            action, aux = np.asarray(action), jax.tree.map(np.asarray, aux)
            next_timestep = env.step(action)
            steps.append(system.record(timestep.observation, action, aux, next_timestep))
            metrics = next_timestep.episode_metrics
            episode_returns.append(metrics.episode_return[metrics.is_terminal_step])
            timestep, reset = next_timestep, next_timestep.last
        trajectory = jax.tree.map(lambda *xs: np.stack(xs), *steps)
        if initial_carry is not None:
            # NOTE: only the rollout's initial memory travels (not every step's): the learner
            # replays the rollout from it.
            initial_carry = jax.tree.map(lambda x: np.asarray(x)[None], initial_carry)
            trajectory = RecurrentTrajectory(initial_carry, trajectory)
        rollout = Rollout(
            trajectory=trajectory,
            episode_return=np.concatenate(episode_returns),
            params_version=version,
        )
        if not pipeline.put(rollout):
            return
    env.close()


def evaluate(*args: Any, **kwargs: Any) -> np.ndarray:
    """The returns of `evaluate_episodes` (same arguments)."""
    return evaluate_episodes(*args, **kwargs)[0]


def evaluate_episodes(
    cfg: DictConfig,
    act: Callable,
    params: Any,
    device: Any,
    num_episodes: int,
    seed: int,
    init_carry: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of `num_episodes` whole episodes (one per environment), on the host.

    Returns are the environments' episode metrics, so an Atari game counts its unclipped
    score over all its lives. A recurrent policy (`init_carry` set) starts from its initial
    memory and carries it step by step, reset where training resets it (after `last`).
    """
    env = make_host_envs(cfg.env, num_episodes, seed)
    timestep = env.reset()
    returns = np.zeros(num_episodes, np.float32)
    lengths = np.zeros(num_episodes, np.int32)
    finished = np.zeros(num_episodes, bool)
    key = jax.random.PRNGKey(seed)
    carry = None if init_carry is None else jax.device_put(init_carry(num_episodes), device)
    reset = np.ones(num_episodes, bool)
    for _ in range(int(cfg.arch.eval_step_cap)):
        observation = jax.device_put(timestep.observation, device)
        action, _, key, carry = act_step(act, params, observation, key, carry, reset)
        action = np.asarray(action)
        timestep = env.step(action)
        reset = timestep.last
        metrics = timestep.episode_metrics
        newly = metrics.is_terminal_step & ~finished
        returns[newly] = metrics.episode_return[newly]
        lengths[newly] = metrics.episode_length[newly]
        finished |= newly
        if finished.all():
            break
    else:
        # Cut by the step cap: unfinished episodes count what they scored so far.
        returns[~finished] = env.running_return()[~finished]
        lengths[~finished] = env.running_length()[~finished]
    env.close()
    return returns, lengths


def _episode_metrics(returns: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
    """What an evaluation logs, as Anakin logs it: per-episode returns and lengths, and summaries."""
    return {
        "episode_return": returns,
        "episode_length": lengths,
        **{f"episode_return_{k}": v for k, v in describe(returns).items()},
        "episode_length_mean": float(np.mean(lengths)),
    }


def _restore(cfg: DictConfig, sizes: SebulbaSizes, system: SebulbaSystem, best: dict) -> tuple:
    """(params, opt_state, learn_key, updates done) from `logger.checkpointing.load_path`."""
    ckpt_cfg = cfg.logger.checkpointing
    # Parameters, optimiser state and learner key resume exactly; host environments cannot be
    # saved, so they start new episodes (a resumed run is not bit-identical).
    like = {"params": system.params, "opt_state": system.opt_state, "learn_key": system.learn_key}
    restored = restore(ckpt_cfg.load_path, ckpt_cfg.load_step, like, best["params"])
    best["params"], best["return"] = restored.best_params, float(restored.meta["best_return"])
    start_update = int(restored.meta["updates_done"])
    require(
        int(restored.meta["timesteps"]) == start_update * sizes.steps_per_update
        and start_update <= sizes.num_updates,
        f"logger.checkpointing.load_path={ckpt_cfg.load_path}: the checkpoint is from update "
        f"{start_update} at step {restored.meta['timesteps']}, which does not fit this run "
        f"({sizes.num_updates} updates of {sizes.steps_per_update} steps); resume with the "
        "system.rollout_length, arch.total_num_envs and arch.total_timesteps it was saved with.",
    )
    print(f"Resumed from {ckpt_cfg.load_path} after update {start_update}.", flush=True)
    state = restored.learner_state
    best["run_name"] = restored.meta.get("run_name")  # None for checkpoints from before it was kept
    return state["params"], state["opt_state"], jnp.asarray(state["learn_key"]), start_update


def run_experiment(cfg: DictConfig, learner_setup: SetupFn) -> float:
    """Run one experiment and return its evaluation metric (see `_run_experiment`).

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


def _run_experiment(cfg: DictConfig, learner_setup: SetupFn) -> float:
    """Train with actor threads and a learner; returns the (absolute) evaluation metric."""
    compilation_cache.enable(cfg.arch.get("compilation_cache_dir"))  # before anything compiles
    validate_system(cfg.system)
    devices = jax.devices()
    sizes = sebulba_sizes(cfg.arch, int(cfg.system.rollout_length), list(range(len(devices))))
    validate_logger_config(cfg)
    ckpt_cfg = cfg.logger.checkpointing
    require(
        not ckpt_cfg.load_model or ckpt_cfg.load_path is not None,
        "logger.checkpointing.load_model=True needs logger.checkpointing.load_path=<dir>.",
    )
    print(f"Stoix Sebulba {cfg.system.system_name} on {cfg.env.env_name}/{cfg.env.scenario.name}")
    print(sizes.describe(), flush=True)
    if sizes.total_timesteps != sizes.requested_timesteps:
        print(f"WARNING: this run takes exactly {sizes.total_timesteps} environment steps.", flush=True)

    probe = make_host_envs(cfg.env, 1, 0)
    env_label = f"env={cfg.env.env_name}/{cfg.env.scenario.task_name}"
    action_spec, dummy = specs_of(probe, env_label)
    probe.close()
    check_torsos_fit(cfg.network, dummy.agent_view.shape[1:], env_label)
    system = learner_setup(cfg, sizes, action_spec, dummy, jax.random.PRNGKey(int(cfg.arch.seed)))
    params, opt_state, learn_key = system.params, system.opt_state, system.learn_key
    best = {"return": -np.inf, "params": jax.device_get(params), "last": float("nan")}
    start_update = 0
    if ckpt_cfg.load_model:
        params, opt_state, learn_key, start_update = _restore(cfg, sizes, system, best)

    learner_devices = [devices[i] for i in cfg.arch.learner.device_ids]
    update = jax.pmap(system.update, axis_name="device", devices=learner_devices)
    # One copy per learner device, placed by a pmap over the same axis name so that it is laid
    # out exactly like the update's outputs (otherwise the second update compiles again).
    place = jax.pmap(lambda tree: tree, axis_name="device", devices=learner_devices)

    def replicate(tree: Any) -> Any:
        return place(jax.tree.map(lambda x: np.stack([np.asarray(x)] * len(learner_devices)), tree))

    params_r, opt_state_r = replicate(params), replicate(opt_state)
    eval_device = devices[int(cfg.arch.evaluator_device_id)]

    # A resumed run is the same run: same name, so its JSON file goes on (steps numbered on).
    run_name = best.pop("run_name", None)
    if ckpt_cfg.load_model and run_name is None:
        print(
            "WARNING: the checkpoint does not name its run; this run logs under a new name, so "
            "its JSON file and the original's hold the same seed.",
            flush=True,
        )
    logger = StoixLogger(cfg, run_name, start_update // sizes.num_updates_per_eval if run_name else 0)
    checkpointer: Checkpointer | None = None
    if ckpt_cfg.save_model:
        save_dir = ckpt_cfg.save_dir or Path(cfg.logger.base_exp_path) / "checkpoints" / logger.run_name
        checkpointer = Checkpointer(Path(save_dir), int(ckpt_cfg.max_to_keep))
        print(f"Checkpoints: {checkpointer.directory}", flush=True)
    lifetime = Lifetime()
    params_server = ParamsServer(lifetime)
    pipelines = [Pipeline(int(cfg.arch.pipeline_size), lifetime) for _ in range(sizes.num_actor_threads)]
    params_server.publish(jax.device_get(params))
    actor_devices = [
        devices[i] for i in cfg.arch.actor.device_ids for _ in range(int(cfg.arch.actor.actor_per_device))
    ]
    threads = [
        start_thread(
            f"actor-{i}",
            functools.partial(
                actor_thread,
                i,
                device,
                cfg,
                sizes,
                system,
                params_server,
                pipelines[i],
                lifetime,
                sizes.num_updates - start_update,
            ),
            lifetime,
        )
        for i, device in enumerate(actor_devices)
    ]

    def _evaluate(params_host: Any, step: int) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_episodes(
            cfg,
            system.act_eval,
            jax.device_put(params_host, eval_device),
            eval_device,
            int(cfg.arch.num_eval_episodes),
            env_seed(cfg, 1_000_000 + step),
            system.init_carry,
        )

    def _save(step: int, updates_done: int, state: Any) -> None:
        meta = {
            "updates_done": updates_done,
            "timesteps": step,
            "best_return": float(best["return"]),
            "run_name": logger.run_name,
        }
        checkpointer.save(updates_done // sizes.num_updates_per_eval, state, best["params"], meta)

    def _log_evaluations(results: list) -> None:
        for step, params_host, (returns, lengths) in results:
            best["last"] = float(np.mean(returns))
            if best["last"] > best["return"]:
                best["return"], best["params"] = best["last"], params_host
            logger.log(_episode_metrics(returns, lengths), step, LogEvent.EVAL)
            if step in pending_saves:
                _save(step, *pending_saves.pop(step))

    pending_saves: dict[int, tuple[int, Any]] = {}  # step -> (updates done, learner state)
    evaluator = AsyncEvaluator(_evaluate, lifetime)
    start, episode_returns = time.perf_counter(), []
    first_update_done = training_done = start
    print(f"{len(threads)} actor thread(s) started; waiting for their first rollouts...", flush=True)
    try:
        for update_index in range(start_update, sizes.num_updates):
            rollouts = []
            for pipeline in pipelines:
                rollout = None
                while rollout is None:
                    lifetime.raise_if_failed()
                    if lifetime.should_stop():
                        raise RuntimeError("the run stopped before training finished")
                    rollout = pipeline.get(timeout_s=1.0)
                rollouts.append(rollout)
            episode_returns.extend(np.concatenate([r.episode_return for r in rollouts]).tolist())
            # LEARN: environments are split over the learner devices.
            traj = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *[r.trajectory for r in rollouts])
            traj = jax.tree.map(lambda x: np.stack(np.split(x, sizes.num_learner_devices, axis=1)), traj)
            learn_key, step_key = jax.random.split(learn_key)
            keys = jax.random.split(step_key, sizes.num_learner_devices)
            if update_index == start_update:
                # PROGRESS: a large network's first update (compile + run) can take minutes on a
                # CPU; say so rather than look hung.
                first_update_start = time.perf_counter()
                print(
                    f"first rollouts in after {time.perf_counter() - start:.1f} s; compiling and "
                    f"running the learner step (update 1 of {sizes.num_updates - start_update})...",
                    flush=True,
                )
            params_r, opt_state_r, metrics = update(params_r, opt_state_r, traj, keys)
            params_host = jax.device_get(jax.tree.map(lambda x: x[0], params_r))
            # NaN GUARD: checked after every update, before the actors get the parameters,
            # so nothing acts on, evaluates or checkpoints a diverged network.
            bad = first_non_finite(jax.device_get(metrics), params_host)
            if bad is not None:
                _log_evaluations(evaluator.finish(float(cfg.arch.eval_timeout_s)))  # earlier rounds' saves
                if checkpointer is not None:
                    checkpointer.close()
                logger.stop(complete=False)  # the JSON keeps its unfinished (.partial) name
                round_index = update_index // sizes.num_updates_per_eval + 1
                raise TrainingDivergedError(
                    f"training diverged in round {round_index} of {sizes.num_evaluation} (update "
                    f"{update_index + 1}): {bad} is NaN or infinite, so the run stopped without a "
                    "RESULT. Try a lower learning rate, a tighter system.max_grad_norm, or check "
                    "the environment's rewards."
                )
            params_server.publish(params_host)
            if update_index == start_update:
                first_update_done = time.perf_counter()  # compilation is behind us
                took = first_update_done - first_update_start
                print(f"update 1 took {took:.1f} s (compilation included).", flush=True)

            is_eval = (update_index + 1) % sizes.num_updates_per_eval == 0
            if is_eval or update_index == start_update:  # the first update shows that it trains
                steps = (update_index + 1) * sizes.steps_per_update
                elapsed = time.perf_counter() - start
                act_metrics = {f"episode_return_{k}": v for k, v in describe(episode_returns).items()}
                run_so_far = steps - start_update * sizes.steps_per_update
                act_metrics.update(
                    steps_per_second=run_so_far / elapsed, progress=steps / sizes.total_timesteps
                )
                logger.log(act_metrics, steps, LogEvent.ACT)
                logger.log(
                    {k: float(np.mean(v)) for k, v in jax.device_get(metrics).items()}, steps, LogEvent.TRAIN
                )
                episode_returns = []
            if is_eval and checkpointer is not None:
                # Saved when this evaluation's result arrives, so the checkpoint's best
                # parameters include it (evaluations run behind the learner). Registered
                # before the evaluation is submitted: it may finish at once.
                pending_saves[steps] = (
                    update_index + 1,
                    jax.device_get(
                        {
                            "params": jax.tree.map(lambda x: x[0], params_r),
                            "opt_state": jax.tree.map(lambda x: x[0], opt_state_r),
                            "learn_key": learn_key,
                        }
                    ),
                )
            if is_eval:
                evaluator.submit(params_host, steps)
            _log_evaluations(evaluator.ready())
        training_done = time.perf_counter()
        _log_evaluations(evaluator.finish(float(cfg.arch.eval_timeout_s)))
        if evaluator.outstanding:
            print(
                f"WARNING: {evaluator.outstanding} evaluation(s) did not finish within "
                f"arch.eval_timeout_s={cfg.arch.eval_timeout_s} s each and were dropped; the final "
                "metric is the last finished evaluation's.",
                flush=True,
            )
            for step, (updates_done, state) in sorted(pending_saves.items()):
                _save(step, updates_done, state)
    except Exception as error:
        # A failure after an evaluation round was submitted must not lose that round's
        # checkpoint: wait briefly for the evaluations already running, then save every
        # pending round (with the best parameters known) before the error goes on.
        if checkpointer is not None and pending_saves and not isinstance(error, TrainingDivergedError):
            try:
                if not lifetime.should_stop():
                    _log_evaluations(evaluator.finish(min(float(cfg.arch.eval_timeout_s), 30.0)))
            finally:
                for step, (updates_done, state) in sorted(pending_saves.items()):
                    _save(step, updates_done, state)
                checkpointer.close()
                checkpointer = None
        raise
    finally:
        lifetime.stop()
        for pipeline in pipelines:
            pipeline.drain()
        stuck = join_all([*threads, evaluator.thread], float(cfg.arch.join_timeout_s))
        if stuck:
            print(f"WARNING: threads still running at shutdown: {stuck}", flush=True)
    lifetime.raise_if_failed()
    if checkpointer is not None:
        checkpointer.close()
    final, source = best["last"], "final evaluation"
    if cfg.arch.absolute_metric:
        returns, lengths = evaluate_episodes(
            cfg,
            system.act_eval,
            jax.device_put(best["params"], eval_device),
            eval_device,
            10 * int(cfg.arch.num_eval_episodes),
            env_seed(cfg, 2**31 - 1),
            system.init_carry,
        )
        final, source = (
            float(np.mean(returns)),
            f"absolute metric: best parameters over {returns.size} episodes",
        )
        logger.log(
            _episode_metrics(returns, lengths),
            sizes.total_timesteps,
            LogEvent.ABSOLUTE,
        )
    logger.stop()
    run_steps = (sizes.num_updates - start_update) * sizes.steps_per_update
    sps = run_steps / (time.perf_counter() - start)
    after_first = "" if run_steps else "; nothing left to train"
    if sizes.num_updates - start_update > 1:
        steady = (run_steps - sizes.steps_per_update) / (training_done - first_update_done)
        after_first = f"; {steady:,.0f} steps/s training after the first update (compile excluded)"
    speed = f"{sps:,.0f} steps/s (Sebulba, evaluation included)" if run_steps else "resumed run"
    print(
        f"RESULT {cfg.system.system_name} {cfg.env.scenario.name} seed={cfg.arch.seed}: "
        f"episode_return={final:.2f} ({source}); {sizes.total_timesteps} steps, {speed}{after_first}",
        flush=True,
    )
    return final


def run_from_cli(cfg: DictConfig, learner_setup: SetupFn) -> float:
    """`run_experiment` for a script: a bad config ends the process with one line, not a
    traceback; Ctrl-C stops every thread first, then exits with one line."""
    return exit_on_config_error(run_experiment, cfg, learner_setup)
