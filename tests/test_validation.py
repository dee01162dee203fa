"""Every listed numeric system key of every entry config rejects a wrong type and an
out-of-range value with one line naming the key, before anything compiles."""

from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_script
from omegaconf import OmegaConf

from stoix.utils.config import CONFIG_DIR, StoixConfigError, compose_config
from stoix.utils.validation import SYSTEM_KEYS, validate_system

ENTRIES = sorted(
    f"default/{arch}/{p.stem}"
    for arch in ("anakin", "sebulba")
    for p in (Path(CONFIG_DIR) / "default" / arch).glob("*.yaml")
)
SYSTEMS = {entry: compose_config(entry).system for entry in ENTRIES}  # composed once
CASES = [
    (entry, name)
    for entry, system in SYSTEMS.items()
    for name in sorted(k for k in system if k in SYSTEM_KEYS)
]


def bad_values(name):
    expected = SYSTEM_KEYS[name]
    values = ["abc", True]
    if expected.low is not None:
        values.append(expected.low if expected.low_open else expected.low - 1)
    if expected.high is not None:
        values.append(expected.high if expected.high_open else expected.high + 0.5)
    if expected.kind is int:
        values.append(2.5)
    return values


def test_every_entry_config_is_valid_and_the_table_is_used():
    assert len(ENTRIES) >= 20 and len(CASES) >= 150
    for system in SYSTEMS.values():
        validate_system(system)


@pytest.mark.parametrize("entry, name", CASES)
def test_wrong_type_and_out_of_range_values_name_the_key(entry, name):
    system = SYSTEMS[entry]
    for value in bad_values(name):
        bad = OmegaConf.merge(system, {name: value})
        with pytest.raises(StoixConfigError, match=rf"^system\.{name}=.* must be (an integer|a number)"):
            validate_system(bad)


def test_exponent_strings_yaml_leaves_as_strings_are_numbers():
    system = compose_config("default/anakin/default_ff_ppo").system
    validate_system(OmegaConf.merge(system, {"learning_rate": "1e-3"}))


@pytest.mark.parametrize(
    "override, message",
    [
        ("system.epochs=0", "error: system.epochs=0 must be an integer >= 1."),
        ("system.learning_rate=abc", "error: system.learning_rate='abc' must be a number > 0."),
        ("system.gamma=1.5", "error: system.gamma=1.5 must be a number in [0, 1]."),
    ],
)
def test_the_script_stops_with_one_line(override, message, tmp_path):
    proc = run_script("stoix/systems/ppo/anakin/ff_ppo.py", [override], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message], proc.stderr[-2000:]
    assert "RESULT" not in proc.stdout and REPO_ROOT.exists()
