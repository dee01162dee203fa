"""Sampled MuZero for continuous actions (Hubert et al., 2021, "Learning and Planning in Complex
Action Spaces", arXiv:2104.06303; MuZero: Schrittwieser et al., 2020, arXiv:1911.08265) on Anakin.

From ff_sampled_az.py; what changed: the search's model is learned instead of being the
environment. A representation network maps an observation to a latent state, a dynamics
network a (latent, continuous action) pair to the next latent and the reward, a prediction
network a latent to the tanh-squashed Gaussian policy and the value. Every search node samples
K actions (`system.num_sampled_actions`) from the policy and the tree searches over those K
arms with mctx; the prior over the arms is ff_sampled_az's sampling-corrected
(beta-hat / beta) * pi. The three networks learn together from replayed sequences unrolled
`system.unroll_steps` steps through the dynamics: the policy toward the search's weights over
each step's sampled actions, the value toward truncation-aware n-step returns and the reward
toward the observed rewards, value and reward as categorical (two-hot) predictions in
rlax.signed_hyperbolic space.

    python stoix/systems/search/ff_sampled_mz.py system.num_simulations=8 system.unroll_steps=5
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import distrax
import flashbax as fbx
import flax.linen as nn
import hydra
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.systems.ddpg.ff_ddpg import pmean_over
from stoix.systems.search.ff_az import SEARCH_METHODS, run_mctx
from stoix.systems.search.ff_sampled_az import (
    SearchConfig,
    chosen_action,
    sampled_prior_logits,
    sampling_distribution,
    search_config,
)
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import n_step_bootstrap
from stoix.utils.sizes import AnakinSizes, replay_sizes

DISCRETE_SEARCH_SYSTEMS = "ff_az, ff_mz, ff_spo"  # the searches for discrete actions


class Transition(NamedTuple):
    obs: Observation
    action: chex.Array  # the continuous action taken (one of the root's sampled actions)
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)
    sampled_actions: chex.Array  # (K, action_dim): the root's arms
    search_policy: chex.Array  # (K,): the search's weights over those arms, the policy target


class MZParams(NamedTuple):
    representation: Any
    dynamics: Any
    prediction: Any


class LearnerState(NamedTuple):
    params: MZParams
    opt_state: optax.OptState
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any


class _UpdateCarry(NamedTuple):
    params: MZParams
    opt_state: optax.OptState
    buffer_state: Any
    key: chex.PRNGKey


class Embedding(NamedTuple):
    """A search node: its latent state and the K actions its arms stand for."""

    latent: chex.Array  # (B, latent_dim)
    actions: chex.Array  # (B, K, action_dim)


class Support(NamedTuple):
    """A categorical head's atoms, linspace(v_min, v_max, num_atoms), in signed-hyperbolic space."""

    v_min: float
    v_max: float
    num_atoms: int


class Model(NamedTuple):
    """The learned model's three apply functions and its categorical supports."""

    represent: Callable  # (params, observation) -> latent (B, D)
    dynamics: Callable  # (params, latent, action) -> (next latent, reward logits)
    predict: Callable  # (params, latent) -> (policy distribution, value logits)
    value_support: Support
    reward_support: Support


class UnrollTargets(NamedTuple):
    """Targets and weights of the unrolled steps k = 0..U of sequences shaped (B, U + n)."""

    value: chex.Array  # (B, U+1): n-step returns; 0 past a termination (absorbing state)
    value_mask: chex.Array  # (B, U+1): 0 past a truncation (no data on how it went on)
    reward: chex.Array  # (B, U): the reward of transition k-1, predicted at step k
    reward_mask: chex.Array  # (B, U)
    policy_mask: chex.Array  # (B, U+1): 0 past any episode end


# THE NETWORKS: composed from `network.*` by Hydra; the latent size is the representation's.
def scale_latent(x: chex.Array) -> chex.Array:
    """MuZero's min-max normalisation of a latent state into [0, 1], per state: the dynamics'
    input and output then stay on one scale however many steps are unrolled."""
    low, high = jnp.min(x, axis=-1, keepdims=True), jnp.max(x, axis=-1, keepdims=True)
    return (x - low) / jnp.maximum(high - low, 1e-5)


class Representation(nn.Module):
    """observation -> torso -> latent state."""

    torso: nn.Module
    latent_dim: int

    @nn.compact
    def __call__(self, observation: Observation) -> chex.Array:
        return scale_latent(nn.Dense(self.latent_dim)(self.torso(observation.agent_view)))


class Dynamics(nn.Module):
    """(latent, action) -> torso -> (next latent, reward logits). The action enters rescaled
    from its box into [-1, 1]."""

    torso: nn.Module
    reward_head: nn.Module
    latent_dim: int
    minimum: Any
    maximum: Any

    @nn.compact
    def __call__(self, latent: chex.Array, action: chex.Array) -> tuple[chex.Array, chex.Array]:
        low, high = jnp.asarray(self.minimum, jnp.float32), jnp.asarray(self.maximum, jnp.float32)
        unit_action = 2.0 * (action - low) / (high - low) - 1.0
        x = self.torso(jnp.concatenate([latent, unit_action], axis=-1))
        return scale_latent(nn.Dense(self.latent_dim)(x)), self.reward_head(x).logits


class Prediction(nn.Module):
    """latent -> (policy distribution, value logits), each through its own torso."""

    policy_torso: nn.Module
    policy_head: nn.Module
    value_torso: nn.Module
    value_head: nn.Module

    @nn.compact
    def __call__(self, latent: chex.Array) -> tuple[distrax.Distribution, chex.Array]:
        pi = self.policy_head(self.policy_torso(latent), None)
        return pi, self.value_head(self.value_torso(latent)).logits


# ALGO LOGIC: categorical values, the search over sampled arms, the unrolled targets and loss.
def to_scalar(logits: chex.Array, support: Support) -> chex.Array:
    """A categorical prediction's expectation, mapped back from signed-hyperbolic space."""
    probs = jax.nn.softmax(logits, axis=-1)
    return rlax.signed_parabolic(rlax.transform_from_2hot(probs, *support))


def to_two_hot(x: chex.Array, support: Support) -> chex.Array:
    """A scalar target as two-hot probabilities on the support, in signed-hyperbolic space."""
    return rlax.transform_to_2hot(rlax.signed_hyperbolic(x), *support)


def value_of(params: MZParams, observation: Observation, *, model: Model) -> chex.Array:
    """V(observation) through representation and prediction."""
    _, logits = model.predict(params.prediction, model.represent(params.representation, observation))
    return to_scalar(logits, model.value_support)


def sample_arms(
    pi: distrax.Distribution, key: chex.PRNGKey, cfg: SearchConfig
) -> tuple[chex.Array, chex.Array]:
    """(K actions per state drawn from beta (B, K, action_dim), their sampling-corrected prior
    logits (beta-hat / beta) * pi (B, K)), as ff_sampled_az.sample_arms but from a policy
    already computed at a latent state."""
    beta = sampling_distribution(pi, cfg.sampling_temperature)
    actions = beta.sample(seed=key, sample_shape=cfg.num_sampled_actions)  # (K, B, action_dim)
    prior_logits = sampled_prior_logits(pi.log_prob(actions).T, beta.log_prob(actions).T)
    return jnp.swapaxes(actions, 0, 1), prior_logits


def make_recurrent_fn(model: Model, gamma: float, cfg: SearchConfig) -> Callable:
    """mctx's recurrent_fn: the arm's continuous action through the dynamics, the new latent
    scored by the prediction, and K fresh arms sampled there.

    The model predicts no terminations, so every step has discount gamma: a time-limit end is
    not a terminal (the value targets bootstrap it), and after a termination in the data the
    model is trained into an absorbing state of reward 0 and value 0 (`unroll_targets`)."""

    def recurrent_fn(
        params: MZParams, key: chex.PRNGKey, arm: chex.Array, embedding: Embedding
    ) -> tuple[mctx.RecurrentFnOutput, Embedding]:
        action = jnp.take_along_axis(embedding.actions, arm[:, None, None], axis=1)[:, 0]
        latent, reward_logits = model.dynamics(params.dynamics, embedding.latent, action)
        pi, value_logits = model.predict(params.prediction, latent)
        actions, prior_logits = sample_arms(pi, key, cfg)
        output = mctx.RecurrentFnOutput(
            reward=to_scalar(reward_logits, model.reward_support),
            discount=jnp.full_like(arm, gamma, dtype=jnp.float32),
            prior_logits=prior_logits,
            value=to_scalar(value_logits, model.value_support),
        )
        return output, Embedding(latent, actions)

    return recurrent_fn


def search(
    params: MZParams,
    key: chex.PRNGKey,
    observation: Observation,
    *,
    model: Model,
    recurrent_fn: Callable,
    cfg: SearchConfig,
) -> tuple[mctx.PolicyOutput, chex.Array]:
    """One batched search over K sampled actions in the learned model from the observations'
    latent states: (mctx's output, whose `action` is an arm and `action_weights` the policy
    target over the arms; the root's arms (B, K, action_dim))."""
    arms_key, search_key = jax.random.split(key)
    latent = model.represent(params.representation, observation)
    pi, value_logits = model.predict(params.prediction, latent)
    actions, prior_logits = sample_arms(pi, arms_key, cfg)
    root = mctx.RootFnOutput(
        prior_logits=prior_logits,
        value=to_scalar(value_logits, model.value_support),
        embedding=Embedding(latent, actions),
    )
    output = run_mctx(
        params, search_key, root, recurrent_fn, cfg, max_num_considered_actions=cfg.num_sampled_actions
    )
    return output, actions


def unroll_targets(
    params: MZParams, batch: Transition, *, value_fn: Callable, gamma: float, unroll_steps: int
) -> UnrollTargets:
    """Targets of the U + 1 unrolled steps of sequences shaped (B, U + n), without gradient.

    Step k's value target is the n-step return of transitions k..k+n-1, cut at the first
    episode end, plus gamma^(m+1) * V(true next observation) of the transition m it stopped at:
    a truncated episode bootstraps from its final observation, a terminated one does not.
    Step k >= 1 predicts transition k-1's reward. Past the sequence's first episode end the
    data belong to another episode: after a termination the model is in an absorbing state
    (value and reward 0, no policy target); after a truncation nothing is known, so only the
    truncated transition's own reward is learned there."""
    length = batch.reward.shape[1]
    n = length - unroll_steps
    windows = jnp.arange(unroll_steps + 1)[:, None] + jnp.arange(n)[None, :]  # (U+1, n)
    g, discount, index = n_step_bootstrap(
        batch.reward[:, windows], batch.discount[:, windows], batch.done[:, windows], gamma
    )  # each (B, U+1)
    bootstrap_at = jnp.arange(unroll_steps + 1)[None, :] + index
    rows = jnp.arange(batch.reward.shape[0])[:, None]
    next_obs = jax.tree.map(lambda x: x[rows, bootstrap_at], batch.next_obs)  # (B, U+1, ...)
    flat_obs = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), next_obs)
    values = value_fn(params, flat_obs).reshape(g.shape)
    n_step_value = g + discount * values

    # EPISODE ENDS INSIDE THE UNROLL: ended[:, k] is True if transitions 0..k-1 hold an end.
    done = batch.done[:, :unroll_steps].astype(jnp.float32)
    ended = jnp.concatenate([jnp.zeros_like(done[:, :1]), jnp.cumsum(done, axis=1)], axis=1) > 0
    first_end = jnp.argmax(batch.done[:, :unroll_steps], axis=1)  # valid where any ended
    terminated_first = (batch.discount[:, :unroll_steps][rows[:, 0], first_end] == 0.0)[:, None]
    absorbing = ended & terminated_first  # (B, U+1)
    cut = ended & ~terminated_first
    value = jnp.where(absorbing, 0.0, n_step_value)
    reward = jnp.where(absorbing[:, :-1], 0.0, batch.reward[:, :unroll_steps])
    return jax.lax.stop_gradient(
        UnrollTargets(
            value=value,
            value_mask=(~cut).astype(jnp.float32),
            reward=reward,
            reward_mask=(~cut[:, :-1]).astype(jnp.float32),
            policy_mask=(~ended).astype(jnp.float32),
        )
    )


def scale_gradient(x: chex.Array, scale: float) -> chex.Array:
    """x forward; its gradient times `scale` backward."""
    return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def muzero_loss(
    params: MZParams,
    batch: Transition,
    targets: UnrollTargets,
    *,
    model: Model,
    unroll_steps: int,
    vf_coef: float,
    ent_coef: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """MuZero's unrolled loss: from the first observation's latent, U dynamics steps along the
    actions taken, and at every step k the policy's cross-entropy toward the search's weights
    over step k's sampled actions (-sum_j w_j log pi(a_j)) minus `ent_coef` times its entropy,
    `vf_coef` times the value's and (k >= 1) the reward's two-hot cross-entropy. Steps k >= 1
    count 1/U each, and the gradient into each dynamics step's latent is halved (MuZero's
    scaling, so the unrolled steps do not outweigh the first). Masked terms count zero;
    everything is averaged over the batch."""
    latent = model.represent(params.representation, jax.tree.map(lambda x: x[:, 0], batch.obs))

    def _unroll(latent: chex.Array, action: chex.Array) -> tuple[chex.Array, tuple]:
        next_latent, reward_logits = model.dynamics(params.dynamics, latent, action)
        return scale_gradient(next_latent, 0.5), (next_latent, reward_logits)

    actions = jnp.swapaxes(batch.action[:, :unroll_steps], 0, 1)  # (U, B, action_dim)
    _, (latents, reward_logits) = jax.lax.scan(_unroll, latent, actions)
    latents = jnp.concatenate([latent[None], latents])  # (U+1, B, D)
    pi, value_logits = model.predict(params.prediction, latents)

    # THE POLICY: log pi_k(a_kj) of each step's own sampled actions, (U+1, B, K)
    sampled = jnp.transpose(batch.sampled_actions[:, : unroll_steps + 1], (2, 1, 0, 3))  # (K, U+1, B, A)
    log_pi = jnp.moveaxis(pi.log_prob(sampled), 0, -1)
    weights = jnp.swapaxes(batch.search_policy[:, : unroll_steps + 1], 0, 1)  # (U+1, B, K)
    cross_entropy = -jnp.sum(weights * log_pi, axis=-1)
    entropy = pi.entropy()
    value_ce = optax.softmax_cross_entropy(value_logits, to_two_hot(targets.value.T, model.value_support))
    reward_ce = optax.softmax_cross_entropy(reward_logits, to_two_hot(targets.reward.T, model.reward_support))

    step_weight = jnp.concatenate([jnp.ones(1), jnp.full(unroll_steps, 1.0 / unroll_steps)])[:, None]
    policy_mask, value_mask = targets.policy_mask.T * step_weight, targets.value_mask.T * step_weight
    reward_mask = targets.reward_mask.T / unroll_steps
    batch_size = latent.shape[0]
    policy_loss = jnp.sum(policy_mask * cross_entropy) / batch_size
    entropy_term = jnp.sum(policy_mask * entropy) / batch_size
    value_loss = jnp.sum(value_mask * value_ce) / batch_size
    reward_loss = jnp.sum(reward_mask * reward_ce) / batch_size
    loss = policy_loss - ent_coef * entropy_term + vf_coef * value_loss + reward_loss
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "reward_loss": reward_loss,
        "entropy": jnp.mean(entropy[0]),
        "mean_value": jnp.mean(to_scalar(value_logits[0], model.value_support)),
    }
    return loss, metrics


def get_learner_fn(
    env: Any,
    search_fn: Callable,
    optimizer: optax.GradientTransformation,
    buffer: Any,
    sizes: AnakinSizes,
    config: DictConfig,
    model: Model,
) -> tuple[Callable[[LearnerState], ExperimentOutput], Callable]:
    """(one slot's learner, its acting step): search and step for `rollout_length` steps,
    store them, take `epochs` gradient steps on replayed (unroll_steps + n_step)-sequences."""
    cfg = config.system
    unroll_steps = int(cfg.unroll_steps)
    targets_fn = functools.partial(
        unroll_targets,
        value_fn=functools.partial(value_of, model=model),
        gamma=float(cfg.gamma),
        unroll_steps=unroll_steps,
    )
    loss_fn = functools.partial(
        muzero_loss,
        model=model,
        unroll_steps=unroll_steps,
        vf_coef=float(cfg.vf_coef),
        ent_coef=float(cfg.ent_coef),
    )

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SEARCH: over K sampled actions in the learned model, from every observation's latent
        key, search_key = jax.random.split(state.key)
        obs = state.timestep.observation
        output, actions = search_fn(state.params, search_key, obs)
        action = chosen_action(output, actions)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = Transition(
            obs=obs,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
            sampled_actions=actions,
            search_policy=output.action_weights,
        )
        state = state._replace(key=key, env_state=env_state, timestep=timestep)
        return state, (transition, timestep.extras["episode_metrics"])

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key = jax.random.split(carry.key)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, U + n, ...)

        # CALCULATE TARGETS: n-step, truncation-aware, with the current network held fixed
        targets = targets_fn(carry.params, batch)

        # UPDATE THE MODEL: every replica takes the same step
        grads, metrics = jax.grad(loss_fn, has_aux=True)(carry.params, batch, targets)
        grads, metrics = pmean_over((grads, metrics), sizes.replica_axes)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        params = optax.apply_updates(carry.params, updates)
        return carry._replace(params=params, opt_state=opt_state, key=key), metrics

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT AND STORE: the buffer wants (num_envs, time, ...)
        state, (traj, episode_metrics) = jax.lax.scan(_env_step, state, None, sizes.rollout_length)
        buffer_state = buffer.add(state.buffer_state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj))

        # UPDATE NETWORKS
        carry = _UpdateCarry(state.params, state.opt_state, buffer_state, state.key)
        carry, metrics = jax.lax.scan(_gradient_step, carry, None, int(cfg.epochs))
        state = state._replace(
            params=carry.params, opt_state=carry.opt_state, buffer_state=carry.buffer_state, key=carry.key
        )
        return state, (episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn, _env_step


def categorical_head(head_cfg: DictConfig, key: str) -> tuple[nn.Module, Support]:
    """A value or reward head and its support; it must be categorical (two-hot targets)."""
    head = hydra.utils.instantiate(head_cfg)
    require(
        all(hasattr(head, name) for name in ("v_min", "v_max", "num_atoms")),
        f"{key}._target_={head_cfg._target_} must be a categorical head with v_min, v_max and "
        "num_atoms (stoix.networks.heads.CategoricalCriticHead): value and reward are two-hot.",
    )
    return head, Support(float(head.v_min), float(head.v_max), int(head.num_atoms))


def make_model(network: DictConfig, action_spec: Any) -> tuple[Model, Callable]:
    """(the model's apply functions, init(key, dummy observation) -> MZParams), built from
    `network.representation_network`, `network.dynamics_network` and
    `network.prediction_network`."""
    from stoix.networks.base import make_actor  # checks the policy head fits a box

    latent_dim = int(network.representation_network.latent_dim)
    representation = Representation(
        torso=hydra.utils.instantiate(network.representation_network.pre_torso), latent_dim=latent_dim
    )
    reward_head, reward_support = categorical_head(
        network.dynamics_network.reward_head, "network.dynamics_network.reward_head"
    )
    dynamics = Dynamics(
        torso=hydra.utils.instantiate(network.dynamics_network.torso),
        reward_head=reward_head,
        latent_dim=latent_dim,
        minimum=tuple(np.broadcast_to(action_spec.minimum, action_spec.shape).astype(float).tolist()),
        maximum=tuple(np.broadcast_to(action_spec.maximum, action_spec.shape).astype(float).tolist()),
    )
    prediction_cfg = network.prediction_network
    actor = make_actor(prediction_cfg.actor_network, action_spec)
    value_head, value_support = categorical_head(
        prediction_cfg.critic_network.critic_head, "network.prediction_network.critic_network.critic_head"
    )
    prediction = Prediction(
        policy_torso=actor.torso,
        policy_head=actor.action_head,
        value_torso=hydra.utils.instantiate(prediction_cfg.critic_network.pre_torso),
        value_head=value_head,
    )
    model = Model(representation.apply, dynamics.apply, prediction.apply, value_support, reward_support)

    def init(key: chex.PRNGKey, dummy_obs: Observation) -> MZParams:
        keys = jax.random.split(key, 3)
        latent = jnp.zeros((1, latent_dim))
        action = jnp.zeros((1, *action_spec.shape))
        return MZParams(
            representation.init(keys[0], dummy_obs),
            dynamics.init(keys[1], latent, action),
            prediction.init(keys[2], latent),
        )

    return model, init


def make_buffer(cfg: DictConfig, sizes: AnakinSizes) -> tuple[Any, Any]:
    """(flashbax buffer of (unroll_steps + n_step)-sequences per slot, validated replay sizes):
    the last unrolled step's n-step target needs n transitions past it."""
    replay = replay_sizes(
        cfg, sizes, int(cfg.unroll_steps) + int(cfg.n_step), "(system.unroll_steps+system.n_step)"
    )
    buffer = fbx.make_trajectory_buffer(
        add_batch_size=sizes.num_envs,
        sample_batch_size=replay.batch_size,
        sample_sequence_length=replay.sequence_length,
        period=1,
        min_length_time_axis=replay.sequence_length,
        max_length_time_axis=replay.time_axis,
    )
    replay_ratio = int(cfg.epochs) / sizes.steps_per_update
    print(f"  replay ratio: {replay_ratio:g} gradient steps per environment step", flush=True)
    return buffer, replay


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate, build the model, the search, the optimiser and buffer, fill the buffer with
    searched warm-up steps of the initial model and initialise every replica."""
    cfg = config.system
    require(
        not hasattr(env.action_spec, "num_values"),
        "ff_sampled_mz needs continuous (box) actions, but this environment's are discrete; use one "
        f"of {DISCRETE_SEARCH_SYSTEMS} for it.",
    )
    require(
        cfg.search_method in SEARCH_METHODS,
        f"system.search_method={cfg.search_method!r} must be one of {', '.join(SEARCH_METHODS)}.",
    )
    buffer, replay = make_buffer(cfg, sizes)
    model, init_params = make_model(config.network, env.action_spec)
    train_cfg = search_config(cfg, int(cfg.num_simulations), noise=True)
    recurrent_fn = make_recurrent_fn(model, float(cfg.gamma), train_cfg)
    search_fn = functools.partial(search, model=model, recurrent_fn=recurrent_fn, cfg=train_cfg)
    optimizer = optax.chain(
        optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(float(cfg.learning_rate))
    )
    learner_fn, env_step = get_learner_fn(env, search_fn, optimizer, buffer, sizes, config, model)
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        params = init_params(params_key, dummy_obs)
        reset_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(reset_key, sizes.num_envs))
        state = LearnerState(
            params=params,
            opt_state=optimizer.init(params),
            buffer_state=None,
            key=key,
            env_state=env_state,
            timestep=timestep,
        )
        # WARM-UP: the initial model's searches fill the buffer before the first gradient step.
        state, (traj, _) = jax.lax.scan(env_step, state, None, replay.warmup_per_env)
        traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)  # the buffer wants (envs, time, ...)
        buffer_state = buffer.add(buffer.init(jax.tree.map(lambda x: x[0, 0], traj)), traj)
        return state._replace(buffer_state=buffer_state)

    # NOTE: jax.vmap even for one slot: unbatched (anakin.map_slots) ran no faster here (docs/benchmarks.md).
    learn = jax.pmap(jax.vmap(learner_fn, axis_name="batch"), axis_name="device", donate_argnums=0)

    if cfg.evaluate_with_search:
        eval_search = {
            noise: functools.partial(
                search,
                model=model,
                recurrent_fn=recurrent_fn,  # its K and beta are the training search's
                cfg=search_config(cfg, int(cfg.num_eval_simulations), noise=noise),
            )
            for noise in (True, False)
        }

        def act(params: MZParams, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
            # greedy: no root noise and the best arm; the arms themselves are still sampled
            output, actions = eval_search[not greedy](params, key, observation)
            return chosen_action(output, actions)

    else:

        def act(params: MZParams, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
            latent = model.represent(params.representation, observation)
            pi, _ = model.predict(params.prediction, latent)
            return pi.mode() if greedy else pi.sample(seed=key)

    # The search plans in the learned model, so the evaluator's environment states are not needed.
    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_sampled_mz", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_sampled_mz")
    hydra_entry_point()
