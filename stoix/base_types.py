"""Types shared by every system: observations, episode metrics and what a learner returns.

Algorithm-specific types (a PPO transition, a DQN learner state) live in the system file.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import chex

Params = Any
OptState = Any
Metrics = dict[str, chex.Array]


class ActorCriticParams(NamedTuple):
    """Parameters of a separate actor and critic (PPO, IMPALA, ...)."""

    actor: Params
    critic: Params


class Observation(NamedTuple):
    """What every network sees.

    `agent_view` is the environment's observation, `action_mask` marks legal actions (all ones
    when the environment has none) and `step_count` is the step within the episode.
    """

    agent_view: chex.Array
    action_mask: chex.Array
    step_count: chex.Array


class EpisodeMetrics(NamedTuple):
    """Running return and length; `is_terminal_step` marks the step an episode finished on.

    Only entries where `is_terminal_step` is true describe whole episodes.
    """

    episode_return: chex.Array
    episode_length: chex.Array
    is_terminal_step: chex.Array


class ExperimentOutput(NamedTuple):
    """What one compiled call of a learner returns."""

    learner_state: Any
    episode_metrics: EpisodeMetrics
    train_metrics: Metrics


class ActorApply(NamedTuple):
    """A policy a system hands to the evaluator.

    `act(eval_params, observation, key, greedy)` returns an action for one batch of
    observations; `eval_params(learner_state)` picks from the replicated learner state what
    `act` needs (one replica of the actor parameters and any observation statistics).

    A recurrent policy also gives `init_carry(batch_size)`, the memory an episode starts
    from; its `act(eval_params, observation, key, greedy, carry)` then returns
    `(action, carry)` and the evaluator carries it through each episode.

    With `uses_env_state` the evaluator also passes the batch of evaluation-environment
    states, `act(..., env_state=...)`: a search agent (ff_az.py) plans from a copy of them.
    """

    act: Callable[..., Any]
    eval_params: Callable[[Any], Any]
    init_carry: Callable[[int], Any] | None = None
    uses_env_state: bool = False


class SystemSetup(NamedTuple):
    """Everything the shared experiment loop needs from a system file."""

    learn: Callable[[Any], ExperimentOutput]  # pmapped; learner_state -> ExperimentOutput
    learner_state: Any  # leaves shaped (devices, update_batch, ...)
    actor: ActorApply
