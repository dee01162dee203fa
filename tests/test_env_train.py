"""Every environment config of the JAX suites trains with ff_ppo (ff_ppo_continuous on Brax and
MuJoCo Playground) for a tiny budget: the real entry point (learner and one evaluation), a
finite result and parameters that moved. The adapters' semantics are tested in test_env_suites.py,
test_env_zoo.py and test_env_zoo_b.py; this file checks each config against the system."""

import re
from pathlib import Path

import pytest
from conftest import tiny_for, train_tiny

from stoix.utils.config import CONFIG_DIR, REPO_ROOT

SUITES = ("jumanji", "brax", "playground", "xminigrid", "navix", "craftax", "kinetix", "popgym_arcade")
CONFIGS = sorted(
    f"{suite}/{p.stem}" for suite in SUITES for p in (Path(CONFIG_DIR) / "env" / suite).glob("*.yaml")
)
# What a config needs beyond its suite's system: a head for several sub-actions, a torso for images.
EXTRA = {
    "jumanji/connector": ["network=mlp_multidiscrete"],
    "jumanji/robot_warehouse": ["network=mlp_multidiscrete"],
    "craftax/classic_pixels": ["network=cnn"],
}


def test_every_suite_config_is_listed_and_the_readme_gives_its_command():
    assert len(CONFIGS) >= 28, CONFIGS
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [c for c in CONFIGS if not re.search(rf"`python stoix/systems/\S+\.py env={c}[ `]", readme)]
    assert not missing, f"README gives no command for {missing}"


# All of them run in `make test`: 5-35 s each on 2 cores (pytest -n 2, --durations; Craftax's
# pixels, whose first run in a fresh install also builds Craftax's texture cache, and Brax's
# humanoid the slowest), nearly all of it compiling the suite's step into the learner and again
# into the evaluator.
@pytest.mark.parametrize("env", CONFIGS)
def test_every_suite_config_trains_for_a_tiny_budget(env, tmp_path):
    continuous = env.startswith(("brax/", "playground/")) or env == "kinetix/h2_one_wheel_car"
    system = "ff_ppo_continuous" if continuous else "ff_ppo"
    overrides = [
        *tiny_for(system),
        f"env={env}",
        # One update of 4 envs x 4 steps and one evaluation of 2 episodes cut at 4 steps: the
        # learner and the evaluator compile and run, and almost all the time goes to compiling.
        "system.rollout_length=4",
        "arch.total_timesteps=16",
        "arch.num_evaluation=1",
        "arch.num_eval_episodes=2",
        "arch.eval_step_cap=4",
        "arch.absolute_metric=false",
        f"logger.base_exp_path={tmp_path}",
        *EXTRA.get(env, []),
    ]
    train_tiny(system, overrides)
