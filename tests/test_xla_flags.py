"""stoix.utils.xla_flags: flags a system's process sets for itself before JAX's backend starts."""

import os
import subprocess
import sys
from importlib import metadata

import pytest

from stoix.utils import xla_flags
from stoix.utils.config import REPO_ROOT

FLAG = xla_flags.YNN_REDUCE_OFF


@pytest.fixture
def jaxlib_version(monkeypatch):
    def set_version(version):
        monkeypatch.setattr(xla_flags.metadata, "version", lambda name: version)

    return set_version


def test_add_appends_to_the_users_other_flags(monkeypatch, jaxlib_version):
    jaxlib_version("0.10.2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert xla_flags.add(FLAG)
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}"


def test_the_users_value_for_the_same_flag_wins(monkeypatch, jaxlib_version):
    jaxlib_version("0.10.2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    assert not xla_flags.add(FLAG)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="


def test_not_added_on_a_jaxlib_it_was_not_checked_on(monkeypatch, jaxlib_version):
    # XLA aborts on a flag its version does not know, so an unchecked jaxlib gets nothing.
    jaxlib_version("0.12.0")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert not xla_flags.add(FLAG)
    assert "XLA_FLAGS" not in os.environ


@pytest.mark.parametrize(
    "script, flag", [("ff_qr_dqn", xla_flags.YNN_REDUCE_OFF), ("ff_c51", xla_flags.YNN_OFF)]
)
def test_a_script_adds_its_flag_before_jax_starts_and_this_jaxlib_accepts_it(script, flag):
    # Run the script as __main__ (Hydra's --cfg job prints the config and compiles nothing more
    # than imports do), recording whether JAX's backend had started when the flag was added,
    # then compile something under the flag (an unknown flag would abort the process).
    code = f"""
import os, runpy, sys
import jax
from jax._src import xla_bridge
from stoix.utils import xla_flags
seen = []
add = xla_flags.add
xla_flags.add = lambda flag: seen.append((flag, xla_bridge.backends_are_initialized())) or add(flag)
sys.argv = ["{script}.py", "--cfg", "job"]
runpy.run_path("stoix/systems/q_learning/{script}.py", run_name="__main__")
print("SEEN", seen, "FLAGS", os.environ.get("XLA_FLAGS"), "SUM", float(jax.jit(lambda x: x.sum())(jax.numpy.ones((4, 4)))))
"""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.strip().splitlines()[-1]
    if metadata.version("jaxlib").startswith(xla_flags.CHECKED_ON[flag]):
        assert line == f"SEEN [('{flag}', False)] FLAGS {flag} SUM 16.0"
    else:
        assert line.startswith(f"SEEN [('{flag}', False)] FLAGS None SUM 16.0")
