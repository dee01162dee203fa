"""Every environment config of the JAX suites trains with ff_ppo (ff_ppo_continuous on Brax)
for a tiny budget: the real entry point (learner and one evaluation), a finite
result and parameters that moved. The adapters' semantics are tested in test_env_suites.py,
test_env_zoo.py and test_env_zoo_b.py; this file checks each config against the system."""

from pathlib import Path

import pytest
from conftest import tiny_for, train_tiny

from stoix.utils.config import CONFIG_DIR

SUITES = ("jumanji", "brax", "xminigrid", "navix", "craftax", "popgym_arcade")
CONFIGS = sorted(
    f"{suite}/{p.stem}" for suite in SUITES for p in (Path(CONFIG_DIR) / "env" / suite).glob("*.yaml")
)
# What a config needs beyond its suite's system: a head for several sub-actions, a torso for images.
EXTRA = {
    "jumanji/connector": ["network=mlp_multidiscrete"],
    "jumanji/robot_warehouse": ["network=mlp_multidiscrete"],
    "craftax/classic_pixels": ["network=cnn"],
}


def test_every_suite_config_is_listed():
    assert len(CONFIGS) >= 24, CONFIGS
    assert FAST < set(CONFIGS), FAST - set(CONFIGS)


# `make test` runs the configs that take 8-20 s each here (pytest -n 2 on 2 CPU cores,
# --durations): Jumanji's tasks, XLand-MiniGrid and Navix. The others take 22-118 s each,
# mostly compiling the suite's step into the learner and again into the evaluator (Brax 29-63 s,
# Craftax symbolic 36 s and pixels 71 s, POPGym Arcade 22-118 s), 870 s of CPU for all 24
# together: they run in `make test-slow`, which keeps `make test` near its 15 minutes.
FAST = {
    "jumanji/connector",
    "jumanji/game_2048",
    "jumanji/maze",
    "jumanji/robot_warehouse",
    "jumanji/snake",
    "jumanji/sokoban",
    "navix/doorkey_5x5",
    "navix/empty_5x5",
    "xminigrid/empty_6x6",
    "xminigrid/xland_r1_9x9",
}


@pytest.mark.parametrize(
    "env", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CONFIGS]
)
def test_every_suite_config_trains_for_a_tiny_budget(env, tmp_path):
    system = "ff_ppo_continuous" if env.startswith("brax/") else "ff_ppo"
    overrides = [
        *tiny_for(system),
        f"env={env}",
        # One evaluation of 2 episodes cut at 16 steps: the evaluator compiles and runs, and
        # the time goes to compiling the environment into the learner.
        "arch.num_evaluation=1",
        "arch.num_eval_episodes=2",
        "arch.eval_step_cap=16",
        "arch.absolute_metric=false",
        f"logger.base_exp_path={tmp_path}",
        *EXTRA.get(env, []),
    ]
    train_tiny(system, overrides)
