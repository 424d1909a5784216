"""Benchmark: the training-step time of nfd's finite trainer against plain PyTorch on this CPU.

The model is a one-layer depth-muP ReLU ResNet (docs/math §1.1), trained by full-batch SGD on MSE:

    h_0 = σ_in U x / sqrt(D);   h_{ℓ+1} = h_ℓ + (β/sqrt(L)) W_ℓ relu(h_ℓ) / sqrt(N);
    f = vᵀ relu(h_L) / (γ0 N);   loss = mean_μ ½ (f_μ − y_μ)²;   θ ← θ − η0 γ0² N ∂loss/∂θ

for every tensor θ ∈ {U, W, v}. nfd runs it through the step of its training loop (`evolve`'s jitted,
donating `_step` of a `FiniteNetwork`: an ensemble of one, with f(θ(0)) centring off so the loss is
the plain one above); the reference is the same math in
plain PyTorch tensors, run eagerly and with `torch.compile` of its forward (whose backward
AOTAutograd compiles too; `--no-compile` skips it). Both start from the same weights and the same data, and a tiny float64 run
checks once that one step of each gives the same loss and the same updated f.

FLOPs are counted analytically (matmuls only): forward ``2 P N (L N + D + C)``, backward twice that,
so a step is ``6 P N (L N + D + C)``. Elementwise work and the SGD update (≈ 2 per parameter, about
1/(3P) of the total) are not counted. As machine-speed references the script also times L chained
``(P×N) @ (N×N)`` matmuls, jitted in JAX and looped in torch (``2 L P N²`` FLOPs).

After untimed warm-up calls (JAX compiles there) the four are timed round-robin, so load from other
processes on shared cores falls on all of them alike; the table gives the median and the minimum.
torch runs ``os.cpu_count()`` threads; XLA's CPU client uses all cores by default.

    python scripts/bench_finite.py [--width 512 --depth 32 --points 256 --steps 20]
"""

import argparse
import functools
import os
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import nfd
from nfd.dynamics import Points, batch_schedule
from nfd.dynamics._evolve import _start, _step
from nfd.nn import MSE, Relu
from nfd.tasks import teacher_student
from nfd.train import SGD, FiniteNetwork

try:
    import torch
except ImportError:  # the nfd numbers are still reported
    torch = None

IN_DIM = 16  # D
OUT_DIM = 1  # C
LR = 0.1  # η0: the base learning rate


# -- timing ---------------------------------------------------------------------------------------
def _interleaved_times(steps: dict, *, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Wall times of each ``steps[name]()`` (each must block until its result is ready).

    After ``warmup`` untimed calls of each (JAX compiles here), the callables are timed round-robin,
    ``repeats`` times each, so that load from other processes falls on all of them alike.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def step_flops(width: int, depth: int, points: int) -> float:
    """Matmul FLOPs of one training step: ``3 × 2 P N (L N + D + C)`` (forward + 2× backward)."""
    forward = 2.0 * points * width * (depth * width + IN_DIM + OUT_DIM)
    return 3.0 * forward


# -- nfd ------------------------------------------------------------------------------------------
def _nfd_setup(width: int, depth: int, points: int, dtype):
    """The nfd network, its ensemble (E = 1), loop state and the data, ready for `_step`."""
    task = teacher_student(n_train=points, n_test=0, in_dim=IN_DIM, key=jr.key(0))
    net = FiniteNetwork(
        width=width,
        depth=depth,
        param=nfd.DepthMuP(),
        activation=Relu(),
        optimizer=SGD(),
        loss=MSE(),
        center=False,
    )
    data = Points(x=task.x_train.astype(dtype), y=task.y_train.astype(dtype), num_train=points)

    def make(k):
        return nfd.ResNet(
            IN_DIM, OUT_DIM, width, depth, param=net.param, activation=Relu(), dtype=dtype, key=k
        )

    models = eqx.filter_vmap(make)(jr.split(jr.key(1), 1))
    return {
        "net": net,
        "initial": models,
        "points": data,
        "state": _start(net, models, data),
        "alive": jnp.ones((1,), bool),
        "failed": jnp.full((1,), -1, jnp.int32),
        "lrs": jnp.full((1,), LR, dtype),
        "idx": batch_schedule(points, 0, 1, key=jr.key(2))[0],  # full batch: 0..P-1
    }


def _nfd_step(s: dict, t: int):
    """One step of the loop on the state ``s`` (updated in place); returns the loss ``(E,)``."""
    limit = jnp.full_like(s["lrs"], jnp.inf)  # the blow-up limit of `evolve`: never here
    static = (s["net"], s["initial"], s["points"], s["lrs"], limit, s["idx"])
    static = (*static, jnp.asarray(t, jnp.int32))
    state, alive, failed, values = _step(static, s["state"], s["alive"], s["failed"])
    s.update(state=state, alive=alive, failed=failed)
    return values


def _nfd_weights(s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U (N, D)``, ``W (L, N, N)``, ``v (N, C)`` of the single ensemble member, as numpy."""
    m = s["state"].model
    return np.asarray(m.U[0]), np.asarray(m.blocks[0][0]), np.asarray(m.v[0])


# -- plain PyTorch reference ----------------------------------------------------------------------
class _TorchResNet:
    """The same network and SGD step as plain tensors with ``requires_grad``."""

    def __init__(self, U, W, v, param, *, compiled: bool = False):
        self.U = torch.tensor(U, requires_grad=True)
        self.Ws = [torch.tensor(w, requires_grad=True) for w in W]  # one tensor per block
        self.v = torch.tensor(v, requires_grad=True)
        n, L = self.U.shape[0], len(self.Ws)
        self.n, self.L, self.D = n, L, self.U.shape[1]
        self.sigma_in, self.gamma0 = float(param.sigma_in), float(param.gamma0)
        self.branch = float(param.beta) / L**0.5
        self.lr = LR * self.gamma0**2 * n  # η0 γ0² N on every tensor (depth-muP: m_θ = 1)
        # torch.compile of the forward: AOTAutograd traces and compiles its backward too
        self._forward = torch.compile(self.forward) if compiled else self.forward

    def forward(self, x):
        relu = torch.relu
        h = (self.sigma_in / self.D**0.5) * (x @ self.U.T)  # (P, N)
        scale = self.branch / self.n**0.5
        for w in self.Ws:
            h = h + scale * (relu(h) @ w.T)
        return relu(h) @ self.v / (self.gamma0 * self.n)  # (P, C)

    def step(self, x, y):
        f = self._forward(x)
        loss = 0.5 * ((f - y) ** 2).sum(dim=-1).mean()
        loss.backward()
        with torch.no_grad():
            for p in (self.U, *self.Ws, self.v):
                assert p.grad is not None
                p -= self.lr * p.grad
                p.grad = None
        return loss.detach()


# -- reference check ------------------------------------------------------------------------------
def reference_check() -> float:
    """One float64 step of nfd and torch at N=32, L=4, P=8 from the same weights; max rel diff."""
    assert torch is not None
    with jax.enable_x64(True):
        s = _nfd_setup(32, 4, 8, jnp.float64)
        single = jax.tree.map(lambda a: a[0] if eqx.is_array(a) else a, s["state"].model)
        ref = _TorchResNet(*_nfd_weights(s), single.param)
        x, y = torch.tensor(np.asarray(s["points"].x)), torch.tensor(np.asarray(s["points"].y))
        loss_nfd = np.asarray(_nfd_step(s, 0))[0]
        new = jax.tree.map(lambda a: a[0] if eqx.is_array(a) else a, s["state"].model)
        f_nfd = np.asarray(jax.vmap(new)(s["points"].x))
    loss_ref = float(ref.step(x, y))
    with torch.no_grad():
        f_ref = ref.forward(x).numpy()
    diffs = [
        abs(loss_nfd - loss_ref) / abs(loss_ref),
        float(np.max(np.abs(f_nfd - f_ref)) / np.max(np.abs(f_ref))),
    ]
    diff = max(diffs)
    if not diff < 1e-10:
        raise AssertionError(
            f"reference check failed: nfd and torch differ (max rel diff {diff:.2e})"
        )
    return diff


# -- plain JAX references: the same step without the training loop, in two weight layouts ---------
def _jax_plain_step(U, W, v, x, y, *, transposed: bool = False, per_point: bool = False):
    """A jitted, donating SGD step of the same network as ``jax.grad`` of a ``lax.scan`` over the
    layers: ``W φ(h)`` per point as nfd computes it (``φ(H) @ Wᵀ`` for the batch), or with the
    weights stored transposed (``transposed``: ``φ(H) @ W``, the same matmuls without a
    transposed operand), or (``per_point``) as nfd's model writes it: ``W φ(h)`` for one point,
    `vmap`ped over the batch. Where nfd's step costs about this, the gap to torch is XLA's."""
    n, L = W.shape[-1], W.shape[0]
    branch = float(nfd.DepthMuP().beta) / L**0.5 / n**0.5
    lr = LR * n  # η0 γ0² N, γ0 = 1

    def loss(p):
        U, W, v = p
        if per_point:

            def one(x1):
                def layer(h, w):
                    return h + branch * (w @ jax.nn.relu(h)), None

                h = jax.lax.scan(layer, U @ x1 / IN_DIM**0.5, W)[0]
                return v.T @ jax.nn.relu(h) / n

            f = jax.vmap(one)(x)
            return 0.5 * jnp.mean(jnp.sum((f - y) ** 2, axis=-1))
        h = x @ U.T / IN_DIM**0.5

        def layer(h, w):
            return h + branch * (jax.nn.relu(h) @ (w if transposed else w.T)), None

        f = jax.nn.relu(jax.lax.scan(layer, h, W)[0]) @ v / n
        return 0.5 * jnp.mean(jnp.sum((f - y) ** 2, axis=-1))

    @functools.partial(jax.jit, donate_argnums=0)
    def step(p):
        value, grads = jax.value_and_grad(loss)(p)
        return jax.tree.map(lambda a, g: a - lr * g, p, grads), value

    params = [
        (jnp.asarray(U), jnp.asarray(np.swapaxes(W, 1, 2) if transposed else W), jnp.asarray(v))
    ]

    def call():
        params[0], value = step(params[0])
        return value.block_until_ready()

    return call


# -- machine-speed references ---------------------------------------------------------------------
def _jax_matmul(width: int, depth: int, points: int):
    """A callable running ``depth`` chained jitted ``(P×N) @ (N×N)`` matmuls."""
    kh, kw = jr.split(jr.key(3))
    h = jr.normal(kh, (points, width), jnp.float32)
    ws = jr.normal(kw, (depth, width, width), jnp.float32) / width**0.5

    @jax.jit
    def chain(h, ws):
        return jax.lax.scan(lambda a, w: (a @ w, None), h, ws)[0]

    return lambda: chain(h, ws).block_until_ready()


def _torch_matmul(width: int, depth: int, points: int):
    """A callable running ``depth`` chained torch ``(P×N) @ (N×N)`` matmuls."""
    assert torch is not None
    g = torch.Generator().manual_seed(3)
    h = torch.randn(points, width, generator=g)
    ws = [torch.randn(width, width, generator=g) / width**0.5 for _ in range(depth)]

    def chain():
        a = h
        for w in ws:
            a = a @ w
        return a

    return chain


# -- main -----------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512, help="N")
    parser.add_argument("--depth", type=int, default=32, help="L")
    parser.add_argument("--points", type=int, default=256, help="P (full batch)")
    parser.add_argument("--steps", type=int, default=20, help="timed calls of each (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile)")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip torch.compile"
    )
    args = parser.parse_args(argv)
    n, L, P = args.width, args.depth, args.points
    threads = os.cpu_count() or 1
    out: dict = {"width": n, "depth": L, "points": P, "steps": args.steps, "threads": threads}

    print(f"bench_finite: N={n} L={L} P={P} D={IN_DIM} C={OUT_DIM} float32, full-batch SGD, MSE")
    print(f"  {jax.devices()[0].platform} device, jax {jax.__version__}, os.cpu_count()={threads}")
    if torch is None:
        print("torch not installed: pip install torch==2.13.0")
    else:
        torch.set_num_threads(threads)
        print(f"  torch {torch.__version__}, torch.set_num_threads({torch.get_num_threads()})")
        out["ref_rel_diff"] = reference_check()
        print(
            f"reference check: OK (max rel diff {out['ref_rel_diff']:.1e}, float64, N=32 L=4 P=8)"
        )

    flops = step_flops(n, L, P)
    mm_flops = 2.0 * L * P * n * n
    out["step_gflop"] = flops / 1e9
    print(f"FLOPs/step = 6·P·N·(L·N + D + C) = {flops / 1e9:.4g} GFLOP (matmuls only)")
    print(f"matmul ref = {L} × (P×N)@(N×N) = 2·L·P·N² = {mm_flops / 1e9:.4g} GFLOP")

    s = _nfd_setup(n, L, P, jnp.float32)
    weights0 = _nfd_weights(s)  # torch starts from these
    counter = iter(range(10**9))
    # (label, callable, FLOPs per call); training steps first, then the matmul references
    cases = [("nfd loop step", lambda: _nfd_step(s, next(counter)).block_until_ready(), flops)]
    if torch is not None:
        ref = _TorchResNet(*weights0, nfd.DepthMuP())
        x, y = torch.tensor(np.asarray(s["points"].x)), torch.tensor(np.asarray(s["points"].y))
        cases.append(("plain torch step", lambda: ref.step(x, y), flops))
        if args.compile:
            comp = _TorchResNet(*weights0, nfd.DepthMuP(), compiled=True)
            cases.append(("torch.compile step", lambda: comp.step(x, y), flops))
    xy = (s["points"].x, s["points"].y)
    cases.append(("jax.grad of lax.scan", _jax_plain_step(*weights0, *xy, transposed=False), flops))
    cases.append(("  weights transposed", _jax_plain_step(*weights0, *xy, transposed=True), flops))
    cases.append(("  per point, vmapped", _jax_plain_step(*weights0, *xy, per_point=True), flops))
    cases.append(("jax.jit matmul chain", _jax_matmul(n, L, P), mm_flops))
    if torch is not None:
        cases.append(("torch matmul chain", _torch_matmul(n, L, P), mm_flops))
    load0 = os.getloadavg()[0]
    times = _interleaved_times(
        {name: fn for name, fn, _ in cases}, repeats=args.steps, warmup=args.warmup
    )
    load1 = os.getloadavg()[0]
    out["loadavg"] = (load0, load1)

    keys = {
        "nfd loop step": "nfd",
        "plain torch step": "torch",
        "torch.compile step": "torch_compile",
        "jax.grad of lax.scan": "jax_step",
        "  weights transposed": "jax_step_transposed",
        "  per point, vmapped": "jax_step_per_point",
        "jax.jit matmul chain": "jax_matmul",
        "torch matmul chain": "torch_matmul",
    }
    print(f"\n{'':<22} {'median ms':>10} {'min ms':>9} {'GFLOP/s':>9} {'(at min)':>9}")
    for name, _, fl in cases:
        med, best = statistics.median(times[name]), min(times[name])
        out[f"{keys[name]}_s"] = med
        out[f"{keys[name]}_gflops"] = fl / med / 1e9
        print(
            f"{name:<22} {1e3 * med:>10.2f} {1e3 * best:>9.2f} {fl / med / 1e9:>9.1f} "
            f"{fl / best / 1e9:>9.1f}"
        )
    if torch is not None:
        out["ratio"] = out["nfd_s"] / out["torch_s"]
        best_ratio = min(times["nfd loop step"]) / min(times["plain torch step"])
        print(
            f"nfd / torch step time: {out['ratio']:.2f}× (medians), {best_ratio:.2f}× (minima); "
            f"{args.steps} interleaved steps after {args.warmup} warm-up"
        )
        if "torch_compile_s" in out:
            out["ratio_compile"] = out["nfd_s"] / out["torch_compile_s"]
            print(f"nfd / torch.compile step time: {out['ratio_compile']:.2f}× (medians)")
    print(
        f"nfd / plain jax.grad step: {out['nfd_s'] / out['jax_step_s']:.2f}× (medians); "
        f"weights transposed / as nfd stores them: "
        f"{out['jax_step_transposed_s'] / out['jax_step_s']:.2f}×; per point, vmapped: "
        f"{out['jax_step_per_point_s'] / out['jax_step_s']:.2f}×"
    )
    print(f"1-min load average {load0:.2f} before, {load1:.2f} after timing")
    if load0 > 0.5:
        print("  warning: the machine was busy before timing; other processes share these cores")
    return out


if __name__ == "__main__":
    main()
