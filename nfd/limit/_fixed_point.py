"""The kernel fixed-point method (spec NFD.md §4.3, `limit.method = "kernel"`): mode B, P1 and P2.

The mode-B (`decoupled`, NFD/GIA: ``R ≡ D ≡ 0``) limit of a one-layer depth-muP ResNet trained for ``T``
steps is a single-site process driven by Gaussian processes whose covariances are the kernels
``Φ_k`` and ``G_k`` themselves. Over the ``N = Pts (T+1)`` (step, point) pairs (flat index
``n = t Pts + μ``; ``G`` has ``C × C`` blocks, index ``(t Pts + μ) C + a``) this module finds those
kernels as the fixed point of the map

    kernels → S samples of the single-site process → kernels.

With ``b = param.branch_multiplier(K)``, ``m = param.sgd_multipliers(K)`` and ``ε = η0 γ0``, one
*sweep* (spec §3.4 with ``κ_A = 0``) draws ``u^in``, ``v(0)``, ``ξ_k ~ N(0, Φ_k)`` and
``ρ_k ~ N(0, G_{k+1})`` (independent in mode B) and, for ``t = 0..T``, runs on every sample

    h_0(t)     = u^in + m_U ε σ_in² Σ_{s<t, ν} K^x_{νμ} g_{0,ν}(s)·c_ν(s)
    h_{k+1}(t) = h_k(t) + b ξ_k(t) + m_W b² ε Σ_{s<t, ν} Φ_k(s,t)_{νμ} g_{k+1,ν}(s)·c_ν(s)
    f(t), c(t) (readout below; c = 1[ν ∈ B_t] Δ_ν/|B_t|, zero at t = T)
    g_K(t)     = φ'(h_K(t)) v(t)
    g_k(t)     = g_{k+1}(t) + φ'(h_k(t)) ⊙ [b ρ_k(t) + m_W b² ε Σ_{s<t, ν} φ(h_{k,ν}(s)) c_ν(s)ᵀ G_{k+1}(s,t)_{ν·}]
    v(t+1)     = v(t) + m_v ε Σ_ν φ(h_{K,ν}(t)) c_ν(t)ᵀ

with the kernels of the previous iterate in the noises and drifts. In mode B no increment depends
on the current ``h_k(t)`` or ``g_{k+1}(t)``, so the depth recursions are a (reverse) cumulative sum
over the layer axis, and the sweep is one ``lax.scan`` over training steps. The new kernels are
the sample moments ``Φ_k = E[φ(h_k) φ(h_k)ᵀ]``, ``G_k = E[g_k g_kᵀ]`` over all pairs; they are damped,
``X ← (1 − λ) X + λ X_new``, until the residual ``max_k max|X_new − X|/max|X|`` (over ``Φ`` and ``G``
and every layer step ``k``) is below ``tol``.

Readouts (spec §3.3), evaluated inside the sweep from the current samples (at the fixed point this
is the spec's "from the current kernels"/"from the previous samples": the samples' moments *are* the
kernels there):

* P1 (`NTKReadout`): ``f(0) = 0``, ``f(t+1) = f(t) + η0 Θ(t) c(t)`` with ``Θ(t)`` the fields' own NTK
  (spec §3.4 step 5) from the step-``t`` samples, formed as the first-order change (no ``Θ``).
* P2 (`FeatureReadout`): ``f(t) = (E_S[v(t) φ(h_K(t))] − E_S[v(0) φ(h_K(0))])/γ0``, the centred
  limit of the *decoupled* network.

**Random numbers.** All normal draws are made once (common random numbers), so the map is
deterministic and the iteration converges geometrically to the fixed point of the *sampled* map,
whose distance from the true limit is the Monte Carlo floor ``O(S^{-1/2})``. That floor is measured
separately: ``num_draw_sets`` independent draw sets are the ensemble axis ``E`` of the result (their
spread is the Monte Carlo error; `FixedPointInfo` carries the standard errors of ``f`` and the
losses). By default (``orthogonalize=True``) the standard normals of ``u^in``, ``v(0)``, ``ξ`` and
``ρ`` are jointly orthonormalised over the samples (``ZᵀZ = S I``, moment matching), so the input
kernel ``H_0 = σ_in² K^x``, ``E[v vᵀ] = σ_out² I`` and the Gaussian parts of every other kernel are
reproduced exactly; this needs ``S ≥ D + C + K N (1 + C)``.

**PSD.** ``ξ_k = L_k z`` with ``L_k`` the Cholesky factor of ``Φ_k + jitter · mean(diag Φ_k) · I``
(likewise ``G``). Every iterate is a convex combination of sample Gram matrices and of the tiled
``t = 0`` kernels, hence PSD, but it is rank-deficient across steps (the tiled start has rank
``Pts``; lazy runs stay close to it), which the relative jitter (default ``1e-10`` in float64,
``1e-5`` in float32) regularises; its effect on the kernels is ``O(jitter)``. The factor is
time-causal (the step-major ordering), so samples at steps ``≤ t`` depend only on kernel entries at
steps ``≤ t``, and the fixed-point map is triangular in time and depth.

**NTK observable** (as `particle_observe`): for P1 the fields' own kernel ``Θ(t)``; for P2 the
kernel ``Θ̃(t)`` by which the decoupled network's ``f`` moves, with true-sensitivity rows. The true
sensitivity ``ĝ = γ0 ∂f/∂h`` backpropagates through the *forward* matrices ``W_k``, whose transpose
is conditioned on the forward fields, so (spec §3.1) ``W_kᵀ ĝ_{k+1}(t) → ρ̂_k(t) + Σ_{s≤t} D_k(t,s) φ(h_k(s))``
with ``D_k(t,s) = E[∂ĝ_{k+1}(t)/∂ξ_k(s)]``. The Gaussian part ``ρ̂`` is independent of everything
the decoupled dynamics see, so it drops out of every cross-kernel ``E[ĝ g̃]`` and is omitted; the
response term is estimated by whitened Stein (spec §3.4) on the forward draws,
``Σ_s D_k(t,s) φ(h_k(s)) = Σ_j E[ĝ_{k+1}(t) z_{k,j}] (L_k^{-1} φ(h_k))_j`` over the pairs ``j`` of
steps ``≤ t`` whose pivot satisfies ``L_jj² ≥ stein_tol · Φ_jj`` (default ``1e-6``: directions that
the jitter alone keeps alive are dropped). The drift of ``ĝ`` uses the cross kernel
``E[g̃_{k+1}(s) ĝ_{k+1}(t)ᵀ]``, since ``ΔW`` accumulates the decoupled fields. At ``t = 0``,
``D = 0`` and ``Θ̃(0)`` is spec §2's. ``Θ̃`` is a post-processing pass on the converged samples.

Not supported: mode A (`ReusedWeights`, `limit.coupling = "exact"`), two-layer blocks, Adam.
Cost per iteration ``O(K N³ (1 + C³) + S K N² (1 + C²))`` (factors and moments) plus
``O(S K Pts² T² C²)`` (drifts); memory ``O(S K N (1 + C) + K N² C²)``.
"""

import time
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .._results import RESULTS
from .._typing import RealScalarLike
from ..model import AbstractBackwardWeights, DecoupledWeights
from ..nn import AbstractActivation
from ..param import AbstractParameterization
from ._particles import AbstractReadout, FeatureReadout, NTKReadout
from ._recursion import init_kernels

HIGHEST = lax.Precision.HIGHEST


def _einsum(spec: str, *arrays):
    return jnp.einsum(spec, *arrays, precision=HIGHEST)


# -- results ----------------------------------------------------------------------------------
class FixedPointInfo(eqx.Module):
    """Convergence and Monte Carlo diagnostics of `fixed_point` (leading axis E = draw sets).

    Attributes:
        iterations: map evaluations before the stopping rule fired, per draw set ``(E,)``.
        residual: the residual ``max_k max|X_new − X| / max|X|`` (``X`` over ``Φ_k`` and ``G_k``) of
            the state whose observables are reported ``(E,)``.
        residual_history: the residual of each iteration ``(E, max_iter)``; NaN after stopping.
        converged: ``residual < tol`` ``(E,)``.
        f_train_se, f_test_se: Monte Carlo standard error of ``f`` over draw sets,
            ``std(ddof=1)/sqrt(E)``, ``(S, P, C)`` / ``(S, Q, C)``; NaN if ``E = 1``.
        loss_train_se, loss_test_se: the same for the losses ``(S,)``.
        num_samples: ``S`` samples per draw set (the floor is ``O(S^{-1/2})``).
        tol: the stopping tolerance.
        damping: ``λ``.
    """

    iterations: Int[Array, " E"]
    residual: Float[Array, " E"]
    residual_history: Float[Array, "E I"]
    converged: Bool[Array, " E"]
    f_train_se: Float[Array, "S P C"]
    f_test_se: Float[Array, "S Q C"]
    loss_train_se: Float[Array, " S"]
    loss_test_se: Float[Array, " S"]
    num_samples: int = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    damping: float = eqx.field(static=True)


class _Settings(eqx.Module):
    """What shapes and code paths depend on (static), plus the modules that define the model."""

    param: AbstractParameterization
    activation: AbstractActivation
    readout: AbstractReadout
    loss: Any  # an `nfd.train.AbstractLoss` (limit does not import train)
    num_layer_steps: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    num_train: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    damping: float = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    jitter: float = eqx.field(static=True)
    stein_tol: float = eqx.field(static=True)
    orthogonalize: bool = eqx.field(static=True)
    theta_tilde: bool = eqx.field(static=True)


class _Data(eqx.Module):
    x: Float[Array, "Pts D"]
    y: Float[Array, "Pts C"]
    kx: Float[Array, "Pts Pts"]
    schedule: Int[Array, "T1 B"]  # the batch rows, padded by one (unused) row for t = T
    lr: Float[Array, ""]
    gamma0: Float[Array, ""]  # γ0 (the settings' parameterization carries γ0 = 1)


class _Kernels(eqx.Module):
    Phi: Float[Array, "Kp1 N N"]  # Φ_k over (step, point) pairs, k = 0..K
    G: Float[Array, "Kp1 NC NC"]  # G_k over (step, point, output) triples, k = 0..K


class _Draws(eqx.Module):
    u: Float[Array, "S Pts"]  # u^in = σ_in Z_u x / sqrt(D)
    v0: Float[Array, "S C"]  # v(0) = σ_out z_v
    z_xi: Float[Array, "S K N"]  # ξ_k = L(Φ_k) z
    z_rho: Float[Array, "S K NC"]  # ρ_k = L(G_{k+1}) z


class _Sweep(eqx.Module):
    h: Float[Array, "T1 S Kp1 Pts"]
    g: Float[Array, "T1 S Kp1 Pts C"]
    f: Float[Array, "T1 Pts C"]
    c: Float[Array, "T1 Pts C"]
    losses: Float[Array, "T1 Pts"]
    drift: Float[Array, "T1 S K Pts"]  # the block's own update m_W b² ε Σ Φ_k g c (ΔW φ/√n)


# -- helpers --------------------------------------------------------------------------------
def _default_tol(dtype, f64: float, f32: float) -> float:
    return f64 if jnp.dtype(dtype) == jnp.float64 else f32


def _factor(x: Float[Array, "*k N N"], jitter: float) -> Float[Array, "*k N N"]:
    """Lower Cholesky factor of ``x + jitter · mean(diag x) · I`` (symmetrised first)."""
    x = 0.5 * (x + jnp.swapaxes(x, -1, -2))
    n = x.shape[-1]
    scale = jnp.mean(jnp.diagonal(x, axis1=-2, axis2=-1), axis=-1)
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    eye = jnp.eye(n, dtype=x.dtype)
    return jnp.linalg.cholesky(x + (jitter * scale)[..., None, None] * eye[None])


def _error_signal(loss, f, y, idx, num_points):
    """``c_ν = 1[ν ∈ B_t] Δ_ν / |B_t|`` over all tracked points ``(Pts, C)`` (as the particles)."""
    delta = jax.vmap(loss.error_signal)(f[idx], y[idx]) / idx.shape[0]
    return jnp.zeros((num_points, f.shape[1]), f.dtype).at[idx].add(delta)


def _relative_change(new: Array, old: Array) -> Array:
    """``max_k max|new_k − old_k| / max|old_k|`` over the leading (layer-step) axis."""
    num = jnp.max(jnp.abs(new - old), axis=(-2, -1))
    den = jnp.max(jnp.abs(old), axis=(-2, -1))
    return jnp.max(num / jnp.where(den > 0, den, jnp.ones_like(den)))


def _coefficients(st: _Settings, data: "_Data"):
    """Branch multiplier ``b``, SGD multipliers ``m`` and ``ε = η0 γ0``."""
    K = st.num_layer_steps
    b = st.param.branch_multiplier(K)
    m = st.param.sgd_multipliers(K, "one_layer")
    return b, m, data.lr * data.gamma0


# -- draws and initial kernels ----------------------------------------------------------------
def _draws(st: _Settings, data: _Data, num_points: int, out_dim: int, *, key) -> _Draws:
    S, K, T1 = st.num_samples, st.num_layer_steps, st.num_steps + 1
    D = data.x.shape[1]
    N = T1 * num_points
    C = out_dim
    cols = D + C + K * N + K * N * C
    z = jr.normal(key, (S, cols), data.x.dtype)
    if st.orthogonalize:  # ZᵀZ = S I exactly, by Cholesky QR (XLA's Householder QR is slow on CPU)
        gram = jnp.matmul(z.T, z, precision=HIGHEST) / S
        chol = jnp.linalg.cholesky(0.5 * (gram + gram.T))
        z = jsl.solve_triangular(chol, z.T, lower=True).T
    zu, zv = z[:, :D], z[:, D : D + C]
    zxi = z[:, D + C : D + C + K * N].reshape(S, K, N)
    zrho = z[:, D + C + K * N :].reshape(S, K, N * C)
    p = st.param
    u = (p.sigma_in / D**0.5) * jnp.matmul(zu, data.x.T, precision=HIGHEST)
    return _Draws(u=u, v0=p.sigma_out * zv, z_xi=zxi, z_rho=zrho)


def _tiled_init(st: _Settings, data: _Data, out_dim: int) -> _Kernels:
    """The t = 0 kernels of spec §2, tiled over every pair of steps (``G^{ab} = δ^{ab} G``)."""
    init = init_kernels(st.param, st.activation, data.kx, st.num_layer_steps)
    T1, P, C = st.num_steps + 1, data.kx.shape[0], out_dim
    Kp1 = st.num_layer_steps + 1
    ones = jnp.ones((T1, T1), data.kx.dtype)
    phi = _einsum("st,kpq->kspqt", ones, init.Phi)  # (K+1, T1, P, P, T1) -> reorder
    phi = jnp.transpose(phi, (0, 1, 2, 4, 3)).reshape(Kp1, T1 * P, T1 * P)
    eye = jnp.eye(C, dtype=data.kx.dtype)
    g = _einsum("st,kpq,ab->kspatqb", ones, init.G, eye).reshape(Kp1, T1 * P * C, T1 * P * C)
    return _Kernels(Phi=phi, G=g)


# -- one sweep ------------------------------------------------------------------------------
def _sweep(st: _Settings, data: _Data, draws: _Draws, kern: _Kernels) -> _Sweep:
    """Samples of the mode-B single-site process given the kernels (module docstring)."""
    p, phi = st.param, st.activation
    K, T, S = st.num_layer_steps, st.num_steps, st.num_samples
    T1 = T + 1
    P, C = data.y.shape
    lr = data.lr
    b, m, eg = _coefficients(st, data)
    w_drift = m["W"] * b**2 * eg
    in_drift = m["U"] * p.sigma_in**2 * eg
    features = isinstance(st.readout, FeatureReadout)

    L_phi = _factor(kern.Phi[:K], st.jitter)  # (K, N, N)
    L_g = _factor(kern.G[1:], st.jitter)  # (K, NC, NC)
    xi = _einsum("knm,ikm->ikn", L_phi, draws.z_xi).reshape(S, K, T1, P)
    rho = _einsum("knm,ikm->ikn", L_g, draws.z_rho).reshape(S, K, T1, P, C)
    xi, rho = jnp.moveaxis(xi, 2, 0), jnp.moveaxis(rho, 2, 0)  # leading axis: step t
    # column t of each kernel: Φ_k((s, ν), (t, μ)) as (K, T1_s, P_ν, P_μ); G likewise with outputs
    phi_cols = jnp.moveaxis(kern.Phi[:K].reshape(K, T1, P, T1, P), 3, 0)
    g_cols = jnp.moveaxis(kern.G[1:].reshape(K, T1, P, C, T1, P, C), 4, 0)

    def step(carry, xs):
        gc_buf, phic_buf, v, f_ntk, F0 = carry
        t, xi_t, rho_t, phi_col, g_col, idx = xs
        # forward: every increment is known before h_k(t), so h is a cumulative sum over k
        h0 = draws.u + in_drift * jnp.matmul(
            jnp.sum(gc_buf[:, 0], axis=1), data.kx, precision=HIGHEST
        )
        drift = w_drift * _einsum("iksn,ksnm->ikm", gc_buf[:, 1:], phi_col)  # (S, K, P)
        inc = b * xi_t + drift
        h = jnp.concatenate([h0[:, None], h0[:, None] + jnp.cumsum(inc, axis=1)], axis=1)
        ph, dph = phi(h), phi.deriv(h)  # (S, K+1, P)
        F = jnp.matmul(ph[:, K].T, v, precision=HIGHEST) / S  # E_S[v φ(h_K)] (P, C)
        F0 = jnp.where(t == 0, F, F0)
        f = (F - F0) / data.gamma0 if features else f_ntk
        c = _error_signal(st.loss, f, data.y, idx, P)
        c = jnp.where(t < T, c, jnp.zeros_like(c))
        losses = jax.vmap(st.loss)(f, data.y)
        # backward: likewise a reverse cumulative sum
        gK = dph[:, K, :, None] * v[:, None, :]  # (S, P, C)
        bdrift = _einsum("iksnb,ksnbma->ikma", phic_buf, g_col)  # (S, K, P, C)
        ginc = dph[:, :K, :, None] * (b * rho_t + w_drift * bdrift)
        rc = jnp.flip(jnp.cumsum(jnp.flip(ginc, axis=1), axis=1), axis=1)
        g = jnp.concatenate([gK[:, None] + rc, gK[:, None]], axis=1)  # (S, K+1, P, C)
        gc = _einsum("ikpa,pa->ikp", g, c)  # g·c per sample, layer step and point
        if not features:  # P1: f += η0 Θ(t) c(t) as the first-order change
            phi_tt = _einsum("ikp,ikq->kpq", ph, ph) / S
            u_term = (
                _einsum("ipa,ip->pa", g[:, 0], jnp.matmul(gc[:, 0], data.kx, precision=HIGHEST)) / S
            )
            w_term = (
                _einsum("ikpa,ikp->pa", g[:, 1:], _einsum("ikq,kqp->ikp", gc[:, 1:], phi_tt[:K]))
                / S
            )
            v_term = jnp.matmul(phi_tt[K], c, precision=HIGHEST)
            df = m["U"] * p.sigma_in**2 * u_term + m["W"] * b**2 * w_term + m["v"] * v_term
            f_ntk = f_ntk + lr * df
        v = v + m["v"] * eg * jnp.matmul(ph[:, K], c, precision=HIGHEST)
        gc_buf = gc_buf.at[:, :, t].set(gc)
        phic_buf = phic_buf.at[:, :, t].set(ph[:, :K, :, None] * c[None, None])
        out = (h, g, f, c, losses, drift)
        return (gc_buf, phic_buf, v, f_ntk, F0), out

    dtype = data.y.dtype
    carry = (
        jnp.zeros((S, K + 1, T1, P), dtype),
        jnp.zeros((S, K, T1, P, C), dtype),
        draws.v0,
        jnp.zeros((P, C), dtype),
        jnp.zeros((P, C), dtype),
    )
    xs = (jnp.arange(T1), xi, rho, phi_cols, g_cols, data.schedule)
    _, (h, g, f, c, losses, drift) = lax.scan(step, carry, xs)
    return _Sweep(h=h, g=g, f=f, c=c, losses=losses, drift=drift)


def _moments(st: _Settings, sw: _Sweep) -> _Kernels:
    """The sample kernels ``Φ_k``, ``G_k`` over all pairs of one sweep."""
    S = st.num_samples
    T1, _, Kp1, P = sw.h.shape
    C = sw.g.shape[-1]
    ph = st.activation(sw.h)
    Phi = _einsum("tikp,uikq->ktpuq", ph, ph).reshape(Kp1, T1 * P, T1 * P) / S
    G = _einsum("tikpa,uikqb->ktpauqb", sw.g, sw.g).reshape(Kp1, T1 * P * C, T1 * P * C) / S
    return _Kernels(Phi=Phi, G=G)


# -- the fixed point --------------------------------------------------------------------------
class _Loop(eqx.Module):
    kern: _Kernels  # the next iterate
    used: _Kernels  # the iterate that produced `sweep`
    sweep: _Sweep
    n: Int[Array, ""]
    residual: Float[Array, ""]
    history: Float[Array, " I"]


def _solve_one(st: _Settings, data: _Data, draws: _Draws, init: _Kernels):
    """Damped fixed-point iteration for one draw set.

    Each iteration evaluates the map once: sweep with the iterate ``X``, moments ``X_new``, residual
    ``r(X) = max rel |X_new − X|``, then ``X ← (1 − λ) X + λ X_new``. It stops when ``r < tol`` or after
    ``max_iter`` evaluations; the reported state is the last sweep (whose residual is ``r``).
    """
    lam = st.damping

    def cond(state: _Loop):
        return (state.n < st.max_iter) & (state.residual >= st.tol)

    def body(state: _Loop):
        sw = _sweep(st, data, draws, state.kern)
        new = _moments(st, sw)
        r = jnp.maximum(
            _relative_change(new.Phi, state.kern.Phi), _relative_change(new.G, state.kern.G)
        )
        r = jnp.where(jnp.isfinite(r), r, jnp.asarray(jnp.inf, r.dtype))
        kern = jax.tree.map(lambda x, y: (1 - lam) * x + lam * y, state.kern, new)
        return _Loop(
            kern=kern,
            used=state.kern,
            sweep=sw,
            n=state.n + 1,
            residual=r,
            history=state.history.at[state.n].set(r),
        )

    dtype = data.y.dtype
    sw0 = jax.tree.map(
        lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(lambda: _sweep(st, data, draws, init))
    )
    state = _Loop(
        kern=init,
        used=init,
        sweep=sw0,
        n=jnp.asarray(0, jnp.int32),
        residual=jnp.asarray(jnp.inf, dtype),
        history=jnp.full((st.max_iter,), jnp.nan, dtype),
    )
    return lax.while_loop(cond, body, state)


def _theta_tilde(
    st: _Settings, data: _Data, draws: _Draws, kern: _Kernels, sw: _Sweep
) -> Float[Array, "T1 Pts Pts"]:
    """``Θ̃(t)`` with true-sensitivity rows by whitened Stein (module docstring), class-averaged."""
    p, phi = st.param, st.activation
    K, S = st.num_layer_steps, st.num_samples
    T1, _, _, P = sw.h.shape
    C = sw.g.shape[-1]
    N = T1 * P
    b, m, eg = _coefficients(st, data)
    w_drift = m["W"] * b**2 * eg
    ph, dph = phi(sw.h), phi.deriv(sw.h)  # (T1, S, K+1, P)
    L_phi = _factor(kern.Phi[:K], st.jitter)  # the factors that drew ξ
    ph_flat = jnp.moveaxis(ph[:, :, :K], 2, 0)  # (K, T1, S, P)
    ph_flat = jnp.transpose(ph_flat, (0, 2, 1, 3)).reshape(K, S, N)
    e_hat = jax.vmap(lambda L, y: jsl.solve_triangular(L, y.T, lower=True))(L_phi, ph_flat)
    diag_l = jnp.diagonal(L_phi, axis1=-2, axis2=-1)
    diag_phi = jnp.diagonal(kern.Phi[:K], axis1=-2, axis2=-1)
    keep = diag_l**2 >= st.stein_tol * diag_phi  # (K, N)
    step_of = jnp.arange(N) // P
    causal = step_of[None, :] <= jnp.arange(T1)[:, None]  # (T1, N): pairs of steps ≤ t
    strict = jnp.arange(T1)[:, None] < jnp.arange(T1)[None, :]  # (s, t): s < t
    phic = ph[:, :, :K, :, None] * sw.c[:, None, None]  # φ(h_k(s)) c(s)ᵀ (T1, S, K, P, C)

    def body(ghat, xs):  # ghat = ĝ_{k+1}(t) for every t: (T1, S, P, C)
        e_k, keep_k, z_k, g_next, phic_k, dph_k = xs
        cross = _einsum("tipa,tiqa->tpq", ghat, g_next) / (S * C)
        mask = (causal & keep_k[None]).astype(ghat.dtype)  # (T1, N)
        coef = _einsum("tipa,ij->tpaj", ghat, z_k) / S * mask[:, None, None, :]
        resp = _einsum("tpaj,ji->tipa", coef, e_k)  # Σ_s D_k(t, s) φ(h_k(s))
        gx = _einsum("sinb,tipa->snbtpa", g_next, ghat) / S  # E[g̃_{k+1}(s) ĝ_{k+1}(t)ᵀ]
        drift = _einsum("sinb,snbtpa,st->tipa", phic_k, gx, strict.astype(ghat.dtype))
        ghat = ghat + dph_k[..., None] * (b * resp + w_drift * drift)
        return ghat, cross

    xs = (
        e_hat,
        keep,
        jnp.moveaxis(draws.z_xi, 1, 0),
        jnp.moveaxis(sw.g[:, :, 1:], 2, 0),
        jnp.moveaxis(phic, 2, 0),
        jnp.moveaxis(dph[:, :, :K], 2, 0),
    )
    ghat0, crosses = lax.scan(body, sw.g[:, :, K], xs, reverse=True)  # crosses[k]: layer k+1
    cross0 = _einsum("tipa,tiqa->tpq", ghat0, sw.g[:, :, 0]) / (S * C)
    phi_tt = _einsum("tikp,tikq->tkpq", ph, ph) / S
    return (
        m["U"] * p.sigma_in**2 * data.kx[None] * cross0
        + m["W"] * b**2 * jnp.sum(jnp.moveaxis(crosses, 0, 1) * phi_tt[:, :K], axis=1)
        + m["v"] * phi_tt[:, K]
    )


def _observables(
    st: _Settings,
    data: _Data,
    draws: _Draws,
    kern: _Kernels,
    sw: _Sweep,
    sel,
    want_ntk,
    want_kernels,
):
    """Per-step observables of the reported sweep ``(T+1, ...)``, as `particle_observe`."""
    S = st.num_samples
    p, phi = st.param, st.activation
    C = sw.g.shape[-1]
    P = st.num_train
    num_points = data.y.shape[0]
    out = {
        "f": sw.f,
        "loss_train": jnp.mean(sw.losses[:, :P], axis=1),
        "loss_test": jnp.mean(sw.losses[:, P:], axis=1)
        if num_points > P
        else jnp.full(sw.losses.shape[:1], jnp.nan, sw.f.dtype),
        "h_rms": jnp.sqrt(jnp.mean(sw.h**2, axis=(1, 3))),
        "h_movement": jnp.sqrt(jnp.mean((sw.h - sw.h[:1]) ** 2, axis=(1, 3))),
        "block_movement": jnp.sqrt(jnp.mean(sw.drift**2, axis=(1, 3))),
    }
    if want_kernels:
        idx = jnp.asarray(sel)
        H, G = sw.h[:, :, idx], sw.g[:, :, idx]
        out["h_kernel"] = _einsum("tirp,tirq->trpq", H, H) / S
        out["g_kernel"] = _einsum("tirpa,tirqa->trpq", G, G) / (S * C)
    if want_ntk:
        if st.theta_tilde:
            out["ntk"] = _theta_tilde(st, data, draws, kern, sw)
        else:
            b, m, _ = _coefficients(st, data)
            K = st.num_layer_steps
            ph = phi(sw.h)
            phi_tt = _einsum("tikp,tikq->tkpq", ph, ph) / S
            g_tt = _einsum("tikpa,tikqa->tkpq", sw.g, sw.g) / (S * C)
            out["ntk"] = (
                m["U"] * p.sigma_in**2 * data.kx[None] * g_tt[:, 0]
                + m["W"] * b**2 * jnp.sum(g_tt[:, 1:] * phi_tt[:, :K], axis=1)
                + m["v"] * phi_tt[:, K]
            )
    finite = jnp.all(jnp.isfinite(sw.f), axis=(1, 2)) & jnp.all(jnp.isfinite(sw.h), axis=(1, 2, 3))
    finite = finite & jnp.all(jnp.isfinite(sw.g), axis=(1, 2, 3, 4))
    out["failed_step"] = jnp.where(
        jnp.all(finite),
        jnp.asarray(-1, jnp.int32),
        jnp.argmin(finite.astype(jnp.int32)).astype(jnp.int32),
    )
    return out


@eqx.filter_jit
def _run(st: _Settings, data: _Data, keys, sel, want_ntk: bool, want_kernels: bool):
    """All draw sets (one per key, in sequence): draws, fixed point, observables."""
    P, C = data.y.shape
    init = _tiled_init(st, data, C)

    def one(key):
        draws = _draws(st, data, P, C, key=key)
        state = _solve_one(st, data, draws, init)
        obs = _observables(st, data, draws, state.used, state.sweep, sel, want_ntk, want_kernels)
        return obs, state.n, state.residual, state.history

    return lax.map(one, keys)  # sequential over draw sets: each stops at its own iteration


def fixed_point(
    x_train: Float[Array, "P D"],
    y_train: Float[Array, "P C"],
    x_test: Float[Array, "Q D"],
    y_test: Float[Array, "Q C"],
    *,
    param: AbstractParameterization,
    activation: AbstractActivation,
    num_layer_steps: int,
    coupling: AbstractBackwardWeights,
    readout: AbstractReadout,
    loss,
    lr: RealScalarLike,
    schedule: Int[Array, "T B"],
    num_samples: int,
    num_draw_sets: int = 1,
    every: int = 1,
    layer_times: Sequence[float] = (0.0, 0.5, 1.0),
    ntk: bool = False,
    kernels: bool = False,
    damping: float = 0.7,
    tol: float = 1e-4,
    max_iter: int = 50,
    jitter: float | None = None,
    stein_tol: float = 1e-6,
    orthogonalize: bool = True,
    key: PRNGKeyArray,
):
    """The mode-B limit by the kernel fixed-point method (spec §4.3; module docstring).

    Args:
        x_train, y_train, x_test, y_test: the task's points (test points are tracked, not trained).
        param, activation: as for the finite network (one-layer blocks, SGD).
        num_layer_steps: ``K`` (`limit.layer_steps`; ``= L`` for the depth-``L`` network).
        coupling: `DecoupledWeights` (mode B, `limit.coupling = "decoupled"`). Mode A
            (`ReusedWeights`) is not implemented here.
        readout: `NTKReadout` (P1) or `FeatureReadout` (P2).
        loss: `MSE` or `CrossEntropy`.
        lr: ``η0``.
        schedule: the batch index sequence ``(T, B)`` (`nfd.train.batch_schedule`).
        num_samples: ``S``, samples per draw set.
        num_draw_sets: ``E``, independent draw sets (the result's leading axis; their spread is the
            Monte Carlo error).
        every, layer_times, ntk, kernels: what to save (as `nfd.limit.simulate_limit`); layer time
            ``τ`` maps to layer step ``round(τ K)``.
        damping: ``λ`` in ``X ← (1 − λ) X + λ X_new``; the spec's range is ``[0.3, 1]``.
        tol: stop when the residual (max relative kernel change) is below this.
        max_iter: at most this many map evaluations.
        jitter: relative diagonal jitter of the Cholesky factors (default ``1e-10`` in float64,
            ``1e-5`` in float32).
        stein_tol: relative pivot tolerance of the whitened Stein response in ``Θ̃`` (P2 ``ntk``).
        orthogonalize: orthonormalise the normal draws over samples (moment matching).
        key: the draws; draw set ``e`` uses ``jr.split(key, E)[e]``.

    Returns:
        ``(result, info)``: a `nfd.train.TrainResult` with the arrays of `simulate_limit` (leading
        axis E = draw sets; ``dz_own = None``; ``step_times`` is the total wall time spread evenly
        over the ``T`` steps, as the method does not march in time) and a `FixedPointInfo`.
        ``h_movement`` (RMS of ``h_k(t) − h_k(0)``) and ``block_movement`` (RMS of the block's own
        drift ``m_W b² ε Σ Φ_k g c``, i.e. ``b ΔW_k φ(h_k)/sqrt(n)``) are single-site quantities of
        the sampled joint process and are reported as such (never NaN). ``status`` is
        ``RESULTS.nonfinite`` where the reported sweep has non-finite values (``failed_step``: the
        first such step); non-convergence is ``info.converged``, not a status.

    Note:
        ``η0`` and ``γ0`` enter as arrays, so sweeps over them compile once; the other fields of
        ``param`` and all keywords are static. The map is triangular in time and depth, so
        ``damping = 1`` usually converges fastest (e.g. 6 against 11 iterations at λ = 0.7).

    Raises:
        NotImplementedError: for mode A (`ReusedWeights`).
        ValueError: for bad sizes or settings.
    """
    from ..train import TrainResult, save_steps

    if not isinstance(coupling, DecoupledWeights):
        raise NotImplementedError(
            "fixed_point implements only mode B: [limit] coupling = 'decoupled' "
            f"(DecoupledWeights), got {coupling!r}. Mode A ('exact') needs the whitened Stein "
            "responses of spec §3.4: use method = 'particles' with noise = 'matrix'."
        )
    if not isinstance(readout, NTKReadout | FeatureReadout):
        raise ValueError(f"readout must be NTKReadout or FeatureReadout, got {readout!r}.")
    if num_layer_steps < 1:
        raise ValueError(f"[limit] layer_steps must be >= 1, got {num_layer_steps}.")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}.")
    if num_draw_sets < 1:
        raise ValueError(f"num_draw_sets must be >= 1, got {num_draw_sets}.")
    if not 0 < damping <= 1:
        raise ValueError(f"damping must lie in (0, 1] (spec: [0.3, 1]), got {damping}.")
    if max_iter < 1 or not tol > 0:
        raise ValueError(f"need max_iter >= 1 and tol > 0, got {max_iter} and {tol}.")
    param.sgd_multipliers(num_layer_steps, "one_layer")  # validates the parameterization
    x_all = jnp.concatenate([x_train, x_test])
    y_all = jnp.concatenate([y_train, y_test])
    dtype = x_all.dtype
    P, num_points, C = x_train.shape[0], x_all.shape[0], y_train.shape[1]
    D = x_all.shape[1]
    T, K = schedule.shape[0], num_layer_steps
    N = (T + 1) * num_points
    cols = D + C + K * N * (1 + C)
    if orthogonalize and num_samples < cols:
        raise ValueError(
            f"orthogonalize=True needs num_samples >= D + C + K N (1 + C) = {cols}, got "
            f"{num_samples}: raise num_samples or pass orthogonalize=False."
        )
    jitter = _default_tol(dtype, 1e-10, 1e-5) if jitter is None else jitter
    # γ0 travels as an array (`_Data.gamma0`), so a γ0 (or η0) sweep compiles once; the static copy
    # of the parameterization carries γ0 = 1 and nothing reads its γ0
    gamma0 = jnp.asarray(param.gamma0, dtype)
    param = eqx.tree_at(lambda q: q.gamma0, param, 1.0)
    st = _Settings(
        param=param,
        activation=activation,
        readout=readout,
        loss=loss,
        num_layer_steps=K,
        num_steps=T,
        num_train=P,
        num_samples=num_samples,
        damping=float(damping),
        tol=float(tol),
        max_iter=int(max_iter),
        jitter=float(jitter),
        stein_tol=float(stein_tol),
        orthogonalize=bool(orthogonalize),
        theta_tilde=isinstance(readout, FeatureReadout),
    )
    pad = schedule[-1:] if T > 0 else jnp.zeros((1, schedule.shape[1]), schedule.dtype)
    data = _Data(
        x=x_all,
        y=y_all,
        kx=jnp.matmul(x_all, x_all.T, precision=HIGHEST) / D,
        schedule=jnp.concatenate([schedule, pad]).astype(jnp.int32),
        lr=jnp.asarray(lr, dtype),
        gamma0=gamma0,
    )
    saves = save_steps(T, every)
    sel = tuple(int(round(tau * K)) for tau in layer_times)
    t0 = time.perf_counter()
    obs, iters, resid, hist = _run(st, data, jr.split(key, num_draw_sets), sel, ntk, kernels)
    obs = jax.block_until_ready(obs)
    elapsed = time.perf_counter() - t0

    saves_j = jnp.asarray(saves)
    pick = {k: v[:, saves_j] for k, v in obs.items() if k != "failed_step"}
    f = pick["f"]
    failed = obs["failed_step"]
    status = jnp.where(failed >= 0, RESULTS.nonfinite._value, RESULTS.successful._value)
    result = TrainResult(
        steps=saves_j,
        f_train=f[:, :, :P],
        f_test=f[:, :, P:],
        loss_train=pick["loss_train"],
        loss_test=pick["loss_test"],
        ntk=pick["ntk"] if ntk else None,
        h_kernel=pick["h_kernel"] if kernels else None,
        g_kernel=pick["g_kernel"] if kernels else None,
        h_rms=pick["h_rms"],
        h_movement=pick["h_movement"],
        block_movement=pick["block_movement"],
        dz_own=None,
        status=status.astype(jnp.int32),
        failed_step=failed,
        step_times=jnp.full((T,), elapsed / max(T, 1)),
    )

    def se(x):
        if num_draw_sets < 2:
            return jnp.full(x.shape[1:], jnp.nan, x.dtype)
        return jnp.std(x, axis=0, ddof=1) / num_draw_sets**0.5

    info = FixedPointInfo(
        iterations=iters,
        residual=resid,
        residual_history=hist,
        converged=resid < tol,
        f_train_se=se(f[:, :, :P]),
        f_test_se=se(f[:, :, P:]),
        loss_train_se=se(pick["loss_train"]),
        loss_test_se=se(pick["loss_test"]),
        num_samples=num_samples,
        tol=float(tol),
        damping=float(damping),
    )
    return result, info
