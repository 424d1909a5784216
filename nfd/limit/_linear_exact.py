"""Exact n = ∞ training dynamics of linear one-layer ResNets (docs/math §4.4): `LinearExact`.

For ``φ = id`` the infinite-width limit at depth ``K`` (``K`` layer steps; with ``K = L`` it is
exactly the ``n → ∞`` limit of the depth-``L`` network of §1) is computed with **zero Monte
Carlo error**, in both couplings (mode A `exact` = `ReusedWeights`, mode B `decoupled` =
`DecoupledWeights`) and both readouts (P1 `NTKReadout`, P2 `FeatureReadout`).

Derivation (the matrix realisation of §4.1 with ``M → ∞``, read as a Tensor Program):

1. **Only ``W_k(0)`` is random.** With ``b`` the branch multiplier and ``m_W b²`` the per-step drift
   weight, ``W_k(t) = W_k(0) + ΔW_k(t)`` and ``b ΔW_k h/sqrt(n) = m_W b² η0γ0 Σ_{s<t,ν}
   (g_{k+1,ν}(s)·c_ν(s)) (h_{k,ν}(s)·h/n)`` (§1.5); likewise ``ΔWᵀ``, ``ΔU`` and ``Δv`` are
   sums of fields weighted by inner products. So a training run is a program that applies the fixed
   Gaussian matrices ``W_k(0)`` (forward) and ``W_k(0)ᵀ`` (backward; ``W̃_k(0)ᵀ`` in mode B) to
   fields and otherwise only forms linear combinations whose weights are kernels.
2. **Fields are coefficient vectors.** At ``n = ∞`` each field's coordinate law is a *linear*
   combination of i.i.d. N(0, 1) primitives: ``u_j`` (the input, ``h_{0,μ}(0) = Σ_j a_{μj} u_j`` with
   ``a aᵀ = σ_in² K^x``), ``v_a(0) = σ_out ζ^v_a`` and, for every layer step and sweep, whitened
   primitives ``z^ξ_k(t)``, ``z^ρ_k(t)`` of the forward and backward noises. A field is the vector of
   its coefficients and ``E[X Y]`` (a kernel entry, ``X·Y/n`` at n = ∞) is the dot product of two
   coefficient vectors: no sampling anywhere.
3. **The Gaussian matrix rule** (Tensor Programs' master theorem for ``W`` and ``Wᵀ``, i.e.
   Gaussian integration by parts over ``W_k(0)``): ``W x/sqrt(n) → Ẑ^{Wx} + Ż^{Wx}``. ``Ẑ`` is
   jointly Gaussian with ``E[Ẑ^{Wx} Ẑ^{Wx'}] = x·x'``: a linear isometry of the inputs of ``W`` onto
   fresh primitives, built causally. The inputs of ``W_k`` met so far get an orthonormal basis
   ``e_j`` (Gram–Schmidt on coefficient vectors, each sweep's new inputs orthogonalised twice against
   the old basis and then column by column with a rank tolerance), basis vector ``e_j`` is mapped to
   primitive ``z^ξ_{k,j}``, and ``Ẑ^{Wx} = Σ_j (x·e_j) z^ξ_{k,j}``: ``ξ_k ~ GP(0, Φ_k)`` drawn
   causally in whitened form (§3.4). Inputs may contain earlier ``z^ξ_k``; only new
   primitives are attached to new directions, so the map stays an isometry. ``Wᵀ`` has its own
   basis ``e'_j`` and primitives ``z^ρ_{k,j}`` (``ρ_k ~ GP(0, G_{k+1})``), independent of the
   ``z^ξ``. ``Ż`` is the Stein (response) term, ``Ż^{Wx} = Σ_y Z^y E[∂Z^x/∂Ẑ^{Wᵀy}]``; in whitened
   form ``Ż^{Wx} = Σ_j (∂x/∂z^ρ_{k,j}) e'_j`` (the coefficient of ``x`` on ``z^ρ_{k,j}`` times the
   backward basis vector), which is ``Σ_{s<t} R_k(t,s) g_{k+1}(s)`` of §3.1, and likewise
   ``Ż^{Wᵀy} = Σ_j (∂y/∂z^ξ_{k,j}) e_j = Σ_{s≤t} D_k(t,s) h_k(s)``. Every field is linear in the
   primitives, so these derivatives are exact numbers. Mode A keeps ``Ż``; mode B backpropagates
   through an independent ``W̃_k(0)`` that is never applied forward (and ``W_k(0)`` never
   backward), so ``Ż ≡ 0`` there while every ``ΔW`` drift is kept (NFD/GIA). At ``t = 0`` no field
   carries a ``z^ρ`` before ``W_k`` acts, so ``R = D = 0`` (§3.1).
4. **Causal order** (§3.4): at step ``t`` the forward sweep (inputs to ``W_k``: ``h_k(t)``)
   sees backward primitives of steps ``s < t``; the backward sweep (inputs to ``W_kᵀ``:
   ``g_{k+1}(t)``) sees forward primitives of steps ``s ≤ t``. ``f`` (P1 or P2), ``c(t)``, ``Δv`` and
   the P1 kernel step then follow exactly.

Structure used: ``φ' = 1``, so ``g`` does not depend on the input point, and ``h_k(t)`` is linear in
``x``; the code therefore carries ``r = min(D, P+Q)`` *columns* per layer step and sweep,
``h_{k,μ}(t) = H_k(t) a_μ`` (``a = σ_in X Q/sqrt(D)``, ``Q`` an orthonormal basis of the inputs'
span), and ``C`` backward fields. With ``T`` training steps there are
``N = r + C + K (T+1)(r+C)`` primitives (the extra sweep observes ``t = T``); memory is
``O(K T (r+C) N)`` and time ``O(K² T³ (r+C)³)`` (with P + Q = 6 on a busy 2-core machine: 0.3 s
for K = 32, T = 8; 2 s for K = 32, T = 20; 5 s and 0.5 GB for K = 128, T = 8). A residual
direction below ``rank_rtol × max|x|`` is dropped: for exactly dependent inputs (a frozen tensor,
test directions outside the training inputs' span, ``c = 0``) it is round-off, otherwise the error
it leaves is of that relative size. The bases stay orthonormal to ~1e-15.

Also exposed: `first_step_response`, mode A's forward response ``R_k(1, 0)`` (§5.2 (b)).

Reported kernels are exact: ``Φ_k = H_k``, ``G_k`` (class-averaged), the NTK by which ``f`` moves
(the fields' own ``Θ``; for mode B read out by P2 the ``Θ̃`` whose rows use the true sensitivity,
obtained by backpropagating through ``W_k(t)ᵀ``: its fresh ``Ẑ`` parts are orthogonal to every
mode-B field and are omitted, only its ``Ż`` and drift parts enter ``g·g̃``), ``h_rms``,
``h_movement`` and ``block_movement`` (``b ΔW_k h_k/sqrt(n)``), all as exact expectations.

`LinearExact` is a path dynamics (`nfd.dynamics.AbstractPathDynamics`, ``deterministic``: `evolve`
solves each learning rate once). The computation is host-side numpy in float64 (an oracle must not
depend on ``jax_enable_x64``) and sequential (the Gram–Schmidt rank is data dependent; the fields
are `nfd.limit._linear_exact_run.Run`), with BLAS limited to one thread while it runs (its
products are skinny, and threads only contend). The shared pieces run through JAX inside
``jax.enable_x64(True)`` on float64 arrays: the error signal (`nfd.nn.error_signal`, any loss), the
readout (`predict`/`advance`) and the NTK assembly (`nfd.nn.ntk`). Outputs are JAX arrays of the
inputs' dtype.
"""

import contextlib
import functools
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray
from threadpoolctl import threadpool_limits

from .. import nn
from ..dynamics import AbstractPathDynamics, PathSolution, Points, SaveAt
from ..nn import AbstractActivation, AbstractLoss, AbstractReadout, FeatureReadout, Linear
from ..param import (
    AbstractBackwardWeights,
    AbstractBlock,
    AbstractParameterization,
    OneLayer,
    ReusedWeights,
)
from ._checks import check_layer_steps, check_one_layer
from ._linear_exact_run import RANK_RTOL, Run, Scalars


class LinearExact(AbstractPathDynamics):
    """Exact ``n = ∞`` dynamics of a linear one-layer ResNet at depth ``K`` (§4.4).

    No sampling: the result is the ``M → ∞`` limit of `MatrixParticles` with ``Linear()`` (and, at
    ``K = L``, the ``n → ∞`` limit of the finite linear network) in the chosen coupling and readout.
    Saved: ``f``, ``ntk`` (``Θ̃`` for mode B with P2, else the fields' own ``Θ``),
    ``h_kernel``/``g_kernel`` (``g`` does not depend on the point for linear nets), ``h_rms``,
    ``h_movement``, ``block_movement`` (all exact). A run that turns non-finite stops there
    (``failed_step``).

    Attributes:
        num_layer_steps: ``K`` (`limit.layer_steps`; ``= L`` for the depth-``L`` network).
        param: the parameterization (``β``, ``γ0``, ``σ_in``, ``σ_out``, multipliers) at depth ``K``.
        activation: must be `Linear` (the method is exact only for ``φ = id``).
        loss: any `AbstractLoss` (the derivation needs only a deterministic error signal).
        coupling: `ReusedWeights` (mode A, `exact`) or `DecoupledWeights` (mode B, `decoupled`).
        readout: `FeatureReadout` (P2) or `NTKReadout` (P1).
        block: `OneLayer` (the only block kind solved here).
        rank_rtol: relative Gram–Schmidt tolerance below which a residual is round-off.
    """

    num_layer_steps: int = eqx.field(static=True)
    param: AbstractParameterization
    activation: AbstractActivation
    loss: AbstractLoss
    coupling: AbstractBackwardWeights
    readout: AbstractReadout = FeatureReadout()
    block: AbstractBlock = OneLayer()
    rank_rtol: float = eqx.field(default=RANK_RTOL, static=True)

    deterministic: ClassVar[bool] = True

    def __check_init__(self):
        if not isinstance(self.activation, Linear):
            raise ValueError(
                f"[limit] method = 'linear_exact' needs model.activation = 'linear', got "
                f"{self.activation.name!r}; use limit.method = 'particles' or 'kernel'."
            )
        check_one_layer(self.block, "linear_exact")
        check_layer_steps(self.num_layer_steps)

    def solve(
        self,
        points: Points,
        lr: Float[Array, ""],
        schedule: Int[Array, "T B"],
        saveat: SaveAt,
        *,
        key: PRNGKeyArray | None = None,
    ) -> PathSolution:
        """The saved observables of the exact run (``key`` is unused: nothing is sampled)."""
        del key
        lr_, sched = float(lr), np.asarray(schedule)
        _check_run(lr_, sched, points.num_train)
        x, y = (np.asarray(a, np.float64) for a in (points.x, points.y))
        with _host():
            out = _simulate(self, x, y, lr_, sched, saveat)
        Pts, C, K = x.shape[0], y.shape[1], self.num_layer_steps
        shapes = {"f": (Pts, C), "h_rms": (K + 1,), "h_movement": (K + 1,), "block_movement": (K,)}
        if saveat.ntk:
            shapes["ntk"] = (Pts, Pts)
        if saveat.kernels:
            R = len(saveat.layer_times)
            shapes |= {"h_kernel": (R, Pts, Pts), "g_kernel": (R, Pts, Pts)}
        observables = {}
        for name, shape in shapes.items():  # steps after a failure are never reached: NaN
            arr = np.full((len(saveat.steps), *shape), np.nan)
            for i, t in enumerate(saveat.steps):
                if t in out.records:
                    arr[i] = out.records[t][name]
            with np.errstate(over="ignore"):  # a diverged run's values may overflow float32
                observables[name] = jnp.asarray(arr, points.x.dtype)
        return PathSolution(observables=observables, failed_step=jnp.asarray(out.failed, jnp.int32))


def first_step_response(
    x: Float[Array, "P D"],
    y: Float[Array, "P C"],
    *,
    param: AbstractParameterization,
    num_layer_steps: int,
    loss: AbstractLoss,
    lr: float,
) -> Float[Array, "K P C"]:
    """Mode A's forward response ``R_k(1, 0)`` after one full-batch step (§3.1, §5.2 (b)).

    The Stein term of layer step ``k`` at ``t = 1`` is ``Ż_{k,μ}(1) = Σ_ν R_k(1,0)_{μν} g_{k+1,ν}(0)``.
    For linear nets ``g_{k+1,ν}(0)`` is the same field for every point ``ν``, so only the point sum is
    defined: this returns ``R_k(1,0)_{μa} = Σ_ν R_k(1,0)^{a}_{μν}``, the coefficients of
    ``Ż_{k,μ}(1)`` on the ``C`` fields ``g^a_{k+1}(0)``. It is ``O(K^{-1/2})``; for ``P = 1``,
    ``K^x = σ = β = 1``, ``sqrt(K) R_k(1,0)/(η0γ0 c(0))`` tends to ``(m_U + τ) e^τ`` at ``k = τK``.
    """
    # the fields at t <= 1 do not depend on the readout (f(0) = 0 in both)
    dyn = LinearExact(
        num_layer_steps=num_layer_steps,
        param=param,
        activation=Linear(),
        loss=loss,
        coupling=ReusedWeights(),
    )
    P = x.shape[0]
    schedule = np.arange(P)[None]
    _check_run(float(lr), schedule, P)
    x_, y_ = (np.asarray(a, np.float64) for a in (x, y))
    with _host():
        out = _simulate(dyn, x_, y_, float(lr), schedule, None, record_zdot_at=1)
    assert out.zdot is not None and out.g_prev is not None
    zd = out.zdot @ out.run.a.T  # Ż_{k,μ}(1), (K, n, P)
    g = out.g_prev[1:, : zd.shape[1]]  # g_{k+1}(0), (K, n, C)
    gram = g.transpose(0, 2, 1) @ g  # (K, C, C)
    R = np.linalg.solve(gram, g.transpose(0, 2, 1) @ zd)  # (K, C, P)
    return jnp.asarray(R.transpose(0, 2, 1), x.dtype)


# -- the run ---------------------------------------------------------------------------------------
def _check_run(lr: float, schedule: np.ndarray, num_train: int) -> None:
    if not np.isfinite(lr):
        raise ValueError(f"[optim] lr must be finite, got {lr}.")
    if schedule.ndim != 2:
        raise ValueError(f"schedule must have shape (T, B), got {schedule.shape}.")
    if schedule.size and (schedule.min() < 0 or schedule.max() >= num_train):
        raise ValueError(
            f"schedule indices must lie in [0, {num_train}) (the training points), got "
            f"[{schedule.min()}, {schedule.max()}]."
        )


@contextlib.contextmanager
def _host():
    """Skinny products (BLAS threads only contend); overflow is detected and reported, not warned;
    the shared JAX pieces run in float64."""
    with (
        threadpool_limits(limits=1, user_api="blas"),
        np.errstate(over="ignore", invalid="ignore"),
        jax.enable_x64(True),
    ):
        yield


def _jx(a) -> Array:
    """A host array as a JAX array (float64 inside `_host`)."""
    return jnp.asarray(a)


# The host loop's calls into the shared JAX pieces, compiled once per shape: run op by op, each
# primitive would compile separately and every call would retrace the loss's vmap and grad.
_error_signal = eqx.filter_jit(nn.error_signal)
_ntk = eqx.filter_jit(nn.ntk)


class _Output(NamedTuple):
    records: dict[int, dict[str, np.ndarray]]  # observables at the saved steps
    failed: int
    run: Run
    zdot: np.ndarray | None  # forward Stein terms Ż_k(t) columns at `record_zdot_at`
    g_prev: np.ndarray | None  # g_k(t−1) at `record_zdot_at`


def _simulate(
    dyn: LinearExact,
    x_all: np.ndarray,
    y_all: np.ndarray,
    lr: float,
    schedule: np.ndarray,
    saveat: SaveAt | None,
    *,
    record_zdot_at: int | None = None,
) -> _Output:
    """The exact run on all tracked points (train rows first); observables at ``saveat.steps``."""
    K, T, C = dyn.num_layer_steps, schedule.shape[0], y_all.shape[1]
    s = Scalars.of(dyn.param, K, dyn.block)
    # a aᵀ = σ_in² K^x with r = min(D, Pts) columns (the rows of a span the inputs)
    xs = s.sigma_in * x_all / np.sqrt(x_all.shape[1])
    a = xs @ np.linalg.qr(xs.T)[0]
    run = Run(a, s, K, not dyn.coupling.decoupled, T, C, lr, dyn.rank_rtol)
    r = run.r
    saves = set() if saveat is None else set(saveat.steps)
    extra = saveat is not None and (saveat.ntk or saveat.kernels)
    f_ntk = np.zeros((x_all.shape[0], C))
    records, failed, zdot, g_prev = {}, -1, None, None
    for t in range(T + 1):
        run.forward(t)
        n = run.used(t)
        Ht = run.H[:, :n, t * r : (t + 1) * r]  # columns of h_k(t), (K+1, n, r)
        features = (a @ (Ht[-1].T @ run.v[:n])) / s.gamma0  # exactly 0 at t = 0
        f = np.asarray(dyn.readout.predict(_jx(features), _jx(f_ntk)))
        if t < T:
            c = _error_signal(dyn.loss, _jx(f), _jx(y_all), _jx(schedule[t]))
            run.w[t] = np.asarray(c).T @ a  # w^a(t) = Σ_ν c^a_ν(t) a_ν
        if t < T or (t in saves and extra):
            run.backward(t)
        M = Ht.transpose(0, 2, 1) @ Ht  # H_kᵀ H_k, (K+1, r, r)
        Gt = run.G[:, :n, t * C : (t + 1) * C]  # g_k(t), (K+1, n, C)
        gg = Gt.transpose(0, 2, 1) @ Gt  # g^a_k · g^b_k, (K+1, C, C)
        if record_zdot_at == t and t > 0:
            zdot = run.zdot[:, :n].copy()
            g_prev = run.G[:, :n, (t - 1) * C : t * C].copy()
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(M))):
            failed = t
        if saveat is not None and t in saves:
            records[t] = _observe(dyn, run, t, x_all, f, M, gg, saveat)
        if failed >= 0 or t == T:
            break
        wt = run.w[t]  # (C, r)
        theta_c = functools.partial(_theta_c, run, M, gg, wt)
        f_ntk = np.asarray(dyn.readout.advance(_jx(f_ntk), _jx(lr), theta_c))
        run.v[:n] += s.m_v * run.eg * (Ht[-1] @ wt.T)  # Δv = m_v η0γ0 Σ_ν h_{K,ν} c_νᵀ
    return _Output(records, failed, run, zdot, g_prev)


def _theta_c(run: Run, M, gg, wt) -> Array:
    """``Σ_ν Θ_μν c_ν`` with the fields' own kernel (full ``C × C`` blocks): P1's kernel step."""
    a, s = run.a, run.s
    df = s.m_U * (a @ wt.T @ gg[0].T)
    df += s.drift_w * np.einsum("kca,kpa->pc", gg[1:], a @ M[:-1] @ wt.T)
    df += s.m_v * (a @ M[-1] @ wt.T)
    return _jx(df)


def _observe(dyn: LinearExact, run: Run, t, x_all, f, M, gg, saveat: SaveAt) -> dict:
    """The observables of step ``t`` (after its forward and, if needed, backward sweep)."""
    a, r, C, n = run.a, run.r, run.C, run.used(t)
    Ht = run.H[:, :n, t * r : (t + 1) * r]
    Phi = a @ M @ a.T  # Φ_k(t,t) = H_k(t,t), (K+1, Pts, Pts)
    moved = (Ht - run.H[:, :n, :r]) @ a.T  # h_{k,μ}(t) − h_{k,μ}(0), (K+1, n, Pts)
    own = run.drift[:, :n] @ a.T  # b ΔW_k h_{k,μ}(t)/sqrt(n), (K, n, Pts)
    rec = {
        "f": f,
        "h_rms": np.sqrt(np.mean(np.einsum("kpp->kp", Phi), axis=1)),
        "h_movement": np.sqrt(np.sum(moved**2, axis=1).mean(axis=1)),
        "block_movement": np.sqrt(np.sum(own**2, axis=1).mean(axis=1)),
    }
    if saveat.ntk:
        if dyn.coupling.decoupled and dyn.readout.true_sensitivity:  # Θ̃: true-sensitivity rows
            left = run.backward(t, true_sensitivity=True)
            gbar = np.einsum("kna,kna->k", left, run.G[:, :n, t * C : (t + 1) * C]) / C
        else:
            gbar = np.einsum("kaa->k", gg) / C  # class-averaged G_k (point-independent)
        kernels = {
            "kx": x_all @ x_all.T / x_all.shape[1],
            "G": np.broadcast_to(gbar[:, None, None], Phi.shape),
            "Phi": Phi,
        }
        weights = run.s.ntk_weights
        theta = _ntk(weights, dyn.block, **{k: _jx(v) for k, v in kernels.items()})
        rec["ntk"] = np.asarray(theta)
    if saveat.kernels:
        sel = list(saveat.layer_indices(run.K))
        rec["h_kernel"] = Phi[sel]
        gk = np.einsum("kaa->k", gg)[sel] / C
        rec["g_kernel"] = gk[:, None, None] * np.ones((1, *Phi.shape[1:]))
    return rec
