"""The causal start of the kernel fixed point (`nfd.limit._fixed_point`, ``start = "causal"``): the
fixed point of the sampled map, built in one pass over steps and layer steps.

The map is triangular (`nfd.limit._fixed_point`, "PSD" and the response rules): the samples of step
``t`` depend only on kernel entries of steps ``≤ t`` (the factors are causal, the drifts and the
``R`` term use steps ``< t``, the ``D`` term steps ``≤ t``), and within a step the forward field
``h_{k+1}(t)`` needs ``Φ_j(·, t)`` and ``R_j(t, ·)`` of layers ``j ≤ k`` only, the backward field
``g_k(t)`` needs ``G_{j+1}(·, t)`` and ``D_j(t, ·)`` of layers ``j ≥ k`` and the step's forward
fields. So every sample moment can be formed as soon as its fields exist, and then drive the fields
after it: step by step, forward over ``k`` and back, this pass

* forms column ``t`` of ``Φ_k`` (``G_{k+1}``) from the samples of ``φ(h_k)`` (``g_{k+1}``) of steps
  ``≤ t`` and extends the causal Cholesky factor by its rows at step ``t``, ``L_{t,<t} = Φ(t, <t)
  L_{<t}^{-ᵀ}``, ``L_tt = chol(Φ(t,t) + εI − L_{t,<t} L_{t,<t}ᵀ)`` (the rows that `factor` would
  give), and draws the step's noise from those rows and the member's fixed normals;
* in mode A forms row ``t`` of the whitened Stein coefficients ``R_k`` (``D_k``) from the same
  samples and applies its weights (`stein_weights`' rule on the factor rows already made);
* runs the step's forward, readout and backward exactly as `sweep` does.

The kernels it returns are the moments of the samples they drove: the fixed point of the sampled
map, with one difference: the relative jitter ``ε`` of the rows of step ``t`` is scaled by the mean
diagonal of the steps ``≤ t`` (which are known) instead of all steps, a change of relative size
``O(jitter)``. `_iterate` starts from it, and its first map evaluation checks it: the residual and
the stopping rule are the iteration's own, so a start that is not the fixed point is iterated on,
never reported as converged. Its cost is that of one to two map evaluations (the same products,
one layer step at a time: 0.34 s at K = 64, S = 256, N = 88 on 2 CPU cores, ~30% of it the
triangular solves), against the 30–40 evaluations of the damped iteration from the tiled start.
"""

from typing import TYPE_CHECKING

import jax.lax as lax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float, Int

from .. import nn
from ..dynamics import Points
from ._fixed_point_sweep import HIGHEST, Draws, Kernels, _theta_c, coefficients

if TYPE_CHECKING:
    from ._fixed_point import KernelFixedPoint


def _mm(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=HIGHEST)


def _padded(L: Float[Array, "n n"], filled: Array) -> Float[Array, "n n"]:
    """``L`` (zero outside the filled rows and columns) with a unit diagonal on the unfilled ones:
    triangular solves with it act as ``L_filled`` on the filled entries and leave the rest."""
    return L + jnp.diag(jnp.where(filled, 0.0, 1.0).astype(L.dtype))


def _extend(
    L: Float[Array, "n n"],
    col: Float[Array, "n b"],
    diag: Float[Array, " n"],
    start: Int[Array, ""],
    jitter: float,
) -> Float[Array, "b n"]:
    """The rows ``start … start+b−1`` of the lower Cholesky factor of ``X + ε I``, given its rows
    before ``start`` (``L``, zero elsewhere) and column block ``col = X(·, new)`` (rows ``≤`` the
    block); ``ε = jitter ·`` the mean of ``diag`` (``X``'s diagonal, earlier entries) and the new
    diagonal (1 where that is not positive), as `factor` scales it over all entries."""
    n, nb = col.shape
    idx = jnp.arange(n)
    before = idx < start
    X = jsl.solve_triangular(_padded(L, before), jnp.where(before[:, None], col, 0), lower=True)
    block = lax.dynamic_slice_in_dim(col, start, nb, axis=0)  # X(new, new)
    block = 0.5 * (block + block.T)
    count = (start + nb).astype(col.dtype)
    scale = (jnp.sum(jnp.where(before, diag, 0)) + jnp.trace(block)) / count
    eps = jitter * jnp.where(scale > 0, scale, jnp.ones_like(scale))
    schur = block - _mm(X.T, X) + eps * jnp.eye(nb, dtype=col.dtype)
    L_new = jnp.linalg.cholesky(0.5 * (schur + schur.T))
    return lax.dynamic_update_slice(X.T, L_new, (jnp.zeros_like(start), start))


def _stein(
    L: Float[Array, "n n"],
    kernel_diag: Float[Array, " n"],
    coef: Float[Array, "r n"],
    filled: Array,
    stein_tol: float,
) -> Float[Array, "r n"]:
    """`stein_weights` on the filled rows of a causal factor: ``Lᵀ w = a`` with ``a = coef`` (zero
    outside ``filled``) at the pivots ``L_jj² ≥ stein_tol · X_jj``."""
    keep = filled & (jnp.diagonal(L) ** 2 >= stein_tol * kernel_diag)
    a = jnp.where(keep[None], coef, 0)
    return jsl.solve_triangular(_padded(L, filled), a.T, lower=True, trans="T").T


def causal_init(
    dyn: "KernelFixedPoint",
    points: Points,
    lr: Float[Array, ""],
    schedule: Int[Array, "T1 B"],
    draws: Draws,
    jitter: float,
) -> Kernels:
    """The fixed point of one member's sampled map by one causal pass (module docstring)."""
    K, S = dyn.num_layer_steps, dyn.num_samples
    T1 = schedule.shape[0]
    P, C = points.y.shape
    N = T1 * P
    dtype = points.y.dtype
    b, weights, eg = coefficients(dyn, lr)
    run = _Pass(dyn, points, lr, draws, jitter, b, weights[dyn.block.branch] * eg, N)
    carry = (
        jnp.zeros((K, N, N), dtype),  # rows of the factors of Φ_k made so far
        jnp.zeros((K, N * C, N * C), dtype),  # ... of G_{k+1}
        jnp.zeros((K + 1, S, N), dtype),  # φ(h_k(s)), layer-major histories
        jnp.zeros((K + 1, S, N * C), dtype),  # g_k(s)
        jnp.zeros((K + 1, N, N), dtype),  # Φ_k
        jnp.zeros((K + 1, N * C, N * C), dtype),  # G_k
        jnp.zeros((K, N, N * C), dtype),  # R_k (mode A)
        jnp.zeros((K, N * C, N), dtype),  # D_k (mode A)
        jnp.zeros((S, P), dtype),  # Σ_s g_0(s)·c(s)
        jnp.zeros((N * C,), dtype),  # c(s)
        draws.v0,
        jnp.zeros((P, C), dtype),  # f (P1)
        jnp.zeros((P, C), dtype),  # F0 (P2)
    )
    carry, _ = lax.scan(run.step, carry, (jnp.arange(T1), schedule))
    _, _, _, _, Phi, G, R, D = carry[:8]
    if dyn.coupling.decoupled:
        return Kernels(Phi=Phi, G=G)
    return Kernels(Phi=Phi, G=G, R=R, D=D)


class _Pass:
    """The step of `causal_init`'s scan over training steps (closures over the member's data)."""

    def __init__(self, dyn, points: Points, lr, draws: Draws, jitter, b, w_drift, N):
        self.dyn, self.points, self.lr, self.draws, self.jitter = dyn, points, lr, draws, jitter
        self.b, self.w_drift, self.N = b, w_drift, N
        self.mode_a = not dyn.coupling.decoupled

    def step(self, carry, xs):
        dyn, points = self.dyn, self.points
        Lp, Lg, ph_h, g_h, Phi, G, R, D, gc0, c_hist, v, f_ntk, F0 = carry
        t, idx = xs
        K, S, N = dyn.num_layer_steps, dyn.num_samples, self.N
        P, C = points.y.shape
        c_prev = c_hist.reshape(N, C)  # c(s) of the steps done, zeros from t on
        _, weights, eg = coefficients(dyn, self.lr)
        g_diag = jnp.diagonal(G, axis1=1, axis2=2)
        h0 = self.draws.u + weights["U"] * eg * _mm(gc0, points.kx)
        h, Lp, ph_h, Phi, R_rows = self._forward_pass(h0, t, c_prev, Lp, Lg, ph_h, g_h, Phi, g_diag)
        ph, dph = dyn.activation(h), dyn.activation.deriv(h)

        # readout and error signal (as `sweep`)
        F = _mm(ph[:, K].T, v) / S
        F0 = jnp.where(t == 0, F, F0)
        f = dyn.readout.predict((F - F0) / dyn.param.gamma0, f_ntk)
        c = nn.error_signal(dyn.loss, f, points.y, idx)
        c = jnp.where(t < N // P - 1, c, jnp.zeros_like(c))

        gK = dph[:, K, :, None] * v[:, None, :]
        g, Lg, g_h, G, D_rows = self._backward_pass(gK, t, c_prev, dph, Lp, Lg, ph_h, g_h, Phi, G)
        if self.mode_a:
            R = lax.dynamic_update_slice_in_dim(R, R_rows, t * P, axis=1)
            D = lax.dynamic_update_slice_in_dim(D, D_rows, t * P * C, axis=1)

        # the step's updates (as `sweep`)
        gc = jnp.einsum("ikpa,pa->ikp", g, c, precision=HIGHEST)
        f_ntk = dyn.readout.advance(
            f_ntk,
            self.lr,
            lambda: _theta_c(weights, dyn.block.branch, points.kx, ph, g, gc, c),
        )
        v = v + weights["v"] * eg * _mm(ph[:, K], c)
        gc0 = gc0 + gc[:, 0]
        c_hist = lax.dynamic_update_slice_in_dim(c_hist, c.reshape(-1), t * P * C, axis=0)
        return (Lp, Lg, ph_h, g_h, Phi, G, R, D, gc0, c_hist, v, f_ntk, F0), None

    def _forward_pass(self, h0, t, c_prev, Lp, Lg, ph_h, g_h, Phi, g_diag):
        """Step ``t``'s forward over layer steps, forming ``Φ_k(·, t)``, the factor rows and
        ``R_k(t, ·)`` as it goes: ``h`` ``(S, K+1, P)`` and the updated ``Lp``, ``ph_h``, ``Phi``."""
        dyn, draws = self.dyn, self.draws
        K, S = dyn.num_layer_steps, dyn.num_samples
        P = h0.shape[1]
        phi_diag = jnp.diagonal(Phi, axis1=1, axis2=2)
        xs = (Lp, ph_h[:K], phi_diag[:K], draws.z_xi, draws.z_rho, Lg, g_h[1:], g_diag[1:])
        hK, (hs, cols, rows, R_rows) = lax.scan(lambda h, x: self._forward(h, x, t, c_prev), h0, xs)
        h = jnp.concatenate([jnp.swapaxes(hs, 0, 1), hK[:, None]], axis=1)  # (S, K+1, P)
        pK = dyn.activation(hK)
        ph_K = lax.dynamic_update_slice_in_dim(ph_h[K], pK, t * P, axis=1)
        cols = jnp.concatenate([cols, (_mm(ph_K.T, pK) / S)[None]])  # Φ_k(·, t), k = 0..K
        Lp = lax.dynamic_update_slice_in_dim(Lp, rows, t * P, axis=1)
        ph = jnp.swapaxes(dyn.activation(h), 0, 1)
        ph_h = lax.dynamic_update_slice_in_dim(ph_h, ph, t * P, axis=2)
        return h, Lp, ph_h, _put_column(Phi, cols, t * P), R_rows

    def _backward_pass(self, gK, t, c_prev, dph, Lp, Lg, ph_h, g_h, Phi, G):
        """Step ``t``'s backward over layer steps, forming ``G_{k+1}(·, t)``, the factor rows and
        ``D_k(t, ·)`` as it goes: ``g`` ``(S, K+1, P, C)`` and the updated ``Lg``, ``g_h``, ``G``."""
        dyn, draws = self.dyn, self.draws
        K, S = dyn.num_layer_steps, dyn.num_samples
        _, P, C = gK.shape
        phi_diag = jnp.diagonal(Phi, axis1=1, axis2=2)  # with step t
        g_diag = jnp.diagonal(G, axis1=1, axis2=2)
        dph_k = jnp.swapaxes(dph[:, :K], 0, 1)
        xs = (Lg, g_h[1:], g_diag[1:], draws.z_rho, Lp, ph_h[:K], phi_diag[:K], draws.z_xi, dph_k)
        g0, (gs, gcols, grows, D_rows) = lax.scan(
            lambda g, x: self._backward(g, x, t, c_prev), gK, xs, reverse=True
        )
        g = jnp.concatenate([g0[:, None], jnp.swapaxes(gs, 0, 1)], axis=1)  # (S, K+1, P, C)
        g_new = jnp.swapaxes(g.reshape(S, K + 1, P * C), 0, 1)
        g_h = lax.dynamic_update_slice_in_dim(g_h, g_new, t * P * C, axis=2)
        gcols = jnp.concatenate([(_mm(g_h[0].T, g_new[0]) / S)[None], gcols])  # G_k(·, t)
        Lg = lax.dynamic_update_slice_in_dim(Lg, grows, t * P * C, axis=1)
        return g, Lg, g_h, _put_column(G, gcols, t * P * C), D_rows

    def _forward(self, h, xs, t, c_prev):
        """Layer step ``k`` of the forward pass at step ``t``: ``h_k(t) → h_{k+1}(t)``."""
        L, hist, diag, zx, zr, Lg, gh, g_diag = xs
        dyn, S, N = self.dyn, self.dyn.num_samples, self.N
        P, C = h.shape[1], c_prev.shape[1]
        p = dyn.activation(h)
        hist = lax.dynamic_update_slice_in_dim(hist, p, t * P, axis=1)
        col = _mm(hist.T, p) / S  # Φ_k(s, t), zero for s > t
        row = _extend(L, col, diag, t * P, self.jitter)
        noise = _mm(zx, row.T)  # ξ_k(t)
        fwd = (c_prev[:, :, None] * col[:, None, :]).reshape(N * C, P)  # c(s) Φ_k(s, t), s < t
        drift = self.w_drift * _mm(gh, fwd)
        coef = jnp.zeros((P, N * C), h.dtype)
        if self.mode_a:  # + Σ_{s<t} R_k(t,s) g_{k+1}(s), whitened Stein on G_{k+1}'s factor
            before = jnp.arange(N * C) // (P * C) < t
            coef = _mm((p - hist[:, :P]).T, zr) / S  # control variate: step 0
            coef = jnp.where(before[None], coef, 0)
            w = _stein(Lg, g_diag, coef, before, dyn.stein_tol)
            noise = noise + _mm(gh, w.T)
        return h + self.b * noise + drift, (h, col, row, coef)

    def _backward(self, g, xs, t, c_prev):
        """Layer step ``k`` of the backward pass at step ``t``: ``g_{k+1}(t) → g_k(t)``."""
        Lg, gh, g_diag, zr, Lp, ph, phi_diag, zx, dph = xs
        dyn, S, N = self.dyn, self.dyn.num_samples, self.N
        _, P, C = g.shape
        PC = P * C
        gf = g.reshape(S, PC)
        gh = lax.dynamic_update_slice_in_dim(gh, gf, t * PC, axis=1)
        col = _mm(gh.T, gf) / S  # G_{k+1}(·, t)
        row = _extend(Lg, col, g_diag, t * PC, self.jitter)
        noise = _mm(zr, row.T)  # ρ_k(t)
        bwd = jnp.einsum("mbq,mb->mq", col.reshape(N, C, PC), c_prev, precision=HIGHEST)
        bdrift = _mm(ph, bwd)  # Σ_{s<t} φ(h_k(s)) c(s)ᵀ G_{k+1}(s, t)
        coef = jnp.zeros((PC, N), g.dtype)
        if self.mode_a:  # + Σ_{s≤t} D_k(t,s) φ(h_k(s)), whitened Stein on Φ_k's factor
            upto = jnp.arange(N) // P <= t
            coef = _mm((gf - gh[:, :PC]).T, zx) / S  # control variate: step 0
            coef = jnp.where(upto[None], coef, 0)
            w = _stein(Lp, phi_diag, coef, upto, dyn.stein_tol)
            noise = noise + _mm(ph, w.T)
        inc = dph[:, :, None] * (self.b * noise + self.w_drift * bdrift).reshape(S, P, C)
        return g + inc, (g, col, row, coef)


def _put_column(X: Float[Array, "L n n"], cols: Float[Array, "L n b"], start) -> Array:
    """``X`` with column block ``cols`` at ``start`` and its transpose as the row block."""
    X = lax.dynamic_update_slice_in_dim(X, cols, start, axis=2)
    return lax.dynamic_update_slice_in_dim(X, jnp.swapaxes(cols, 1, 2), start, axis=1)
