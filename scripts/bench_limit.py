"""Benchmark of the particle limit solver (docs/math §4.1, §4.5): per-step cost flat in t.

Prints, for one CPU- or GPU-sized problem, measured in one run:
  * the per-training-step time in the first and the last decile of training (goal: ratio <= 1.2:
    the drift is in accumulator form, so a step's cost must not grow with t),
  * achieved GFLOP/s of a training step, and its ratio to a jitted chain of matmuls of the same
    shape ((M×M)@(M×P), K of them) on the same device (goal: >= 0.5),
  * the memory estimate (`nfd.limit.estimate_memory`) of the three forms (stored W_k, W̃_k; lean:
    regenerated from per-layer keys, the drift an M × M accumulator; history: lean with the drift
    as its rank-(T·P) history) against the measured peak of the form run: the device's
    `peak_bytes_in_use` where it reports one (GPU), else the growth of the host's max-RSS over the
    run (CPU: includes compilation and the runtime's own buffers, and never decreases, so run each
    form in its own process to measure both).

    .venv/bin/python scripts/bench_limit.py                     # M=2048 K=32 P=64 T=200
    .venv/bin/python scripts/bench_limit.py --form lean         # the same, W_k regenerated
    .venv/bin/python scripts/bench_limit.py --form history --steps 8   # rank 8 × 64 = 512
    .venv/bin/python scripts/bench_limit.py --particles 16384   # the GPU size of the issue
"""

import argparse
import resource
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import nfd
from nfd.dynamics import Points, SaveAt, batch_schedule, evolve
from nfd.limit import MatrixParticles, estimate_memory, step_flops
from nfd.nn import MSE, FeatureReadout, Tanh
from nfd.tasks import teacher_student


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return None


def _matmul_gflops(M: int, K: int, P: int, dtype, repeats: int = 5) -> float:
    """GFLOP/s of K chained (M×M)@(M×P) products under jit (the solver's dominant shape)."""
    W = jr.normal(jr.key(0), (K, M, M), dtype) / M**0.5
    h = jr.normal(jr.key(1), (M, P), dtype)

    @jax.jit
    def chain(W, h):
        return jax.lax.scan(lambda h, w: (jnp.tanh(w @ h), None), h, W)[0]

    chain(W, h).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chain(W, h).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * K * M * M * P / min(times) / 1e9


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--particles", type=int, default=2048)
    parser.add_argument("--layer-steps", type=int, default=32)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--block", choices=("one_layer", "two_layer"), default="one_layer")
    parser.add_argument("--coupling", choices=("exact", "decoupled"), default="exact")
    parser.add_argument(
        "--form",
        choices=("stored", "lean", "history"),
        default="stored",
        help="the particle storage form (limit.storage)",
    )
    args = parser.parse_args(argv)
    decoupled = args.coupling == "decoupled"
    blocks = 2 if args.block == "two_layer" else 1
    coupling = nfd.DecoupledWeights() if decoupled else nfd.ReusedWeights()
    M, K, P, T = args.particles, args.layer_steps, args.points, args.steps
    dtype = jnp.float32
    task = teacher_student(n_train=P, n_test=0, in_dim=16, key=jr.key(0))
    x, y = task.x_train.astype(dtype), task.y_train.astype(dtype)
    forms = {"stored": (True, 0), "lean": (False, 0), "history": (False, T * P)}
    ests = {
        form: estimate_memory(
            *(M, K, P, 1, 16, 1),
            **dict(itemsize=4, decoupled=decoupled, blocks=blocks),
            **dict(store_noise=store, drift_rank=rank),
        )
        for form, (store, rank) in forms.items()
    }
    form = args.form
    store_noise, drift_rank = forms[form]
    est = ests[form]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    block = nfd.TwoLayer() if args.block == "two_layer" else nfd.OneLayer()
    dynamics = MatrixParticles(
        num_particles=M,
        num_layer_steps=K,
        param=nfd.DepthMuP(),
        activation=Tanh(),
        loss=MSE(),
        coupling=coupling,
        readout=FeatureReadout(),
        block=block,
        store_noise=store_noise,
        drift_rank=drift_rank,
    )
    points = Points(x=x, y=y, num_train=P)
    t0 = time.perf_counter()
    res = evolve(
        dynamics,
        points,
        lr=jnp.full((1,), 0.5, dtype),
        schedule=batch_schedule(P, 0, T, key=jr.key(2)),
        saveat=SaveAt(steps=(0, T)),
        keys=jr.split(jr.key(1), 1),
        progress=sys.stderr.isatty(),
    )
    wall = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    st = np.asarray(res.step_times)[1:]  # step 0 includes compilation
    n = max(len(st) // 10, 1)
    first, last = float(np.median(st[:n])), float(np.median(st[-n:]))
    # forward and backward sweeps (2 K M² P each per block) and the update(s) of B (and B̃)
    flop = step_flops(M, K, P, P, 1, decoupled=decoupled, blocks=blocks, drift_rank=drift_rank)
    step = float(np.median(st))
    achieved = flop / step / 1e9
    ref = _matmul_gflops(M, K, P, dtype)
    peak = _peak_bytes()
    measured = peak if peak is not None else rss1 - rss0
    out = {
        "M": M,
        "K": K,
        "P": P,
        "T": T,
        "device": jax.devices()[0].device_kind,
        "step_first_decile_s": first,
        "step_last_decile_s": last,
        "decile_ratio": last / first,
        "gflops": achieved,
        "matmul_gflops": ref,
        "matmul_ratio": achieved / ref,
        "form": form,
        "memory_estimate_bytes": est,
        "memory_estimate_stored_bytes": ests["stored"],
        "memory_estimate_lean_bytes": ests["lean"],
        "memory_estimate_history_bytes": ests["history"],
        "memory_measured_bytes": measured,
        "wall_s": wall,
        "final_loss": float(res.loss_train[0, -1]),
    }
    print(
        f"bench_limit: particle_matrix ({args.block}, {args.coupling}, {form}), M={M} K={K} P={P} "
        f"T={T}, float32, "
        f"{out['device']} ({jax.default_backend()})"
    )
    print(
        f"  per-step time: first decile {first * 1e3:.1f} ms, last decile {last * 1e3:.1f} ms, "
        f"ratio {last / first:.3f} (goal <= 1.2)"
    )
    print(
        f"  achieved {achieved:.1f} GFLOP/s ({flop / 1e9:.1f} GFLOP/step); jitted "
        f"matmul chain {ref:.1f} GFLOP/s; ratio {achieved / ref:.2f} (goal >= 0.5)"
    )
    kind = "device peak" if peak is not None else "host max-RSS growth"
    print(
        f"  memory ({form}): estimate {est / 2**20:.0f} MiB, measured {measured / 2**20:.0f} MiB "
        f"({kind}; ratio {measured / est:.2f}); estimates: stored {ests['stored'] / 2**20:.0f} MiB, "
        f"lean {ests['lean'] / 2**20:.0f} MiB, history (rank {T * P}) "
        f"{ests['history'] / 2**20:.0f} MiB"
    )
    print(f"  total {wall:.1f} s, final train loss {out['final_loss']:.4g}")
    return out


if __name__ == "__main__":
    main()
