"""Benchmark: an ensemble sharded over 8 host devices against the same ensemble on one device.

Runs in a child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the tests'
setting) and times, for a finite ensemble of 8 seeds and a particle limit of 8 repetitions (and
one repetition whose particles are split over the 8 devices), the run on the mesh that nfd picks
against the same run with ``NFD_DEVICES=1``. Each run is timed after an untimed run of the same
shapes (compilation), float64; printed: the wall times, their ratio (the overhead of sharding: on
a CPU the 8 "devices" share the same cores, so ≈ 1 means no overhead, not a speed-up; on 8 GPUs
the members would run in parallel) and the largest relative difference of the saved arrays (the
correctness check: float round-off).

    .venv/bin/python scripts/bench_sharding.py [--width 128] [--particles 256]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _child(args) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from nfd import config
    from nfd.experiments import run_finite, run_limit

    smoke = ROOT / "configs/smoke"
    steps = f"optim.steps={args.steps}"
    cases = {
        "finite, 8 seeds": (
            run_finite,
            smoke / "finite.toml",
            ["seeds=8", steps, f"model.width={args.width}"],
        ),
        "particles, 8 repetitions": (
            run_limit,
            smoke / "limit.toml",
            ["seeds=8", steps, f"limit.particles={args.particles}"],
        ),
        "particles, 1 repetition": (
            run_limit,
            smoke / "limit.toml",
            ["seeds=1", steps, f"limit.particles={args.particles}"],
        ),
    }
    out: dict = {"devices": jax.device_count()}
    for name, (run, path, sets) in cases.items():
        cfg = config.load(path, ["precision='float64'", *sets])
        res, times = {}, {}
        for mode, devices in (("sharded", None), ("one", "1")):
            os.environ.pop("NFD_DEVICES", None)
            if devices:
                os.environ["NFD_DEVICES"] = devices
            run(cfg, progress=False)  # compile
            t0 = time.perf_counter()
            res[mode] = run(cfg, progress=False)
            times[mode] = time.perf_counter() - t0
        err = 0.0
        for key in ("f_train", "f_test", "loss_train", "h_rms"):
            a, b = (np.asarray(getattr(res[m], key)) for m in ("sharded", "one"))
            err = max(err, float(np.max(np.abs(a - b)) / np.max(np.abs(b))))
        out[name] = {
            "mesh": res["sharded"].mesh,
            "sharded_s": times["sharded"],
            "one_device_s": times["one"],
            "ratio": times["sharded"] / times["one"],
            "max_rel_diff": err,
        }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return {}
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env.pop("NFD_DEVICES", None)
    cmd = [sys.executable, __file__, "--child", *(argv if argv is not None else sys.argv[1:])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"bench_sharding: {out['devices']} forced host devices, float64, {args.steps} steps")
    print(
        f"{'':<26} {'mesh':<26} {'sharded s':>10} {'1 device s':>11} {'ratio':>6} {'rel diff':>9}"
    )
    for name, r in out.items():
        if name == "devices":
            continue
        mesh = ", ".join(f"{k} {v}" for k, v in (r["mesh"] or {}).get("axes", {}).items())
        print(
            f"{name:<26} {mesh:<26} {r['sharded_s']:>10.2f} {r['one_device_s']:>11.2f} "
            f"{r['ratio']:>6.2f} {r['max_rel_diff']:>9.1e}"
        )
    return out


if __name__ == "__main__":
    main()
