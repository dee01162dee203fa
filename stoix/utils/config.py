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
