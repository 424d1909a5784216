"""Ensembles over devices: a run on 8 (forced host) CPU devices equals the one-device run, with
the members split over devices and, for particle methods, the particles over the rest.

JAX fixes its devices when it starts, so the comparison runs in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; ``NFD_DEVICES=1`` gives the one-device
reference in the same process. The member axis is split over ``gcd(members, devices)`` devices
(8 finite members: 8 devices; 12 limit repetitions: 4). Tolerance: the per-device batched matrix
products may sum in another order than the one-device product, a float64 round-off of ~1e-16
relative per operation, amplified over a few training steps: 1e-12 of each array's scale
(its largest entry).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from nfd import config
from nfd.experiments import run_finite, run_limit

out = {"devices": jax.device_count()}
runs = {
    "finite": (run_finite, "configs/smoke/finite.toml", ["seeds=8", "optim.steps=5"]),
    "limit": (run_limit, "configs/smoke/limit.toml", ["seeds=12", "optim.steps=4"]),
    "limit_one": (run_limit, "configs/smoke/limit.toml", ["seeds=1", "optim.steps=3"]),
    "limit_b_lean": (run_limit, "configs/smoke/limit.toml",
                     ["seeds=8", "optim.steps=3", "limit.coupling='decoupled'",
                      "limit.storage='lean'"]),
    "limit_one_history": (run_limit, "configs/smoke/limit.toml",
                          ["seeds=1", "optim.steps=3", "limit.storage='history'"]),
    "kernel": (run_limit, "configs/smoke/limit.toml",
               ["seeds=2", "optim.steps=2", "limit.method='kernel'", "limit.particles=256",
                "output.ntk=false", "output.kernels=false"]),
}
for name, (run, path, sets) in runs.items():
    cfg = config.load(path, ["precision='float64'", *sets])
    os.environ.pop("NFD_DEVICES", None)
    many = run(cfg, progress=False)
    os.environ["NFD_DEVICES"] = "1"
    one = run(cfg, progress=False)
    err = 0.0
    for key in ("f_train", "f_test", "loss_train", "h_rms", "h_movement"):
        if getattr(one, key, None) is None:
            continue
        a, b = np.asarray(getattr(many, key)), np.asarray(getattr(one, key))
        err = max(err, float(np.max(np.abs(a - b)) / np.max(np.abs(b))))  # relative to scale
    out[name] = {"mesh": many.mesh, "one": one.mesh, "rel_err": err,
                 "same_status": bool(np.array_equal(many.status, one.status))}
print(json.dumps(out))
"""


@pytest.mark.slow  # a fresh process compiling each run twice (~25 s); `make test-slow`
def test_an_ensemble_sharded_over_8_devices_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env.pop("NFD_DEVICES", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["finite"]["mesh"]["axes"] == {"members": 8}
    # gcd(12, 8) = 4 devices for the members, the other factor 2 for the particles (M = 128)
    assert out["limit"]["mesh"]["axes"] == {"members": 4, "particles": 2}
    assert out["limit_one"]["mesh"]["axes"] == {"members": 1, "particles": 8}  # one system
    assert out["limit_b_lean"]["mesh"]["axes"] == {"members": 8}  # mode B, lean particles
    # one system in the history form: its factors' particle rows over 8 devices
    assert out["limit_one_history"]["mesh"]["axes"] == {"members": 1, "particles": 8}
    for name in (
        "finite",
        "limit",
        "limit_one",
        "limit_b_lean",
        "limit_one_history",
        "kernel",
    ):  # kernel: solved per member
        assert out[name]["one"].get("devices", 1) == 1
        assert out[name]["same_status"] and out[name]["rel_err"] < 1e-12, out[name]
