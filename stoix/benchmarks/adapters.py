"""What Stoix's environment stack costs: `make benchmark-adapters`
(python -m stoix.benchmarks.adapters [--suites gymnax,jumanji,...] [--num-envs 64]).

For one task of each JAX suite, in one process, with the same random valid actions:
  (a) the suite's own reset/step, vmapped over N environments in a jitted `lax.scan`, with the
      auto-reset the suite itself offers (gymnax's, Navix's and Craftax's `step`, Jumanji's
      `VmapAutoResetWrapper`, Brax's training `wrap`, Playground's `wrap_for_brax_training`,
      Kinetix's `auto_reset=True`, XLand-MiniGrid's `GymAutoResetWrapper`);
  (b) the same number of steps through what a Stoix training run steps: `make_env(cfg.env)`,
      i.e. VmapWrapper(AutoReset(RecordEpisodeMetrics(adapter))).
Both loops read every observation (a sum), so neither side's rendering is compiled away; (b)
also reads the true final observation and the episode metrics, as training does. Compilation
is excluded; each figure is the best of 3 timings. The adapter's cost is 1 - (b) / (a).
"""

import argparse
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from stoix.utils.config import compose_config
from stoix.wrappers.factory import make_env


class Task(NamedTuple):
    env_config: str  # under configs/env/
    length: int  # scan length of one timing at the default number of environments


TASKS: dict[str, Task] = {
    "gymnax": Task("gymnax/cartpole", 2000),
    "jumanji": Task("jumanji/snake", 400),
    "brax": Task("brax/inverted_pendulum", 400),
    "xminigrid": Task("xminigrid/empty_6x6", 400),
    "navix": Task("navix/empty_5x5", 400),
    "craftax": Task("craftax/classic_symbolic", 30),
    "playground": Task("playground/cartpole_balance", 400),
    "kinetix": Task("kinetix/h0_weak_thrust", 100),
    "popgym_arcade": Task("popgym_arcade/cartpole_easy", 40),
}


class Native(NamedTuple):
    """A suite's own batched environment: reset(keys) -> state; step(state, actions, keys) ->
    (state, reward, observation); the action mask of a state (None: all legal); how to draw
    random actions when there is no mask."""

    reset: Callable[[Any], Any]
    step: Callable[[Any, Any, Any], tuple[Any, Any, Any]]
    mask: Callable[[Any], Any] | None


def _gymnax_like(env: Any, params: Any) -> Native:
    """gymnax's own `step` auto-resets (it computes a reset and selects it where done)."""

    def reset(keys):
        return jax.vmap(env.reset, in_axes=(0, None))(keys, params)[1]

    def step(state, actions, keys):
        # (obs, state, reward, done, info), and gymnax 1.x adds one more entry
        out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, actions, params)
        return out[1], out[2], out[0]

    return Native(reset, step, None)


def native_env(suite: str, env_cfg: Any) -> Native:
    """The suite's own environment for the task `env_cfg` names, with the suite's auto-reset."""
    kwargs = dict(env_cfg.kwargs or {})
    name = env_cfg.scenario.name
    if suite == "gymnax":
        from stoix.wrappers.gymnax import make_gymnax_env

        return _gymnax_like(*make_gymnax_env(name, **kwargs))
    if suite == "popgym_arcade":
        from stoix.wrappers.popgym_arcade import make_popgym_arcade_env

        return _gymnax_like(*make_popgym_arcade_env(name, **kwargs))
    if suite == "craftax":
        from craftax.craftax_env import make_craftax_env_from_name

        env = make_craftax_env_from_name(name, auto_reset=True)
        return _gymnax_like(env, env.default_params.replace(**kwargs))
    if suite == "kinetix":
        from kinetix.environment.env import make_kinetix_env
        from kinetix.environment.spaces import ActionType, ObservationType
        from kinetix.util.saving import load_from_json_file

        scene, static_params, params = load_from_json_file(name)
        env = make_kinetix_env(
            ActionType.from_string(kwargs.get("action_type", "discrete")),
            ObservationType.from_string(kwargs.get("observation_type", "symbolic_flat")),
            lambda key: scene,
            params,
            static_params,
            auto_reset=True,  # Kinetix's own, with its own step limit in `done`
        )
        return _gymnax_like(env, params)
    if suite == "playground":
        from mujoco_playground import wrapper

        from stoix.wrappers.playground import make_playground_env

        env = wrapper.wrap_for_brax_training(
            make_playground_env(name, **kwargs), episode_length=int(env_cfg.max_episode_steps)
        )

        def playground_step(state, actions, keys):
            state = env.step(state, actions)
            return state, state.reward, state.obs

        return Native(env.reset, playground_step, None)
    if suite == "jumanji":
        from jumanji.environments.routing.snake.env import Snake
        from jumanji.wrappers import VmapAutoResetWrapper

        assert name == "Snake-v1", name
        env = VmapAutoResetWrapper(Snake(**kwargs))
        return Native(
            lambda keys: env.reset(keys),
            lambda s, actions, keys: _jumanji_step(env, s, actions),
            lambda s: s[1].observation.action_mask,
        )
    if suite == "brax":
        from brax.envs.wrappers.training import wrap

        from stoix.wrappers.brax import make_brax_env

        env = wrap(make_brax_env(name, **kwargs), episode_length=int(env_cfg.max_episode_steps))

        def brax_step(state, actions, keys):
            state = env.step(state, actions)
            return state, state.reward, state.obs

        return Native(env.reset, brax_step, None)
    if suite == "xminigrid":
        import xminigrid
        from xminigrid.wrappers import GymAutoResetWrapper

        env, params = xminigrid.make(name)
        env = GymAutoResetWrapper(env)

        def xmg_step(ts, actions, keys):
            ts = jax.vmap(env.step, in_axes=(None, 0, 0))(params, ts, actions)
            return ts, ts.reward, ts.observation

        return Native(lambda keys: jax.vmap(env.reset, in_axes=(None, 0))(params, keys), xmg_step, None)
    if suite == "navix":
        from stoix.wrappers.navix import make_navix_env

        env = make_navix_env(name, int(env_cfg.max_episode_steps), **kwargs)

        def navix_step(ts, actions, keys):
            ts = jax.vmap(env.step)(ts, actions)  # Navix's public step auto-resets
            return ts, ts.reward, ts.observation

        return Native(jax.vmap(env.reset), navix_step, None)
    raise ValueError(f"no native loop for suite {suite!r}; choose one of {sorted(TASKS)}")


def _jumanji_step(env: Any, carry: Any, actions: Any) -> tuple[Any, Any, Any]:
    state, timestep = env.step(carry[0], actions)
    return (state, timestep), timestep.reward, timestep.observation


def _random_actions(key: jax.Array, spec: Any, num_envs: int, mask: Any) -> jax.Array:
    """Uniform over the legal actions (the mask, where the task has one), or uniform in a box."""
    if hasattr(spec, "num_values"):
        logits = jnp.zeros((num_envs, int(spec.num_values))) if mask is None else jnp.log(mask > 0)
        return jax.random.categorical(key, logits)
    return jax.random.uniform(key, (num_envs, *spec.shape), minval=spec.minimum, maxval=spec.maximum)


def _read(tree: Any) -> jax.Array:
    """A scalar that depends on every leaf, so that XLA cannot drop their computation."""
    return sum(jnp.sum(jnp.asarray(leaf, jnp.float32)) for leaf in jax.tree.leaves(tree))


def _best_of(fn: Callable, repeats: int, steps: int) -> float:
    """Steps/s: the best of `repeats` timed calls of an already compiled `fn(key)`."""
    best = 0.0
    for repeat in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(jax.random.PRNGKey(repeat + 1)))
        best = max(best, steps / (time.perf_counter() - start))
    return best


def measure(suite: str, num_envs: int = 64, length: int | None = None, repeats: int = 3) -> dict[str, float]:
    """{"native": steps/s, "stoix": steps/s, "cost": 1 - stoix/native} for `suite`'s task."""
    task = TASKS[suite]
    length = task.length if length is None else length
    env_cfg = compose_config("default/anakin/default_ff_ppo", [f"env={task.env_config}"]).env
    stoix_env, _ = make_env(env_cfg)
    spec = stoix_env.action_spec
    native = native_env(suite, env_cfg)
    uses_mask = native.mask is not None

    def native_run(key):
        state = native.reset(jax.random.split(key, num_envs))

        def body(carry, key):
            state, total = carry
            action_key, step_key = jax.random.split(key)
            mask = native.mask(state) if uses_mask else None
            actions = _random_actions(action_key, spec, num_envs, mask)
            state, reward, obs = native.step(state, actions, jax.random.split(step_key, num_envs))
            return (state, total + reward.sum() + _read(obs)), None

        (_, total), _ = jax.lax.scan(body, (state, 0.0), jax.random.split(key, length))
        return total

    def stoix_run(key):
        state, timestep = stoix_env.reset(jax.random.split(key, num_envs))

        def body(carry, key):
            state, timestep, total = carry
            action_key, _ = jax.random.split(key)
            mask = timestep.observation.action_mask if uses_mask else None
            actions = _random_actions(action_key, spec, num_envs, mask)
            state, timestep = stoix_env.step(state, actions)
            metrics = timestep.extras["episode_metrics"]
            read = _read(timestep.observation.agent_view) + _read(timestep.extras["next_obs"].agent_view)
            read += jnp.sum(jnp.where(metrics.is_terminal_step, metrics.episode_return, 0.0))
            return (state, timestep, total + timestep.reward.sum() + read), None

        (_, _, total), _ = jax.lax.scan(body, (state, timestep, 0.0), jax.random.split(key, length))
        return total

    steps = num_envs * length
    rates = {}
    for label, run in (("native", native_run), ("stoix", stoix_run)):
        start = time.perf_counter()
        fn = jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
        jax.block_until_ready(fn(jax.random.PRNGKey(0)))  # first call: allocation, not timed
        rates[f"{label}_compile_s"] = time.perf_counter() - start
        rates[label] = _best_of(fn, repeats, steps)
    rates["cost"] = 1.0 - rates["stoix"] / rates["native"]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default=",".join(TASKS), help=f"comma-separated: {', '.join(TASKS)}")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--length", type=int, default=None, help="scan length (default: per task)")
    args = parser.parse_args()
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = sorted(set(suites) - set(TASKS))
    if unknown:
        parser.error(f"--suites {unknown}: choose from {', '.join(TASKS)}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.num_envs} envs, best of 3")
    print(f"{'suite':<14}{'task':<30}{'native steps/s':>16}{'Stoix steps/s':>16}{'ratio':>8}{'cost':>8}")
    for suite in suites:
        r = measure(suite, args.num_envs, args.length)
        print(
            f"{suite:<14}{TASKS[suite].env_config:<30}{r['native']:>16,.0f}{r['stoix']:>16,.0f}"
            f"{r['stoix'] / r['native']:>8.2f}{r['cost']:>8.0%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
