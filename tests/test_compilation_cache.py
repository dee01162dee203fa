"""JAX's persistent compilation cache (stoix/utils/compilation_cache.py, arch.compilation_cache_dir):
a second run of the same config loads the first run's programs and gives the same result."""

import re
import subprocess
import sys
import time

from conftest import REPO_ROOT, TINY, device_env

from stoix.utils import compilation_cache


def run(cache_dir, tmp_path):
    env = device_env(1)
    env.pop(compilation_cache.DISABLE_ENV, None)  # the test suite turns it off everywhere else
    command = [
        sys.executable,
        str(REPO_ROOT / "stoix/systems/ppo/anakin/ff_ppo.py"),
        *TINY,
        f"logger.base_exp_path={tmp_path}",
        f"arch.compilation_cache_dir={cache_dir}",
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return re.search(r"^RESULT .*?: (episode_return=\S+)", proc.stdout, re.M).group(1)


def test_a_second_run_loads_the_first_runs_programs(tmp_path):
    cache = tmp_path / "cache"
    first = run(cache, tmp_path)
    keys = sorted(p.name.removesuffix("-cache") for p in cache.glob("*-cache"))
    assert keys, "the first run cached no program"
    second_started_ns = time.time_ns()
    assert run(cache, tmp_path) == first
    # JAX's cache stamps an entry's `-atime` file each time it is read: every program the first
    # run cached was loaded by the second. (Whether the second run also writes an entry is left
    # open: a program that compiled just under the 0.2 s threshold in the first run may take
    # just over it in the second on a loaded machine.)
    read = [int.from_bytes((cache / f"{key}-atime").read_bytes(), "little") for key in keys]
    assert all(stamp >= second_started_ns for stamp in read), "an entry was not read by the second run"


def test_off_when_null_or_disabled(monkeypatch):
    assert compilation_cache.enable(None) is None
    monkeypatch.setenv(compilation_cache.DISABLE_ENV, "1")
    assert compilation_cache.enable("/nonexistent/never-created") is None


def test_an_unwritable_folder_is_one_warning_and_no_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(compilation_cache.DISABLE_ENV, raising=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert compilation_cache.enable(str(blocker / "cache")) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "arch.compilation_cache_dir=" in out[0] and "null" in out[0]
