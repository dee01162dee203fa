"""Build the training and evaluation environments named by `cfg.env`."""

from typing import Any

from omegaconf import DictConfig, OmegaConf

from stoix.utils.config import StoixConfigError
from stoix.wrappers.core import AutoReset, RecordEpisodeMetrics, VmapWrapper

SUITES = ("gymnax",)


def make_single_env(env_cfg: DictConfig) -> Any:
    """One un-vectorised environment in Stoix's Jumanji API, without auto-reset."""
    suite = env_cfg.env_name
    kwargs = OmegaConf.to_container(env_cfg.kwargs, resolve=True) if env_cfg.kwargs else {}
    if suite == "gymnax":
        from stoix.wrappers.gymnax import GymnaxToJumanji, make_gymnax_env

        env, params = make_gymnax_env(env_cfg.scenario.name, **kwargs)
        if env_cfg.max_episode_steps is not None:
            params = params.replace(max_steps_in_episode=int(env_cfg.max_episode_steps))
        return GymnaxToJumanji(env, params)
    if suite in ("envpool", "gymnasium"):
        raise StoixConfigError(
            f"env.env_name={suite!r} is a host environment: Anakin compiles JAX environments "
            f"({', '.join(SUITES)}); run a Sebulba script (stoix/systems/*/sebulba/) for it."
        )
    raise StoixConfigError(f"env.env_name={suite!r} is not supported; choose one of {SUITES}.")


def make_env(env_cfg: DictConfig) -> tuple[Any, Any]:
    """(training env, evaluation env). The training env is a batch (its `reset` takes one key
    per environment) that auto-resets and records episode metrics; the evaluation env is a
    single bare environment that the evaluator vectorises and stops itself."""
    train_env = VmapWrapper(AutoReset(RecordEpisodeMetrics(make_single_env(env_cfg))))
    eval_env = make_single_env(env_cfg)
    return train_env, eval_env
