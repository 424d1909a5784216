"""Exact n = ∞ training dynamics of linear one-layer ResNets (spec NFD.md §4.4, `linear_exact`).

For ``φ = id`` the infinite-width limit at depth ``K`` (``K`` layer steps; with ``K = L`` it is
exactly the ``n → ∞`` limit of the depth-``L`` network of spec §1) is computed with **zero Monte
Carlo error**, in both couplings (mode A `exact` = `ReusedWeights`, mode B `decoupled` =
`DecoupledWeights`) and both readouts (P1 `NTKReadout`, P2 `FeatureReadout`).

Derivation (the matrix realisation of spec §4.1 with ``M → ∞``, read as a Tensor Program):

1. **Only ``W_k(0)`` is random.** With ``b`` the branch multiplier and ``m_W b²`` the per-step drift
   weight, ``W_k(t) = W_k(0) + ΔW_k(t)`` and ``b ΔW_k h/sqrt(n) = m_W b² η0γ0 Σ_{s<t,ν}
   (g_{k+1,ν}(s)·c_ν(s)) (h_{k,ν}(s)·h/n)`` (spec §1.5); likewise ``ΔWᵀ``, ``ΔU`` and ``Δv`` are
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
   causally in whitened form (spec §3.4). Inputs may contain earlier ``z^ξ_k``; only new
   primitives are attached to new directions, so the map stays an isometry. ``Wᵀ`` has its own
   basis ``e'_j`` and primitives ``z^ρ_{k,j}`` (``ρ_k ~ GP(0, G_{k+1})``), independent of the
   ``z^ξ``. ``Ż`` is the Stein (response) term, ``Ż^{Wx} = Σ_y Z^y E[∂Z^x/∂Ẑ^{Wᵀy}]``; in whitened
   form ``Ż^{Wx} = Σ_j (∂x/∂z^ρ_{k,j}) e'_j`` (the coefficient of ``x`` on ``z^ρ_{k,j}`` times the
   backward basis vector), which is ``Σ_{s<t} R_k(t,s) g_{k+1}(s)`` of spec §3.1, and likewise
   ``Ż^{Wᵀy} = Σ_j (∂y/∂z^ξ_{k,j}) e_j = Σ_{s≤t} D_k(t,s) h_k(s)``. Every field is linear in the
   primitives, so these derivatives are exact numbers. Mode A keeps ``Ż``; mode B backpropagates
   through an independent ``W̃_k(0)`` that is never applied forward (and ``W_k(0)`` never
   backward), so ``Ż ≡ 0`` there while every ``ΔW`` drift is kept (NFD/GIA). At ``t = 0`` no field
   carries a ``z^ρ`` before ``W_k`` acts, so ``R = D = 0`` (spec §3.1).
4. **Causal order** (spec §3.4): at step ``t`` the forward sweep (inputs to ``W_k``: ``h_k(t)``)
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

Also exposed: `first_step_response`, mode A's forward response ``R_k(1, 0)`` (spec §5.2 (b)).

Reported kernels are exact: ``Φ_k = H_k``, ``G_k`` (class-averaged), the NTK by which ``f`` moves
(the fields' own ``Θ``; for mode B read out by P2 the ``Θ̃`` whose rows use the true sensitivity,
obtained by backpropagating through ``W_k(t)ᵀ``: its fresh ``Ẑ`` parts are orthogonal to every
mode-B field and are omitted, only its ``Ż`` and drift parts enter ``g·g̃``), ``h_rms``,
``h_movement`` and ``block_movement`` (``b ΔW_k h_k/sqrt(n)``), all as exact expectations.

The computation is host-side numpy in float64 (an oracle must not depend on ``jax_enable_x64``) and
sequential (the Gram–Schmidt rank is data dependent), with BLAS limited to one thread while it runs
(its products are skinny, and threads only contend); outputs are JAX arrays of the inputs' dtype.
"""

import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from threadpoolctl import threadpool_limits

from .._results import RESULTS
from ..model import AbstractBackwardWeights, DecoupledWeights, ReusedWeights
from ..nn import AbstractActivation, Linear
from ..param import AbstractParameterization
from ._particles import AbstractReadout, FeatureReadout, NTKReadout

# Residual directions whose norm is below this fraction of the largest input norm are round-off
# (exactly dependent inputs, e.g. a frozen tensor or c = 0), not new Gaussian directions.
RANK_RTOL = 1e-10
# A column whose Gram–Schmidt residual is below this fraction of its norm is re-orthogonalised
# (its round-off component along the old basis, ~eps |x|, would otherwise be amplified by 1/|res|).
_REORTH = 1e-2
_LINEAR = Linear()


def _check(activation, optimizer, coupling, readout, num_layer_steps, lr, schedule, num_train):
    if not isinstance(activation, Linear):
        raise ValueError(
            f"[limit] method = 'linear_exact' needs model.activation = 'linear', got "
            f"{activation.name!r}; use limit.method = 'particles' or 'kernel'."
        )
    if optimizer != "sgd":
        raise ValueError(
            f"[limit] method = 'linear_exact' needs optim.name = 'sgd' (the limit theory's "
            f"optimizer), got {optimizer!r}."
        )
    if not isinstance(coupling, ReusedWeights | DecoupledWeights):
        raise ValueError(
            f"[limit] method = 'linear_exact' needs limit.coupling 'exact' (ReusedWeights) or "
            f"'decoupled' (DecoupledWeights), got {type(coupling).__name__}."
        )
    if not isinstance(readout, NTKReadout | FeatureReadout):
        raise ValueError(
            f"[limit] method = 'linear_exact' needs limit.readout 'ntk' or 'features', got "
            f"{type(readout).__name__}."
        )
    if num_layer_steps < 1:
        raise ValueError(f"[limit] layer_steps must be >= 1, got {num_layer_steps}.")
    if not np.isfinite(lr):
        raise ValueError(f"[optim] lr must be finite, got {lr}.")
    sched = np.asarray(schedule)
    if sched.ndim != 2:
        raise ValueError(f"schedule must have shape (T, B), got {sched.shape}.")
    if sched.size and (sched.min() < 0 or sched.max() >= num_train):
        raise ValueError(
            f"schedule indices must lie in [0, {num_train}) (the training points), got "
            f"[{sched.min()}, {sched.max()}]."
        )


def _orthonormal_extension(basis, x, rank_rtol):
    """New orthonormal directions spanning ``x`` modulo ``basis`` (columns), and all coefficients.

    Returns ``(new, coef_old, coef_new)`` with ``x = basis coef_old + new coef_new`` up to
    ``rank_rtol × max|x_j|``; ``new`` has as many columns as ``x``, zero where a column adds no
    direction beyond that tolerance. Block classical Gram–Schmidt twice against ``basis``, then
    column by column against ``basis`` and the accepted new columns (twice is enough).
    """
    coef_old = basis.T @ x
    res = x - basis @ coef_old
    corr = basis.T @ res
    res = res - basis @ corr
    coef_old = coef_old + corr
    scale = float(np.max(np.linalg.norm(x, axis=0), initial=0.0))
    tol = rank_rtol * max(scale, np.finfo(np.float64).tiny)
    new = np.zeros_like(x)
    for j in range(x.shape[1]):
        v = res[:, j] - new @ (new.T @ res[:, j])
        nv = np.linalg.norm(v)
        if nv <= tol:
            continue
        if nv < _REORTH * np.linalg.norm(x[:, j]):  # cancellation: re-orthogonalise once more
            v = v - basis @ (basis.T @ v)
            v = v - new @ (new.T @ v)
            nv = np.linalg.norm(v)
            if nv <= tol:
                continue
        new[:, j] = v / nv
    return new, coef_old, new.T @ x


class _Run:
    """Host-side state of one exact run (plain numpy; see the module docstring)."""

    def __init__(self, a, param, K, reused, T, C, lr, rank_rtol):
        self.a = a  # (Pts, r): h_{k,μ}(t) = H_k(t) a_μ
        r = a.shape[1]
        self.r, self.C, self.K = r, C, K
        self.reused = reused
        self.b = param.branch_multiplier(K)
        m = param.sgd_multipliers(K, "one_layer")
        self.m = m
        self.drift_w = m["W"] * self.b**2
        self.eg = lr * param.gamma0
        self.rank_rtol = rank_rtol
        blk = r + C
        self.N = N = r + C + K * (T + 1) * blk
        # primitive indices: u (r), v (C), then per sweep t and layer step k a block of r forward
        # (z^ξ_k(t)) and C backward (z^ρ_k(t)) primitives; t-major, so sweep t uses a prefix
        base = r + C + (np.arange(T + 1)[:, None] * K + np.arange(K)[None, :]) * blk  # (T+1, K)
        self.idx_f = [(base[:, k, None] + np.arange(r)).reshape(-1) for k in range(K)]
        self.idx_b = [(base[:, k, None] + r + np.arange(C)).reshape(-1) for k in range(K)]
        # histories (column blocks per sweep): fields and orthonormal bases
        self.H = np.zeros((K + 1, N, (T + 1) * r))  # h_k(t) columns
        self.G = np.zeros((K + 1, N, (T + 1) * C))  # g_k(t) (the mode's own backward fields)
        self.Ef = np.zeros((K, N, (T + 1) * r))  # basis of the inputs of W_k
        self.Eb = np.zeros((K, N, (T + 1) * C))  # basis of the inputs of W_kᵀ (W̃_kᵀ in mode B)
        self.w = np.zeros((T + 1, C, r))  # w^a(t) = Σ_ν c^a_ν(t) a_ν
        self.v = np.zeros((N, C))
        self.v[r + np.arange(C), np.arange(C)] = param.sigma_out
        self.u = np.zeros((N, r))
        self.u[np.arange(r), np.arange(r)] = 1.0
        self.drift = np.zeros((K, N, r))  # b ΔW_k h_k(t)/sqrt(n) of the current sweep (columns)
        self.zdot = np.zeros((K, N, r))  # forward Stein terms Ż of the current sweep (mode A)

    def used(self, t):
        return self.r + self.C + (t + 1) * self.K * (self.r + self.C)

    def forward(self, t):
        r, K, n = self.r, self.K, self.used(t)
        cols, prev = slice(t * r, (t + 1) * r), slice(0, t * r)
        bprev = slice(0, t * self.C)
        w = self.w[:t]  # (t, C, r), s < t
        h = self.u[:n].copy()
        if t:
            h += self.m["U"] * self.eg * (self.G[0, :n, bprev] @ w.reshape(t * self.C, r))
        for k in range(K):
            x = h
            new, coef_old, coef_new = _orthonormal_extension(
                self.Ef[k, :n, prev], x, self.rank_rtol
            )
            self.Ef[k, :n, cols] = new
            xi = np.zeros_like(x)
            xi[self.idx_f[k][: (t + 1) * r]] = np.concatenate([coef_old, coef_new])
            step = xi
            if self.reused and t:  # Ż^{W x}: coefficients on z^ρ_k(s<t) times the backward basis
                zd = self.Eb[k, :n, bprev] @ x[self.idx_b[k][: t * self.C]]
                self.zdot[k, :n] = zd
                step = step + zd
            drift = np.zeros_like(x)
            if t:
                inner = (self.H[k, :n, prev].T @ x).reshape(t, r, r)  # h_k(s)·h_k(t) columns
                coef = (w @ inner).reshape(t * self.C, r)
                drift = self.drift_w * self.eg * (self.G[k + 1, :n, bprev] @ coef)
            self.drift[k, :n] = drift
            self.H[k, :n, cols] = x
            h = x + self.b * step + drift
        self.H[K, :n, cols] = h
        return h

    def backward(self, t, *, true_sensitivity=False):
        """The backward sweep of step ``t`` (own fields), or the true sensitivity of mode B."""
        r, C, K, n = self.r, self.C, self.K, self.used(t)
        bcols, bprev = slice(t * C, (t + 1) * C), slice(0, t * C)
        prev = slice(0, t * r)
        w = self.w[:t]
        y = self.v[:n].copy()
        out = np.zeros((K + 1, n, C))
        out[K] = y
        if not true_sensitivity:
            self.G[K, :n, bcols] = y
        for k in reversed(range(K)):
            x = y
            if true_sensitivity:  # W_k(t)ᵀ: fresh Ẑ parts are orthogonal to every mode-B field
                step = self.Ef[k, :n, : (t + 1) * r] @ x[self.idx_f[k][: (t + 1) * r]]
            else:
                new, coef_old, coef_new = _orthonormal_extension(
                    self.Eb[k, :n, bprev], x, self.rank_rtol
                )
                self.Eb[k, :n, bcols] = new
                step = np.zeros_like(x)
                step[self.idx_b[k][: (t + 1) * C]] = np.concatenate([coef_old, coef_new])
                if self.reused:  # Ż^{Wᵀ y}: coefficients on z^ξ_k(s≤t) times the forward basis
                    step = step + self.Ef[k, :n, : (t + 1) * r] @ x[self.idx_f[k][: (t + 1) * r]]
            drift = 0.0
            if t:
                ip = (self.G[k + 1, :n, bprev].T @ x).reshape(t, C, C)  # g^a_{k+1}(s)·g^b_{k+1}(t)
                coef = (w.transpose(0, 2, 1) @ ip).reshape(t * r, C)
                drift = self.drift_w * self.eg * (self.H[k, :n, prev] @ coef)
            y = x + self.b * step + drift
            out[k] = y
            if not true_sensitivity:
                self.G[k, :n, bcols] = y
        return out


def _error_signal(loss, f, y):
    """``Δ = −∂ℓ/∂f`` per point, in float64 for the losses of `nfd.train` (else through JAX)."""
    from ..train import MSE, CrossEntropy  # train sits above limit: import at call time

    if isinstance(loss, MSE):
        return y - f
    if isinstance(loss, CrossEntropy):  # −∂/∂f of −Σ_a y_a log softmax(f)_a
        z = np.exp(f - f.max(axis=1, keepdims=True))
        return y - (z / z.sum(axis=1, keepdims=True)) * y.sum(axis=1, keepdims=True)
    return np.asarray(jax.vmap(loss.error_signal)(jnp.asarray(f), jnp.asarray(y)), np.float64)


def _loss_values(loss, f, y):
    """``ℓ(f_μ, y_μ)`` per point, in float64 for the losses of `nfd.train` (else through JAX)."""
    from ..train import MSE, CrossEntropy

    if isinstance(loss, MSE):
        return 0.5 * np.sum((f - y) ** 2, axis=1)
    if isinstance(loss, CrossEntropy):
        fm = f - f.max(axis=1, keepdims=True)
        return -np.sum(y * (fm - np.log(np.exp(fm).sum(axis=1, keepdims=True))), axis=1)
    return np.asarray(jax.vmap(loss)(jnp.asarray(f), jnp.asarray(y)), np.float64)


class _Output(NamedTuple):
    records: list  # (t, observables) at the saved steps
    step_times: np.ndarray
    failed: int
    run: _Run
    zdot: np.ndarray | None  # forward Stein terms Ż_k(t) columns at `record_zdot_at`
    g_prev: np.ndarray | None  # g_k(t−1) at `record_zdot_at`


def _simulate(
    x_all,
    y_all,
    num_train,
    *,
    param,
    K,
    reused,
    p1,
    loss,
    lr,
    schedule,
    saves,
    layer_steps=(),
    want_ntk=False,
    want_kernels=False,
    rank_rtol=RANK_RTOL,
    record_zdot_at=None,
) -> _Output:
    """The exact run on all tracked points (train rows first); observables at ``saves``."""
    x_all = np.asarray(x_all, np.float64)
    y_all = np.asarray(y_all, np.float64)
    schedule = np.asarray(schedule)
    Pts, D = x_all.shape
    C = y_all.shape[1]
    T = schedule.shape[0]
    # a aᵀ = σ_in² K^x with r = min(D, Pts) columns (the rows of a span the inputs)
    xs = param.sigma_in * x_all / np.sqrt(D)
    q, _ = np.linalg.qr(xs.T)
    a = xs @ q
    run = _Run(a, param, K, reused, T, C, lr, rank_rtol)
    m, drift_w, r = run.m, run.drift_w, run.r
    f_ntk = np.zeros((Pts, C))
    records, step_times = [], np.zeros((T,))
    failed = -1
    zdot = g_prev = None
    H0 = None
    for t in range(T + 1):
        t0 = time.perf_counter()
        run.forward(t)
        n = run.used(t)
        Ht = run.H[:, :n, t * r : (t + 1) * r]  # columns of h_k(t), (K+1, n, r)
        if H0 is None:
            H0 = run.H[:, :, :r].copy()  # h_k(0), zero-padded to all N primitives
        f = f_ntk.copy() if p1 else (a @ (Ht[-1].T @ run.v[:n])) / param.gamma0
        if t < T:
            idx = schedule[t]
            c = np.zeros_like(f)
            np.add.at(c, idx, _error_signal(loss, f[idx], y_all[idx]) / len(idx))
            run.w[t] = c.T @ a  # w^a(t) = Σ_ν c^a_ν(t) a_ν
        if t < T or (t in saves and (want_ntk or want_kernels)):
            run.backward(t)
        Gt = run.G[:, :n, t * C : (t + 1) * C]  # g_k(t), (K+1, n, C)
        M = Ht.transpose(0, 2, 1) @ Ht  # H_kᵀ H_k, (K+1, r, r)
        gg = Gt.transpose(0, 2, 1) @ Gt  # g^a_k · g^b_k, (K+1, C, C)
        if record_zdot_at == t and t > 0:
            zdot = run.zdot[:, :n].copy()
            g_prev = run.G[:, :n, (t - 1) * C : t * C].copy()
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(M))):
            failed = t
        if t in saves or failed >= 0:
            Phi = a @ M @ a.T  # Φ_k(t,t) = H_k(t,t), (K+1, Pts, Pts)
            lvals = _loss_values(loss, f, y_all)
            moved = (Ht - H0[:, :n]) @ a.T  # h_{k,μ}(t) − h_{k,μ}(0), (K+1, n, Pts)
            own = run.drift[:, :n] @ a.T  # b ΔW_k h_{k,μ}(t)/sqrt(n), (K, n, Pts)
            rec = {
                "f": f,
                "loss_train": lvals[:num_train].mean(),
                "loss_test": lvals[num_train:].mean() if Pts > num_train else np.nan,
                "h_rms": np.sqrt(np.mean(np.einsum("kpp->kp", Phi), axis=1)),
                "h_movement": np.sqrt(np.sum(moved**2, axis=1).mean(axis=1)),
                "block_movement": np.sqrt(np.sum(own**2, axis=1).mean(axis=1)),
            }
            if want_ntk:
                if not reused and not p1:  # Θ̃: true-sensitivity rows, mode-B columns
                    left = run.backward(t, true_sensitivity=True)
                    gbar = np.einsum("kna,kna->k", left, Gt) / C
                else:
                    gbar = np.einsum("kaa->k", gg) / C  # class-averaged G_k (point-independent)
                rec["ntk"] = (
                    m["U"] * (a @ a.T) * gbar[0]
                    + drift_w * np.einsum("k,kpq->pq", gbar[1:], Phi[:-1])
                    + m["v"] * Phi[-1]
                )
            if want_kernels:
                sel = list(layer_steps)
                rec["h_kernel"] = Phi[sel]
                gk = np.einsum("kaa->k", gg)[sel] / C
                rec["g_kernel"] = gk[:, None, None] * np.ones((1, Pts, Pts))
            records.append((t, rec))
        if failed >= 0 or t == T:
            break
        wt = run.w[t]  # (C, r)
        if p1:  # f(t+1) = f(t) + η0 Θ(t) c(t), the fields' own kernel (full C×C blocks)
            df = m["U"] * (a @ wt.T @ gg[0].T)
            df += drift_w * np.einsum("kca,kpa->pc", gg[1:], a @ M[:-1] @ wt.T)
            df += m["v"] * (a @ M[-1] @ wt.T)
            f_ntk = f_ntk + lr * df
        run.v[:n] += m["v"] * run.eg * (Ht[-1] @ wt.T)  # Δv = m_v η0γ0 Σ_ν h_{K,ν} c_νᵀ
        step_times[t] = time.perf_counter() - t0
    return _Output(records, step_times, failed, run, zdot, g_prev)


def linear_exact(
    x_train: Float[Array, "P D"],
    y_train: Float[Array, "P C"],
    x_test: Float[Array, "Q D"],
    y_test: Float[Array, "Q C"],
    *,
    param: AbstractParameterization,
    num_layer_steps: int,
    coupling: AbstractBackwardWeights,
    readout: AbstractReadout,
    loss,
    lr: float,
    schedule: Int[Array, "T B"],
    every: int = 1,
    layer_times: Sequence[float] = (0.0, 0.5, 1.0),
    ntk: bool = False,
    kernels: bool = False,
    activation: AbstractActivation = _LINEAR,
    optimizer: str = "sgd",
    rank_rtol: float = RANK_RTOL,
):
    """Exact ``n = ∞`` dynamics of a linear one-layer ResNet at depth ``K`` (spec §4.4).

    No sampling: the result is the ``M → ∞`` limit of `simulate_limit` with ``Linear()`` (and, at
    ``K = L``, the ``n → ∞`` limit of the finite linear network) in the chosen coupling and readout.

    Args:
        x_train, y_train, x_test, y_test: the task's points (test points are tracked, not trained).
        param: the parameterization (``β``, ``γ0``, ``σ_in``, ``σ_out``, multipliers) at depth ``K``.
        num_layer_steps: ``K`` (`limit.layer_steps`; ``= L`` for the depth-``L`` network).
        coupling: `ReusedWeights` (mode A, `exact`) or `DecoupledWeights` (mode B, `decoupled`).
        readout: `NTKReadout` (P1) or `FeatureReadout` (P2).
        loss: `MSE` or `CrossEntropy` (any `AbstractLoss`: the error signal is deterministic).
        lr: ``η0``.
        schedule: the batch index sequence ``(T, B)`` (`nfd.train.batch_schedule`).
        every, layer_times, ntk, kernels: what to save (as `simulate_limit`); layer time τ maps to
            layer step ``round(τ K)``.
        activation: must be `Linear` (the method is exact only for ``φ = id``).
        optimizer: must be ``"sgd"`` (Adam's update is not linear in the fields).
        rank_rtol: relative Gram–Schmidt tolerance below which a residual is round-off.

    Returns:
        A `nfd.train.TrainResult` with ``E = 1``: ``f``, losses, ``ntk`` (``Θ̃`` for mode B with
        P2, else the fields' own ``Θ``), ``h_kernel``/``g_kernel`` (``g`` does not depend on the
        point for linear nets), ``h_rms``, ``h_movement``, ``block_movement`` (all exact),
        ``dz_own = None``. If the run turns non-finite it stops there: ``status`` is
        `RESULTS.nonfinite` and ``failed_step`` the step.

    Raises:
        ValueError: for a non-linear activation, a non-SGD optimizer, an unknown coupling or
            readout, ``num_layer_steps < 1`` or schedule indices outside the training set.
    """
    from ..train import TrainResult, save_steps

    P = x_train.shape[0]
    _check(activation, optimizer, coupling, readout, num_layer_steps, lr, schedule, P)
    K = num_layer_steps
    saves = save_steps(int(schedule.shape[0]), every)
    # skinny products: BLAS threads only contend; overflow is detected and reported, not warned
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(over="ignore", invalid="ignore"):
        out = _simulate(
            np.concatenate([np.asarray(x_train), np.asarray(x_test)]),
            np.concatenate([np.asarray(y_train), np.asarray(y_test)]),
            P,
            param=param,
            K=K,
            reused=isinstance(coupling, ReusedWeights),
            p1=isinstance(readout, NTKReadout),
            loss=loss,
            lr=float(lr),
            schedule=schedule,
            saves=set(saves.tolist()),
            layer_steps=tuple(int(round(tau * K)) for tau in layer_times),
            want_ntk=ntk,
            want_kernels=kernels,
            rank_rtol=rank_rtol,
        )
    dtype = x_train.dtype

    def stack(key, part=None):  # slice in numpy: indexing a JAX array compiles per shape
        values = [rec[key] if part is None else rec[key][part] for _, rec in out.records]
        return jnp.asarray(np.stack(values)[None], dtype)

    status = RESULTS.nonfinite if out.failed >= 0 else RESULTS.successful
    return TrainResult(
        steps=jnp.asarray(np.array([t for t, _ in out.records])),
        f_train=stack("f", slice(None, P)),
        f_test=stack("f", slice(P, None)),
        loss_train=stack("loss_train"),
        loss_test=stack("loss_test"),
        ntk=stack("ntk") if ntk else None,
        h_kernel=stack("h_kernel") if kernels else None,
        g_kernel=stack("g_kernel") if kernels else None,
        h_rms=stack("h_rms"),
        h_movement=stack("h_movement"),
        block_movement=stack("block_movement"),
        dz_own=None,
        status=jnp.full((1,), status._value, jnp.int32),
        failed_step=jnp.full((1,), out.failed, jnp.int32),
        step_times=jnp.asarray(out.step_times, dtype),
    )


def first_step_response(
    x: Float[Array, "P D"],
    y: Float[Array, "P C"],
    *,
    param: AbstractParameterization,
    num_layer_steps: int,
    loss,
    lr: float,
) -> Float[Array, "K P C"]:
    """Mode A's forward response ``R_k(1, 0)`` after one full-batch step (spec §3.1, §5.2 (b)).

    The Stein term of layer step ``k`` at ``t = 1`` is ``Ż_{k,μ}(1) = Σ_ν R_k(1,0)_{μν} g_{k+1,ν}(0)``.
    For linear nets ``g_{k+1,ν}(0)`` is the same field for every point ``ν``, so only the point sum is
    defined: this returns ``R_k(1,0)_{μa} = Σ_ν R_k(1,0)^{a}_{μν}``, the coefficients of
    ``Ż_{k,μ}(1)`` on the ``C`` fields ``g^a_{k+1}(0)``. It is ``O(K^{-1/2})``; for ``P = 1``,
    ``K^x = σ = β = 1``, ``sqrt(K) R_k(1,0)/(η0γ0 c(0))`` tends to ``(m_U + τ) e^τ`` at ``k = τK``.
    """
    P, K = x.shape[0], num_layer_steps
    _check(_LINEAR, "sgd", ReusedWeights(), NTKReadout(), K, lr, jnp.zeros((1, P), int), P)
    with threadpool_limits(limits=1, user_api="blas"):
        out = _simulate(
            np.asarray(x),
            np.asarray(y),
            P,
            param=param,
            K=K,
            reused=True,
            p1=False,  # the fields at t <= 1 do not depend on the readout (f(0) = 0 in both)
            loss=loss,
            lr=float(lr),
            schedule=np.arange(P)[None],
            saves=set(),
            record_zdot_at=1,
        )
    assert out.zdot is not None and out.g_prev is not None
    a = out.run.a
    zd = out.zdot @ a.T  # Ż_{k,μ}(1), (K, n, P)
    g = out.g_prev[1:, : zd.shape[1]]  # g_{k+1}(0), (K, n, C)
    gram = g.transpose(0, 2, 1) @ g  # (K, C, C)
    R = np.linalg.solve(gram, g.transpose(0, 2, 1) @ zd)  # (K, C, P)
    return jnp.asarray(R.transpose(0, 2, 1), x.dtype)
