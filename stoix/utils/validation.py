"""Types and ranges of the system keys, checked before anything compiles.

One declared table instead of a `require` per key per file: every system config key listed
here is checked wherever it appears (a key a system does not have is skipped), and a wrong
type or an out-of-range value is one line naming the key, the value and what is allowed.
A new system with new numeric keys adds them here; `tests/test_validation.py` feeds every
entry config's listed keys a wrong type and an out-of-range value.
"""

import math
from typing import Any, NamedTuple

from stoix.utils.config import StoixConfigError


class Range(NamedTuple):
    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the value must be > low (not >=)
    high_open: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return kind


PROBABILITY = Range(float, 0.0, 1.0)
POSITIVE = Range(float, 0.0, low_open=True)
NON_NEGATIVE = Range(float, 0.0)
AT_LEAST_ONE = Range(int, 1)

SYSTEM_KEYS: dict[str, Range] = {
    "rollout_length": AT_LEAST_ONE,
    "epochs": AT_LEAST_ONE,
    "num_minibatches": AT_LEAST_ONE,
    "n_step": AT_LEAST_ONE,
    "sample_sequence_length": AT_LEAST_ONE,
    "total_buffer_size": AT_LEAST_ONE,
    "total_batch_size": AT_LEAST_ONE,
    "warmup_steps": Range(int, 0),
    "target_update_period": AT_LEAST_ONE,
    "actor_update_period": AT_LEAST_ONE,
    "epsilon_decay_steps": AT_LEAST_ONE,
    "gamma": PROBABILITY,
    "gae_lambda": PROBABILITY,
    "trace_lambda": PROBABILITY,
    "td_lambda": PROBABILITY,
    "q_lambda": PROBABILITY,
    "epsilon_start": PROBABILITY,
    "epsilon_finish": PROBABILITY,
    "evaluation_epsilon": PROBABILITY,
    "priority_exponent": NON_NEGATIVE,
    "importance_sampling_exponent": PROBABILITY,
    "tau": Range(float, 0.0, 1.0, low_open=True),
    "learning_rate": POSITIVE,
    "actor_learning_rate": POSITIVE,
    "critic_learning_rate": POSITIVE,
    "alpha_learning_rate": POSITIVE,
    "dual_learning_rate": POSITIVE,
    "max_grad_norm": POSITIVE,
    "adam_eps": POSITIVE,
    "clip_eps": POSITIVE,
    "clip_rho": POSITIVE,
    "clip_pg_rho": POSITIVE,
    "huber_delta": POSITIVE,
    "kl_target": POSITIVE,
    "init_kl_coef": POSITIVE,
    "init_alpha": POSITIVE,
    "init_temperature": POSITIVE,
    "init_alpha_std": POSITIVE,
    "num_samples": AT_LEAST_ONE,
    "epsilon_temperature": POSITIVE,
    "epsilon_alpha": POSITIVE,
    "epsilon_alpha_std": POSITIVE,
    "top_k_fraction": Range(float, 0.0, 1.0, low_open=True),
    "alpha": POSITIVE,
    "beta": POSITIVE,
    "max_weight": Range(float, 1.0),  # AWR: the cap on exp(A / beta)
    "entropy_temperature": POSITIVE,
    "ent_coef": NON_NEGATIVE,
    "vf_coef": NON_NEGATIVE,
    "exploration_noise": NON_NEGATIVE,
    "policy_noise": NON_NEGATIVE,
    "noise_clip": NON_NEGATIVE,
    "target_entropy_scale": NON_NEGATIVE,
    "munchausen_coefficient": NON_NEGATIVE,
    "regularizer_coefficient": NON_NEGATIVE,
    "num_simulations": AT_LEAST_ONE,  # ff_az: simulations per search
    "num_eval_simulations": AT_LEAST_ONE,
    "max_num_considered_actions": AT_LEAST_ONE,
    "num_sampled_actions": Range(int, 2),  # ff_sampled_az: K arms per search node
    "sampling_temperature": POSITIVE,
    "gumbel_scale": NON_NEGATIVE,
    "dirichlet_alpha": POSITIVE,
    "dirichlet_fraction": PROBABILITY,
    "num_particles": AT_LEAST_ONE,  # ff_spo: SMC particles per plan
    "search_depth": AT_LEAST_ONE,
    "resample_period": AT_LEAST_ONE,
    "temperature": POSITIVE,
    "epsilon_kl": POSITIVE,
    "burn_in_length": Range(int, 0),  # rec_r2d2: steps that only warm a replayed memory up
    "sequence_period": AT_LEAST_ONE,
    "priority_eta": PROBABILITY,
    "value_rescaling_eps": NON_NEGATIVE,
    "unroll_steps": AT_LEAST_ONE,  # ff_mz: actions the learned model is unrolled through
    "support_max": POSITIVE,  # ff_mz: half-width of the two-hot value/reward support
    "support_bins": Range(int, 2),
}


def _as_number(key: str, value: Any, expected: Range) -> float:
    """The value as a number of the expected kind, or a StoixConfigError naming the key."""
    wrong = StoixConfigError(f"{key}={value!r} must be {expected.describe()}.")
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 1e-3 (no dot) as a string
            except ValueError:
                raise wrong from None
        else:
            raise wrong
    if not math.isfinite(float(value)):
        raise wrong
    if expected.kind is int and float(value) != int(value):
        raise wrong
    return float(value)


def validate_system(system_cfg: Any) -> None:
    """Check every listed key the system config has; raise StoixConfigError on the first bad one."""
    for name, expected in SYSTEM_KEYS.items():
        if name not in system_cfg:
            continue
        key = f"system.{name}"
        value = _as_number(key, system_cfg[name], expected)
        too_low = expected.low is not None and (
            value <= expected.low if expected.low_open else value < expected.low
        )
        too_high = expected.high is not None and (
            value >= expected.high if expected.high_open else value > expected.high
        )
        if too_low or too_high:
            raise StoixConfigError(f"{key}={system_cfg[name]!r} must be {expected.describe()}.")
