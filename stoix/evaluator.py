"""Compiled evaluation: run a fixed number of whole episodes and report their returns.

Each device runs its share of the episodes as a batch of environments, one episode each,
inside a `while_loop` that stops when every episode has ended or after `step_cap` steps, so an
environment that never terminates cannot hang a run; episodes cut by the cap are counted and
reported by the experiment loop.
"""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp


class EvalResult(NamedTuple):
    episode_return: chex.Array  # (devices, episodes per device)
    episode_length: chex.Array
    num_capped: chex.Array  # (devices,) episodes still running when the cap was reached


class _EvalCarry(NamedTuple):
    env_state: Any
    timestep: Any
    key: chex.PRNGKey
    episode_return: chex.Array
    episode_length: chex.Array
    finished: chex.Array
    step: chex.Array
    actor_carry: Any = None  # a recurrent policy's memory, carried through each episode


def make_evaluator(
    eval_env: Any,
    act_fn: Callable[[Any, Any, chex.PRNGKey, bool], chex.Array],
    episodes_per_device: int,
    greedy: bool,
    step_cap: int,
    init_carry: Callable[[int], Any] | None = None,
    uses_env_state: bool = False,
) -> Callable[[Any, chex.PRNGKey], EvalResult]:
    """A pmapped `evaluate(eval_params, key) -> EvalResult`.

    With `init_carry` (a recurrent policy, see ActorApply) each episode starts from
    `init_carry(episodes)` and `act` returns `(action, carry)`. With `uses_env_state` `act`
    also gets `env_state=`, the batch of environment states (a search agent's model).

    `eval_params` has leaves shaped (devices, update_batch, ...); the first update-batch
    replica is evaluated (all replicas hold the same parameters). `key` is one key shared by
    all devices; each device folds in its index.
    """
    act = partial(act_fn, greedy=greedy)

    def _evaluate(eval_params: Any, key: chex.PRNGKey) -> EvalResult:
        params = jax.tree.map(lambda x: x[0], eval_params)
        key = jax.random.fold_in(key, jax.lax.axis_index("device"))
        key, reset_key = jax.random.split(key)
        env_state, timestep = jax.vmap(eval_env.reset)(jax.random.split(reset_key, episodes_per_device))
        zeros = jnp.zeros((episodes_per_device,), jnp.float32)
        carry = _EvalCarry(
            env_state=env_state,
            timestep=timestep,
            key=key,
            episode_return=zeros,
            episode_length=jnp.zeros((episodes_per_device,), jnp.int32),
            finished=jnp.zeros((episodes_per_device,), bool),
            step=jnp.zeros((), jnp.int32),
            actor_carry=None if init_carry is None else init_carry(episodes_per_device),
        )

        def _cond(carry: _EvalCarry) -> chex.Array:
            return jnp.logical_and(~jnp.all(carry.finished), carry.step < step_cap)

        def _body(carry: _EvalCarry) -> _EvalCarry:
            key, policy_key = jax.random.split(carry.key)
            actor_carry = carry.actor_carry
            policy = partial(act, env_state=carry.env_state) if uses_env_state else act
            if init_carry is None:
                action = policy(params, carry.timestep.observation, policy_key)
            else:
                # Each environment runs one episode, so the memory is never reset here.
                observation = carry.timestep.observation
                action, actor_carry = policy(params, observation, policy_key, carry=actor_carry)
            env_state, timestep = jax.vmap(eval_env.step)(carry.env_state, action)
            running = ~carry.finished
            return _EvalCarry(
                env_state=env_state,
                timestep=timestep,
                key=key,
                episode_return=carry.episode_return + jnp.where(running, timestep.reward, 0.0),
                episode_length=carry.episode_length + running.astype(jnp.int32),
                finished=jnp.logical_or(carry.finished, timestep.last()),
                step=carry.step + 1,
                actor_carry=actor_carry,
            )

        carry = jax.lax.while_loop(_cond, _body, carry)
        return EvalResult(
            episode_return=carry.episode_return,
            episode_length=carry.episode_length,
            num_capped=jnp.sum(~carry.finished),
        )

    return jax.pmap(_evaluate, axis_name="device", in_axes=(0, None))
