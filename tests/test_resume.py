"""Exact resume for every Anakin learner: training 2N rounds straight leaves the same state,
bit for bit, as training N, stopping (the round-N checkpoint) and resuming for N more, replay
buffers, priorities, target networks, duals and loss state included.

One system per learner implementation (loss variants share their template's state: ff_ppo
itself is tests/test_checkpointing.py's, ff_td3 tests/test_ddpg.py's)."""

import importlib

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, anakin_script, tiny_for

from stoix.architectures.anakin import run_experiment
from stoix.utils.config import compose_config

# The fast suite resumes ff_ppo (tests/test_checkpointing.py) and TD3 with its replay buffer
# (tests/test_ddpg.py); `make test-slow` resumes every other Anakin system here.
slow = pytest.mark.slow
SYSTEMS = [
    pytest.param("ff_ppo_penalty", marks=slow),  # PPO's loss state (the KL coefficient)
    pytest.param("rec_ppo", marks=slow),  # recurrent memory and episode-start flags
    pytest.param("ff_rainbow", marks=slow),  # prioritised replay: priorities, noisy nets
    pytest.param("ff_mpo", marks=slow),  # target networks and duals
    pytest.param("ff_vmpo_continuous", marks=slow),  # on-policy duals, observation statistics
    pytest.param("ff_reinforce_continuous", marks=slow),
    pytest.param("ff_dqn", marks=slow),
    pytest.param("ff_c51", marks=slow),
    pytest.param("ff_pqn", marks=slow),
    pytest.param("ff_d4pg", marks=slow),
    pytest.param("ff_sac", marks=slow),
    pytest.param("ff_awr", marks=slow),
    pytest.param("ff_mpo_continuous", marks=slow),
    pytest.param("ff_az", marks=slow),  # replay of search targets
    pytest.param("rec_r2d2", marks=slow),  # sequence replay with stored memory, priorities
    # The rest of the Anakin systems (ff_ppo: tests/test_checkpointing.py; ff_td3:
    # tests/test_ddpg.py), so that every one is resumed exactly somewhere.
    *[
        pytest.param(name, marks=slow)
        for name in (
            "ff_ppo_continuous",
            "ff_ppo_penalty_continuous",
            "ff_dpo",
            "ff_dpo_continuous",
            "ff_reinforce",
            "ff_ddqn",
            "ff_mdqn",
            "ff_dqn_reg",
            "ff_qr_dqn",
            "ff_ddpg",
            "ff_awr_continuous",
            "ff_vmpo",
            "ff_sampled_az",
            "ff_mz",
            "ff_sampled_mz",
            "ff_spo",
            "ff_spo_continuous",
        )
    ],
]


def _final_state(directory, step):
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.restore((directory / str(step) / "learner_state").resolve())
    return jax.tree_util.tree_flatten_with_path(tree)[0]


@pytest.mark.parametrize("system", SYSTEMS)
def test_resume_is_exact(system, tmp_path):
    path = anakin_script(system)
    module = importlib.import_module(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    rounds = 4

    def run(save_dir, *load):
        base = compose_config(f"default/anakin/default_{system}", tiny_for(system))
        steps_per_update = int(base.system.rollout_length) * int(base.arch.total_num_envs)
        cfg = compose_config(
            f"default/anakin/default_{system}",
            [
                *tiny_for(system),
                f"logger.base_exp_path={tmp_path}",
                f"arch.num_evaluation={rounds}",
                f"arch.total_timesteps={rounds * 2 * steps_per_update}",  # 2 updates a round
                "arch.absolute_metric=false",  # the final evaluation's return is compared instead
                "logger.checkpointing.save_model=true",
                "logger.checkpointing.max_to_keep=10",
                f"logger.checkpointing.save_dir={save_dir}",
                *load,
            ],
        )
        return run_experiment(cfg, module.learner_setup)

    straight = run(tmp_path / "straight")
    resumed = run(
        tmp_path / "resumed",
        "logger.checkpointing.load_model=true",
        f"logger.checkpointing.load_path={tmp_path / 'straight'}",
        f"logger.checkpointing.load_step={rounds // 2}",
    )
    a, b = _final_state(tmp_path / "straight", rounds), _final_state(tmp_path / "resumed", rounds)
    assert [jax.tree_util.keystr(p) for p, _ in a] == [jax.tree_util.keystr(p) for p, _ in b]
    for (leaf_path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(
            x, y, err_msg=f"{system}: leaf {jax.tree_util.keystr(leaf_path)} differs"
        )
    middle = _final_state(tmp_path / "straight", rounds // 2)
    assert any(not np.array_equal(x, y) for (_, x), (_, y) in zip(middle, a)), "the second half trained"
    assert straight == resumed
