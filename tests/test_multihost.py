"""Multi-host Anakin on CPU: 2 processes x 1 device train exactly what 1 process x 2 devices
trains for the same seed and sizes (JAX's CPU collectives through gloo)."""

import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO_ROOT, TINY, device_env

SCRIPT = textwrap.dedent(
    """
    import sys
    from stoix.utils.multihost import join_from_argv
    join_from_argv(sys.argv[1:])  # as a system script's first import does
    import jax, numpy as np
    from stoix.architectures.anakin import run_summary
    from stoix.systems.ppo.anakin import ff_ppo
    from stoix.utils.config import compose_config

    out, overrides = sys.argv[1], sys.argv[2:]
    summary = run_summary(compose_config("default/anakin/default_ff_ppo", overrides), ff_ppo.learner_setup)
    leaves = jax.tree.leaves(summary.final_params)
    np.savez(out, *leaves, metric=summary.metric)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(out, devices, overrides, tmp_path):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), *TINY, f"logger.base_exp_path={tmp_path}", *overrides],
        cwd=REPO_ROOT,
        env=device_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, timeout=240):
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def test_two_processes_train_what_one_process_with_two_devices_trains(tmp_path):
    sizes = ["arch.total_num_envs=8", "arch.seed=7"]
    single = _finish(_start(tmp_path / "single.npz", 2, sizes, tmp_path / "single"))
    port = _free_port()
    multi = [
        *sizes,
        "arch.multi_host=true",
        f"arch.coordinator_address=localhost:{port}",
        "arch.num_processes=2",
        "logger.use_json=true",
        "logger.checkpointing.save_model=true",
    ]
    procs = [
        _start(tmp_path / f"p{i}.npz", 1, [*multi, f"arch.process_id={i}"], tmp_path / "multi")
        for i in range(2)
    ]
    outputs = [_finish(p) for p in procs]
    # Only process 0 speaks (gloo's own connection line aside) and writes logs.
    assert "RESULT ff_ppo" in outputs[0]
    assert "RESULT" not in outputs[1] and "Stoix" not in outputs[1], outputs[1][-2000:]
    # One JSON file (process 0's); a checkpoint shard per process, in one run's folder.
    assert len(list((tmp_path / "multi" / "json").iterdir())) == 1
    (run_dir,) = (tmp_path / "multi" / "checkpoints").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["process_0", "process_1"]
    assert all(
        sorted(q.name for q in (run_dir / p).iterdir() if q.name.isdigit()) == ["1", "2"]
        for p in ("process_0", "process_1")
    )
    single_result = next(line for line in single.splitlines() if line.startswith("RESULT"))
    multi_result = next(line for line in outputs[0].splitlines() if line.startswith("RESULT"))
    metric = lambda line: line.split("episode_return=")[1].split(" ")[0]
    assert metric(single_result) == metric(multi_result)  # the same episodes, gathered
    one = np.load(tmp_path / "single.npz")
    shards = [np.load(tmp_path / f"p{i}.npz") for i in range(2)]
    names = [k for k in one.files if k != "metric"]
    assert names and all(one[k].shape[0] == 2 for k in names)
    for i, shard in enumerate(shards):
        for k in names:
            np.testing.assert_allclose(shard[k][0], one[k][i], rtol=1e-5, atol=1e-6)
    assert float(shards[1]["metric"]) == pytest.approx(float(shards[0]["metric"]), abs=1e9)  # both finish


def test_multi_host_keys_go_together(tiny):
    from stoix.architectures.anakin import run_experiment
    from stoix.systems.ppo.anakin import ff_ppo
    from stoix.utils.config import StoixConfigError, compose_config

    cfg = compose_config(
        "default/anakin/default_ff_ppo", [*tiny, "arch.multi_host=true", "arch.num_processes=2"]
    )
    with pytest.raises(
        StoixConfigError, match="arch.coordinator_address, arch.num_processes and arch.process_id"
    ):
        run_experiment(cfg, ff_ppo.learner_setup)
