"""Advantage-Weighted Regression for box action spaces on Anakin (defaults: gymnax Pendulum-v1).

The algorithm is ff_awr.py's, unchanged; this entry passes `continuous=True`, so it refuses a
discrete environment in one line and keeps every action it takes and stores a sliver inside
the bounds (ff_awr.BOUND_MARGIN), where the tanh-squashed Gaussian of `network=mlp_continuous`
gives it a finite log-probability. Copy ff_awr.py, not this file, to change the algorithm.

    python stoix/systems/awr/ff_awr_continuous.py env=gymnax/mountain_car_continuous
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import chex
import hydra
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.base_types import SystemSetup
from stoix.systems.awr import ff_awr
from stoix.utils.config import CONFIG_DIR, check_overrides
from stoix.utils.sizes import AnakinSizes


def learner_setup(env: object, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    return ff_awr.learner_setup(env, config, sizes, key, continuous=True)


@hydra.main(
    config_path=CONFIG_DIR,
    config_name="default/anakin/default_ff_awr_continuous",
    version_base="1.3",
)
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_awr_continuous")
    hydra_entry_point()
