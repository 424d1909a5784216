"""The particle method, Cholesky realisation (spec NFD.md §4.2, ``particle_cholesky``): mode B only.

``M`` particles, as in `nfd.limit.simulate_limit` (§4.1), but with **no** ``M × M`` matrix. In mode B
(`decoupled`, NFD/GIA) the dynamics see the forward matrix ``W_k`` only through the noise
``ξ_k = W_k φ(h_k)/sqrt(M)`` and the backward matrix ``W̃_k`` only through ``ρ_k = W̃_kᵀ g_{k+1}/sqrt(M)``.
Conditional on everything revealed so far, the rows of ``W_k`` are i.i.d. ``N(0, I)`` restricted by the
linear observations ``W_k φ(H_old) = sqrt(M) ξ_old``, so the particle rows of ``ξ_k`` over all
evaluated (point, step) pairs are i.i.d. ``N(0, Φ̂_k)`` with the *empirical* kernel
``Φ̂_k = φ(H)ᵀφ(H)/M`` (sample-conditional), revealed causally. Per layer step ``k`` this module keeps

* the history ``φ(h_k)`` of every evaluated pair, ``(M, N)``, ``N = (T+1)·Pts`` (every tracked point
  at every step ``t = 0..T``; the last step is the final observation),
* the whitened history ``Z^ξ_k ~ N(0, 1)``, ``(M, N)``, a lower-triangular ``L^ξ_k`` with
  ``L Lᵀ = Φ̂_k`` on the filled pairs, ``(N, N)``, and its (pseudo-)inverse ``L⁻¹`` (also lower
  triangular, grown by the block-inverse rule, so that the solve below is a product);

and for the ``b = Pts`` new pairs of step ``t`` it solves ``L_old L_{new,old}ᵀ = Φ̂_k(old, new)``,
factors the Schur complement ``S = Φ̂_k(new, new) − L_{new,old} L_{new,old}ᵀ`` (negative eigenvalues
clipped to 0, their mass logged in `CholeskyInfo`) and sets

    ξ_k(t) = Z_old L_{new,old}ᵀ + Z_new L_{new,new}ᵀ,

which is exactly the conditional law ``ξ_new | ξ_old ~ N(ξ_old Φ̂_old⁻¹ Φ̂(old,new), S)`` of the
random-matrix realisation. ``ρ_k`` is built alike from ``g_{k+1}`` over (point, step, output) pairs
(``C × C`` blocks, ``N·C`` columns). Hence, given the same ``M``, this realisation has **the same law**
as `simulate_limit` with `DecoupledWeights` (not only the same ``M → ∞`` limit); the tests check
that statistically. Histories are preallocated at their final size with zero columns for
not-yet-filled pairs, so one compiled step serves every ``t``.

The pairs of step ``t`` are all tracked points (train ∪ test), forward and backward, so the noise at
any point and step is jointly Gaussian with every earlier noise at every point, with covariance
``Φ̂_k(s, t)`` (``Ĝ_{k+1}(s, t)``), exactly as ``W_k φ(h)`` would be.

Zero pivots (exactly dependent pairs: a duplicated input, ``g_K = v`` at every point of a linear
net, or fields that no longer leave the span of their past, as in the lazy limit where step ``t``'s
conditional variance is ``O((η0γ0)^{2t})``) are handled by a semi-definite Cholesky factor whose
zero-pivot columns are zero, with ``L⁻¹`` zero in those rows and columns: those directions carry no
new randomness and everything is exact on the independent pairs (a pseudo-inverse). A pivot counts
as zero below `PIVOT_RTOL_EPS` · eps times the pair's own variance; the dropped and the clipped mass
are logged in `CholeskyInfo`.

**Drift.** The ΔW drift of §3.4 (mode B: no R, D terms) is evaluated as a *history sum* over the
stored columns, ``A_k φ(h) = Σ_pairs (g_{k+1}·c) Φ̂_k(pair, ·)`` and ``A_kᵀ g = (1/M) Σ_pairs φ_pair
((g_{k+1}·c)_pairᵀ g)``, reusing the products the noise needs (``g·c`` is stored as one more
``(M, N)`` history). Under jit every array has its final size ``N`` (unfilled slots are zero and
drop out of every product), so one compiled step serves all ``t`` and each step costs what step
``T`` would, ``O(K (M N + N²) Pts C²)``, instead of the ``O(K (M N_t + N_t²) b_t)`` of spec §4.5
growing with ``t``; memory ``O(K (M N (3 + 2C) + 2 N² (1 + C²)))`` per repetition, no ``M²``. It
pays off when ``N ≪ M``; ``N ≤ M`` is required.

**Readouts and the NTK.** P1 (`NTKReadout`) advances ``f(t+1) = f(t) + η0 Θ(t) c(t)`` with the fields'
own kernel; P2 (`FeatureReadout`) reads ``(vᵀφ(h_K) − F0)/(γ0 M)``. The saved ``ntk`` follows
`simulate_limit`: for P2 it is ``Θ̃`` with *true-sensitivity* rows ``ĝ = γ0 M ∂f/∂h`` (backprop through
``W_k``, spec §1.6). ``W_k`` is never formed, but its conditional law given the revealed history is
known, ``W_k = sqrt(M) ξ (φᵀφ)⁻¹ φᵀ + W'(I − P_φ)`` with ``W'`` fresh and ``P_φ`` the projector on the
stored ``φ`` columns, so ``W_kᵀ ĝ/sqrt(M) = φ L^{-T} Zᵀ ĝ/M + (I − P_φ) W'ᵀ ĝ/sqrt(M)`` is drawn at each
observation (``W'ᵀ ĝ/sqrt(M)`` is Gaussian with covariance ``ĝᵀĝ/M``). The true sensitivity never feeds
back into the dynamics, so at each saved step its law (jointly with the trajectory so far) is that
of the matrix realisation; only correlations of ``ntk`` *between* saved steps differ (``W'`` is
redrawn at every observation).
"""

import sys
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..model import AbstractBackwardWeights, DecoupledWeights
from ..nn import AbstractActivation
from ..param import AbstractParameterization
from ._particles import AbstractReadout, FeatureReadout, NTKReadout

HIGHEST = jax.lax.Precision.HIGHEST

# A pivot of the Schur complement below PIVOT_RTOL_EPS · eps · (the pair's own variance) is round-off
# (an exactly dependent pair): it is set to 0 and its mass logged. 1000·eps is 2e-13 in float64 and
# 1e-4 in float32; the conditional variances of genuinely new pairs are O((η0γ0)²) relative.
PIVOT_RTOL_EPS = 1000.0
_MODE_B = DecoupledWeights()  # the only coupling with a Cholesky realisation


def _matmul(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def _normal(key, shape, dtype):
    """``jr.normal`` drawn flat and reshaped: the same law, but XLA:CPU compiles the flat threefry
    several times faster than a multi-axis one."""
    return jr.normal(key, (int(np.prod(shape)),), dtype).reshape(shape)


def _put(a, update, row, col):
    """``a`` with ``update`` written at ``(row, col)`` (traced or static offsets)."""
    return lax.dynamic_update_slice(a, update, (jnp.int32(row), jnp.int32(col)))


# -- results ----------------------------------------------------------------------------------
class CholeskyInfo(eqx.Module):
    """Diagnostics of the Cholesky noise (leading axis E = repetitions).

    Attributes:
        clipped_xi, clipped_rho: summed mass ``Σ max(−λ, 0)`` of the negative eigenvalues of all
            Schur complements (all steps, layer steps) clipped to 0, for ``ξ`` and ``ρ``: round-off,
            ``O(eps)`` unless the history is (near) singular.
        dropped_xi, dropped_rho: summed non-negative pivots below the round-off tolerance that were
            set to 0 (exactly dependent pairs carry no new randomness).
        num_zero_pivots: number of zero pivots of ``ξ`` and ``ρ`` factors in the final histories
            ``(E, 2)`` (filled pairs only; 0 for a full-rank history).
        num_pairs: ``N = (T+1)·Pts``, the preallocated (point, step) pairs per layer step (ρ has
            ``N·C``).
    """

    clipped_xi: Float[Array, " E"]
    clipped_rho: Float[Array, " E"]
    dropped_xi: Float[Array, " E"]
    dropped_rho: Float[Array, " E"]
    num_zero_pivots: Int[Array, "E 2"]
    num_pairs: int = eqx.field(static=True)


class NoiseHistory(eqx.Module):
    """The revealed history of one noise (``ξ`` or ``ρ``) at every layer step.

    ``N`` columns are (pair) slots, filled step by step; unfilled columns (and rows and columns of
    ``L``, ``L_inv``) are zero.

    Attributes:
        hist: the fields of the evaluated pairs ``(K, M, N)``: ``φ(h_k)`` (ξ) or ``g_{k+1}`` (ρ).
        z: the whitened ``N(0, 1)`` noises ``(K, M, N)``, drawn for every slot at the start (the
            step then holds no PRNG); a slot's draw enters only once the slot is filled, and not at
            zero pivots (zero columns of ``L``).
        L: lower-triangular ``L`` with ``L Lᵀ = hist_kᵀ hist_k / M`` on the filled pairs ``(K, N, N)``;
            the noise is ``z Lᵀ``.
        L_inv: the (pseudo-)inverse of ``L``, lower-triangular ``(K, N, N)``: ``L⁻¹`` on the pairs with
            non-zero pivots, zero rows and columns at zero pivots. It turns spec §4.2's solve
            ``L_old L_{new,old}ᵀ = Φ̂(old, new)`` into a product (no triangular solves under jit).
    """

    hist: Float[Array, "K M N"]
    z: Float[Array, "K M N"]
    L: Float[Array, "K N N"]
    L_inv: Float[Array, "K N N"]


class CholeskyState(eqx.Module):
    """The evolving state of one Cholesky particle system (one repetition).

    Pairs: ``N = (T+1)·Pts`` (point, step) slots per layer step for ``ξ``; ``N·C`` (point, step,
    output) slots for ``ρ``, ordered ``(step, output, point)``. Step ``count`` fills the slots
    ``[count·Pts, (count+1)·Pts)`` (``·C`` for ``ρ``).

    Attributes:
        U: input weights ``(M, D)``, standard normal.
        v: readout ``v(t)`` ``(M, C)``.
        A_in: input accumulator ``(M, D)`` (as §4.1).
        f_ntk: P1 predictions ``(Pts, C)``.
        F0: ``φ(h_K(0))ᵀ v(0)`` at every point (P2's control variate), set at step 0.
        H0: the ``t = 0`` features ``(K+1, M, Pts)`` (origin of ``h_movement``), set at step 0.
        gc: history ``g_{k+1}·c`` ``(K, M, N)`` (zero off the batch): the drift's left factor.
        xi: history of ``ξ_k`` (fields ``φ(h_k)``).
        rho: history of ``ρ_k`` (fields ``g_{k+1}``).
        count: completed steps (filled pair blocks).
        clipped: summed clipped negative Schur eigenvalues ``(2,)`` (ξ, ρ).
        dropped: summed dropped round-off pivots ``(2,)`` (ξ, ρ).
    """

    U: Float[Array, "M D"]
    v: Float[Array, "M C"]
    A_in: Float[Array, "M D"]
    f_ntk: Float[Array, "Pts C"]
    F0: Float[Array, "Pts C"]
    H0: Float[Array, "Kp1 M Pts"]
    gc: Float[Array, "K M N"]
    xi: NoiseHistory
    rho: NoiseHistory
    count: Int[Array, ""]
    clipped: Float[Array, "2"]
    dropped: Float[Array, "2"]


class _Settings(eqx.Module):
    """Static settings of a Cholesky simulation."""

    param: AbstractParameterization
    activation: AbstractActivation
    readout: AbstractReadout


def _coefficients(param: AbstractParameterization, K: int):
    """Branch multiplier ``b`` (``β sqrt(dτ)``), drift weight ``m_W b²`` and the SGD multipliers."""
    b = param.branch_multiplier(K)
    m = param.sgd_multipliers(K, "one_layer")
    return b, m["W"] * b**2, m


# -- factor algebra -----------------------------------------------------------------------------
def _psd_factor(S: Float[Array, "b b"], scale: Float[Array, " b"], rtol: float):
    """Semi-definite lower factor ``L Lᵀ = S₊`` of a symmetric ``S`` and its pseudo-inverse.

    Negative eigenvalues of ``S`` are clipped to 0 first (``S₊ = V max(λ, 0) Vᵀ``); a pivot
    ``d_j ≤ rtol · scale_j`` is round-off (an exactly dependent pair) and is set to 0 with its whole
    column. ``L_inv`` inverts ``L`` on the non-zero pivots and is zero in the rows and columns of the
    zero pivots.

    Returns:
        ``(L, L_inv, clipped, dropped)``: the factors, ``Σ max(−λ, 0)`` and the dropped pivot mass.
    """
    S = 0.5 * (S + S.T)
    lam, V = jnp.linalg.eigh(S)
    clipped = jnp.sum(jnp.maximum(-lam, 0))
    Sp = _matmul(V * jnp.maximum(lam, 0)[None, :], V.T)
    n = S.shape[0]
    tol = rtol * scale
    idx = jnp.arange(n)

    def column(j, carry):
        L, dropped = carry
        col = Sp[:, j] - _matmul(L, L[j])  # columns >= j of L are still zero
        d = col[j]
        piv = d > tol[j]
        col = jnp.where(piv & (idx >= j), col / jnp.sqrt(jnp.where(piv, d, 1)), 0)
        dropped = dropped + jnp.where(piv, 0, jnp.maximum(d, 0))
        return L.at[:, j].set(col), dropped

    L, dropped = lax.fori_loop(0, n, column, (jnp.zeros_like(S), jnp.zeros((), S.dtype)))
    diag = jnp.diagonal(L)
    live = diag != 0
    safe = jnp.where(live, diag, 1)

    def row(i, X):  # forward substitution on the identity; rows >= i of X are still zero
        x = (jnp.where(idx == i, 1.0, 0.0).astype(S.dtype) - _matmul(L[i], X)) / safe[i]
        return X.at[i].set(jnp.where(live[i] & live, x, 0))

    L_inv = lax.fori_loop(0, n, row, jnp.zeros_like(S))
    return L, L_inv, clipped, dropped


class _Extension(eqx.Module):
    noise: Array  # (M, b): the new noise columns
    rows: Array  # (b, N): the new rows of L, [L_{new,old}, L_{new,new}, 0]
    inv_rows: Array  # (b, N): the new rows of L⁻¹
    cross: Array  # (N, b): hist_oldᵀ new / M (zero on unfilled slots)
    clipped: Array
    dropped: Array


def _extend(L_inv, hist, z_hist, new, start, rtol) -> _Extension:
    """The noise of ``b`` new columns ``new`` (slots ``start…``) and the new rows of the factors.

    ``X = L_old⁻¹ hist_oldᵀ new / M`` (``= L_{new,old}ᵀ``), ``L_{new,new} = chol(S₊)`` with
    ``S = newᵀnew/M − XᵀX``, and the noise ``Z_old X + Z_new L_{new,new}ᵀ`` (spec §4.2 steps 1–3).
    The inverse grows by the block rule ``[[L_o, 0], [B, L_n]]⁻¹ = [[L_o⁻¹, 0], [−L_n⁻¹ B L_o⁻¹, L_n⁻¹]]``.
    """
    M = hist.shape[0]
    cross = _matmul(hist.T, new) / M
    X = _matmul(L_inv, cross)  # zero rows at unfilled slots and zero pivots
    nn = _matmul(new.T, new) / M
    S = nn - _matmul(X.T, X)
    L_nn, L_nn_inv, clipped, dropped = _psd_factor(S, jnp.diagonal(nn), rtol)
    z_new = lax.dynamic_slice_in_dim(z_hist, jnp.int32(start), new.shape[1], axis=1)
    return _Extension(
        noise=_matmul(z_hist, X) + _matmul(z_new, L_nn.T),  # X is zero on unfilled slots
        rows=_put(X.T, L_nn, 0, start),
        inv_rows=_put(-_matmul(L_nn_inv, _matmul(X.T, L_inv)), L_nn_inv, 0, start),
        cross=cross,
        clipped=clipped,
        dropped=dropped,
    )


def _write(h: NoiseHistory, cols, rows, inv_rows, start, keep) -> NoiseHistory:
    """``h`` with one step's columns ``(K, M, b)`` and factor rows ``(K, b, N)`` written at slot
    ``start`` (zeros, i.e. unchanged empty slots, where ``keep`` is false)."""

    def put(a, u, axis):
        u = jnp.where(keep, u, 0)
        return lax.dynamic_update_slice_in_dim(a, u, jnp.int32(start), axis=axis)

    return NoiseHistory(
        hist=put(h.hist, cols, 2),
        z=h.z,
        L=put(h.L, rows, 1),
        L_inv=put(h.L_inv, inv_rows, 1),
    )


def _flat(g: Float[Array, "C M P"]) -> Float[Array, "M CP"]:
    """``(C, M, Pts) → (M, C·Pts)``, column ``c·Pts + μ``."""
    return jnp.transpose(g, (1, 0, 2)).reshape(g.shape[1], -1)


def _unflat(a: Float[Array, "M CP"], C: int) -> Float[Array, "C M P"]:
    return jnp.transpose(a.reshape(a.shape[0], C, -1), (1, 0, 2))


# -- one step -----------------------------------------------------------------------------------
def _true_sensitivity(settings, v, gc, xi: NoiseHistory, H, lr, key):
    """Row fields ``ĝ_k = γ0 M ∂f/∂h_k`` (backprop through ``W_k``, drawn from its conditional law).

    ``W_kᵀ ĝ/sqrt(M) = φ L⁻ᵀ Zᵀ ĝ/M + (I − P_φ) y`` with ``y ~ N(0, ĝᵀĝ/M)`` row-wise (fresh ``W'``) and
    ``P_φ = φ L⁻ᵀ L⁻¹ φᵀ/M`` the projector on the revealed columns (module docstring). ``gc`` is the
    drift history of steps ``s < t``.
    """
    p, phi = settings.param, settings.activation
    K, M = xi.hist.shape[0], xi.hist.shape[1]
    C = v.shape[1]
    b, drift_w, _ = _coefficients(p, K)
    eg = lr * p.gamma0
    z_obs = _normal(key, (K, M, C * H.shape[2]), H.dtype)
    rtol = PIVOT_RTOL_EPS * float(jnp.finfo(H.dtype).eps)

    def body(g, xs):
        h_k, phi_h, gc_h, z_h, L_inv, z_o = xs
        gf = _flat(g)
        known = _matmul(phi_h, _matmul(L_inv.T, _matmul(z_h.T, gf) / M))
        gram = _matmul(gf.T, gf) / M
        L_g, _, _, _ = _psd_factor(gram, jnp.diagonal(gram), rtol)
        y = _matmul(z_o, L_g.T)
        free = y - _matmul(phi_h, _matmul(L_inv.T, _matmul(L_inv, _matmul(phi_h.T, y) / M)))
        adrift = _matmul(phi_h, _matmul(gc_h.T, gf) / M)  # A_kᵀ ĝ
        step = b * (known + free) + drift_w * eg * adrift
        return g + phi.deriv(h_k)[None] * _unflat(step, C), g

    gK = phi.deriv(H[-1])[None] * v.T[:, :, None]
    xs = (H[:-1], xi.hist, gc, xi.z, xi.L_inv, z_obs)
    g0, gs = lax.scan(body, gK, xs, reverse=True)
    return jnp.concatenate([g0[None], gs])


def _kernel(settings, K, x_all, H, left, right):
    """``Θ = m_U σ_in² K^x ⊙ G_0 + m_W b² Σ_k G_{k+1} ⊙ Φ_k + m_v Φ_K`` (class-averaged G)."""
    p = settings.param
    M, C = H.shape[1], right.shape[1]
    _, drift_w, m = _coefficients(p, K)
    phis = settings.activation(H)
    Phi = jnp.einsum("kmp,kmq->kpq", phis, phis, precision=HIGHEST) / M
    G = jnp.einsum("kcmp,kcmq->kpq", left, right, precision=HIGHEST) / (M * C)
    kx = _matmul(x_all, x_all.T) / x_all.shape[1]
    return (
        m["U"] * p.sigma_in**2 * kx * G[0]
        + drift_w * jnp.sum(G[1:] * Phi[:-1], axis=0)
        + m["v"] * Phi[-1]
    )


def _one_step(
    settings: _Settings,
    state: CholeskyState,
    alive,
    lr,
    idx,
    x_all,
    y_all,
    loss,
    key,
    save,
    num_train: int,
    layer_steps_saved: tuple[int, ...],
    want_ntk: bool,
    want_kernels: bool,
):
    """Forward sweep, readout, backward sweep and updates of one repetition at one step.

    Returns the new state (frozen unless ``alive`` and finite), the keep flag, the batch loss, the
    observables of this step (the sweep of the state *before* the update, as `simulate_limit`
    observes) and the generated noises and fields.
    """
    p, phi = settings.param, settings.activation
    K, M = state.gc.shape[0], state.gc.shape[1]
    Pts, D = x_all.shape
    C = state.v.shape[1]
    dtype = x_all.dtype
    b, drift_w, m = _coefficients(p, K)
    eg = lr * p.gamma0
    rtol = PIVOT_RTOL_EPS * float(jnp.finfo(dtype).eps)
    n0 = state.count * Pts

    # forward (spec §3.4 steps 1–2, Euler–Maruyama with the conditional Gaussian noise)
    h0 = (p.sigma_in / D**0.5) * _matmul(state.U, x_all.T)
    h0 = h0 + (m["U"] * p.sigma_in**2) * eg * _matmul(state.A_in, x_all.T)

    def forward(h, xs):
        hist, gc_h = xs
        ext = _extend(hist.L_inv, hist.hist, hist.z, phi(h), n0, rtol)
        moved = drift_w * eg * _matmul(gc_h, ext.cross)  # m_W b² η0γ0 A_k φ(h_k), s < t
        out = (h, moved, ext.noise, ext.rows, ext.inv_rows, ext.clipped, ext.dropped)
        return h + b * ext.noise + moved, out

    hK, (hs, moved, xi, rows_xi, inv_xi, clip_f, drop_f) = lax.scan(
        forward, h0, (state.xi, state.gc)
    )
    H = jnp.concatenate([hs, hK[None]])  # (K+1, M, Pts)
    phis = phi(H)
    first = state.count == 0
    F0 = jnp.where(first, _matmul(phis[-1].T, state.v), state.F0)
    H0 = jnp.where(first, H, state.H0)

    # readout and error signal (step 3)
    if isinstance(settings.readout, FeatureReadout):
        f = (_matmul(phis[-1].T, state.v) - F0) / (p.gamma0 * M)
    else:
        f = state.f_ntk
    delta = jax.vmap(loss.error_signal)(f[idx], y_all[idx]) / idx.shape[0]
    c = jnp.zeros((Pts, C), dtype).at[idx].add(delta)
    value = jnp.mean(jax.vmap(loss)(f[idx], y_all[idx]))

    # backward (step 4); the drift A_kᵀ g sums over s < t (the gc slots of step t are still empty)
    gK = phi.deriv(hK)[None] * state.v.T[:, :, None]  # (C, M, Pts)

    def backward(g, xs):
        h_k, phi_h, gc_h, hist = xs
        gf = _flat(g)
        ext = _extend(hist.L_inv, hist.hist, hist.z, gf, n0 * C, rtol)
        adrift = _matmul(phi_h, _matmul(gc_h.T, gf) / M)  # A_kᵀ g_{k+1}
        step = b * ext.noise + drift_w * eg * adrift
        g_next = g + phi.deriv(h_k)[None] * _unflat(step, C)
        out = (g, ext.noise, ext.rows, ext.inv_rows, ext.clipped, ext.dropped)
        return g_next, out

    g0, (gs, rho, rows_rho, inv_rho, clip_b, drop_b) = lax.scan(
        backward, gK, (hs, state.xi.hist, state.gc, state.rho), reverse=True
    )
    G = jnp.concatenate([g0[None], gs])  # (K+1, C, M, Pts)

    # updates (steps 5–6)
    gc = jnp.einsum("kcmn,nc->kmn", G, c, precision=HIGHEST)  # g_k·c, (K+1, M, Pts)
    dA_in = _matmul(gc[0], x_all) / D
    dv = _matmul(phis[-1], c)
    f_ntk = state.f_ntk
    if isinstance(settings.readout, NTKReadout):  # f += η0 Θ c, as the first-order change
        kx = _matmul(x_all, x_all.T) / D
        u_term = jnp.einsum("cmn,mv,vn->nc", G[0], gc[0], kx, precision=HIGHEST)
        gg = jnp.einsum("kcmn,kmv->kcnv", G[1:], gc[1:], precision=HIGHEST)
        pp = jnp.einsum("kmn,kmv->knv", phis[:-1], phis[:-1], precision=HIGHEST) / M
        w_term = jnp.einsum("kcnv,knv->nc", gg, pp)
        v_term = _matmul(phis[-1].T, dv)
        df = (m["U"] * p.sigma_in**2 * u_term + drift_w * w_term + m["v"] * v_term) / M
        f_ntk = f_ntk + lr * df
    v = state.v + m["v"] * eg * dv
    ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(H)) & jnp.all(jnp.isfinite(G))
    ok = ok & jnp.all(jnp.isfinite(v)) & jnp.all(jnp.isfinite(f_ntk))
    keep = alive & ok
    xi_hist = _write(state.xi, phis[:-1], rows_xi, inv_xi, n0, keep)
    rho_hist = _write(state.rho, jax.vmap(_flat)(gs), rows_rho, inv_rho, n0 * C, keep)
    gc_hist = lax.dynamic_update_slice_in_dim(
        state.gc, jnp.where(keep, gc[1:], 0), jnp.int32(n0), axis=2
    )
    clip = jnp.stack([jnp.sum(clip_f), jnp.sum(clip_b)])
    drop = jnp.stack([jnp.sum(drop_f), jnp.sum(drop_b)])

    def frozen(new, old):
        return jnp.where(keep, new, old)

    new = CholeskyState(
        U=state.U,
        v=frozen(v, state.v),
        A_in=frozen(state.A_in + dA_in, state.A_in),
        f_ntk=frozen(f_ntk, state.f_ntk),
        F0=frozen(F0, state.F0),
        H0=frozen(H0, state.H0),
        gc=gc_hist,
        xi=xi_hist,
        rho=rho_hist,
        count=state.count + keep.astype(state.count.dtype),
        clipped=frozen(state.clipped + clip, state.clipped),
        dropped=frozen(state.dropped + drop, state.dropped),
    )

    # observables of this step
    losses = jax.vmap(loss)(f, y_all)
    obs = {
        "f": f,
        "loss_train": jnp.mean(losses[:num_train]),
        "loss_test": jnp.mean(losses[num_train:]) if Pts > num_train else jnp.array(jnp.nan, dtype),
        "h_rms": jnp.sqrt(jnp.mean(H**2, axis=(1, 2))),
        "h_movement": jnp.sqrt(jnp.mean((H - H0) ** 2, axis=(1, 2))),
        "block_movement": jnp.sqrt(jnp.mean(moved**2, axis=(1, 2))),
    }
    if want_ntk:
        if isinstance(settings.readout, FeatureReadout):
            # Θ̃: true-sensitivity rows (the P2 function's own gradient), mode-B columns; W_k is
            # conditioned on every revealed ξ_k, step t's included (slots written above)

            def tilde():
                left = _true_sensitivity(settings, state.v, state.gc, xi_hist, H, lr, key)
                return _kernel(settings, K, x_all, H, left, G)

            obs["ntk"] = lax.cond(save, tilde, lambda: jnp.zeros((Pts, Pts), dtype))
        else:
            obs["ntk"] = _kernel(settings, K, x_all, H, G, G)
    if want_kernels:
        sel = jnp.asarray(layer_steps_saved)
        Hs, Gs = H[sel], G[sel]
        obs["h_kernel"] = jnp.einsum("rmp,rmq->rpq", Hs, Hs, precision=HIGHEST) / M
        obs["g_kernel"] = jnp.einsum("rcmp,rcmq->rpq", Gs, Gs, precision=HIGHEST) / (M * C)
    noises = {"xi": xi, "rho": rho, "H": H, "G": G}
    return new, keep, value, obs, noises


@eqx.filter_jit
def cholesky_step(
    settings: _Settings,
    state: CholeskyState,
    alive,
    failed,
    lr,
    idx,
    t,
    save,
    x_all,
    y_all,
    loss,
    keys,
    num_train: int,
    layer_steps_saved: tuple[int, ...],
    want_ntk: bool,
    want_kernels: bool,
):
    """One training step of every repetition (vmapped over the leading axis E); jitted entry.

    ``t`` and ``save`` are arrays, so one compilation serves every step. Returns the new states
    (frozen for members that failed), ``alive``, ``failed``, the batch losses, this step's
    observables and its noises and fields: ``xi`` ``(E, K, M, Pts)``, ``rho`` ``(E, K, M, C·Pts)``
    (columns ``c·Pts + μ``), ``H`` ``(E, K+1, M, Pts)``, ``G`` ``(E, K+1, C, M, Pts)``.
    """

    def one(state, alive, failed, lr, key):
        state, keep, value, obs, noises = _one_step(
            settings,
            state,
            alive,
            lr,
            idx,
            x_all,
            y_all,
            loss,
            jr.fold_in(key, t),
            save,
            num_train,
            layer_steps_saved,
            want_ntk,
            want_kernels,
        )
        failed = jnp.where(alive & ~keep, t, failed)
        return state, keep, failed, value, obs, noises

    return eqx.filter_vmap(one)(state, alive, failed, lr, keys)


@eqx.filter_jit
def init_cholesky_state(
    keys,
    num_particles: int,
    num_layer_steps: int,
    in_dim: int,
    out_dim: int,
    num_points: int,
    num_pairs: int,
    sigma_out: float,
    dtype,
):
    """The ``t = 0`` `CholeskyState`s (vmapped over ``keys``): ``U ~ N(0, 1)``, ``v(0) ~ N(0, σ_out²)``, empty
    histories."""
    M, K, D, C, N = num_particles, num_layer_steps, in_dim, out_dim, num_pairs

    sizes = (M * D, M * C, K * M * N, K * M * N * C)
    shapes = ((M, D), (M, C), (K, M, N), (K, M, N * C))

    def one(key):
        flat = jr.normal(key, (sum(sizes),), dtype)  # one flat draw: one threefry to compile
        U, v0, z_xi, z_rho = (
            a.reshape(shape)
            for a, shape in zip(jnp.split(flat, np.cumsum(sizes)[:-1]), shapes, strict=True)
        )

        def empty(z):
            n = z.shape[-1]
            square = jnp.zeros((K, n, n), dtype)
            return NoiseHistory(hist=jnp.zeros_like(z), z=z, L=square, L_inv=square)

        return CholeskyState(
            U=U,
            v=sigma_out * v0,
            A_in=jnp.zeros((M, D), dtype),
            f_ntk=jnp.zeros((num_points, C), dtype),
            F0=jnp.zeros((num_points, C), dtype),
            H0=jnp.zeros((K + 1, M, num_points), dtype),
            gc=jnp.zeros((K, M, N), dtype),
            xi=empty(z_xi),
            rho=empty(z_rho),
            count=jnp.zeros((), jnp.int32),
            clipped=jnp.zeros((2,), dtype),
            dropped=jnp.zeros((2,), dtype),
        )

    return jax.vmap(one)(keys)


@eqx.filter_jit
def _zero_pivots(state: CholeskyState, num_filled, num_points: int):
    """Zero pivots of the final ``ξ`` and ``ρ`` factors among the filled pairs ``(E, 2)``."""
    C = state.v.shape[-1]

    def count(L, filled):
        d = jnp.diagonal(L, axis1=-2, axis2=-1)  # (E, K, N)
        used = jnp.arange(d.shape[-1], dtype=jnp.int32)[None, None, :] < filled[:, None, None]
        return jnp.sum((d == 0) & used, axis=(1, 2))

    n = num_filled * num_points
    return jnp.stack([count(state.xi.L, n), count(state.rho.L, n * C)], axis=1).astype(jnp.int32)


# -- host loop ------------------------------------------------------------------------------
def simulate_limit_cholesky(
    x_train: Float[Array, "P D"],
    y_train: Float[Array, "P C"],
    x_test: Float[Array, "Q D"],
    y_test: Float[Array, "Q C"],
    *,
    param: AbstractParameterization,
    activation: AbstractActivation,
    num_particles: int,
    num_layer_steps: int,
    readout: AbstractReadout,
    loss,
    lr: Float[Array, " E"],
    schedule: Int[Array, "T B"],
    every: int = 1,
    layer_times: Sequence[float] = (0.0, 0.5, 1.0),
    ntk: bool = False,
    kernels: bool = False,
    key: PRNGKeyArray,
    coupling: AbstractBackwardWeights = _MODE_B,
    progress: bool | None = None,
    desc: str = "limit[cholesky]",
):
    """Run the Cholesky particle limit (mode B) for ``T = len(schedule)`` steps, E repetitions.

    Args:
        x_train, y_train, x_test, y_test: the task's points (test points are tracked, not trained).
        param, activation: as for the finite network (one-layer blocks, SGD).
        num_particles: ``M`` (`limit.particles`); needs ``(T+1)·(P+Q) ≤ M``.
        num_layer_steps: ``K`` (`limit.layer_steps`), ``dτ = 1/K``.
        readout: `NTKReadout` (P1) or `FeatureReadout` (P2).
        loss: `MSE` or `CrossEntropy`.
        lr: ``η0`` per repetition ``(E,)``; repetitions are independent draws.
        schedule: the batch index sequence (`nfd.train.batch_schedule`: the finite trainer's).
        every, layer_times, ntk, kernels: what to save (as `simulate_limit`); layer time τ maps to
            layer step ``round(τ K)``. ``ntk`` is the fields' own Θ under P1 and Θ̃ (true-sensitivity
            rows, drawn from the conditional law of ``W``; module docstring) under P2.
        key: the key of everything random (split per repetition: init and noise).
        coupling: must be `DecoupledWeights` (mode B); mode A has no Cholesky realisation.

    Returns:
        ``(result, info)``: a `nfd.train.TrainResult` with the arrays of `simulate_limit`
        (``dz_own = None``; ``step_times`` include the observables of saved steps) and a
        `CholeskyInfo` with the clipped Schur-complement mass.

    Raises:
        ValueError: for mode A (`limit.noise` = "cholesky" needs `limit.coupling` = "decoupled"),
            ``M < 1``, ``K < 1`` or ``(T+1)·(P+Q) > M``.
    """
    from ..train import save_steps
    from ..train._train import _progress, result_from_records

    if not isinstance(coupling, DecoupledWeights):
        raise ValueError(
            "[limit] noise = 'cholesky' realises mode B only (coupling = 'decoupled'); got "
            f"coupling = {coupling.name!r}. Use limit.noise = 'matrix' (or method = 'kernel') for "
            "mode A."
        )
    if not isinstance(readout, NTKReadout | FeatureReadout):
        raise ValueError(f"[limit] readout must be 'ntk' or 'features', got {readout!r}.")
    for name, value in (("particles", num_particles), ("layer_steps", num_layer_steps)):
        if value < 1:
            raise ValueError(f"[limit] {name} must be >= 1, got {value}.")
    M, K = num_particles, num_layer_steps
    e = lr.shape[0]
    x_all = jnp.concatenate([x_train, x_test])
    y_all = jnp.concatenate([y_train, y_test])
    P, Pts, C, D = x_train.shape[0], x_all.shape[0], y_train.shape[1], x_all.shape[1]
    num_steps, B = schedule.shape
    N = (num_steps + 1) * Pts
    if N > M:
        raise ValueError(
            f"[limit] noise = 'cholesky' needs (T+1)·(P+Q) <= particles, got ({num_steps}+1)·{Pts} = "
            f"{N} > {M}: increase limit.particles or use limit.noise = 'matrix'."
        )
    dtype = x_all.dtype
    settings = _Settings(param=param, activation=activation, readout=readout)
    keys = jr.split(key, 2 * e)
    init_keys, noise_keys = keys[:e], keys[e:]
    state = init_cholesky_state(init_keys, M, K, D, C, Pts, N, param.sigma_out, dtype)
    saves = save_steps(num_steps, every)
    steps_saved = tuple(int(round(tau * K)) for tau in layer_times)
    alive = jnp.ones((e,), bool)
    failed = jnp.full((e,), -1, jnp.int32)
    dummy_idx = schedule[0] if num_steps else jnp.zeros((B,), schedule.dtype)
    records: list[dict] = []
    step_times = np.zeros((num_steps,))
    show = sys.stderr.isatty() if progress is None else progress
    last = state
    stop = False

    with _progress(num_steps, show, desc) as bar:
        for t in range(num_steps + 1):
            save = t in saves
            training = t < num_steps and not stop
            t0 = time.perf_counter()
            new, alive_new, failed_new, values, obs, _ = cholesky_step(
                settings,
                state,
                alive,
                failed,
                lr,
                schedule[t] if training else dummy_idx,
                jnp.asarray(t, jnp.int32),
                jnp.asarray(save),
                x_all,
                y_all,
                loss,
                noise_keys,
                P,
                steps_saved,
                ntk,
                kernels,
            )
            values.block_until_ready()
            last = new
            if save:
                records.append(jax.device_get(obs))
            if not training:
                break
            step_times[t] = time.perf_counter() - t0
            state, alive, failed = new, alive_new, failed_new
            bar.update(1)
            if show:
                bar.set_postfix(loss=f"{float(jnp.nanmean(values)):.4g}", alive=int(jnp.sum(alive)))
            if not bool(jnp.any(alive)):
                # every member diverged: observe once more at the frozen states and stop
                saves = np.append(saves[saves <= t], t + 1)
                stop = True

    result = result_from_records(records, saves, failed, step_times, num_train=P)
    info = CholeskyInfo(
        clipped_xi=last.clipped[:, 0],
        clipped_rho=last.clipped[:, 1],
        dropped_xi=last.dropped[:, 0],
        dropped_rho=last.dropped[:, 1],
        num_zero_pivots=_zero_pivots(last, last.count, Pts),
        num_pairs=N,
    )
    return result, info
