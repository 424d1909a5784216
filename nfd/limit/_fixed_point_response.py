"""Whitened Stein responses of the kernel fixed point (docs/math §3.1, §3.4; `nfd.limit._fixed_point`).

**Whitened Stein.** A Gaussian noise of the single-site process is drawn as ``x = L z``: ``L`` the
lower Cholesky factor of its kernel ``X`` over (step, point) pairs in step-major order (so ``L`` is
causal), ``z`` i.i.d. N(0, 1). For any field ``F`` of the process, Stein's lemma in ``z`` reads
``E[F z_j] = Σ_n E[∂F/∂x_n] L_nj``. Writing a second field as ``y = L ŷ`` (``ŷ`` its whitened
values, from ``L ŷ = y``), the response sum is

    Σ_n E[∂F/∂x_n] y_n = Σ_j E[F z_j] ŷ_j = Σ_n w_n y_n,   Lᵀ w = a,   a_j = E[F z_j],

with no inverse of ``X`` (which may be singular: linear nets have ``G_k(0) ∝ 1 1ᵀ``). The code forms
the right-hand side: one triangular solve on the coefficients ``a`` per iterate (`stein_weights`),
instead of whitening every sample; both are the same number. A column ``j`` enters only if its pivot
satisfies ``L_jj² ≥ stein_tol · X_jj`` (default ``1e-6``): directions that only the factor's jitter
keeps alive carry no Gaussian direction, and their ``a_j`` would be pure Monte Carlo noise.

**Mode A** (`ReusedWeights`, ``κ_A = 1``) keeps both response terms of §3.4,

    h_{k+1}(t) += b Σ_{s<t} R_k(t,s) g_{k+1}(s),   R_k(t,s) = E[∂φ(h_k(t))/∂ρ_k(s)],
    g_k(t)     += φ'(h_k(t)) ⊙ b Σ_{s≤t} D_k(t,s) φ(h_k(s)),   D_k(t,s) = E[∂g_{k+1}(t)/∂ξ_k(s)],

each a whitened Stein sum: the ``R`` term with ``x = ρ_k`` (``L = L^G_k``, the factor of ``G_{k+1}``
over (step, point, output) triples), ``F = φ(h_{k,μ}(t))``, ``y = g_{k+1}`` and the columns ``j`` of
steps ``s < t``; the ``D`` term with ``x = ξ_k`` (``L = L^Φ_k``, the factor of ``Φ_k``),
``F = g^a_{k+1,μ}(t)``, ``y = φ(h_k)`` and the columns of steps ``s ≤ t``. The coefficients

    R_k((t,μ); j) = E[φ(h_{k,μ}(t)) z^ρ_{k,j}],   D_k((t,μ,a); j) = E[g^a_{k+1,μ}(t) z^ξ_{k,j}]

are sample moments of the previous sweep (`response_coefficients`), iterated and damped with the
kernels (their change, relative to their own size, enters the stopping residual); their weights
``w`` (`response_weights`) vanish at columns of steps ``≥ t`` (``R``) or ``> t`` (``D``), so a sweep's
increments at step ``t`` need only fields of earlier steps (``R``) or the forward fields of step
``t`` (``D``), never the current ``h_k(t)`` or ``g_{k+1}(t)``. The moments are taken of
``φ(h_k(t)) − φ(h_k(0))`` and ``g_{k+1}(t) − g_{k+1}(0)``: the subtracted fields have zero Stein
expectation (no step-0 forward field depends on ``ρ``; ``g(0)`` is linear in the zero-mean ``v(0)``
and ``ρ(0)``), so this control variate keeps the expectations and makes their Monte Carlo error
``O(η0 γ0 S^{-1/2})`` instead of ``O(S^{-1/2})``, which matters because P2 divides by ``γ0``. A
coefficient and the field it
multiplies share the samples, which adds an ``O(1/S)`` bias (as the other sample moments have);
with moment-matched draws and ``φ = id`` every field is linear in the draws and the map is exact.

The same helper gives mode B's ``Θ̃`` response (`nfd.limit._fixed_point_sweep.theta_tilde_fields`).
"""

import jax.lax as lax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float

HIGHEST = lax.Precision.HIGHEST


def one_at_a_time(fn, *xs):
    """``vmap(fn)(*xs)`` as a loop over the leading axis, for ``fn`` that calls LAPACK.

    jaxlib 0.10's CPU runtime splits a *batched* LAPACK call (Cholesky, triangular solve) into
    tasks on its intra-op thread pool and blocks the calling worker until they finish; two such
    calls in flight can each hold a worker while their tasks wait behind the other's, which
    deadlocks a 2-thread pool (seen at ``N ≥ 72`` pairs on 2 cores). Unbatched calls run inline.
    """
    return lax.map(lambda args: fn(*args), xs)


def stein_weights(
    L: Float[Array, "N N"],
    kernel: Float[Array, "N N"],
    coef: Float[Array, "*r N"],
    stein_tol: float,
) -> Float[Array, "*r N"]:
    """The weights ``w`` of a whitened Stein sum: ``Lᵀ w = a`` with ``a = coef`` at the columns whose
    pivot satisfies ``L_jj² ≥ stein_tol · kernel_jj`` and ``0`` elsewhere (module docstring).

    ``coef`` holds ``a_j = E[F z_j]`` for every row ``F`` (already restricted to the causal columns);
    then ``Σ_n w_n y_n = Σ_j a_j ŷ_j`` for ``y = L ŷ``.
    """
    n = coef.shape[-1]
    keep = jnp.diagonal(L) ** 2 >= stein_tol * jnp.diagonal(kernel)  # (N,)
    flat = coef.reshape(-1, n)
    a = jnp.where(keep[None], flat, jnp.zeros_like(flat))
    w = jsl.solve_triangular(L, a.T, lower=True, trans="T")  # Lᵀ w = a, (N, r)
    return w.T.reshape(coef.shape)


def response_coefficients(
    ph: Float[Array, "Kp1 S N"],
    g: Float[Array, "Kp1 S NC"],
    z_xi: Float[Array, "K S N"],
    z_rho: Float[Array, "K S NC"],
    num_points: int,
) -> tuple[Float[Array, "K N NC"], Float[Array, "K NC N"]]:
    """Mode A's whitened coefficients of one sweep's samples (``ph = φ(h)``):
    ``R_k((t,μ); j) = E_S[φ(h_{k,μ}(t)) z^ρ_{k,j}]`` over the columns ``j`` of steps ``< t`` and
    ``D_k((t,μ,a); j) = E_S[g^a_{k+1,μ}(t) z^ξ_{k,j}]`` over those of steps ``≤ t`` (zero elsewhere);
    rows and columns use the kernels' flat (step, point[, output]) order, as do the layer-major
    samples ``ph = φ(h_k)``, ``g = g_k`` (``k = 0..K``). Both are estimated with the step-0 samples
    as control variates (their Stein expectations vanish)."""
    Kp1, S, N = ph.shape
    K, P, C = Kp1 - 1, num_points, g.shape[-1] // N
    T1 = N // P
    # control variates: E[φ(h_k(0)) z^ρ_k] = E[g_{k+1}(0) z^ξ_k] = 0 exactly (no forward field of
    # step 0 depends on ρ; g(0) is linear in the zero-mean v(0), ρ(0)), so subtracting the step-0
    # samples leaves the expectations and removes their O(S^-1/2) noise, which P2 would divide by γ0
    ph = ph[:K] - jnp.tile(ph[:K, :, :P], (1, 1, T1))
    g = g[1:] - jnp.tile(g[1:, :, : P * C], (1, 1, T1))
    R = jnp.matmul(jnp.swapaxes(ph, 1, 2), z_rho, precision=HIGHEST) / S  # (K, N, NC)
    D = jnp.matmul(jnp.swapaxes(g, 1, 2), z_xi, precision=HIGHEST) / S  # (K, NC, N)
    step_n, step_nc = jnp.arange(N) // P, jnp.arange(N * C) // (P * C)
    before = step_nc[None, :] < step_n[:, None]  # (N, NC): column steps s < row step t
    upto = step_n[None, :] <= step_nc[:, None]  # (NC, N): column steps s ≤ row step t
    R = jnp.where(before[None], R, jnp.zeros_like(R))
    D = jnp.where(upto[None], D, jnp.zeros_like(D))
    return R, D


def response_weights(
    R: Float[Array, "K N NC"],
    D: Float[Array, "K NC N"],
    L_phi: Float[Array, "K N N"],
    L_g: Float[Array, "K NC NC"],
    Phi: Float[Array, "K N N"],
    G: Float[Array, "K NC NC"],
    stein_tol: float,
    num_points: int,
) -> tuple[Float[Array, "T1 K Pts T1 Pts C"], Float[Array, "T1 K Pts C T1 Pts"]]:
    """The weights of mode A's response terms, one row block per step ``t`` (leading axis):

    ``Σ_{s<t} R_k(t,s) g_{k+1}(s) = Σ_{s,ν,b} wR[t, k, μ, s, ν, b] g^b_{k+1,ν}(s)`` with ``L^G_kᵀ wR = R_k``
    and ``Σ_{s≤t} D_k(t,s) φ(h_k(s)) = Σ_{s,ν} wD[t, k, μ, a, s, ν] φ(h_{k,ν}(s))`` with
    ``L^Φ_kᵀ wD = D_k`` (each on the kept pivots; ``Phi``, ``G`` are ``Φ_k`` and ``G_{k+1}``).
    """
    K, N, NC = R.shape
    P, T1, C = num_points, N // num_points, NC // N
    wR = one_at_a_time(lambda L, X, a: stein_weights(L, X, a, stein_tol), L_g, G, R)
    wD = one_at_a_time(lambda L, X, a: stein_weights(L, X, a, stein_tol), L_phi, Phi, D)
    wR = jnp.moveaxis(wR.reshape(K, T1, P, T1, P, C), 1, 0)
    wD = jnp.moveaxis(wD.reshape(K, T1, P, C, T1, P), 1, 0)
    return wR, wD
