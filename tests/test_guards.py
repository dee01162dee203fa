"""Runs that go wrong stop with one line: a diverged run (NaN/inf) writes no RESULT and no
checkpoint after the failure; a checkpoint from a differently sized network is refused, with
the first differing leaf named, before "Resumed"."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_script

from stoix.architectures.anakin import run_experiment
from stoix.utils.config import StoixConfigError, TrainingDivergedError, compose_config
from stoix.utils.finite import first_non_finite

PPO = "stoix/systems/ppo/anakin/ff_ppo.py"


def test_first_non_finite_names_losses_first_then_the_parameter_path():
    finite = {"w": jnp.ones(3), "count": jnp.asarray(3, jnp.int32)}
    assert first_non_finite({"entropy": np.ones(2), "value_loss": np.ones(2)}, finite) is None
    metrics = {"entropy": np.asarray([np.nan]), "value_loss": np.asarray([np.inf])}
    assert first_non_finite(metrics, finite) == "the training metric value_loss"
    broken = {"a": jnp.ones(2), "b": {"kernel": jnp.asarray([1.0, np.nan])}}
    assert first_non_finite({"loss": np.zeros(1)}, broken) == "the parameter params['b']['kernel']"


def test_a_diverged_run_exits_with_one_line_and_no_result(tmp_path, tiny):
    proc = run_script(PPO, [*tiny, "system.learning_rate=1e30"], cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training diverged in round 1 of 2"), lines
    assert "NaN or infinite" in lines[0] and "Traceback" not in proc.stderr
    assert "RESULT" not in proc.stdout


def test_divergence_after_a_checkpoint_keeps_it_and_saves_nothing_later(tmp_path, tiny):
    """The parameters turn NaN in a later round: every round before it stays on disk, nothing
    from that round or after."""
    from stoix.systems.ppo.anakin import ff_ppo

    updates_per_round = 2

    def poisoned_setup(env, config, sizes, key):
        setup = ff_ppo.learner_setup(env, config, sizes, key)

        def learn(state):
            out = setup.learn(state)
            count = jax.tree.leaves(out.learner_state.opt_state)[
                0
            ]  # clip_by_global_norm has none; adam's count
            rounds_done = jnp.max(count) // updates_per_round
            poison = jnp.where(rounds_done >= 3, jnp.nan, 1.0)
            params = jax.tree.map(lambda x: x * poison, out.learner_state.params)
            return out._replace(learner_state=out.learner_state._replace(params=params))

        return setup._replace(learn=jax.jit(learn))

    cfg = compose_config(
        "default/anakin/default_ff_ppo",
        [
            *tiny,
            "arch.num_evaluation=4",
            f"arch.total_timesteps={4 * updates_per_round * 16 * 4}",
            "logger.checkpointing.save_model=true",
            "logger.checkpointing.max_to_keep=10",
            f"logger.checkpointing.save_dir={tmp_path / 'ck'}",
        ],
    )
    with pytest.raises(TrainingDivergedError) as failure:
        run_experiment(cfg, poisoned_setup)
    message = str(failure.value)
    diverged = int(re.search(r"diverged in round (\d+) of 4", message).group(1))
    assert diverged >= 2 and "the parameter params" in message
    assert f"the last finite checkpoint is round {diverged - 1}" in message
    saved = sorted(int(p.name) for p in (tmp_path / "ck").iterdir() if p.name.isdigit())
    assert saved == list(range(1, diverged))  # nothing from the diverged round or after


def test_resuming_a_checkpoint_of_other_network_sizes_names_the_leaf_before_resuming(tmp_path, tiny, capsys):
    from stoix.systems.ppo.anakin import ff_ppo

    def cfg(layers, *extra):
        return compose_config(
            "default/anakin/default_ff_ppo",
            [
                *tiny,
                f"network.actor_network.pre_torso.layer_sizes={layers}",
                f"network.critic_network.pre_torso.layer_sizes={layers}",
                *extra,
            ],
        )

    run_experiment(
        cfg(
            "[16,16]",
            "logger.checkpointing.save_model=true",
            f"logger.checkpointing.save_dir={tmp_path / 'ck'}",
        ),
        ff_ppo.learner_setup,
    )
    resume = ["logger.checkpointing.load_model=true", f"logger.checkpointing.load_path={tmp_path / 'ck'}"]
    with pytest.raises(
        StoixConfigError,
        match=r"does not fit this run: learner_state\.params.*16, 2\] in the checkpoint but float32\[1, 1, 32, 2\] in this run",
    ):
        run_experiment(cfg("[32,32]", *resume), ff_ppo.learner_setup)
    assert "Resumed from" not in capsys.readouterr().out
    # The same sizes resume.
    run_experiment(cfg("[16,16]", *resume), ff_ppo.learner_setup)


@pytest.mark.parametrize(
    "key, value",
    [("logger.base_exp_path", "/proc/stoix_results"), ("logger.checkpointing.save_dir", "/proc/stoix_ckpt")],
)
def test_a_results_directory_that_cannot_be_created_is_one_line(key, value, tmp_path, tiny):
    overrides = [*tiny, f"{key}={value}"]
    if "checkpointing" in key:
        overrides.append("logger.checkpointing.save_model=true")
    proc = run_script(PPO, overrides, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {key}={value}: the directory cannot be created"
    ), lines


def test_a_diverged_sebulba_run_stops_before_the_actors_use_the_parameters(tmp_path):
    from test_sebulba_ppo import SCRIPT, TINY

    overrides = [*TINY, f"logger.base_exp_path={tmp_path}", "system.learning_rate=1e30"]
    proc = run_script(SCRIPT, overrides, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training diverged in round 1 of 2 (update 1)"), (
        lines
    )
    assert "RESULT" not in proc.stdout


def test_a_sebulba_checkpoint_of_other_network_sizes_is_one_line_before_resuming(tmp_path):
    from test_sebulba_ppo import SCRIPT, TINY

    def layers(sizes):
        return [
            f"network.actor_network.pre_torso.layer_sizes={sizes}",
            f"network.critic_network.pre_torso.layer_sizes={sizes}",
        ]

    base = [*TINY, f"logger.base_exp_path={tmp_path}"]
    saved = run_script(
        SCRIPT,
        [
            *base,
            *layers("[16,16]"),
            "logger.checkpointing.save_model=true",
            f"logger.checkpointing.save_dir={tmp_path / 'ck'}",
        ],
        cwd=tmp_path,
    )
    assert saved.returncode == 0, saved.stderr[-2000:]
    resume = ["logger.checkpointing.load_model=true", f"logger.checkpointing.load_path={tmp_path / 'ck'}"]
    proc = run_script(SCRIPT, [*base, *layers("[32,32]"), *resume], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not fit this run: learner_state[" in lines[0], lines
    assert "float32[16, 2] in the checkpoint but float32[32, 2] in this run" in lines[0]
    assert "Resumed from" not in proc.stdout
