"""V-MPO for box action spaces on Anakin (defaults: gymnax Pendulum-v1).

The algorithm is ff_vmpo.py's, unchanged: its learner is generic in the policy distribution.
What differs is configuration: `network=mlp_continuous` puts a Gaussian squashed into the
environment's action bounds on the actor (Pendulum's [-2, 2]), so every sampled and greedy
action is legal, and for that Gaussian ff_vmpo.py bounds the KL of its mean and of its scale
separately (system.epsilon_alpha, system.epsilon_alpha_std). Copy ff_vmpo.py, not this
file, to change the algorithm.

    python stoix/systems/mpo/ff_vmpo_continuous.py env=gymnax/mountain_car_continuous
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import hydra
from omegaconf import DictConfig

from stoix.architectures.anakin import run_from_cli
from stoix.systems.mpo.ff_vmpo import learner_setup
from stoix.utils.config import CONFIG_DIR, check_overrides


@hydra.main(
    config_path=CONFIG_DIR,
    config_name="default/anakin/default_ff_vmpo_continuous",
    version_base="1.3",
)
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_vmpo_continuous")
    hydra_entry_point()
