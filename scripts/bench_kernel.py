"""Benchmark: time to a given accuracy of the mode-A limit (issue 11), for three estimators of it.

The target is ``f(t)`` of the n = ∞ standard network (mode A, readout P2) over the whole trajectory
(P = 8 points, T = 10 steps, L = 64, tanh), to a relative RMS error ``--target`` (1e-3). Measured
in one run, on the same machine and task:

  (a) the kernel fixed point (`limit.method = "kernel"`): one unit = one draw set of S samples,
      started as configured (the causal pass, `KernelFixedPoint.start = "causal"`); with
      ``--reference`` also from the tiled start with the damped iteration (the reference, and the
      method before the causal start; same fixed point, the iteration counts are printed);
  (b) random-matrix particles with Richardson in M: one unit = a run at M and one at 2M,
      estimate ``2 f(2M) − f(M)``;
  (c) finite networks extrapolated in n: one unit = one antithetic pair at each of three widths,
      estimate the intercept ``c`` of the least-squares fit ``c + a/n``.

For each, ``E`` units are timed (compiled: a warm-up run of the same shape first) and their spread
gives the variance ``σ²`` of one unit's estimate (for (c) from the per-width variances and the fit's
weights). Averaging ``E'`` units reaches relative RMS ``target`` when ``E' = σ² / (target² ·
mean f²)``, so the time to accuracy is ``E' · (time per unit)``. Only the Monte Carlo error is
counted (the remaining biases are O(1/S), O(1/M²) and O(1/n²)); the ratios (b)/(a) and (c)/(a)
are the result (goal of the issue: (b)/(a) ≥ 10).

    .venv/bin/python scripts/bench_kernel.py                  # ~3 min on 2 CPU cores
    .venv/bin/python scripts/bench_kernel.py --reference 0.7  # + the tiled start: ~5 min
    .venv/bin/python scripts/bench_kernel.py --depth 16 --units 3   # a quick look
"""

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

import nfd
from nfd.config._limits import LIMITS
from nfd.experiments import run_finite, run_limit


def _config(args) -> nfd.config.Config:
    return nfd.config.from_dict(
        {
            "kind": "limit",
            "precision": "float64",
            "task": {"name": "teacher_student", "n_train": args.points, "n_test": 0, "in_dim": 8},
            "model": {"depth": args.depth, "activation": "tanh", "gamma0": 1.0},
            "optim": {"lr": 0.5, "steps": args.steps},
            "output": {"every": 1},
            "limit": {"coupling": "exact", "readout": "features"},
        }
    )


def _f(traj) -> np.ndarray:
    return np.asarray(traj.f_train)  # (E, S, P, C)


def _timed(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    run()  # compile (and warm caches) at the same shapes
    t0 = time.perf_counter()
    out = run()
    return out, time.perf_counter() - t0


def _limit(
    cfg, method: str, size: int, units: int, seed: int, **limit
) -> tuple[np.ndarray, float, Any]:
    lim = dataclasses.replace(cfg.limit, method=method, particles=size, **limit)
    c = dataclasses.replace(cfg, limit=lim, seeds=units, seed=seed)
    last = {}

    def run() -> np.ndarray:
        last["traj"] = run_limit(c, quiet=True, progress=False)
        return _f(last["traj"])

    f, t = _timed(run)
    return f, t, last["traj"].info


@contextlib.contextmanager
def _kernel_start(start: str):
    """`limit.method = "kernel"` built with ``start`` (the config has no key for it)."""
    build = LIMITS["kernel"]
    LIMITS["kernel"] = lambda cfg, **kw: dataclasses.replace(build(cfg, **kw), start=start)
    try:
        yield
    finally:
        LIMITS["kernel"] = build


def _finite(cfg, width: int, units: int, seed: int) -> tuple[np.ndarray, float]:
    c = dataclasses.replace(cfg, seeds=2 * units, seed=seed)
    f, t = _timed(lambda: _f(run_finite(c, width=width, antithetic=True, progress=False)))
    return 0.5 * (f[0::2] + f[1::2]), t  # antithetic pair means: the units


def _report(name: str, var_unit: float, t_unit: float, scale2: float, target: float) -> float:
    units = var_unit / (target**2 * scale2)
    total = units * t_unit
    print(
        f"{name:<44s} σ_unit/|f| {np.sqrt(var_unit / scale2):8.2e}   time/unit {t_unit:7.2f} s"
        f"   units needed {units:10.3g}   time to {target:g}: {total:10.3g} s",
        flush=True,
    )
    return total


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--units", type=int, default=4, help="units timed per estimator")
    parser.add_argument("--samples", type=int, default=256, help="kernel samples S")
    parser.add_argument("--particles", type=int, default=256, help="M (and 2M)")
    parser.add_argument("--widths", type=int, nargs=3, default=(64, 128, 256))
    parser.add_argument("--target", type=float, default=1e-3)
    parser.add_argument(
        "--reference",
        type=float,
        nargs="*",
        default=(),
        help="also time (a) from the tiled start at these dampings λ (the config's is 0.7)",
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    cfg = _config(args)
    E, M = args.units, args.particles
    print(
        f"mode A, tanh, P = {args.points}, T = {args.steps}, L = K = {args.depth}, "
        f"{E} units each, {jax.devices()[0].platform}",
        flush=True,
    )

    times: dict[str, float] = {}
    scale2 = 0.0
    runs = [("kernel", "causal", cfg.limit.damping)]
    runs += [(f"kernel, tiled, λ={lam:g}", "tiled", lam) for lam in args.reference]
    for name, start, lam in runs:
        with _kernel_start(start):
            fk, tk, info = _limit(cfg, "kernel", args.samples, E, seed=1, damping=lam)
        if not scale2:
            scale2 = float(np.mean(fk.mean(0) ** 2))  # mean f² over the trajectory (RMS scale)
        its = "/".join(map(str, np.asarray(info.iterations).ravel().tolist()))
        times[name] = _report(
            f"(a) kernel, S = {args.samples}, {start} start, λ = {lam:g} ({its} it.)",
            float(np.mean(fk.var(0, ddof=1))),
            tk / E,
            scale2,
            args.target,
        )

    f1, t1, _ = _limit(cfg, "particles", M, E, seed=2)
    f2, t2, _ = _limit(cfg, "particles", 2 * M, E, seed=3)
    var_r = float(np.mean(4 * f2.var(0, ddof=1) + f1.var(0, ddof=1)))
    times["particles"] = _report(
        f"(b) particles, Richardson M = {M}, {2 * M}", var_r, (t1 + t2) / E, scale2, args.target
    )

    x = 1.0 / np.asarray(args.widths, float)
    A = np.stack([np.ones_like(x), x], axis=1)
    w = np.linalg.pinv(A)[0]  # c = Σ_i w_i · mean_i
    var_c, t_c = 0.0, 0.0
    for i, n in enumerate(args.widths):
        fn, tn = _finite(cfg, n, E, seed=10 + i)
        var_c += w[i] ** 2 * float(np.mean(fn.var(0, ddof=1)))
        t_c += tn / E
    times["finite"] = _report(
        f"(c) finite, c + a/n over n = {', '.join(map(str, args.widths))}",
        var_c,
        t_c,
        scale2,
        args.target,
    )
    for name in [k for k in times if k.startswith("kernel")]:
        print(
            f"time-to-accuracy ratios ({name}): particles/kernel "
            f"{times['particles'] / times[name]:.3g} (goal >= 10), finite/kernel "
            f"{times['finite'] / times[name]:.3g}",
            flush=True,
        )
    return times


if __name__ == "__main__":
    main()
