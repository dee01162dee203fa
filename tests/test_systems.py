"""Every entry config composes and trains in-process for a tiny budget; bad input fails early."""

import copy
import importlib
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import anakin_script, tiny_for
from omegaconf import OmegaConf

from stoix.architectures.anakin import run_experiment, run_summary
from stoix.utils.config import CONFIG_DIR, REPO_ROOT, StoixConfigError, compose_config

ENTRY_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "default" / "anakin").glob("*.yaml"))


def system_module(system_name: str):
    path = anakin_script(system_name)
    return importlib.import_module(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))


def test_there_are_entry_configs():
    assert {"default_ff_ppo", "default_ff_ppo_continuous"} <= set(ENTRY_CONFIGS)


@pytest.mark.parametrize("entry", ENTRY_CONFIGS)
def test_entry_config_trains_for_a_tiny_budget_without_mutating_config(entry, tmp_path):
    # The absolute metric's evaluator is one more compile per system; tests/test_plot.py and
    # tests/test_results.py run it.
    overrides = [
        *tiny_for(entry.removeprefix("default_")),
        "arch.absolute_metric=false",
        f"logger.base_exp_path={tmp_path}",
    ]
    cfg = compose_config(f"default/anakin/{entry}", overrides)
    assert cfg.system.system_name == entry.removeprefix("default_")
    before = copy.deepcopy(OmegaConf.to_container(cfg))
    module = system_module(cfg.system.system_name)
    summary = run_summary(cfg, module.learner_setup)
    assert isinstance(summary.metric, float) and np.isfinite(summary.metric)
    assert OmegaConf.to_container(cfg) == before, "running must not change the config"
    # It trained: the policy's parameters moved, and every loss it logged is a finite number.
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(summary.initial_params), jax.tree.leaves(summary.final_params))
    ]
    assert moved and any(moved), "no parameter changed in training"
    assert summary.train_metrics and all(np.isfinite(v) for v in summary.train_metrics.values()), (
        summary.train_metrics
    )


def test_update_batch_observation_norm_and_sampled_evaluation(tiny):
    from stoix.systems.ppo.anakin import ff_ppo

    cfg = compose_config(
        "default/anakin/default_ff_ppo",
        [
            *tiny,
            "arch.update_batch_size=2",
            "system.normalize_observations=true",
            "arch.evaluation_greedy=false",
            "arch.absolute_metric=false",
            "env=gymnax/acrobot",
        ],
    )
    metric = run_experiment(cfg, ff_ppo.learner_setup)
    assert -500.0 <= metric <= 0.0  # Acrobot returns lie in [-500, 0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["system.num_minibatches=3"], r"system.num_minibatches=3 must divide the per-slot batch"),
        (["arch.total_num_envs=6", "arch.update_batch_size=4"], r"arch.total_num_envs=6 must be divisible"),
        (["arch.total_timesteps=100"], r"arch.total_timesteps=100 is too small"),
        (["arch.eval_step_cap=0"], r"arch.eval_step_cap=0 must be >= 1"),
        (["env=gymnax/pendulum"], r"network=mlp_continuous"),
        (["logger.use_wandb=true"], r"logger.kwargs.project"),
        (["logger.checkpointing.load_model=true"], r"load_path"),
    ],
)
def test_bad_config_is_a_clear_error_before_training(overrides, message, tiny):
    from stoix.systems.ppo.anakin import ff_ppo

    cfg = compose_config("default/anakin/default_ff_ppo", [*tiny, *overrides])
    with pytest.raises(StoixConfigError, match=message):
        run_experiment(cfg, ff_ppo.learner_setup)


def test_mistyped_key_fails_in_struct_mode():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="totl_num_envs"):
        compose_config("default/anakin/default_ff_ppo", ["arch.totl_num_envs=8"])
