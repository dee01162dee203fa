"""PPO for box action spaces on Sebulba (defaults: gymnasium Pendulum-v1).

The algorithm is ff_ppo.py's beside it, unchanged: its actors and learner are generic in the
policy distribution, and the host environments clip box actions into their bounds (as
ClipAction does on Anakin). What differs is configuration, as between the Anakin
ff_ppo.py and ff_ppo_continuous.py: `network=mlp_continuous` puts a Gaussian squashed into the
environment's action bounds on the actor, with the continuous-control hyperparameters of
configs/system/ppo/ff_ppo_continuous.yaml. Copy ff_ppo.py, not this file, to change the
algorithm.

    python stoix/systems/ppo/sebulba/ff_ppo_continuous.py env=gymnasium/lunarlander_continuous
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import hydra
from omegaconf import DictConfig

from stoix.architectures.sebulba import run_from_cli
from stoix.systems.ppo.sebulba.ff_ppo import learner_setup
from stoix.utils.config import CONFIG_DIR, check_overrides


@hydra.main(
    config_path=CONFIG_DIR,
    config_name="default/sebulba/default_ff_ppo_continuous",
    version_base="1.3",
)
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/sebulba/default_ff_ppo_continuous")
    hydra_entry_point()
