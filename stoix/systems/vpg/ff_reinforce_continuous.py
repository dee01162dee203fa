"""REINFORCE for box action spaces on Anakin (defaults: gymnax Pendulum-v1).

The algorithm is ff_reinforce.py's, unchanged: its learner is generic in the policy distribution.
What differs is configuration: `network=mlp_gaussian` puts an unsquashed Gaussian on the
actor; the environment clips each sample into the action bounds (Pendulum's [-2, 2]) and the
gradient uses the sample's own log-probability. A tanh-squashed Gaussian (network=mlp_continuous)
lets plain policy-gradient steps push the mean into saturation, where every action is the
bound and the gradient carries no signal. Copy ff_reinforce.py, not this file, to change the
algorithm.

    python stoix/systems/vpg/ff_reinforce_continuous.py env=gymnax/mountain_car_continuous
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import hydra
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.systems.vpg.ff_reinforce import learner_setup
from stoix.utils.config import CONFIG_DIR, check_overrides


@hydra.main(
    config_path=CONFIG_DIR,
    config_name="default/anakin/default_ff_reinforce_continuous",
    version_base="1.3",
)
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_reinforce_continuous")
    hydra_entry_point()
