"""The timestep arithmetic and its errors."""

import pytest
from omegaconf import OmegaConf

from stoix.utils.config import StoixConfigError
from stoix.utils.sizes import anakin_sizes


def arch(**kwargs):
    base = dict(
        total_num_envs=8,
        total_timesteps=100_000,
        num_updates=None,
        update_batch_size=1,
        num_evaluation=10,
        num_eval_episodes=8,
    )
    base.update(kwargs)
    return OmegaConf.create(base)


def test_derived_sizes_and_exact_step_count():
    sizes = anakin_sizes(arch(update_batch_size=2), rollout_length=16, num_devices=2)
    assert sizes.num_envs == 2  # 8 envs over 2 devices x 2 update batches
    assert sizes.steps_per_update == 16 * 8
    assert sizes.num_updates_per_eval == (100_000 // 128) // 10 == 78
    assert sizes.total_timesteps == 78 * 10 * 128 == 99_840
    assert sizes.eval_episodes_per_device == 4
    (warning,) = sizes.warnings()
    assert "99840" in warning and "arch.total_timesteps=100000" in warning
    # Any multiple of 10 rounds x 128 steps is exact, not only multiples of a round's 9984.
    assert "nearest it: 99840 or 101120 (any multiple of 10 rounds x 128 steps = 1280)" in warning
    for budget in (99_840, 101_120):
        exact = anakin_sizes(arch(update_batch_size=2, total_timesteps=budget), 16, 2)
        assert exact.total_timesteps == budget and exact.warnings() == []


def test_exact_budget_has_no_warning():
    sizes = anakin_sizes(arch(total_timesteps=128 * 10 * 3), rollout_length=16, num_devices=1)
    assert sizes.total_timesteps == 3840 and sizes.warnings() == []


def test_num_updates_overrides_budget():
    sizes = anakin_sizes(arch(num_updates=20, num_evaluation=4), rollout_length=16, num_devices=1)
    assert sizes.num_updates == 20 and sizes.num_updates_per_eval == 5
    assert sizes.total_timesteps == 20 * 128


def test_scientific_notation_budget_is_accepted():
    sizes = anakin_sizes(arch(total_timesteps="5e5"), rollout_length=128, num_devices=1)
    assert sizes.requested_timesteps == 500_000


@pytest.mark.parametrize(
    "kwargs, devices, message",
    [
        (
            dict(total_num_envs=10, update_batch_size=2),
            2,
            r"arch.total_num_envs=10 must be divisible by devices\*arch.update_batch_size=4",
        ),
        (dict(total_timesteps=1000), 1, r"arch.total_timesteps=1000 is too small"),
        (
            dict(num_eval_episodes=5),
            2,
            r"arch.num_eval_episodes=5 must be divisible by the number of devices=2",
        ),
        (dict(num_evaluation=0), 1, r"arch.num_evaluation=0 must be >= 1"),
        (dict(update_batch_size=0), 1, r"arch.update_batch_size=0 must be >= 1"),
    ],
)
def test_impossible_splits_name_the_key_value_and_fix(kwargs, devices, message):
    with pytest.raises(StoixConfigError, match=message):
        anakin_sizes(arch(**kwargs), rollout_length=16, num_devices=devices)


def test_replica_axes_skip_axes_of_size_one():
    assert anakin_sizes(arch(), rollout_length=16, num_devices=1).replica_axes == ()
    assert anakin_sizes(arch(update_batch_size=2), rollout_length=16, num_devices=1).replica_axes == (
        "batch",
    )
    assert anakin_sizes(arch(update_batch_size=2), rollout_length=16, num_devices=2).replica_axes == (
        "batch",
        "device",
    )
