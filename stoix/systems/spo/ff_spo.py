"""Sequential Monte Carlo Policy Optimisation, SPO (Macfarlane et al., NeurIPS 2024,
arXiv:2402.07963), discrete actions, on Anakin. From search/ff_az.py; the tree search becomes SMC.

Every action is planned by `num_particles` particles rolled `search_depth` steps through the
environment itself (copies of the real states, ff_az's model_env/model_state). Each particle
samples its actions from the policy network; its log-weight grows by the advantage-style
potential (r + gamma * V(s') - V(s)) / temperature, and the particles are resampled every
`resample_period` steps. The root policy is the weighted histogram of the particles' first
actions: the E-step of EM. The M-step fits the policy to it by weighted maximum likelihood
under a KL trust region to a Polyak target policy, whose Lagrange multiplier learns from its
own loss (as MPO's M-step does). The critic learns ff_az's truncation-aware n-step returns.

    python stoix/systems/spo/ff_spo.py system.num_particles=32 system.search_depth=8
"""

import stoix.utils.interrupt  # noqa: F401 (first: Ctrl-C is one line from here on)

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import hydra
import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig
from tensorflow_probability.substrates import jax as tfp

from stoix.architectures.anakin import init_learner_state, map_slots, run_from_cli
from stoix.base_types import ActorApply, ExperimentOutput, Observation, SystemSetup
from stoix.networks.base import make_actor, make_critic
from stoix.systems.ddpg.ff_ddpg import first, make_buffer, pmean_over
from stoix.systems.mpo.ff_vmpo import project_dual, unproject_dual
from stoix.systems.search.ff_az import critic_loss, model_env, model_state, value_targets
from stoix.utils.action_spaces import require_action_space
from stoix.utils.config import CONFIG_DIR, check_overrides, require
from stoix.utils.sizes import AnakinSizes
from stoix.wrappers.gymnax import GymnaxState

RESAMPLING = ("systematic", "multinomial")


class Transition(NamedTuple):
    obs: Observation
    action: chex.Array
    reward: chex.Array
    discount: chex.Array  # 0 on termination, 1 otherwise (truncation included)
    done: chex.Array  # the episode ended here, terminated or truncated
    next_obs: Observation  # true next observation (the final one when the episode ended)
    search_policy: chex.Array  # the SMC's root action distribution at `obs`: the policy target


class SPOParams(NamedTuple):
    actor: Any
    critic: Any
    target_actor: Any  # the trust region's anchor (Polyak average of the actor)
    dual: chex.Array  # unconstrained KL multiplier; project_dual() makes it positive


class SPOOptStates(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState
    dual: optax.OptState


class LearnerState(NamedTuple):
    params: SPOParams
    opt_states: SPOOptStates
    buffer_state: Any
    key: chex.PRNGKey
    env_state: Any
    timestep: Any


class _UpdateCarry(NamedTuple):
    params: SPOParams
    opt_states: SPOOptStates
    buffer_state: Any
    key: chex.PRNGKey


class SMCConfig(NamedTuple):
    num_particles: int
    search_depth: int
    resample_period: int
    resampling: str  # systematic | multinomial
    temperature: float
    gamma: float


class Particles(NamedTuple):
    """The scan carry of one SMC: `num_particles` of everything."""

    state: Any  # the model's (bare environment's) state
    obs: Observation
    value: chex.Array  # V(obs)
    first_action: chex.Array  # the action each particle's ancestor took at the root
    log_weight: chex.Array
    alive: chex.Array  # False once the particle's episode has ended: it stops accumulating


class SMCOutput(NamedTuple):
    root_actions: chex.Array  # (..., num_particles, ...) the particles' first actions
    weights: chex.Array  # (..., num_particles) their normalised weights


# ALGO LOGIC: the SMC planner. Module-level so tests call its pieces directly.
def potential(
    reward: chex.Array,
    discount: chex.Array,
    last: chex.Array,
    value: chex.Array,
    next_value: chex.Array,
    alive: chex.Array,
    *,
    gamma: float,
    temperature: float,
) -> tuple[chex.Array, chex.Array]:
    """(log-weight increment, alive after this step) of one SMC step: the advantage
    (r + gamma * discount * V(s') - V(s)) / temperature. A termination (discount 0) does not
    bootstrap; a truncation (an end with discount 1) bootstraps from the final observation's
    value. Either way the particle stops accumulating after it: a particle already ended adds 0.
    """
    advantage = reward + gamma * discount * next_value - value
    return jnp.where(alive, advantage / temperature, 0.0), alive & ~last


def resample(key: chex.PRNGKey, log_weight: chex.Array, method: str) -> chex.Array:
    """Ancestor indices for `num_particles` particles drawn in proportion to their weights.

    Systematic resampling draws one uniform u and takes the particles at (u + i) / N of the
    weights' cumulative sum: each particle is kept floor(N w_i) or ceil(N w_i) times, the same
    distribution in expectation as multinomial draws but with far less resampling noise."""
    n = log_weight.shape[-1]
    # NOTE: TFP's systematic resampler assumes normalised log-probabilities.
    log_weight = jax.nn.log_softmax(log_weight)
    if method == "systematic":  # TFP's, which distrax already depends on
        return tfp.experimental.mcmc.resample_systematic(log_weight, n, (), seed=key)
    return jax.random.categorical(key, log_weight, shape=(n,))


def smc(
    params: SPOParams,
    key: chex.PRNGKey,
    observation: Observation,
    env_state: Any,
    *,
    actor_apply: Callable,
    critic_apply: Callable,
    model_env: Any,
    cfg: SMCConfig,
) -> SMCOutput:
    """One SMC from a batch of real environment states (model_state of the training or
    evaluation env); returns every root's particles and weights."""

    def one_root(key: chex.PRNGKey, obs: Observation, state: Any) -> SMCOutput:
        n = cfg.num_particles
        tile = functools.partial(jax.tree.map, lambda x: jnp.broadcast_to(x, (n, *x.shape)))
        obs = tile(obs)
        particles = Particles(
            state=tile(state),
            obs=obs,
            value=critic_apply(params.critic, obs),
            first_action=actor_apply(params.actor, obs).mode(),  # placeholder, set at depth 0
            log_weight=jnp.zeros(n),
            alive=jnp.ones(n, bool),
        )

        def _step(particles: Particles, inputs: tuple[chex.Array, chex.PRNGKey]) -> tuple[Particles, None]:
            depth, key = inputs
            action_key, model_key, resample_key = jax.random.split(key, 3)
            action = actor_apply(params.actor, particles.obs).sample(seed=action_key)
            state = particles.state
            # NOTE: the model draws its own randomness (as in ff_az): a stochastic outcome is
            # sampled in the plan, not foreseen from the key the real step will use.
            if isinstance(state, GymnaxState):
                state = state._replace(key=jax.random.split(model_key, n))
            state, timestep = jax.vmap(model_env.step)(state, action)
            next_value = critic_apply(params.critic, timestep.observation)
            increment, alive = potential(
                timestep.reward,
                timestep.discount,
                timestep.last(),
                particles.value,
                next_value,
                particles.alive,
                gamma=cfg.gamma,
                temperature=cfg.temperature,
            )
            particles = Particles(
                state=state,
                obs=timestep.observation,
                value=next_value,
                first_action=jnp.where(depth == 0, action, particles.first_action),
                log_weight=particles.log_weight + increment,
                alive=alive,
            )
            # RESAMPLE every `resample_period` steps (not after the last: the final weights are
            # the answer); resampled particles restart with equal weights.
            due = ((depth + 1) % cfg.resample_period == 0) & (depth + 1 < cfg.search_depth)
            ancestors = resample(resample_key, particles.log_weight, cfg.resampling)
            resampled = jax.tree.map(lambda x: x[ancestors], particles)._replace(log_weight=jnp.zeros(n))
            particles = jax.tree.map(lambda r, p: jnp.where(due, r, p), resampled, particles)
            return particles, None

        keys = jax.random.split(key, cfg.search_depth)
        particles, _ = jax.lax.scan(_step, particles, (jnp.arange(cfg.search_depth), keys))
        return SMCOutput(particles.first_action, jax.nn.softmax(particles.log_weight))

    num_roots = observation.agent_view.shape[0]
    return jax.vmap(one_root)(jax.random.split(key, num_roots), observation, model_state(env_state))


def root_policy(output: SMCOutput, num_actions: int) -> chex.Array:
    """The weighted histogram of the particles' first actions, (..., num_actions)."""
    return jnp.sum(output.weights[..., None] * jax.nn.one_hot(output.root_actions, num_actions), axis=-2)


# ALGO LOGIC: the M-step. Value targets and the critic loss are ff_az's.
def policy_loss(
    actor_and_dual: tuple[Any, chex.Array],
    target_actor_params: Any,
    batch: Transition,
    *,
    actor_apply: Callable,
    epsilon_kl: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Cross-entropy from the SMC's root distribution to the policy, -sum_a q(a) log pi(a|s_0),
    plus alpha * KL(target policy || policy); alpha's own loss alpha * (epsilon_kl - KL) grows
    it while the KL exceeds its bound and shrinks it otherwise (MPO's M-step dual)."""
    actor_params, dual = actor_and_dual
    obs = first(batch.obs)
    pi = actor_apply(actor_params, obs)
    target_pi = actor_apply(target_actor_params, obs)
    target = first(batch.search_policy)
    # NOTE: an illegal action has weight 0 and log-probability -inf; where() keeps 0 * -inf out.
    log_pi = jax.nn.log_softmax(pi.logits)
    cross_entropy = -jnp.sum(jnp.where(target > 0, target * log_pi, 0.0), axis=-1)
    kl = target_pi.kl_divergence(pi)
    alpha = project_dual(dual)
    dual_loss = alpha * (epsilon_kl - jax.lax.stop_gradient(kl))
    loss = jnp.mean(cross_entropy + jax.lax.stop_gradient(alpha) * kl + dual_loss)
    return loss, {
        "policy_loss": jnp.mean(cross_entropy),
        "kl": jnp.mean(kl),
        "alpha": alpha,
        "entropy": jnp.mean(pi.entropy()),
    }


def get_learner_fn(
    env: Any,
    act_fn: Callable,
    optimizers: SPOOptStates,
    buffer: Any,
    sizes: AnakinSizes,
    config: DictConfig,
    policy_loss_fn: Callable,
    critic_apply: Callable,
) -> tuple[Callable[[LearnerState], ExperimentOutput], Callable]:
    """(one slot's learner, its acting step). `act_fn(params, key, obs, env_state)` plans and
    returns (action, policy target). Each update plans and steps `rollout_length` times, stores
    the steps, then takes `epochs` gradient steps on replayed n-step sequences."""
    cfg = config.system
    targets_fn = functools.partial(value_targets, critic_apply=critic_apply, gamma=float(cfg.gamma))
    critic_loss_fn = functools.partial(critic_loss, critic_apply=critic_apply)
    tau = float(cfg.tau)

    def _env_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Transition, Any]]:
        # PLAN: SMC from a copy of every environment's state
        key, plan_key = jax.random.split(state.key)
        obs = state.timestep.observation
        action, search_policy = act_fn(state.params, plan_key, obs, state.env_state)

        # STEP ENVIRONMENT
        env_state, timestep = env.step(state.env_state, action)
        transition = Transition(
            obs=obs,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            done=timestep.last(),
            next_obs=timestep.extras["next_obs"],
            search_policy=search_policy,
        )
        state = state._replace(key=key, env_state=env_state, timestep=timestep)
        return state, (transition, timestep.extras["episode_metrics"])

    def _gradient_step(carry: _UpdateCarry, _: Any) -> tuple[_UpdateCarry, dict]:
        key, sample_key = jax.random.split(carry.key)
        batch = buffer.sample(carry.buffer_state, sample_key).experience  # (B, n_step, ...)
        params, opt_states = carry.params, carry.opt_states

        # CALCULATE VALUE TARGETS: n-step, truncation-aware, with the current critic held fixed
        targets = targets_fn(params.critic, batch)

        # UPDATE CRITIC, ACTOR AND KL MULTIPLIER: every replica takes the same step
        critic_grads, critic_metrics = jax.grad(critic_loss_fn, has_aux=True)(params.critic, batch, targets)
        (actor_grads, dual_grads), actor_metrics = jax.grad(policy_loss_fn, has_aux=True)(
            (params.actor, params.dual), params.target_actor, batch
        )
        critic_grads, actor_grads, dual_grads, metrics = pmean_over(
            (critic_grads, actor_grads, dual_grads, {**critic_metrics, **actor_metrics}), sizes.replica_axes
        )
        updates, critic_opt = optimizers.critic.update(critic_grads, opt_states.critic, params.critic)
        critic = optax.apply_updates(params.critic, updates)
        updates, actor_opt = optimizers.actor.update(actor_grads, opt_states.actor, params.actor)
        actor = optax.apply_updates(params.actor, updates)
        updates, dual_opt = optimizers.dual.update(dual_grads, opt_states.dual, params.dual)
        carry = _UpdateCarry(
            params=SPOParams(
                actor=actor,
                critic=critic,
                target_actor=optax.incremental_update(actor, params.target_actor, tau),
                dual=optax.apply_updates(params.dual, updates),
            ),
            opt_states=SPOOptStates(actor=actor_opt, critic=critic_opt, dual=dual_opt),
            buffer_state=carry.buffer_state,
            key=key,
        )
        return carry, metrics

    def _update_step(state: LearnerState, _: Any) -> tuple[LearnerState, tuple[Any, dict]]:
        # COLLECT AND STORE: the buffer wants (num_envs, time, ...)
        state, (traj, episode_metrics) = jax.lax.scan(_env_step, state, None, sizes.rollout_length)
        buffer_state = buffer.add(state.buffer_state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj))

        # UPDATE NETWORKS
        carry = _UpdateCarry(state.params, state.opt_states, buffer_state, state.key)
        carry, metrics = jax.lax.scan(_gradient_step, carry, None, int(cfg.epochs))
        state = state._replace(
            params=carry.params, opt_states=carry.opt_states, buffer_state=carry.buffer_state, key=carry.key
        )
        return state, (episode_metrics, jax.tree.map(jnp.mean, metrics))

    def learner_fn(state: LearnerState) -> ExperimentOutput:
        state, (episode_metrics, train_metrics) = jax.lax.scan(
            _update_step, state, None, sizes.num_updates_per_eval
        )
        return ExperimentOutput(state, episode_metrics, train_metrics)

    return learner_fn, _env_step


def validate(cfg: DictConfig) -> None:
    """What stoix.utils.validation's table of numeric ranges (num_particles, search_depth,
    resample_period, temperature, epsilon_kl) cannot say, before anything compiles."""
    require(
        cfg.resampling in RESAMPLING,
        f"system.resampling={cfg.resampling!r} must be one of {', '.join(RESAMPLING)}.",
    )


def smc_config(cfg: DictConfig) -> SMCConfig:
    return SMCConfig(
        num_particles=int(cfg.num_particles),
        search_depth=int(cfg.search_depth),
        resample_period=int(cfg.resample_period),
        resampling=str(cfg.resampling),
        temperature=float(cfg.temperature),
        gamma=float(cfg.gamma),
    )


def build(
    env: Any,
    config: DictConfig,
    sizes: AnakinSizes,
    key: chex.PRNGKey,
    plan_act: Callable,
    policy_loss_fn: Callable,
) -> SystemSetup:
    """Networks, optimisers, buffer, warm-up and evaluation around a planner
    `plan_act(smc_output, key, greedy) -> (action, policy target)`; shared with the continuous
    file, which differs only in what it makes of the particles and in its policy loss."""
    cfg = config.system
    buffer, replay = make_buffer(cfg, sizes)
    actor = make_actor(config.network.actor_network, env.action_spec)
    critic = make_critic(config.network.critic_network)
    # The model: the single environment inside the training env's wrappers -- the same
    # environment the evaluator steps.
    smc_fn = functools.partial(
        smc, actor_apply=actor.apply, critic_apply=critic.apply, model_env=model_env(env), cfg=smc_config(cfg)
    )

    def act_fn(params: SPOParams, key: chex.PRNGKey, obs: Observation, env_state: Any, greedy: bool = False):
        smc_key, act_key = jax.random.split(key)
        return plan_act(smc_fn(params, smc_key, obs, env_state), act_key, greedy)

    def adam(learning_rate: float) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(float(cfg.max_grad_norm)), optax.adam(learning_rate))

    optimizers = SPOOptStates(
        actor=adam(float(cfg.actor_learning_rate)),
        critic=adam(float(cfg.critic_learning_rate)),
        dual=optax.adam(float(cfg.dual_learning_rate)),
    )
    loss_fn = functools.partial(policy_loss_fn, actor_apply=actor.apply, epsilon_kl=float(cfg.epsilon_kl))
    learner_fn, env_step = get_learner_fn(
        env, act_fn, optimizers, buffer, sizes, config, loss_fn, critic.apply
    )
    obs_spec = env.observation_spec

    def init_fn(params_key: chex.PRNGKey, slot_key: chex.PRNGKey) -> LearnerState:
        actor_key, critic_key = jax.random.split(params_key)
        dummy_obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), obs_spec.generate_value())
        actor_params = actor.init(actor_key, dummy_obs)
        params = SPOParams(
            actor=actor_params,
            critic=critic.init(critic_key, dummy_obs),
            target_actor=actor_params,
            dual=jnp.asarray(unproject_dual(float(cfg.init_alpha)), jnp.float32),
        )
        reset_key, key = jax.random.split(slot_key)
        env_state, timestep = env.reset(jax.random.split(reset_key, sizes.num_envs))
        state = LearnerState(
            params=params,
            opt_states=SPOOptStates(
                optimizers.actor.init(params.actor),
                optimizers.critic.init(params.critic),
                optimizers.dual.init(params.dual),
            ),
            buffer_state=None,
            key=key,
            env_state=env_state,
            timestep=timestep,
        )
        # WARM-UP: the initial network's plans fill the buffer before the first gradient step.
        state, (traj, _) = jax.lax.scan(env_step, state, None, replay.warmup_per_env)
        traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)  # the buffer wants (envs, time, ...)
        buffer_state = buffer.add(buffer.init(jax.tree.map(lambda x: x[0, 0], traj)), traj)
        return state._replace(buffer_state=buffer_state)

    learn = jax.pmap(map_slots(learner_fn, sizes), axis_name="device", donate_argnums=0)

    if cfg.evaluate_with_search:

        def act(params: SPOParams, observation: Observation, key: chex.PRNGKey, greedy: bool, env_state: Any):
            # greedy: the planner's most weighted action
            return act_fn(params, key, observation, env_state, greedy)[0]

    else:

        def act(params: SPOParams, observation: Observation, key: chex.PRNGKey, greedy: bool) -> chex.Array:
            pi = actor.apply(params.actor, observation)
            return pi.mode() if greedy else pi.sample(seed=key)

    return SystemSetup(
        learn=learn,
        learner_state=init_learner_state(init_fn, key, sizes),
        actor=ActorApply(
            act=act, eval_params=lambda state: state.params, uses_env_state=bool(cfg.evaluate_with_search)
        ),
    )


def learner_setup(env: Any, config: DictConfig, sizes: AnakinSizes, key: chex.PRNGKey) -> SystemSetup:
    """Validate, then build around the discrete planner: act by the root histogram."""
    cfg = config.system
    require_action_space(env.action_spec, str(cfg.system_name), continuous=False)
    validate(cfg)
    num_actions = int(env.action_spec.num_values)

    def plan_act(output: SMCOutput, key: chex.PRNGKey, greedy: bool) -> tuple[chex.Array, chex.Array]:
        probs = root_policy(output, num_actions)
        # NOTE: log(0) = -inf keeps an action no particle took out of the sample.
        action = jnp.argmax(probs, -1) if greedy else jax.random.categorical(key, jnp.log(probs))
        return action, probs

    return build(env, config, sizes, key, plan_act, policy_loss)


@hydra.main(config_path=CONFIG_DIR, config_name="default/anakin/default_ff_spo", version_base="1.3")
def hydra_entry_point(cfg: DictConfig) -> float:
    return run_from_cli(cfg, learner_setup)


if __name__ == "__main__":
    check_overrides("default/anakin/default_ff_spo")
    hydra_entry_point()
