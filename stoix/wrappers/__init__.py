"""Environment adapters and wrappers; `make_env` is the entry point."""

from stoix.wrappers.factory import make_env, make_host_envs, make_single_env

__all__ = ["make_env", "make_host_envs", "make_single_env"]
