"""Learning tests: each system reaches a stated return within a stated budget on this CPU.

Run with `make test-learning` (pytest -m learning). One fixed seed, greedy evaluation; the
number checked is the absolute metric (the best parameters re-evaluated over 10x episodes).
A random policy scores about 22 on CartPole-v1 and about -1200 on Pendulum-v1.
"""

import pytest

from stoix.utils.config import compose_config
from stoix.utils.experiment import run_experiment

pytestmark = pytest.mark.learning

# The exact commands the README's results table quotes.
CASES = {
    # python stoix/systems/ppo/anakin/ff_ppo.py arch.seed=42
    "ff_ppo_cartpole": ("default/anakin/default_ff_ppo", ["arch.total_timesteps=500000"], 475.0),
    # python stoix/systems/ppo/anakin/ff_ppo_continuous.py arch.seed=42
    "ff_ppo_continuous_pendulum": (
        "default/anakin/default_ff_ppo_continuous",
        ["arch.total_timesteps=500000"],
        -400.0,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_system_learns(case, tmp_path):
    from stoix.systems.ppo.anakin import ff_ppo

    config_name, overrides, threshold = CASES[case]
    overrides = [
        *overrides,
        "arch.seed=42",
        "arch.evaluation_greedy=true",
        "arch.absolute_metric=true",
        f"logger.base_exp_path={tmp_path}",
    ]
    cfg = compose_config(config_name, overrides)
    assert cfg.arch.total_timesteps <= 500_000
    metric = run_experiment(cfg, ff_ppo.learner_setup)
    assert metric >= threshold, f"{case}: absolute episode_return {metric:.1f} < {threshold}"
