"""The single-site process of the kernel fixed point (`nfd.limit._fixed_point`, docs/math §4.3).

Given an iterate (the kernels ``Φ_k``, ``G_k`` over all (step, point) pairs and, in mode A, the
whitened response coefficients), `sweep` samples the process on ``S`` samples (its equations are in
`nfd.limit._fixed_point`; mode A's response terms are `nfd.limit._fixed_point_response`'s), `moments`
returns the next iterate, `residual` the change between two, and `theta_tilde_fields` the kernels of
mode B's NTK ``Θ̃`` with true-sensitivity rows by whitened Stein on the converged samples. `draw`
makes the normal draws of one member (common random numbers for every iteration) and `tiled_init`
the first iterate, the ``t = 0`` kernels of §2 at every pair of steps (``R = D = 0``).
"""

from typing import TYPE_CHECKING

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import nn
from ..dynamics import Points
from ._fixed_point_response import (
    one_at_a_time,
    response_coefficients,
    response_weights,
    stein_weights,
)
from ._recursion import init_kernels

if TYPE_CHECKING:
    from ._fixed_point import KernelFixedPoint

HIGHEST = lax.Precision.HIGHEST


def _einsum(spec: str, *arrays):
    return jnp.einsum(spec, *arrays, precision=HIGHEST)


def _mm(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=HIGHEST)


class Kernels(eqx.Module):
    """An iterate: ``Φ_k`` over (step, point) pairs and ``G_k`` over (step, point, output)
    triples (flat index ``n = t Pts + μ``, ``(t Pts + μ) C + a``), ``k = 0..K``; in mode A also the
    whitened response coefficients ``R_k``, ``D_k``, ``k = 0..K−1``
    (`nfd.limit._fixed_point_response.response_coefficients`), ``None`` in mode B."""

    Phi: Float[Array, "Kp1 N N"]
    G: Float[Array, "Kp1 NC NC"]
    R: Float[Array, "K N NC"] | None = None
    D: Float[Array, "K NC N"] | None = None


class Draws(eqx.Module):
    """The normal draws of one member, shared by every iteration (common random numbers)."""

    u: Float[Array, "S Pts"]  # u^in = σ_in Z_u x / sqrt(D)
    v0: Float[Array, "S C"]  # v(0) = σ_out z_v
    # layer-major, so that the noises and the Stein moments are batched matmuls over k
    z_xi: Float[Array, "K S N"]  # ξ_k = L(Φ_k) z
    z_rho: Float[Array, "K S NC"]  # ρ_k = L(G_{k+1}) z


class Sweep(eqx.Module):
    """The samples of one sweep at every step ``t = 0..T`` (leading axis ``T+1``)."""

    h: Float[Array, "T1 S Kp1 Pts"]
    g: Float[Array, "T1 S Kp1 Pts C"]
    f: Float[Array, "T1 Pts C"]
    c: Float[Array, "T1 Pts C"]
    drift: Float[Array, "T1 S K Pts"]  # the block's own update m_W b² ε Σ Φ_k g c (ΔW φ/√n)


def num_columns(in_dim: int, out_dim: int, num_layer_steps: int, num_pairs: int) -> int:
    """Standard normals per sample: ``D + C + K N (1 + C)`` (``u^in``, ``v(0)``, ``ξ``, ``ρ``)."""
    return in_dim + out_dim + num_layer_steps * num_pairs * (1 + out_dim)


def coefficients(dyn: "KernelFixedPoint", lr: Float[Array, ""]):
    """Branch multiplier ``b``, the NTK weights (``m_U σ_in²``, ``m_W b²``, ``m_v``) and
    ``ε = η0 γ0``."""
    K, p = dyn.num_layer_steps, dyn.param
    return p.branch_multiplier(K), p.ntk_weights(K, dyn.block), lr * p.gamma0


def _symmetric(x: Float[Array, "K N N"]) -> tuple[Float[Array, "K N N"], Float[Array, " K"]]:
    """Each ``x_k`` symmetrised, and the mean of its diagonal (1 where that is not positive)."""
    x = 0.5 * (x + jnp.swapaxes(x, -1, -2))
    scale = jnp.mean(jnp.diagonal(x, axis1=-2, axis2=-1), axis=-1)
    return x, jnp.where(scale > 0, scale, jnp.ones_like(scale))


def factor(x: Float[Array, "K N N"], jitter: float) -> Float[Array, "K N N"]:
    """Lower Cholesky factor of each ``x_k + jitter · mean(diag x_k) · I`` (symmetrised first), one
    matrix per LAPACK call (`one_at_a_time`)."""
    x, scale = _symmetric(x)
    n = x.shape[-1]
    eye = jnp.eye(n, dtype=x.dtype)
    return one_at_a_time(jnp.linalg.cholesky, x + (jitter * scale)[..., None, None] * eye[None])


def kernel_diagnostics(dyn: "KernelFixedPoint", kern: Kernels, jitter: float) -> dict[str, Array]:
    """`FixedPointInfo`'s kernel fields of an iterate: the relative smallest eigenvalue of every
    ``Φ_k`` and ``G_k`` and the fraction of whitened-Stein columns the pivot rule drops."""

    def min_eig(x):  # relative to the mean diagonal, one matrix per LAPACK call
        x, scale = _symmetric(x)
        return one_at_a_time(lambda m: jnp.linalg.eigvalsh(m)[0], x) / scale

    def dropped(x):
        L = factor(x, jitter)
        diag = jnp.diagonal(x, axis1=-2, axis2=-1)
        return jnp.mean(jnp.diagonal(L, axis1=-2, axis2=-1) ** 2 < dyn.stein_tol * diag)

    K = dyn.num_layer_steps
    stein = jnp.stack([dropped(kern.Phi[:K]), dropped(kern.G[1:])]).astype(kern.Phi.dtype)
    return {"phi_min_eig": min_eig(kern.Phi), "g_min_eig": min_eig(kern.G), "stein_dropped": stein}


def relative_change(new: Array, old: Array, scale: Array | None = None) -> Array:
    """``max_k max|new_k − old_k| / max|scale_k|`` over the leading (layer-step) axis (``scale``
    defaults to ``old``; a zero scale counts as 1)."""
    num = jnp.max(jnp.abs(new - old), axis=(-2, -1))
    den = jnp.max(jnp.abs(old if scale is None else scale), axis=(-2, -1))
    return jnp.max(num / jnp.where(den > 0, den, jnp.ones_like(den)))


def residual(new: Kernels, old: Kernels) -> Array:
    """The largest relative change of the iterate's fields: `relative_change` of ``Φ`` and ``G``;
    in mode A also of ``R`` and ``D``, relative to ``max(max|new_k|, max|old_k|)``.

    The response coefficients start at zero and are ``O(η0 γ0)``, yet move ``f`` at ``O(η0)`` (P2
    divides by ``γ0``): an absolute change would pass ``tol`` before the responses have acted.
    """
    r = jnp.maximum(relative_change(new.Phi, old.Phi), relative_change(new.G, old.G))
    for a, b in ((new.R, old.R), (new.D, old.D)):
        if a is not None and b is not None:
            r = jnp.maximum(r, relative_change(a, b, jnp.maximum(jnp.abs(a), jnp.abs(b))))
    return r


# -- draws and the first iterate -------------------------------------------------------------
def draw(dyn: "KernelFixedPoint", points: Points, num_steps: int, *, key: PRNGKeyArray) -> Draws:
    """The normal draws of one member; orthonormalised over samples (``ZᵀZ = S I``) by default.

    With ``dyn.draw_refinement = r`` the layer-step normals are drawn for ``r K`` steps and summed
    in consecutive groups of ``r`` (divided by ``√r``): the coupling of a ``K``-step run to the
    ``r K``-step run of the same key (orthonormal columns stay orthonormal)."""
    S, K, D, C = dyn.num_samples, dyn.num_layer_steps, points.in_dim, points.out_dim
    r = dyn.draw_refinement
    N = (num_steps + 1) * points.num_points
    z = jr.normal(key, (S, num_columns(D, C, r * K, N)), points.x.dtype)
    if dyn.orthogonalize:  # Cholesky QR (XLA's Householder QR is slow on CPU)
        gram = jnp.matmul(z.T, z, precision=HIGHEST) / S
        chol = jnp.linalg.cholesky(0.5 * (gram + gram.T))
        z = jsl.solve_triangular(chol, z.T, lower=True).T
    zu, zv = z[:, :D], z[:, D : D + C]
    zxi = z[:, D + C : D + C + r * K * N].reshape(S, K, r, N).sum(axis=2) / r**0.5
    zrho = z[:, D + C + r * K * N :].reshape(S, K, r, N * C).sum(axis=2) / r**0.5
    zxi, zrho = jnp.swapaxes(zxi, 0, 1), jnp.swapaxes(zrho, 0, 1)  # layer-major
    p = dyn.param
    u = (p.sigma_in / D**0.5) * jnp.matmul(zu, points.x.T, precision=HIGHEST)
    return Draws(u=u, v0=p.sigma_out * zv, z_xi=zxi, z_rho=zrho)


def tiled_init(dyn: "KernelFixedPoint", points: Points, num_steps: int) -> Kernels:
    """The t = 0 kernels of §2, tiled over every pair of steps (``G^{ab} = δ^{ab} G``); in mode A
    zero response coefficients."""
    kx = points.kx
    init = init_kernels(dyn.param, dyn.activation, kx, dyn.num_layer_steps)
    T1, P, C = num_steps + 1, points.num_points, points.out_dim
    Kp1 = dyn.num_layer_steps + 1
    ones = jnp.ones((T1, T1), kx.dtype)
    phi = _einsum("st,kpq->kspqt", ones, init.Phi)  # (K+1, T1, P, P, T1) -> reorder
    phi = jnp.transpose(phi, (0, 1, 2, 4, 3)).reshape(Kp1, T1 * P, T1 * P)
    eye = jnp.eye(C, dtype=kx.dtype)
    g = _einsum("st,kpq,ab->kspatqb", ones, init.G, eye).reshape(Kp1, T1 * P * C, T1 * P * C)
    if dyn.coupling.decoupled:
        return Kernels(Phi=phi, G=g)
    N, K = T1 * P, dyn.num_layer_steps  # mode A: R = D = 0 at t = 0 (§3.1)
    zeros = jnp.zeros((K, N, N * C), kx.dtype)
    return Kernels(Phi=phi, G=g, R=zeros, D=jnp.swapaxes(zeros, 1, 2))


# -- one sweep --------------------------------------------------------------------------------
def _inputs(dyn: "KernelFixedPoint", points: Points, draws: Draws, kern: Kernels, jitter: float):
    """The per-step inputs of a sweep (leading axis: step ``t``): the noises ``ξ_k(t)``,
    ``ρ_k(t)``, column ``t`` of ``Φ_k`` and ``G_{k+1}``, and in mode A the response weights."""
    K, S = dyn.num_layer_steps, dyn.num_samples
    P, C = points.y.shape
    N = kern.Phi.shape[-1]
    T1 = N // P
    L_phi = factor(kern.Phi[:K], jitter)  # (K, N, N)
    L_g = factor(kern.G[1:], jitter)  # (K, NC, NC)
    # ξ_k = L_k z_k for every sample: one batched matmul over k, then step-major for the scan
    xi = _mm(draws.z_xi, jnp.swapaxes(L_phi, 1, 2)).reshape(K, S, T1, P)
    rho = _mm(draws.z_rho, jnp.swapaxes(L_g, 1, 2)).reshape(K, S, T1, P, C)
    # column t of each kernel as a (K, rows, P[C]) matrix, rows in flat (step, point[, output])
    # order: Φ_k((s, ν), (t, μ)) and G_{k+1}((s, ν, b), (t, μ, a))
    phi_cols = jnp.moveaxis(kern.Phi[:K].reshape(K, N, T1, P), 2, 0)
    g_cols = jnp.moveaxis(kern.G[1:].reshape(K, N * C, T1, P * C), 2, 0)
    resp = None
    if kern.R is not None and kern.D is not None:  # mode A
        wR, wD = response_weights(
            kern.R, kern.D, L_phi, L_g, kern.Phi[:K], kern.G[1:], dyn.stein_tol, P
        )  # as (T1, K, rows, P[C]) matrices, like the kernel columns
        wR = jnp.swapaxes(wR.reshape(T1, K, P, N * C), 2, 3)
        wD = jnp.swapaxes(wD.reshape(T1, K, P * C, N), 2, 3)
        resp = (wR, wD)
    xi, rho = jnp.transpose(xi, (2, 1, 0, 3)), jnp.transpose(rho, (2, 1, 0, 3, 4))
    return xi, rho, phi_cols, g_cols, resp


def sweep(
    dyn: "KernelFixedPoint",
    points: Points,
    lr: Float[Array, ""],
    schedule: Int[Array, "T1 B"],
    draws: Draws,
    kern: Kernels,
    jitter: float,
) -> Sweep:
    """Samples of the single-site process given the iterate (`nfd.limit._fixed_point`).

    ``schedule`` holds the batch of every step ``t = 0..T`` (the row at ``T`` is unused: ``c = 0``).
    Mode A adds the response terms (`nfd.limit._fixed_point_response`), which need the histories
    ``g_{k+1}(s)`` and ``φ(h_k(s))``; mode B carries ``None`` in their place.
    """
    phi, gamma0 = dyn.activation, dyn.param.gamma0
    K, S = dyn.num_layer_steps, dyn.num_samples
    T1 = schedule.shape[0]
    P, C = points.y.shape
    kx = points.kx
    b, weights, eg = coefficients(dyn, lr)
    w_drift = weights[dyn.block.branch] * eg
    in_drift = weights["U"] * eg
    xi, rho, phi_cols, g_cols, resp = _inputs(dyn, points, draws, kern, jitter)

    N = T1 * P

    def step(carry, xs):
        gc0, g_buf, ph_buf, c_hist, v, f_ntk, F0 = carry
        t, xi_t, rho_t, phi_col, g_col, idx, resp_t = xs
        fwd, bwd = _history_columns(phi_col, g_col, c_hist.reshape(N, C), resp_t)
        # forward: every increment is known before h_k(t), so h is a cumulative sum over k
        h0 = draws.u + in_drift * jnp.matmul(gc0, kx, precision=HIGHEST)
        out = _k_major_matmul(g_buf, fwd)  # Σ_s g_{k+1}(s)·[c(s) Φ_k(s,t) | R_k(t,s)]
        drift = w_drift * out[..., :P]  # (S, K, P)
        noise = xi_t if resp_t is None else xi_t + out[..., P:]  # mode A: + Σ R_k(t,s) g_{k+1}(s)
        inc = b * noise + drift
        h = jnp.concatenate([h0[:, None], h0[:, None] + jnp.cumsum(inc, axis=1)], axis=1)
        ph, dph = phi(h), phi.deriv(h)  # (S, K+1, P)
        F = jnp.matmul(ph[:, K].T, v, precision=HIGHEST) / S  # E_S[v φ(h_K)] (P, C)
        F0 = jnp.where(t == 0, F, F0)
        f = dyn.readout.predict((F - F0) / gamma0, f_ntk)
        c = nn.error_signal(dyn.loss, f, points.y, idx)
        c = jnp.where(t < T1 - 1, c, jnp.zeros_like(c))
        # backward: likewise a reverse cumulative sum; D needs φ(h_k(s)) for s ≤ t
        gK = dph[:, K, :, None] * v[:, None, :]  # (S, P, C)
        ph_buf = _put(ph_buf, ph[:, :K], t)
        out = _k_major_matmul(ph_buf, bwd)  # Σ_s φ(h_k(s))·[c(s) G_{k+1}(s,t) | D_k(t,s)]
        bdrift = out[..., : P * C].reshape(S, K, P, C)
        noise = rho_t  # mode A: + Σ_{s≤t} D_k(t,s) φ(h_k(s))
        if resp_t is not None:
            noise = rho_t + out[..., P * C :].reshape(S, K, P, C)
        ginc = dph[:, :K, :, None] * (b * noise + w_drift * bdrift)
        rc = jnp.flip(jnp.cumsum(jnp.flip(ginc, axis=1), axis=1), axis=1)
        g = jnp.concatenate([gK[:, None] + rc, gK[:, None]], axis=1)  # (S, K+1, P, C)
        gc = _einsum("ikpa,pa->ikp", g, c)  # g·c per sample, layer step and point
        f_ntk = dyn.readout.advance(
            f_ntk, lr, lambda: _theta_c(weights, dyn.block.branch, kx, ph, g, gc, c)
        )
        v = v + weights["v"] * eg * jnp.matmul(ph[:, K], c, precision=HIGHEST)
        gc0 = gc0 + gc[:, 0]
        g_buf = _put(g_buf, g[:, 1:].reshape(S, K, P * C), t)
        c_hist = lax.dynamic_update_slice_in_dim(c_hist, c.reshape(-1), t * P * C, axis=0)
        return (gc0, g_buf, ph_buf, c_hist, v, f_ntk, F0), (h, g, f, c, drift)

    # the histories of the steps done so far, layer-major with a flat (step, point[, output])
    # axis, so that each history term is one batched matmul against a kernel column
    dtype = points.y.dtype
    zeros = jnp.zeros((P, C), dtype)
    carry = (
        jnp.zeros((S, P), dtype),
        jnp.zeros((K, S, N * C), dtype),  # g_{k+1}(s)
        jnp.zeros((K, S, N), dtype),  # φ(h_k(s))
        jnp.zeros((N * C,), dtype),  # c(s)
        draws.v0,
        zeros,
        zeros,
    )
    xs = (jnp.arange(T1), xi, rho, phi_cols, g_cols, schedule, resp)
    _, (h, g, f, c, drift) = lax.scan(step, carry, xs)
    return Sweep(h=h, g=g, f=f, c=c, drift=drift)


def _history_columns(phi_col, g_col, c, resp_t):
    """The right-hand sides of a step's two history matmuls: ``c(s)`` folded into column ``t`` of
    ``Φ_k`` (rows ``(s, ν, b)``, for the history of ``g_{k+1}``) and of ``G_{k+1}`` (rows ``(s, ν)``,
    for the history of ``φ(h_k)``), and in mode A the response weights of ``R`` and ``D`` beside them.

    The drifts sum over ``s < t``: ``c`` holds ``c(s)`` of the steps done and zeros from ``t`` on,
    so the folded columns are causal, and each history term shares one batched matmul with the
    response term of the same history."""
    K, N, P = phi_col.shape
    C = c.shape[-1]
    fwd = (c[None, :, :, None] * phi_col[:, :, None, :]).reshape(K, N * C, P)
    bwd = _einsum("kmbq,mb->kmq", g_col.reshape(K, N, C, P * C), c)  # (K, N, PC)
    if resp_t is not None:  # mode A
        fwd = jnp.concatenate([fwd, resp_t[0]], axis=-1)
        bwd = jnp.concatenate([bwd, resp_t[1]], axis=-1)
    return fwd, bwd


def _k_major_matmul(
    buf: Float[Array, "K S M"], col: Float[Array, "K M Q"]
) -> Float[Array, "S K Q"]:
    """``Σ_m buf[k, i, m] col[k, m, q]`` as one batched matmul over layer steps (the layout a batched
    GEMM runs at full speed; an S-major einsum over split (step, point) axes ran ~5× slower on CPU)."""
    return jnp.swapaxes(jnp.matmul(buf, col, precision=HIGHEST), 0, 1)


def _put(
    buf: Float[Array, "K S M"], x: Float[Array, "S K W"], t: Int[Array, ""]
) -> Float[Array, "K S M"]:
    """Write step ``t``'s values ``x`` (sample-major) into a layer-major history at columns
    ``t W … (t+1) W − 1``."""
    x = jnp.swapaxes(x, 0, 1)
    return lax.dynamic_update_slice_in_dim(buf, x, t * x.shape[-1], axis=2)


def _theta_c(weights, branch, kx, ph, g, gc, c) -> Float[Array, "Pts C"]:
    """``Θ(t) c(t)`` of the samples (§3.4 step 5) as the first-order change, without ``Θ``."""
    S, Kp1 = ph.shape[:2]
    K = Kp1 - 1
    phi_tt = _einsum("ikp,ikq->kpq", ph, ph) / S
    u_term = _einsum("ipa,ip->pa", g[:, 0], jnp.matmul(gc[:, 0], kx, precision=HIGHEST)) / S
    w_term = _einsum("ikpa,ikp->pa", g[:, 1:], _einsum("ikq,kqp->ikp", gc[:, 1:], phi_tt[:K])) / S
    v_term = jnp.matmul(phi_tt[K], c, precision=HIGHEST)
    return weights["U"] * u_term + weights[branch] * w_term + weights["v"] * v_term


def moments(dyn: "KernelFixedPoint", sw: Sweep, draws: Draws) -> Kernels:
    """The sample kernels ``Φ_k``, ``G_k`` over all pairs of one sweep; in mode A also its whitened
    response coefficients ``R_k``, ``D_k``."""
    S = dyn.num_samples
    T1, _, Kp1, P = sw.h.shape
    C = sw.g.shape[-1]
    # layer-major samples over the flat (step, point[, output]) axis: each kernel is one batched
    # Gram matrix over k (an S-major einsum over split axes ran ~1.3× slower on CPU)
    ph = jnp.transpose(dyn.activation(sw.h), (2, 1, 0, 3)).reshape(Kp1, S, T1 * P)
    g = jnp.transpose(sw.g, (2, 1, 0, 3, 4)).reshape(Kp1, S, T1 * P * C)
    Phi = _mm(jnp.swapaxes(ph, 1, 2), ph) / S
    G = _mm(jnp.swapaxes(g, 1, 2), g) / S
    if dyn.coupling.decoupled:
        return Kernels(Phi=Phi, G=G)
    R, D = response_coefficients(ph, g, draws.z_xi, draws.z_rho, P)
    return Kernels(Phi=Phi, G=G, R=R, D=D)


# -- Θ̃ by whitened Stein -----------------------------------------------------------------------
def theta_tilde_fields(
    dyn: "KernelFixedPoint",
    lr: Float[Array, ""],
    draws: Draws,
    kern: Kernels,
    sw: Sweep,
    jitter: float,
) -> tuple[Float[Array, "T1 Kp1 Pts Pts"], Float[Array, "T1 Kp1 Pts Pts"]]:
    """The kernels of ``Θ̃(t)``: the cross kernels ``E[ĝ_k(t) g̃_k(t)ᵀ]`` of the true sensitivity
    ``ĝ`` and the decoupled fields (class-averaged), and ``Φ_k(t, t)``, ``k = 0..K``.

    ``ĝ`` backpropagates through the forward matrices: ``ĝ_k = ĝ_{k+1} + φ'(h_k) ⊙ [b Σ_{s≤t} D_k(t,s)
    φ(h_k(s)) + m_W b² ε Σ_{s<t} φ(h_k(s)) c(s)ᵀ E[g̃_{k+1}(s) ĝ_{k+1}(t)ᵀ]]`` with the response by
    whitened Stein on the forward draws (`stein_weights`; `nfd.limit._fixed_point`, "NTK
    observable").
    """
    phi = dyn.activation
    K, S = dyn.num_layer_steps, dyn.num_samples
    T1, _, _, P = sw.h.shape
    C = sw.g.shape[-1]
    N = T1 * P
    _, weights, eg = coefficients(dyn, lr)
    w_drift = weights[dyn.block.branch] * eg
    ph, dph = phi(sw.h), phi.deriv(sw.h)  # (T1, S, K+1, P)
    L_phi = factor(kern.Phi[:K], jitter)  # the factors that drew ξ
    ph_flat = jnp.moveaxis(ph[:, :, :K], 2, 0)  # (K, T1, S, P)
    ph_flat = jnp.transpose(ph_flat, (0, 2, 1, 3)).reshape(K, S, N)
    step_of = jnp.arange(N) // P
    causal = step_of[None, :] <= jnp.arange(T1)[:, None]  # (T1, N): pairs of steps ≤ t
    strict = jnp.arange(T1)[:, None] < jnp.arange(T1)[None, :]  # (s, t): s < t
    phic = ph[:, :, :K, :, None] * sw.c[:, None, None]  # φ(h_k(s)) c(s)ᵀ (T1, S, K, P, C)
    b = dyn.param.branch_multiplier(K)

    def body(ghat, xs):  # ghat = ĝ_{k+1}(t) for every t: (T1, S, P, C)
        L_k, Phi_k, ph_k, z_k, g_next, phic_k, dph_k = xs
        cross = _einsum("tipa,tiqa->tpq", ghat, g_next) / (S * C)
        coef = _einsum("tipa,ij->tpaj", ghat, z_k) / S  # E[ĝ_{k+1}(t) z_{k,j}]
        coef = jnp.where(causal[:, None, None, :], coef, jnp.zeros_like(coef))
        w = stein_weights(L_k, Phi_k, coef, dyn.stein_tol)  # (T1, P, C, N)
        resp = _einsum("tpan,in->tipa", w, ph_k)  # Σ_{s≤t} D_k(t, s) φ(h_k(s))
        gx = _einsum("sinb,tipa->snbtpa", g_next, ghat) / S  # E[g̃_{k+1}(s) ĝ_{k+1}(t)ᵀ]
        drift = _einsum("sinb,snbtpa,st->tipa", phic_k, gx, strict.astype(ghat.dtype))
        ghat = ghat + dph_k[..., None] * (b * resp + w_drift * drift)
        return ghat, cross

    xs = (
        L_phi,
        kern.Phi[:K],
        ph_flat,
        draws.z_xi,
        jnp.moveaxis(sw.g[:, :, 1:], 2, 0),
        jnp.moveaxis(phic, 2, 0),
        jnp.moveaxis(dph[:, :, :K], 2, 0),
    )
    ghat0, crosses = lax.scan(body, sw.g[:, :, K], xs, reverse=True)  # crosses[k]: layer k+1
    cross0 = _einsum("tipa,tiqa->tpq", ghat0, sw.g[:, :, 0]) / (S * C)
    cross = jnp.concatenate([cross0[:, None], jnp.moveaxis(crosses, 0, 1)], axis=1)
    return cross, _einsum("tikp,tikq->tkpq", ph, ph) / S
