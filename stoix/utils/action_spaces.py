"""Which systems fit which action spaces, checked before anything compiles."""

from typing import Any

import numpy as np

from stoix.utils.config import require

DISCRETE_SYSTEMS = (
    "ff_dqn (and its variants ff_ddqn, ff_mdqn, ff_dqn_reg, ff_c51, ff_qr_dqn), ff_rainbow, ff_pqn, ff_ppo, "
    "ff_mpo, ff_vmpo, ff_awr, ff_az, ff_mz, ff_spo, rec_r2d2"
)
CONTINUOUS_SYSTEMS = (
    "ff_ddpg, ff_td3, ff_d4pg, ff_sac, ff_ppo_continuous, ff_mpo_continuous, ff_vmpo_continuous, "
    "ff_awr_continuous, ff_sampled_az, ff_sampled_mz, ff_spo_continuous"
)


def require_action_space(action_spec: Any, system_name: str, continuous: bool) -> None:
    """A one-line StoixConfigError naming the systems that fit, when `system_name` (which
    takes continuous actions if `continuous`, else discrete ones) meets the other kind."""
    discrete = hasattr(action_spec, "num_values")
    if continuous:
        require(
            not discrete,
            f"{system_name} needs continuous (box) actions, but this environment's are discrete; "
            f"use one of {DISCRETE_SYSTEMS} for it.",
        )
    else:
        require(
            discrete,
            f"{system_name} needs discrete actions, but this environment's are continuous (a box); "
            f"use one of {CONTINUOUS_SYSTEMS} for it.",
        )
        sub_actions = np.shape(action_spec.num_values)
        require(
            sub_actions == (),
            f"{system_name} takes one discrete action per step, but this environment's actions are "
            f"multi-discrete ({sub_actions[0] if sub_actions else 0} sub-actions); use ff_ppo or rec_ppo "
            "with network=mlp_multidiscrete for it.",
        )
