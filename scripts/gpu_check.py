"""The prepared GPU check: one short script that measures what only an accelerator can tell.

Run it on a machine with a GPU (it also runs on a CPU at ``--size smoke``, which the tests do):

    python scripts/gpu_check.py --out DIR               # GPU sizes, about 5 minutes on one H100
    python scripts/gpu_check.py --size smoke --out DIR  # seconds, any machine

Each section runs on its own (a failure or a timeout is recorded, the others go on) and the
numbers go to ``DIR/gpu_check.json`` (and a summary to stdout):

- ``device``: platform, kind, count, memory limit, JAX version;
- ``particles``: `scripts/bench_limit.py` at the size of ``--size`` (per-step time flat in t,
  achieved GFLOP/s against a jitted matmul chain of the same shape, the memory estimate against
  the device's measured peak);
- ``finite``: `scripts/bench_finite.py` (one training step against a jitted matmul chain, and
  against PyTorch when installed);
- ``precision``: a float64 finite run and the same run (data and initial weights cast down) in
  float32 with each matmul precision (``highest``, ``tensorfloat32``, ``bfloat16``: a config's
  `matmul_precision`); the relative errors of the final training loss and predictions;
- ``ensemble``: E = 8 members in one vmapped computation against 8 single-member runs (the time
  ratio; goal ≤ 0.3), and on several devices the members sharded over them (`nfd.dynamics`).
"""

import argparse
import contextlib
import io
import json
import pathlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax

SCRIPTS = pathlib.Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

SIZES = {
    "smoke": {
        "particles": ["--particles", "64", "--layer-steps", "4", "--points", "8", "--steps", "12"],
        "lean": [
            *("--particles", "64", "--layer-steps", "4", "--points", "8", "--steps", "4"),
            *("--form", "lean"),
        ],
        "history": [
            *("--particles", "64", "--layer-steps", "4", "--points", "8", "--steps", "3"),
            *("--form", "history"),
        ],
        "finite": ["--width", "32", "--depth", "4", "--points", "16", "--steps", "3"],
        "run": ["model.width=32", "model.depth=4", "optim.steps=5"],
        "kernel": ["model.depth=16", "task.n_train=4", "optim.steps=3", "limit.particles=256"],
    },
    "gpu": {
        "particles": [
            *("--particles", "8192", "--layer-steps", "32", "--points", "128"),
            *("--steps", "60"),
        ],
        # issue 13's size: M = 16384, K = 64, P = 64, mode A, lean (68.5 GiB estimated: needs
        # XLA_PYTHON_CLIENT_MEM_FRACTION=.95 on an 80 GB card, which device_check.sh sets)
        "lean": [
            *("--particles", "16384", "--layer-steps", "64", "--points", "64"),
            *("--steps", "8", "--form", "lean"),
        ],
        # the same size with the drift as its rank-512 history (8 steps × 64 points): ~7 GiB
        "history": [
            *("--particles", "16384", "--layer-steps", "64", "--points", "64"),
            *("--steps", "8", "--form", "history"),
        ],
        "finite": ["--width", "4096", "--depth", "64", "--points", "256", "--steps", "10"],
        "run": ["model.width=1024", "model.depth=32", "optim.steps=50", "task.n_train=256"],
        "kernel": ["model.depth=1024", "task.n_train=8", "optim.steps=10", "limit.particles=1024"],
    },
}


def _device() -> dict[str, Any]:
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    return {
        "platform": dev.platform,
        "kind": getattr(dev, "device_kind", str(dev)),
        "count": jax.device_count(),
        "memory_limit_bytes": stats.get("bytes_limit"),
        "jax": jax.__version__,
    }


def _bench(module: str, args: list[str]) -> dict[str, Any]:
    bench = __import__(module)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = bench.main(args)
    return {**out, "printed": printed.getvalue()}


def _finite_run(sets: list[str], precision: str):
    from nfd import config
    from nfd.experiments import run_finite

    cfg = config.load(
        ROOT / "configs/smoke/finite.toml",
        [*sets, f"precision='{precision}'", "output.ntk=false", "output.kernels=false"],
    )
    return run_finite(cfg, progress=False)


def _precision(sets: list[str]) -> dict[str, Any]:
    """One float64 finite ensemble, and the same run (its data and initial weights cast down)
    in float32: what a float32 run gives up."""
    import jax.numpy as jnp
    import numpy as np

    from nfd import config
    from nfd.config import build_saveat, build_schedule, build_task, run_keys
    from nfd.dynamics import Points, evolve
    from nfd.experiments._finite import finite_ensemble

    cfg = config.load(
        ROOT / "configs/smoke/finite.toml",
        [*sets, "precision='float64'", "output.ntk=false", "output.kernels=false"],
    )
    task = build_task(cfg, key=run_keys(cfg)["task"])
    net, models, lrs = finite_ensemble(cfg, task)
    points = Points.from_task(task)
    schedule, saveat = build_schedule(cfg, task), build_saveat(cfg)

    def down(tree):
        return jax.tree.map(
            lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            tree,
        )

    f64 = evolve(net, points, lr=lrs, schedule=schedule, saveat=saveat, initial=models)
    loss64, f_64 = np.asarray(f64.loss_train)[:, -1], np.asarray(f64.f_train)[:, -1]
    out: dict[str, Any] = {}
    for matmul in ("highest", "tensorfloat32", "bfloat16"):  # `matmul_precision` of a config
        with jax.default_matmul_precision(matmul):
            f32 = evolve(
                net,
                down(points),
                lr=down(lrs),
                schedule=schedule,
                saveat=saveat,
                initial=down(models),
            )
        loss32, f_32 = np.asarray(f32.loss_train)[:, -1], np.asarray(f32.f_train)[:, -1]
        out[matmul] = {
            "final_loss_rel_err": float(np.max(np.abs(loss32 - loss64) / np.abs(loss64))),
            "f_rel_err": float(np.max(np.abs(f_32 - f_64)) / np.max(np.abs(f_64))),
        }
    out["dtypes"] = [str(f32.f_train.dtype), str(f64.f_train.dtype)]
    out["final_loss_rel_err"] = out["highest"]["final_loss_rel_err"]  # float32, full matmuls
    return out


def _ensemble(sets: list[str]) -> dict[str, Any]:
    """8 members at once against 8 single-member runs (compiled before timing)."""

    def timed(seeds: int) -> float:
        _finite_run([*sets, f"seeds={seeds}"], "float32")  # compile
        t0 = time.perf_counter()
        traj = _finite_run([*sets, f"seeds={seeds}"], "float32")
        traj.loss_train.block_until_ready()
        return time.perf_counter() - t0

    one, eight = timed(1), timed(8)
    from nfd.dynamics import member_mesh

    mesh = member_mesh(8)
    return {
        "single_s": one,
        "ensemble_8_s": eight,
        "ratio_to_8_singles": eight / (8 * one),
        "goal": "<= 0.3",
        "mesh_devices": 1 if mesh is None else int(mesh.devices.size),
    }


def _cpu_agreement(sets: list[str]) -> dict[str, Any]:
    """The same float64 runs (finite, and the particle limit) on the accelerator and on the CPU:
    the largest relative difference of the predictions (round-off only, if the device's float64
    is honest)."""
    import numpy as np

    from nfd import config
    from nfd.experiments import run_finite, run_limit

    def both(run, path, extra):
        cfg = config.load(ROOT / path, [*extra, "precision='float64'", "output.ntk=false"])
        with jax.default_device(jax.devices("cpu")[0]):
            cpu = np.asarray(run(cfg, progress=False).f_train)
        dev = np.asarray(run(cfg, progress=False).f_train)
        return float(np.max(np.abs(dev - cpu)) / np.max(np.abs(cpu)))

    finite = both(run_finite, "configs/smoke/finite.toml", [*sets[:2], "output.kernels=false"])
    limit = both(
        lambda c, progress: run_limit(c, progress=progress, quiet=True),
        "configs/smoke/limit.toml",
        ["output.kernels=false"],
    )
    return {"finite_f_rel_diff": finite, "limit_f_rel_diff": limit, "goal": "<= 1e-10"}


def _kernel(sets: list[str]) -> dict[str, Any]:
    """The kernel method in mode A (tanh, float64) at large depth K = L: wall time of a whole run
    (compilation included) and whether every member's fixed point converged."""
    import numpy as np

    from nfd import config
    from nfd.experiments import run_limit

    base = ["limit.method='kernel'", "precision='float64'", "output.ntk=false", "seeds=2"]
    cfg = config.load(ROOT / "configs/smoke/limit.toml", [*base, "output.kernels=false", *sets])
    t0 = time.perf_counter()
    traj = run_limit(cfg, progress=False, quiet=True)
    f = np.asarray(traj.f_train)
    wall = time.perf_counter() - t0
    return {
        "depth": cfg.model.depth,
        "points": cfg.task.n_train,
        "steps": cfg.optim.steps,
        "wall_s": wall,
        "converged": bool(np.all(np.asarray(traj.info.converged))),
        "finite": bool(np.all(np.isfinite(f))),
    }


def _figure(results: dict[str, Any], out: pathlib.Path) -> dict[str, Any]:
    """One summary figure: each section's headline ratio against its goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = results.get("finite", {})
    bars = {
        "particles: FLOP/s ÷ matmul chain": results.get("particles", {}).get("matmul_ratio"),
        "lean particles: FLOP/s ÷ matmul chain": results.get("lean", {}).get("matmul_ratio"),
        "history particles: FLOP/s ÷ matmul chain": results.get("history", {}).get("matmul_ratio"),
        "finite step: FLOP/s ÷ matmul chain": (
            finite["nfd_gflops"] / finite["jax_matmul_gflops"]
            if "nfd_gflops" in finite and "jax_matmul_gflops" in finite
            else None
        ),
        "ensemble of 8 ÷ 8 singles (time)": results.get("ensemble", {}).get("ratio_to_8_singles"),
    }
    bars = {k: v for k, v in bars.items() if isinstance(v, int | float)}
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(bars) + 1.2))
    ax.barh(list(bars), list(bars.values()), color="#0072B2")
    ax.set_xlabel("ratio")
    ax.set_title(f"nfd GPU check: {results['device'].get('kind')} ({results['size']})")
    fig.tight_layout()
    fig.savefig(out / "gpu_check.png", dpi=120)
    plt.close(fig)
    return {"path": str(out / "gpu_check.png"), "bars": bars}


def _section(name: str, fn: Callable[[], dict[str, Any]], results: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = {**fn(), "section_s": time.perf_counter() - t0}
        status = "ok"
    except Exception as err:  # recorded, the other sections go on
        results[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
        status = f"FAILED ({type(err).__name__}: {err})"
    print(f"{name}: {status} ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="gpu")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    results: dict[str, Any] = {"size": args.size, "device": _device()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_check.json"
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "cpu_agreement": lambda: _cpu_agreement(size["run"]),
        "particles": lambda: _bench("bench_limit", size["particles"]),
        "lean": lambda: _bench("bench_limit", size["lean"]),
        "finite": lambda: _bench("bench_finite", size["finite"]),
        "ensemble": lambda: _ensemble(size["run"]),
        "precision": lambda: _precision(size["run"]),
        "kernel": lambda: _kernel(size["kernel"]),
        # last before the figure: a time limit that cuts the run takes this one first
        "history": lambda: _bench("bench_limit", size["history"]),
        "figure": lambda: _figure(results, args.out),
    }
    for name, fn in sections.items():
        _section(name, fn, results)
        # after every section: a time limit that stops the script keeps what was measured
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    for name in ("particles", "lean", "history", "finite"):
        print(results[name].get("printed", "").rstrip())
    keys = ("device", "cpu_agreement", "ensemble", "precision", "kernel")
    print(json.dumps({k: results[k] for k in keys}, default=str))
    print(path)
    return results


if __name__ == "__main__":
    main()
