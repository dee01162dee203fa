"""The timestep arithmetic of an Anakin run, computed once and validated before compiling.

A run steps `total_num_envs` environments split evenly over devices and update batches.
One update consumes `rollout_length * total_num_envs` environment steps; updates are grouped
into `num_evaluation` rounds of `num_updates_per_eval`, so the steps actually run may be fewer
than `arch.total_timesteps` (the run says so, with the exact count).
"""

import dataclasses
from typing import Any

from stoix.utils.config import check_divisible, require


@dataclasses.dataclass(frozen=True)
class AnakinSizes:
    num_devices: int
    update_batch_size: int
    total_num_envs: int
    num_envs: int  # environments per (device, update batch) slot
    rollout_length: int
    steps_per_update: int  # rollout_length * total_num_envs
    num_updates: int
    num_evaluation: int
    num_updates_per_eval: int
    steps_per_eval: int
    total_timesteps: int  # what will actually run
    requested_timesteps: int
    num_eval_episodes: int
    eval_episodes_per_device: int

    @property
    def replica_axes(self) -> tuple[str, ...]:
        """The mapped axes that hold more than one replica, innermost first.

        Averaging over an axis of size one is the identity, but on the CPU each collective
        still costs a synchronisation, so learners average over these axes only.
        """
        return tuple(
            name
            for name, size in (("batch", self.update_batch_size), ("device", self.num_devices))
            if size > 1
        )

    def warnings(self) -> list[str]:
        if self.total_timesteps == self.requested_timesteps:
            return []
        # Exact budgets: every round runs the same whole number of updates.
        quantum = self.num_evaluation * self.steps_per_update
        below = self.requested_timesteps // quantum * quantum
        nearest = " or ".join(str(b) for b in (below, below + quantum) if b > 0)
        return [
            f"arch.total_timesteps={self.requested_timesteps} is not a whole number of updates in "
            f"each of {self.num_evaluation} rounds; this run takes exactly {self.total_timesteps} "
            f"environment steps ({self.num_evaluation} rounds x {self.num_updates_per_eval} updates x "
            f"{self.steps_per_update} steps). The exact budgets nearest it: {nearest} (any multiple "
            f"of {self.num_evaluation} rounds x {self.steps_per_update} steps = {quantum})."
        ]

    def describe(self) -> str:
        rows = [
            ("devices x update batch", f"{self.num_devices} x {self.update_batch_size}"),
            ("envs per slot / total", f"{self.num_envs} / {self.total_num_envs}"),
            ("steps per update", f"{self.steps_per_update}"),
            ("updates (per evaluation)", f"{self.num_updates} ({self.num_updates_per_eval})"),
            ("evaluations x episodes", f"{self.num_evaluation} x {self.num_eval_episodes}"),
            ("environment steps", f"{self.total_timesteps}"),
        ]
        return "\n".join(f"  {name:<26}{value}" for name, value in rows)


def anakin_sizes(arch: Any, rollout_length: int, num_devices: int) -> AnakinSizes:
    """Derive and validate every size from `cfg.arch` (raises StoixConfigError)."""
    update_batch_size = int(arch.update_batch_size)
    require(update_batch_size >= 1, f"arch.update_batch_size={update_batch_size} must be >= 1.")
    require(rollout_length >= 1, f"system.rollout_length={rollout_length} must be >= 1.")
    total_num_envs = int(arch.total_num_envs)
    num_envs = check_divisible(
        "arch.total_num_envs",
        total_num_envs,
        num_devices * update_batch_size,
        "devices*arch.update_batch_size",
    )
    require(num_envs >= 1, f"arch.total_num_envs={total_num_envs} must be >= 1.")
    num_evaluation = int(arch.num_evaluation)
    require(num_evaluation >= 1, f"arch.num_evaluation={num_evaluation} must be >= 1.")
    steps_per_update = rollout_length * total_num_envs
    if arch.num_updates is not None:
        num_updates = int(arch.num_updates)
        requested = num_updates * steps_per_update
    else:
        requested = int(float(arch.total_timesteps))
        num_updates = requested // steps_per_update
    require(
        num_updates >= num_evaluation,
        f"arch.total_timesteps={requested} is too small: one update takes "
        f"system.rollout_length*arch.total_num_envs={steps_per_update} steps and "
        f"arch.num_evaluation={num_evaluation} rounds need at least {num_evaluation} updates. "
        f"Set arch.total_timesteps>={steps_per_update * num_evaluation} or lower "
        f"arch.num_evaluation.",
    )
    num_updates_per_eval = num_updates // num_evaluation
    num_eval_episodes = int(arch.num_eval_episodes)
    eval_episodes_per_device = check_divisible(
        "arch.num_eval_episodes", num_eval_episodes, num_devices, "the number of devices"
    )
    require(num_eval_episodes >= 1, f"arch.num_eval_episodes={num_eval_episodes} must be >= 1.")
    return AnakinSizes(
        num_devices=num_devices,
        update_batch_size=update_batch_size,
        total_num_envs=total_num_envs,
        num_envs=num_envs,
        rollout_length=rollout_length,
        steps_per_update=steps_per_update,
        num_updates=num_updates_per_eval * num_evaluation,
        num_evaluation=num_evaluation,
        num_updates_per_eval=num_updates_per_eval,
        steps_per_eval=num_updates_per_eval * steps_per_update,
        total_timesteps=num_updates_per_eval * num_evaluation * steps_per_update,
        requested_timesteps=requested,
        num_eval_episodes=num_eval_episodes,
        eval_episodes_per_device=eval_episodes_per_device,
    )


def per_slot(key: str, total: int, sizes: AnakinSizes) -> int:
    """A `total_` quantity (buffer size, batch size) split evenly over every learner slot."""
    return check_divisible(
        key, int(total), sizes.num_devices * sizes.update_batch_size, "devices*arch.update_batch_size"
    )


@dataclasses.dataclass(frozen=True)
class ReplaySizes:
    """Replay sizes of an off-policy system, per learner slot."""

    buffer_size: int  # transitions held per slot
    time_axis: int  # transitions held per environment
    batch_size: int  # transitions sampled per gradient step per slot
    warmup_per_env: int  # random-action steps per environment before learning
    sequence_length: int  # transitions per sampled sequence (n for n-step returns)


def replay_sizes(
    system: Any, sizes: AnakinSizes, sequence_length: int, sequence_key: str = "system.n_step"
) -> ReplaySizes:
    """Split `system.total_buffer_size`, `system.total_batch_size` and `system.warmup_steps`
    (totals) over learner slots and environments, and validate them (StoixConfigError).
    `sequence_key` names the key that set `sequence_length`, for the messages."""
    require(sequence_length >= 1, f"{sequence_key}={sequence_length} must be >= 1.")
    buffer_size = per_slot("system.total_buffer_size", system.total_buffer_size, sizes)
    batch_size = per_slot("system.total_batch_size", system.total_batch_size, sizes)
    warmup_per_env = check_divisible(
        "system.warmup_steps", int(system.warmup_steps), sizes.total_num_envs, "arch.total_num_envs"
    )
    require(
        warmup_per_env >= sequence_length,
        f"system.warmup_steps={system.warmup_steps} leaves {warmup_per_env} steps per environment; "
        f"sampling {sequence_length}-step sequences needs at least {sequence_key}*arch.total_num_envs="
        f"{sequence_length * sizes.total_num_envs}.",
    )
    require(
        buffer_size % sizes.num_envs == 0,
        f"system.total_buffer_size={system.total_buffer_size} must be divisible by "
        f"arch.total_num_envs={sizes.total_num_envs} (each environment keeps its own time axis).",
    )
    print(
        f"  replay: {buffer_size} transitions and batches of {batch_size} per slot; "
        f"{system.warmup_steps} warm-up steps before learning (not in the budget)",
        flush=True,
    )
    return ReplaySizes(
        buffer_size=buffer_size,
        time_axis=buffer_size // sizes.num_envs,
        batch_size=batch_size,
        warmup_per_env=warmup_per_env,
        sequence_length=sequence_length,
    )


@dataclasses.dataclass(frozen=True)
class SebulbaSizes:
    num_actor_threads: int
    envs_per_actor: int
    total_num_envs: int
    rollout_length: int
    steps_per_update: int
    num_updates: int
    num_evaluation: int
    num_updates_per_eval: int
    total_timesteps: int  # what will actually run
    requested_timesteps: int
    num_learner_devices: int

    @property
    def batch_per_learner_device(self) -> int:
        """Environment steps of one update that each learner device trains on."""
        return self.steps_per_update // self.num_learner_devices

    def describe(self) -> str:
        rows = [
            ("actor threads x envs", f"{self.num_actor_threads} x {self.envs_per_actor}"),
            ("learner devices", f"{self.num_learner_devices}"),
            ("steps per update", f"{self.steps_per_update}"),
            ("updates (per evaluation)", f"{self.num_updates} ({self.num_updates_per_eval})"),
            ("environment steps", f"{self.total_timesteps}"),
        ]
        return "\n".join(f"  {name:<26}{value}" for name, value in rows)


def sebulba_sizes(arch: Any, rollout_length: int, device_ids: list[int]) -> SebulbaSizes:
    """Validate Sebulba's device ids and split `arch.total_num_envs` over actor threads."""
    present = sorted(device_ids)
    for key, ids in (
        ("arch.actor.device_ids", list(arch.actor.device_ids)),
        ("arch.learner.device_ids", list(arch.learner.device_ids)),
    ):
        require(len(ids) >= 1, f"{key} must list at least one device id; devices present: {present}.")
        for device_id in ids:
            require(
                device_id in device_ids,
                f"{key} has {device_id}, which does not exist; devices present: {present}.",
            )
    require(
        int(arch.evaluator_device_id) in device_ids,
        f"arch.evaluator_device_id={arch.evaluator_device_id} does not exist; devices present: {present}.",
    )
    num_actor_threads = len(arch.actor.device_ids) * int(arch.actor.actor_per_device)
    require(
        num_actor_threads >= 1, f"arch.actor.actor_per_device={arch.actor.actor_per_device} must be >= 1."
    )
    total_num_envs = int(arch.total_num_envs)
    envs_per_actor = check_divisible(
        "arch.total_num_envs", total_num_envs, num_actor_threads, "actor threads (devices*actor_per_device)"
    )
    num_learner_devices = len(arch.learner.device_ids)
    check_divisible(
        "arch.total_num_envs", total_num_envs, num_learner_devices, "len(arch.learner.device_ids)"
    )
    require(envs_per_actor >= 1, f"arch.total_num_envs={total_num_envs} must be >= 1.")
    steps_per_update = rollout_length * total_num_envs
    requested = int(float(arch.total_timesteps))
    num_evaluation = int(arch.num_evaluation)
    num_updates = requested // steps_per_update
    require(
        num_evaluation >= 1 and num_updates >= num_evaluation,
        f"arch.total_timesteps={requested} is too small: one update takes "
        f"system.rollout_length*arch.total_num_envs={steps_per_update} steps and "
        f"arch.num_evaluation={num_evaluation} rounds need at least {num_evaluation} updates.",
    )
    per_eval = num_updates // num_evaluation
    return SebulbaSizes(
        num_actor_threads=num_actor_threads,
        envs_per_actor=envs_per_actor,
        total_num_envs=total_num_envs,
        rollout_length=rollout_length,
        steps_per_update=steps_per_update,
        num_updates=per_eval * num_evaluation,
        num_evaluation=num_evaluation,
        num_updates_per_eval=per_eval,
        total_timesteps=per_eval * num_evaluation * steps_per_update,
        requested_timesteps=requested,
        num_learner_devices=num_learner_devices,
    )
