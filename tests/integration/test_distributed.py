"""One run over two processes (`nfd run --distributed`): two local processes on the loopback
address with four host devices each (CPU collectives over gloo) form one 8-device mesh; the
result equals a one-process, one-device run. Tolerance as for the one-host sharding test
(tests/integration/test_sharding.py): 1e-12 of each array's scale, round-off of per-device
products summed in another order (observed ~5e-16)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FINITE = str(ROOT / "configs/smoke/finite.toml")
SETS = ["--set", "seeds=8", "--set", "precision='float64'", "--set", "optim.steps=4", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes joining over gloo (~30 s)
def test_two_processes_with_four_devices_each_equal_one_process(tmp_path):
    out, ref = tmp_path / "two", tmp_path / "one"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env.pop("NFD_DEVICES", None)
    port = _free_port()
    cmd = [sys.executable, "-m", "nfd.cli", "run", FINITE, *SETS, "--out", str(out)]
    procs = [
        subprocess.Popen(
            [*cmd, "--distributed", f"127.0.0.1:{port},2,{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 0)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outputs]
    one = subprocess.run(
        [sys.executable, "-m", "nfd.cli", "run", FINITE, *SETS, "--out", str(ref)],
        env={**os.environ, "NFD_DEVICES": "1"},
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-1500:]
    mesh = json.loads((out / "meta.json").read_text())["mesh"]
    assert mesh["axes"] == {"members": 8} and mesh["processes"] == 2
    with np.load(out / "result.npz") as a, np.load(ref / "result.npz") as b:
        assert set(a.files) == set(b.files)
        for key in ("f_train", "f_test", "loss_train", "h_rms", "h_movement", "ntk"):
            scale = np.max(np.abs(b[key]))
            assert np.max(np.abs(a[key] - b[key])) <= 1e-12 * scale, key
        np.testing.assert_array_equal(a["status"], b["status"])
