"""Build the environments named by `cfg.env`: JAX ones for Anakin (`make_env`), host ones for
Sebulba (`make_host_envs`).

The adapters (gymnax.py, jumanji.py, brax.py with playground.py, xminigrid.py, navix.py,
craftax.py, kinetix.py, popgym_arcade.py, host.py with envpool.py and gymnasium.py) import
nothing back from here; suites are imported only when asked for, so a gymnax run never pays
for envpool, Jumanji's tasks, Brax, MuJoCo Playground, XLand-MiniGrid, Navix, Craftax, Kinetix
or POPGym Arcade (tests/test_env_suites.py checks it).
"""

from typing import Any

from omegaconf import DictConfig, OmegaConf

from stoix.utils.config import StoixConfigError
from stoix.wrappers.core import (
    AutoReset,
    ClipAction,
    ObservationSubset,
    PooledAutoReset,
    RecordEpisodeMetrics,
    VmapWrapper,
)
from stoix.wrappers.host import HostVecEnv

SUITES = (
    "gymnax",
    "jumanji",
    "brax",
    "playground",
    "xminigrid",
    "navix",
    "craftax",
    "kinetix",
    "popgym_arcade",
)


def make_single_env(env_cfg: DictConfig) -> Any:
    """One un-vectorised environment in Stoix's Jumanji API, without auto-reset; box actions
    are clipped into their bounds (ClipAction). `env.env_params` overrides the suite's
    environment parameters; `env.observation_indices` hides the rest of a flat observation."""
    suite = env_cfg.env_name
    kwargs = OmegaConf.to_container(env_cfg.kwargs, resolve=True) if env_cfg.kwargs else {}
    if suite == "gymnax":
        from stoix.wrappers.gymnax import GymnaxToJumanji, make_gymnax_env

        env, params = make_gymnax_env(env_cfg.scenario.name, **kwargs)
        params = _with_env_params(params, env_cfg)
        if env_cfg.max_episode_steps is not None:
            params = params.replace(max_steps_in_episode=int(env_cfg.max_episode_steps))
        env = GymnaxToJumanji(env, params)
        env = _observation_subset(env, env_cfg)
        return env if hasattr(env.action_spec, "num_values") else ClipAction(env)
    if suite == "jumanji":
        from stoix.wrappers.jumanji import JumanjiToStoix, make_jumanji_env

        env, task, own_limit = make_jumanji_env(env_cfg.scenario.name, **kwargs)
        limit = own_limit if env_cfg.max_episode_steps is None else int(env_cfg.max_episode_steps)
        return JumanjiToStoix(env, task.agent_view, limit)
    if suite == "brax":
        from stoix.wrappers.brax import BraxToStoix, make_brax_env

        env = BraxToStoix(make_brax_env(env_cfg.scenario.name, **kwargs), int(env_cfg.max_episode_steps))
        return ClipAction(env)
    if suite == "playground":
        from stoix.wrappers.brax import BraxToStoix
        from stoix.wrappers.playground import make_playground_env

        env = make_playground_env(env_cfg.scenario.name, **kwargs)
        return ClipAction(BraxToStoix(env, int(env_cfg.max_episode_steps)))
    if suite == "xminigrid":
        from stoix.wrappers.xminigrid import XMiniGridToStoix, make_xminigrid_env

        if env_cfg.max_episode_steps is not None:
            kwargs["max_steps"] = int(env_cfg.max_episode_steps)
        ruleset = env_cfg.get("ruleset")
        ruleset = OmegaConf.to_container(ruleset, resolve=True) if ruleset is not None else None
        env, params = make_xminigrid_env(env_cfg.scenario.name, ruleset, **kwargs)
        return XMiniGridToStoix(env, params)
    if suite == "navix":
        from stoix.wrappers.navix import NavixToStoix, make_navix_env

        return NavixToStoix(make_navix_env(env_cfg.scenario.name, int(env_cfg.max_episode_steps), **kwargs))
    if suite == "craftax":
        from stoix.wrappers.craftax import CraftaxToStoix, make_craftax_env

        env, params, own_limit = make_craftax_env(env_cfg.scenario.name, **kwargs)
        limit = own_limit if env_cfg.max_episode_steps is None else int(env_cfg.max_episode_steps)
        return CraftaxToStoix(env, params, limit)
    if suite == "kinetix":
        from stoix.wrappers.kinetix import KinetixToStoix, make_kinetix_env

        env, params, own_limit = make_kinetix_env(env_cfg.scenario.name, **kwargs)
        limit = own_limit if env_cfg.max_episode_steps is None else int(env_cfg.max_episode_steps)
        env = KinetixToStoix(env, params, limit)
        return env if hasattr(env.action_spec, "num_values") else ClipAction(env)
    if suite == "popgym_arcade":
        from stoix.wrappers.popgym_arcade import PopGymArcadeToStoix, make_popgym_arcade_env

        env, params = make_popgym_arcade_env(env_cfg.scenario.name, **kwargs)
        return PopGymArcadeToStoix(env, params, env_cfg.max_episode_steps, env_cfg.get("downsample"))
    if suite in ("envpool", "gymnasium"):
        raise StoixConfigError(
            f"env.env_name={suite!r} is a host environment: Anakin compiles JAX environments "
            f"({', '.join(SUITES)}); run a Sebulba script (stoix/systems/*/sebulba/) for it."
        )
    raise StoixConfigError(f"env.env_name={suite!r} is not supported; choose one of {SUITES}.")


def _with_env_params(params: Any, env_cfg: DictConfig) -> Any:
    overrides = env_cfg.get("env_params") or {}
    known = set(getattr(params, "__dataclass_fields__", {}))
    for name, value in overrides.items():
        if name not in known:
            raise StoixConfigError(
                f"env.env_params.{name}={value!r}: {env_cfg.scenario.name} has no parameter {name!r}; "
                f"its parameters are {sorted(known)}."
            )
    return params.replace(**overrides) if overrides else params


def _observation_subset(env: Any, env_cfg: DictConfig) -> Any:
    indices = env_cfg.get("observation_indices")
    if indices is None:
        return env
    shape = tuple(env.observation_spec.agent_view.shape)
    indices = tuple(int(i) for i in indices)
    if len(shape) != 1 or not indices or any(not 0 <= i < shape[0] for i in indices):
        raise StoixConfigError(
            f"env.observation_indices={list(indices)} must be a non-empty list of positions in "
            f"{env_cfg.scenario.name}'s flat observation of shape {shape} (0 to {shape[0] - 1})."
        )
    return ObservationSubset(env, indices)


def make_env(env_cfg: DictConfig) -> tuple[Any, Any]:
    """(training env, evaluation env). The training env is a batch (its `reset` takes one key
    per environment) that auto-resets and records episode metrics; the evaluation env is a
    single bare environment that the evaluator vectorises and stops itself. `env.reset_ratio`
    (null: off) resets the batch from a pool of one fresh episode per that many environments
    (PooledAutoReset), for tasks whose reset costs far more than a step."""
    ratio = env_cfg.get("reset_ratio")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1):
        raise StoixConfigError(
            f"env.reset_ratio={ratio!r} must be a positive integer (environments per fresh reset "
            "computed each step) or null (every environment computes its own)."
        )
    metrics = RecordEpisodeMetrics(make_single_env(env_cfg))
    train_env = VmapWrapper(AutoReset(metrics)) if ratio is None else PooledAutoReset(metrics, ratio)
    eval_env = make_single_env(env_cfg)
    return train_env, eval_env


def make_host_envs(env_cfg: DictConfig, num_envs: int, seed: int) -> HostVecEnv:
    """`num_envs` environments of `env_cfg` (a `configs/env/gymnasium|envpool` entry)."""
    kwargs = dict(env_cfg.get("kwargs") or {})
    name = env_cfg.scenario.name
    if env_cfg.env_name == "gymnasium":
        from stoix.wrappers.gymnasium import GymnasiumVecEnv, make_gymnasium_envs

        return GymnasiumVecEnv(make_gymnasium_envs(name, num_envs, seed, **kwargs), seed)
    if env_cfg.env_name == "envpool":
        from stoix.wrappers.envpool import EnvPoolVecEnv, make_envpool_envs

        wrapper_cfg = dict(env_cfg.get("wrapper") or {})
        return EnvPoolVecEnv(make_envpool_envs(name, num_envs, seed, **kwargs), **wrapper_cfg)
    raise StoixConfigError(
        f"env.env_name={env_cfg.env_name!r}: Sebulba systems step host environments; "
        "use env=gymnasium/... or env=envpool/..."
    )
