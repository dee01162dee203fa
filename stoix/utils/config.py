"""Where the configs live, and how errors in them are reported."""

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Every entry point finds `configs/` from this file, so scripts run from any directory and
# tests compose exactly the configs the scripts use.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(REPO_ROOT / "configs")


class StoixConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and the fix."""


class TrainingDivergedError(RuntimeError):
    """A loss or a parameter became NaN or infinite; the message names which and the round."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise StoixConfigError(message)


def check_divisible(key: str, value: int, divisor: int, divisor_desc: str) -> int:
    """`value // divisor`, or a StoixConfigError naming `key` when it does not divide."""
    require(
        divisor > 0 and value % divisor == 0,
        f"{key}={value} must be divisible by {divisor_desc}={divisor}; set {key} to a multiple of {divisor}.",
    )
    return value // divisor


def exit_on_config_error(run: Callable[..., Any], *args: Any) -> Any:
    """`run(*args)` for a script: a StoixConfigError ends the process with one line and exit
    code 2, not a traceback; a diverged run (TrainingDivergedError) with one line and exit
    code 3; Ctrl-C (after `run`'s own clean-up, e.g. Sebulba stopping its threads) with one
    line and exit code 130."""
    try:
        return run(*args)
    except StoixConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except TrainingDivergedError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    except KeyboardInterrupt:
        print("interrupted: run stopped (Ctrl-C)", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def compose_config(config_name: str, overrides: Sequence[str] | None = None) -> Any:
    """Compose an entry config exactly as its script would (for tests and notebooks)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


def check_overrides(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Compose the entry config with the command line's overrides before Hydra does, and turn
    a composition error into one or two lines, exit code 2: a mistyped key gets the nearest
    keys that exist, a group option that does not exist gets the options there are. Runs with
    Hydra's own flags (-m, --cfg, --help, ...) are left to Hydra."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg.startswith("-") for arg in argv):
        return
    overrides = [arg for arg in argv if "=" in arg]
    try:
        compose_config(config_name, overrides)
    except Exception as e:  # Hydra and OmegaConf raise several types for a bad override
        message = _explain_override_error(config_name, overrides, e)
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _group_options(group: str) -> list[str]:
    directory = Path(CONFIG_DIR) / group
    return sorted(str(p.relative_to(directory).with_suffix("")) for p in directory.rglob("*.yaml"))


def _explain_override_error(config_name: str, overrides: list[str], error: Exception) -> str:
    import difflib

    from omegaconf import DictConfig, OmegaConf

    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    for override in overrides:
        try:
            compose_config(config_name, [override])
            continue
        except Exception:  # this override alone fails: explain it
            pass
        key, value = override.split("=", 1)
        if key.startswith(("+", "~")):
            return f"{override}: {first_line}"
        if (Path(CONFIG_DIR) / key).is_dir():  # a config group: env=, network=, system=, ...
            options = _group_options(key)
            close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
            hint = f"did you mean {key}={close[0]}? " if close else ""
            return f"{override}: there is no {key} option {value!r}; {hint}the options: {', '.join(options)}."
        config = compose_config(config_name, [])
        parts = key.split(".")
        depth = 0  # the deepest prefix of the key that exists
        while depth < len(parts) and isinstance(
            OmegaConf.select(config, ".".join(parts[: depth + 1])), DictConfig
        ):
            depth += 1
        node = OmegaConf.select(config, ".".join(parts[:depth])) if depth else config
        if depth < len(parts) and isinstance(node, DictConfig) and parts[depth] not in node:
            prefix = ".".join(parts[:depth])
            names = [str(k) for k in node.keys()]
            close = difflib.get_close_matches(parts[depth], names, n=3, cutoff=0.6)
            where = f"{prefix}." if prefix else ""
            rest = "".join(f".{p}" for p in parts[depth + 1 :])
            problem = f"{override}: {key} is not a key of this config"
            if close:
                return f"{problem}; did you mean {' or '.join(where + c + rest for c in close)}?"
            return f"{problem}; the keys under {prefix or 'the top'}: {', '.join(names)}."
        return f"{override}: {first_line}"
    return first_line
