"""Benchmark: an ensemble in one vmapped computation against its members run alone.

Prints, measured in one run on this machine:
  * per width n: the median training-step time of one finite network and of a 16-member
    ensemble in one vmapped batch (tanh, L = 8, 48 points, full batch, float32), and their ratio
    to 16 single steps (goal: ≤ 0.3; an ensemble must never cost more than its members alone);
  * the same ensemble as `nfd run` executes it (`run_finite`: the memory plan runs members one at
    a time on a CPU where one member's step exceeds `CPU_ALONE_FLOPS`), its wall time over 16 runs
    of one member (after a warm-up run of each: compilation excluded);
  * the cause at large n, isolated: a layer `lax.scan` over member-stacked weights ``(E, L, N, N)``
    under `vmap` against the same scan over layer-major weights ``(L, E, N, N)`` (vmapped with
    ``in_axes=1``) and against 16 single scans. The batching rule of `scan` moves the member axis
    behind the scanned layer axis, a transpose copy of every weight per call.

    .venv/bin/python scripts/bench_ensemble.py [--widths 32 128 512] [--members 16]
"""

import argparse
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nfd import config
from nfd.config import build_saveat, build_schedule, build_task, run_keys
from nfd.dynamics import Points, evolve
from nfd.experiments import run_finite
from nfd.experiments._finite import finite_ensemble

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _config(width: int, members: int, steps: int) -> config.Config:
    sets = [f"model.width={width}", "model.depth=8", f"seeds={members}", f"optim.steps={steps}"]
    sets += ["task.n_train=48", "task.n_test=0", "optim.batch_size=0", "output.every=0"]
    sets += ["output.ntk=false", "output.kernels=false", "model.activation='tanh'"]
    return config.load(ROOT / "configs/smoke/finite.toml", sets)


def _run_time(width: int, members: int, steps: int = 12) -> float:
    """Wall time of `run_finite` (the planned execution), after a warm-up run."""
    cfg = _config(width, members, steps)
    run_finite(cfg, progress=False)
    t0 = time.perf_counter()
    run_finite(cfg, progress=False)
    return time.perf_counter() - t0


def _step_time(width: int, members: int, steps: int = 6) -> float:
    cfg = _config(width, members, steps)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    net, models, lrs = finite_ensemble(cfg, task)
    traj = evolve(
        net,
        Points.from_task(task),
        lr=lrs,
        schedule=build_schedule(cfg, task),
        saveat=build_saveat(cfg),
        initial=models,
        progress=False,
    )
    return float(np.median(np.asarray(traj.step_times)[1:]))  # step 0 compiles


def _best(f, *args, repeats: int = 5) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def _scan_layouts(members: int, width: int, layers: int = 8, points: int = 48) -> dict:
    w = jax.random.normal(jax.random.key(0), (members, layers, width, width)) / width**0.5
    h = jax.random.normal(jax.random.key(1), (members, points, width))

    def forward(w, h):  # one member: a scan over layers of per-point matvecs
        def body(h, wl):
            return h + jnp.tanh(jax.vmap(lambda v: wl @ v)(h)), None

        return jax.lax.scan(body, h, w)[0]

    layer_major = jnp.moveaxis(w, 1, 0)
    return {
        "member_major": _best(jax.jit(jax.vmap(forward)), w, h),
        "layer_major": _best(jax.jit(jax.vmap(forward, in_axes=(1, 0))), layer_major, h),
        "singles": members * _best(jax.jit(forward), w[0], h[0]),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=(32, 128, 512))
    parser.add_argument("--members", type=int, default=16)
    args = parser.parse_args(argv)
    E = args.members
    print(f"bench_ensemble: {jax.devices()[0].device_kind}, E = {E}, tanh L = 8, P = 48, float32")
    out: dict = {}
    for n in args.widths:
        one, ens = _step_time(n, 1), _step_time(n, E)
        planned = _run_time(n, E) / (E * _run_time(n, 1))
        out[n] = {"single_s": one, "ensemble_s": ens, "ratio": ens / (E * one), "run": planned}
        print(
            f"  n = {n:5d}: one member {one * 1e3:7.2f} ms, {E} members {ens * 1e3:8.2f} ms, "
            f"ratio to {E} singles {ens / (E * one):.2f} (goal <= 0.3); as run_finite plans "
            f"it: {planned:.2f} of {E} single runs",
            flush=True,
        )
    n = max(args.widths)
    lay = _scan_layouts(E, n)
    out["scan_layouts"] = lay
    print(
        f"  layer scan at n = {n}: vmap over (E, L, N, N) {lay['member_major'] * 1e3:.1f} ms, "
        f"over (L, E, N, N) with in_axes=1 {lay['layer_major'] * 1e3:.1f} ms, "
        f"{E} single scans {lay['singles'] * 1e3:.1f} ms"
    )
    return out


if __name__ == "__main__":
    main()
