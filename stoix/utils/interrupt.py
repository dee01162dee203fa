"""Ctrl-C for the command line: one line on stderr and exit code 130, at any moment.

Every script imports this module before anything else. When the process's main module is a
Stoix script (a notebook or pytest importing a system is left alone), importing it installs a
SIGINT handler that ends the process at once with `os._exit(130)`:

- Python's default (KeyboardInterrupt, then interpreter teardown) races XLA's own threads: an
  interrupt during compilation could end in a native abort ("terminate called without an
  active exception", exit 134) after the one-line message.
- The main thread runs Python signal handlers only between bytecodes, so it cannot react
  while it sits in a long compile. A watcher thread reads the signal's wake-up pipe and exits
  from there, so the interrupt takes effect within moments in every phase.

Nothing is left half-written by exiting early: metrics files are written to a temporary file
and renamed, and orbax writes a checkpoint into a temporary directory that it renames only
when complete (a restore never sees the unfinished one).
"""

import os
import signal
import sys
import threading
from pathlib import Path

MESSAGE = b"interrupted: run stopped (Ctrl-C)\n"
EXIT_CODE = 130
_SYSTEMS_DIR = Path(__file__).resolve().parents[1] / "systems"
_installed = False


def _flush_stdout(timeout_s: float = 1.0) -> None:
    # NOTE: flushed from a helper thread: the main thread may hold stdout's lock mid-write.
    flusher = threading.Thread(target=lambda: sys.stdout.flush(), daemon=True)
    flusher.start()
    flusher.join(timeout_s)


def _exit_now() -> None:
    try:
        _flush_stdout()
    finally:
        os.write(2, MESSAGE)
        os._exit(EXIT_CODE)


def _on_sigint(signum: int, frame: object) -> None:
    _exit_now()


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGINT in data:
            _exit_now()


def install() -> bool:
    """Install the handler (once); returns whether it is installed. Only the main thread can
    install signal handlers, so a call from another thread does nothing."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, _on_sigint)
    threading.Thread(target=_watch, args=(read_fd,), name="stoix-sigint", daemon=True).start()
    _installed = True
    return True


def _main_is_a_stoix_script() -> bool:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file:
        return False
    try:
        return Path(main_file).resolve().is_relative_to(_SYSTEMS_DIR)
    except OSError:
        return False


if _main_is_a_stoix_script():
    install()
    if any("multi_host" in arg for arg in sys.argv[1:]):
        # Multi-host runs join before anything touches a device (see stoix.utils.multihost).
        from stoix.utils.multihost import join_from_argv

        join_from_argv(sys.argv)
