"""MuZero (Schrittwieser et al., 2020, doi:10.1038/s41586-020-03051-4) on Anakin.

From ff_az.py; what changed: the search's model is learned instead of the environment. A
representation network maps an observation to a hidden state, a dynamics network maps a
hidden state and an action to the next hidden state and the reward, and a prediction network
maps a hidden state to a policy (the search's prior) and a value (its leaf evaluation). All
three learn together from replayed sequences unrolled K = `system.unroll_steps` actions deep:
the policy against the search's action weights, the value against n-step returns bootstrapped
from a Polyak-averaged target network at the true next observation (after a time-limit end
too, not after a termination), the reward against the observed one. Value and reward are
categorical over a two-hot support in signed-hyperbolic space (rlax.muzero_pair). No
reanalysis: policy targets are the search outputs stored when acting.

    python stoix/systems/search/ff_mz.py system.search_method=muzero system.num_simulations=16
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
import optax
import rlax
from omegaconf import DictConfig

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.systems.ddpg.ff_ddpg import first, pmean_over
from stoix.systems.search.ff_az import SEARCH_METHODS, SearchConfig, Transition, run_mctx, search_config
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.multistep import n_step_bootstrap
from stoix.utils.sizes import AnakinSizes, replay_sizes

CONTINUOUS_SEARCH_SYSTEMS = "ff_sampled_az, ff_sampled_mz, ff_spo_continuous"


# THE MODEL: representation, dynamics and prediction, each around a torso named in the config.
def min_max_scale(hidden: chex.Array) -> chex.Array:
    """Each hidden state scaled to [0, 1] over its features (the paper's normalisation): the
    dynamics' input stays bounded however deep the unroll goes."""
    low = jnp.min(hidden, axis=-1, keepdims=True)
    high = jnp.max(hidden, axis=-1, keepdims=True)
    return (hidden - low) / (high - low + 1e-8)


class MuZeroNetwork(nn.Module):
    pre_torso: nn.Module  # representation: observation -> features
    dynamics_torso: nn.Module  # (hidden state, one-hot action) -> features
    prediction_torso: nn.Module  # hidden state -> features
    hidden_size: int
    action_dim: int
    num_bins: int  # the value and reward supports

    def setup(self) -> None:
        self.hidden_head = nn.Dense(self.hidden_size)
        self.next_hidden_head = nn.Dense(self.hidden_size)
        # Zero-initialised categorical heads: every prediction starts at the support's middle, 0.
        self.reward_head = nn.Dense(self.num_bins, kernel_init=nn.initializers.zeros)
        self.value_head = nn.Dense(self.num_bins, kernel_init=nn.initializers.zeros)
        self.policy_head = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01))

    def represent(self, observation: Observation) -> chex.Array:
        return min_max_scale(self.hidden_head(self.pre_torso(observation.agent_view)))

    def dynamics(self, hidden: chex.Array, action: chex.Array) -> tuple[chex.Array, chex.Array]:
        """(next hidden state, reward logits)."""
        x = self.dynamics_torso(jnp.concatenate([hidden, jax.nn.one_hot(action, self.action_dim)], -1))
        return min_max_scale(self.next_hidden_head(x)), self.reward_head(x)

    def predict(self, hidden: chex.Array) -> tuple[chex.Array, chex.Array]:
        """(policy logits, value logits)."""
        x = self.prediction_torso(hidden)
        return self.policy_head(x), self.value_head(x)

    def __call__(self, observation: Observation, action: chex.Array) -> Any:  # touches every layer
        hidden = self.represent(observation)
        return self.predict(hidden), self.dynamics(hidden, action)


class Model(NamedTuple):
    """The network's three functions, each `fn(params, ...)`, and the scalar <-> two-hot pair."""

    represent: Callable
    dynamics: Callable
    predict: Callable
    tx: rlax.TxPair

    def scalar(self, logits: chex.Array) -> chex.Array:
        return self.tx.apply_inv(jax.nn.softmax(logits))

    def value(self, params: Any, observation: Observation) -> chex.Array:
        return self.scalar(self.predict(params, self.represent(params, observation))[1])


class MZParams(NamedTuple):
    online: Any
    target: Any  # Polyak average of `online`: the n-step targets' bootstrap values


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


class UnrollTargets(NamedTuple):
    """Targets and loss weights of one K-step unroll, (B, K+1) for states, (B, K) for rewards."""

    value: chex.Array
    value_weight: chex.Array
    reward: chex.Array
    reward_weight: chex.Array
    policy: chex.Array  # (B, K+1, actions)
    policy_weight: chex.Array


def make_recurrent_fn(model: Model, gamma: float) -> Callable:
    """mctx's recurrent_fn over the learned model. The model has no terminal: a state after a
    termination learns value and reward 0 (see `unroll_targets`), so discount is gamma."""

    def recurrent_fn(
        params: Any, key: chex.PRNGKey, action: chex.Array, hidden: chex.Array
    ) -> tuple[mctx.RecurrentFnOutput, chex.Array]:
        del key  # the learned model is deterministic
        next_hidden, reward_logits = model.dynamics(params, hidden, action)
        policy_logits, value_logits = model.predict(params, next_hidden)
        output = mctx.RecurrentFnOutput(
            reward=model.scalar(reward_logits),
            discount=jnp.full(action.shape, gamma),
            prior_logits=policy_logits,
            value=model.scalar(value_logits),
        )
        return output, next_hidden

    return recurrent_fn


def search(
    params: Any,
    key: chex.PRNGKey,
    observation: Observation,
    *,
    model: Model,
    recurrent_fn: Callable,
    cfg: SearchConfig,
) -> mctx.PolicyOutput:
    """One batched search from the representation of the observations (as ff_az.search)."""
    hidden = model.represent(params, observation)
    prior_logits, value_logits = model.predict(params, hidden)
    root = mctx.RootFnOutput(prior_logits=prior_logits, value=model.scalar(value_logits), embedding=hidden)
    return run_mctx(
        params,
        key,
        root,
        recurrent_fn,
        cfg,
        max_num_considered_actions=cfg.max_num_considered_actions,
        invalid_actions=observation.action_mask <= 0,
    )


# ALGO LOGIC: targets and the unrolled loss. Module-level so tests call them with hand-made batches.
def unroll_targets(
    batch: Transition, bootstrap_values: chex.Array, *, gamma: float, n_step: int, unroll_steps: int
) -> UnrollTargets:
    """Targets for sequences shaped (B, K+n); `bootstrap_values[:, j]` is V(next_obs[:, j]).

    The value at unrolled state k is the n-step return from step k (ff_az's, cut at episode
    ends: a truncation bootstraps from its true final observation, a termination does not).
    Past an episode end inside the unroll the data belong to the next episode, so:
      after a termination: the absorbing state -- value and reward targets 0 (weight 1), no
        policy loss;
      after a truncation: no loss at all -- the true continuation is unknown, and an
        absorbing target would teach the model that a time limit ends the task.
    """
    K, n = unroll_steps, n_step
    values = []
    for k in range(K + 1):
        window = slice(k, k + n)
        g, discount, index = n_step_bootstrap(
            batch.reward[:, window], batch.discount[:, window], batch.done[:, window], gamma
        )
        v_next = jnp.take_along_axis(bootstrap_values[:, window], index[:, None], axis=1)[:, 0]
        values.append(g + discount * v_next)
    value = jnp.stack(values, axis=1)  # (B, K+1)

    done = batch.done[:, :K].astype(value.dtype)
    # alive_k: no episode end in steps 0..k-1; absorbed_k: the first of them was a termination.
    alive = jnp.cumprod(jnp.concatenate([jnp.ones_like(done[:, :1]), 1.0 - done], axis=1), axis=1)
    terminated = alive[:, :K] * done * (1.0 - batch.discount[:, :K])
    absorbed = jnp.concatenate([jnp.zeros_like(done[:, :1]), jnp.cumsum(terminated, axis=1)], axis=1)
    return jax.lax.stop_gradient(
        UnrollTargets(
            value=alive * value,
            value_weight=alive + absorbed,
            reward=alive[:, :K] * batch.reward[:, :K],
            reward_weight=alive[:, :K] + absorbed[:, :K],
            policy=batch.search_policy[:, : K + 1],
            policy_weight=alive,
        )
    )


def scale_gradient(x: chex.Array, scale: float) -> chex.Array:
    return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def muzero_loss(
    params: Any, batch: Transition, targets: UnrollTargets, *, model: Model, vf_coef: float
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """The K-step unrolled loss: cross-entropies of policy, two-hot value and two-hot reward at
    every unrolled state, weighted by `targets`; the K dynamics steps' terms are scaled by 1/K
    and the gradient into each earlier hidden state halved (the paper's scaling)."""
    K = targets.reward.shape[1]
    hidden = model.represent(params, first(batch.obs))
    policy_loss = value_loss = reward_loss = 0.0
    for k in range(K + 1):
        if k > 0:
            hidden, reward_logits = model.dynamics(params, hidden, batch.action[:, k - 1])
            hidden = scale_gradient(hidden, 0.5)
            ce = optax.softmax_cross_entropy(reward_logits, model.tx.apply(targets.reward[:, k - 1]))
            reward_loss += jnp.mean(targets.reward_weight[:, k - 1] * ce) / K
        policy_logits, value_logits = model.predict(params, hidden)
        scale = 1.0 if k == 0 else 1.0 / K
        ce = optax.softmax_cross_entropy(value_logits, model.tx.apply(targets.value[:, k]))
        value_loss += scale * jnp.mean(targets.value_weight[:, k] * ce)
        # The prediction's logits are unmasked (finite): an illegal action's weight 0 adds 0.
        ce = optax.softmax_cross_entropy(policy_logits, targets.policy[:, k])
        policy_loss += scale * jnp.mean(targets.policy_weight[:, k] * ce)
        if k == 0:
            root_value = model.scalar(value_logits)
    loss = policy_loss + vf_coef * value_loss + reward_loss
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "reward_loss": reward_loss,
        "mean_value": jnp.mean(root_value),
    }
    return loss, metrics


def get_learner_fn(
    env: Any,
    search_fn: Callable,
    optimizer: optax.GradientTransformation,
    buffer: Any,
    model: Model,
    sizes: AnakinSizes,
    config: DictConfig,
) -> tuple[Callable[[LearnerState], ExperimentOutput], Callable]:
    """(one slot's learner, its acting step). Each update searches and steps for
    `rollout_length` steps, stores them, then takes `epochs` gradient steps on replayed
    (K + n)-step sequences."""
    cfg = config.system
    targets_fn = functools.partial(
        unroll_targets, gamma=float(cfg.gamma), n_step=int(cfg.n_step), unroll_steps=int(cfg.unroll_steps)
    )
    loss_fn = functools.partial(muzero_loss, model=model, vf_coef=float(cfg.vf_coef))

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # SEARCH: over the learned model, from the representation of every observation
        key, search_key = jax.random.split(state.key)
        obs = state.timestep.observation
        output = search_fn(state.params.online, search_key, obs)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, output.action)
        transition = Transition(
            obs=obs,
            action=output.action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
            search_policy=output.action_weights,
        )
        state = state._replace(key=key, env_state=env_state, timestep=timestep)
        return state, (transition, timestep.extras["episode_metrics"])

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key = jax.random.split(carry.key)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, K + n, ...)
        params = carry.params

        # CALCULATE TARGETS: the target network's value of every true next observation
        bootstrap_values = model.value(params.target, batch.next_obs)
        targets = targets_fn(batch, bootstrap_values)

        # UPDATE THE MODEL: every replica takes the same step
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params.online, batch, targets)
        grads, metrics = pmean_over((grads, metrics), sizes.replica_axes)
        updates, opt_state = optimizer.update(grads, carry.opt_state, params.online)
        online = optax.apply_updates(params.online, updates)
        target = optax.incremental_update(online, params.target, float(cfg.tau))
        carry = _UpdateCarry(MZParams(online, target), opt_state, carry.buffer_state, key)
        return carry, metrics

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


def value_transform(cfg: DictConfig) -> rlax.TxPair:
    """scalar -> two-hot over `support_bins` bins of [-support_max, support_max] after the
    signed-hyperbolic squashing h(x) = sign(x)(sqrt(|x| + 1) - 1) + 1e-3 x, and back."""
    support = float(cfg.support_max)
    return rlax.muzero_pair(-support, support, int(cfg.support_bins), rlax.SIGNED_HYPERBOLIC_PAIR)


def make_model(network: MuZeroNetwork, cfg: DictConfig) -> Model:
    return Model(
        represent=functools.partial(network.apply, method=MuZeroNetwork.represent),
        dynamics=functools.partial(network.apply, method=MuZeroNetwork.dynamics),
        predict=functools.partial(network.apply, method=MuZeroNetwork.predict),
        tx=value_transform(cfg),
    )


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate, build the network, the search, optimiser and buffer, fill the buffer with
    searched warm-up steps of the initial network and initialise every replica."""
    cfg = config.system
    require(
        hasattr(env.action_spec, "num_values"),
        "ff_mz needs discrete actions, but this environment's are continuous (a box); use one of "
        f"{CONTINUOUS_SEARCH_SYSTEMS} for it.",
    )
    require(
        jnp.ndim(env.action_spec.num_values) == 0,
        "ff_mz needs one discrete action per step, but this environment's are multi-discrete; "
        "use ff_ppo or ff_spo for it.",
    )
    require(
        cfg.search_method in SEARCH_METHODS,
        f"system.search_method={cfg.search_method!r} must be one of {', '.join(SEARCH_METHODS)}.",
    )
    K, n = int(cfg.unroll_steps), int(cfg.n_step)
    replay = replay_sizes(cfg, sizes, K + n, sequence_key="(system.unroll_steps+system.n_step)")
    buffer = fbx.make_trajectory_buffer(
        add_batch_size=sizes.num_envs,
        sample_batch_size=replay.batch_size,
        sample_sequence_length=replay.sequence_length,
        period=1,
        min_length_time_axis=replay.sequence_length,
        max_length_time_axis=replay.time_axis,
    )
    print(f"  replay ratio: {int(cfg.epochs) / sizes.steps_per_update:g} gradient steps per environment step")

    network = hydra.utils.instantiate(
        config.network.model_network,
        action_dim=int(env.action_spec.num_values),
        num_bins=int(cfg.support_bins),
    )
    model = make_model(network, cfg)
    recurrent_fn = make_recurrent_fn(model, float(cfg.gamma))
    make_search = lambda num_simulations, noise: functools.partial(  # noqa: E731
        search,
        model=model,
        recurrent_fn=recurrent_fn,
        cfg=search_config(cfg, num_simulations, noise=noise),
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(float(cfg.learning_rate))
    )
    learner_fn, env_step = get_learner_fn(
        env, make_search(int(cfg.num_simulations), True), optimizer, buffer, model, sizes, config
    )
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        online = network.init(params_key, dummy_obs, jnp.zeros((1,), jnp.int32))
        reset_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(reset_key, sizes.num_envs))
        state = LearnerState(
            params=MZParams(online, online),
            opt_state=optimizer.init(online),
            buffer_state=None,
            key=key,
            env_state=env_state,
            timestep=timestep,
        )
        # WARM-UP: the initial network's searches fill the buffer before the first gradient step.
        state, (traj, _) = jax.lax.scan(env_step, state, None, replay.warmup_per_env)
        traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)  # the buffer wants (envs, time, ...)
        buffer_state = buffer.add(buffer.init(jax.tree.map(lambda x: x[0, 0], traj)), traj)
        return state._replace(buffer_state=buffer_state)

    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)

    if cfg.evaluate_with_search:
        # greedy: the search without root noise, taking its best action
        eval_search = {noise: make_search(int(cfg.num_eval_simulations), noise) for noise in (True, False)}

        def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
            return eval_search[not greedy](params, key, observation).action

    else:

        def act(params: Any, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
            logits, _ = model.predict(params, model.represent(params, observation))
            logits = jnp.where(observation.action_mask > 0, logits, jnp.finfo(logits.dtype).min)
            pi = distrax.Categorical(logits=logits)
            return pi.mode() if greedy else pi.sample(seed=key)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(act=act, eval_params=lambda state: state.params.online),
    )


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_mz", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_mz")
    hydra_entry_point()
