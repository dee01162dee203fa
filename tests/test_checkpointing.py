"""Checkpoint round trip, clear errors for bad checkpoints, and exact resume."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY

from stoix.architectures.anakin import run_experiment
from stoix.utils.checkpointing import Checkpointer, restore
from stoix.utils.config import StoixConfigError, compose_config


def state_like():
    return {
        "params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "key": np.asarray(jax.random.PRNGKey(3)),
        "count": np.asarray(7, np.int32),
        "obs_norm": None,
    }


def test_round_trip_keeps_every_leaf_and_the_record(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", max_to_keep=2)
    for round_index in (1, 2, 3):
        state = jax.tree.map(lambda x: x + round_index, state_like())
        ckpt.save(round_index, state, {"w": np.ones(2, np.float32)}, {"rounds_done": round_index})
    ckpt.close()
    kept = sorted(int(p.name) for p in (tmp_path / "ck").iterdir() if p.name.isdigit())
    assert kept == [2, 3], "only the last max_to_keep checkpoints stay"
    restored = restore(str(tmp_path / "ck"), None, state_like(), {"w": np.zeros(2, np.float32)})
    assert restored.meta == {"rounds_done": 3}
    np.testing.assert_array_equal(restored.learner_state["params"]["w"], state_like()["params"]["w"] + 3)
    np.testing.assert_array_equal(restored.learner_state["key"], state_like()["key"] + 3)
    assert restored.learner_state["obs_norm"] is None
    older = restore(str(tmp_path / "ck"), 2, state_like(), {"w": np.zeros(2, np.float32)})
    assert older.meta == {"rounds_done": 2}


def test_missing_empty_and_unknown_step_are_clear_errors(tmp_path):
    like = (state_like(), {"w": np.zeros(2, np.float32)})
    with pytest.raises(StoixConfigError, match="no such directory"):
        restore(str(tmp_path / "nope"), None, *like)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoixConfigError, match="holds no Stoix checkpoint"):
        restore(str(tmp_path / "empty"), None, *like)
    ckpt = Checkpointer(tmp_path / "ck", max_to_keep=1)
    ckpt.save(1, state_like(), like[1], {"rounds_done": 1})
    ckpt.close()
    with pytest.raises(StoixConfigError, match=r"load_step=5 is not in .*available: \[1\]"):
        restore(str(tmp_path / "ck"), 5, *like)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    like = (state_like(), {"w": np.zeros(2, np.float32)})
    ckpt = Checkpointer(tmp_path / "ck", max_to_keep=1)
    ckpt.save(1, *like, {"rounds_done": 1})
    ckpt.close()
    for path in (tmp_path / "ck" / "1" / "learner_state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")
    with pytest.raises(StoixConfigError, match="could not be read"):
        restore(str(tmp_path / "ck"), None, *like)


def test_mismatched_structure_is_a_clear_error(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", max_to_keep=1)
    ckpt.save(1, state_like(), {"w": np.zeros(2, np.float32)}, {"rounds_done": 1})
    ckpt.close()
    other = {"params": {"w": np.zeros((5, 5), np.float32)}}
    with pytest.raises(StoixConfigError, match="could not be read"):
        restore(str(tmp_path / "ck"), None, other, {"w": np.zeros(2, np.float32)})


def _final_state(directory: Path, step: int):
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.restore((directory / str(step) / "learner_state").resolve())
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_resume_is_exact(tmp_path, tiny):
    """Training 2N rounds straight gives the same state as stopping after N and resuming.

    The stop point is the straight run's own round-N checkpoint (every checkpoint is kept), so
    both halves share one config, as a preempted run and its restart do; the resumed run
    rebuilds everything else (compiled learner, evaluator, logger) from scratch.
    """
    from stoix.systems.ppo.anakin import ff_ppo

    rounds = 4
    overrides = [
        *tiny,
        f"arch.num_evaluation={rounds}",
        f"arch.total_timesteps={rounds * 2 * 16 * 4}",  # 2 updates of 16 steps x 4 envs a round
        "system.normalize_observations=true",
        "logger.checkpointing.save_model=true",
        "logger.checkpointing.max_to_keep=10",
    ]

    def run(save_dir, load_path=None, load_step=None):
        extra = [f"logger.checkpointing.save_dir={save_dir}"]
        if load_path:
            extra += [
                "logger.checkpointing.load_model=true",
                f"logger.checkpointing.load_path={load_path}",
                f"logger.checkpointing.load_step={load_step}",
            ]
        cfg = compose_config("default/anakin/default_ff_ppo", [*overrides, *extra])
        return run_experiment(cfg, ff_ppo.learner_setup)

    straight = run(tmp_path / "straight")
    resumed = run(tmp_path / "resumed", load_path=tmp_path / "straight", load_step=rounds // 2)
    resumed_steps = sorted(int(p.name) for p in (tmp_path / "resumed").iterdir() if p.name.isdigit())
    assert resumed_steps == [3, 4], "the resumed run starts after round N"
    a = _final_state(tmp_path / "straight", rounds)
    b = _final_state(tmp_path / "resumed", rounds)
    assert [path for path, _ in a] == [path for path, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y, err_msg=f"leaf {jax.tree_util.keystr(path)} differs")
    middle = _final_state(tmp_path / "straight", rounds // 2)
    changed = [not np.array_equal(x, y) for (_, x), (_, y) in zip(middle, a)]
    assert any(changed), "the second half must have trained"
    # The same best parameters, so the same absolute metric.
    assert straight == resumed


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """One tiny ff_ppo run's checkpoints (2 rounds), shared by the tests that only read them."""
    from stoix.systems.ppo.anakin import ff_ppo

    base = tmp_path_factory.mktemp("tiny_checkpoint")
    ckpt = base / "ck"
    saved = [
        *TINY,
        f"logger.base_exp_path={base}",
        "logger.checkpointing.save_model=true",
        f"logger.checkpointing.save_dir={ckpt}",
    ]
    run_experiment(compose_config("default/anakin/default_ff_ppo", saved), ff_ppo.learner_setup)
    return ckpt


@pytest.mark.parametrize(
    "changed, key",
    [
        ("arch.total_timesteps=2048", "arch.total_timesteps=1024 (this run: 2048)"),
        ("arch.num_evaluation=4", "arch.num_evaluation=2 (this run: 4)"),
        ("system.rollout_length=8", "system.rollout_length=16 (this run: 8)"),
    ],
)
def test_resuming_with_other_sizes_is_refused_with_the_keys_to_set(changed, key, tiny, tiny_checkpoint):
    """Another budget, round count or rollout length would silently change step counts and
    the learning-rate schedule under the resumed run (the learner state's shapes match)."""
    from stoix.systems.ppo.anakin import ff_ppo

    ckpt = tiny_checkpoint
    resume = [
        *tiny,
        "logger.checkpointing.load_model=true",
        f"logger.checkpointing.load_path={ckpt}",
        "logger.checkpointing.load_step=1",
        changed,
    ]
    with pytest.raises(StoixConfigError, match=re.escape(f"saved with {key}")):
        run_experiment(compose_config("default/anakin/default_ff_ppo", resume), ff_ppo.learner_setup)
