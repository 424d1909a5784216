"""The host-side machinery of the exact linear oracle (`nfd.limit._linear_exact`, docs/math §4.4).

A field is the vector of its coefficients on i.i.d. N(0, 1) primitives; `Run` carries the fields
of every layer step and sweep, the orthonormal bases of the inputs met by each ``W_k`` (forward)
and ``W_kᵀ`` (backward, ``W̃_kᵀ`` in mode B), and applies the Gaussian matrix rule with
`orthonormal_extension` (Gram–Schmidt with a rank tolerance). Plain numpy in float64.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..param import AbstractBlock, AbstractParameterization

# Residual directions whose norm is below this fraction of the largest input norm are round-off
# (exactly dependent inputs, e.g. a frozen tensor or c = 0), not new Gaussian directions.
RANK_RTOL = 1e-10
# A column whose Gram–Schmidt residual is below this fraction of its norm is re-orthogonalised
# (its round-off component along the old basis, ~eps |x|, would otherwise be amplified by 1/|res|).
_REORTH = 1e-2


class Scalars(NamedTuple):
    """The parameterization's numbers at depth ``K`` as host float64 values.

    Attributes:
        b: the branch multiplier.
        m_U, m_v: the SGD multipliers of ``U`` and ``v``.
        drift_w: ``m_W b²``, the per-step weight of a block's drift.
        gamma0, sigma_in, sigma_out: ``γ0``, ``σ_in``, ``σ_out``.
        ntk_weights: `ntk_weights` (float64 JAX scalars, for `nfd.nn.ntk`).
    """

    b: float
    m_U: float
    m_v: float
    drift_w: float
    gamma0: float
    sigma_in: float
    sigma_out: float
    ntk_weights: dict

    @classmethod
    def of(cls, param: AbstractParameterization, depth: int, block: AbstractBlock) -> "Scalars":
        """Read from ``param`` in float64 (call inside ``jax.enable_x64(True)``)."""
        p = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), param)
        m = p.sgd_multipliers(depth, block)
        b = float(p.branch_multiplier(depth))
        return cls(
            b=b,
            m_U=float(m["U"]),
            m_v=float(m["v"]),
            drift_w=float(m[block.branch]) * b**2,
            gamma0=float(p.gamma0),
            sigma_in=float(p.sigma_in),
            sigma_out=float(p.sigma_out),
            ntk_weights=p.ntk_weights(depth, block),
        )


def orthonormal_extension(basis, x, rank_rtol):
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


class Run:
    """Host-side state of one exact run (plain numpy; see `nfd.limit._linear_exact`).

    ``h_{k,μ}(t) = H_k(t) a_μ`` with ``r`` columns per layer step and sweep, ``C`` backward fields;
    ``w(t) = Σ_ν c_ν(t) a_νᵀ`` is the error signal of step ``t`` in column form.
    """

    def __init__(self, a, s: Scalars, K, reused, T, C, lr, rank_rtol):
        self.a = a  # (Pts, r): h_{k,μ}(t) = H_k(t) a_μ
        r = a.shape[1]
        self.r, self.C, self.K = r, C, K
        self.reused = reused
        self.s = s
        self.eg = lr * s.gamma0
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
        self.v[r + np.arange(C), np.arange(C)] = s.sigma_out
        self.u = np.zeros((N, r))
        self.u[np.arange(r), np.arange(r)] = 1.0
        self.drift = np.zeros((K, N, r))  # b ΔW_k h_k(t)/sqrt(n) of the current sweep (columns)
        self.zdot = np.zeros((K, N, r))  # forward Stein terms Ż of the current sweep (mode A)

    def used(self, t):
        """The number of primitives sweep ``t`` can touch."""
        return self.r + self.C + (t + 1) * self.K * (self.r + self.C)

    def forward(self, t):
        """The forward sweep of step ``t``: ``h_k(t)`` columns for k = 0..K."""
        r, K, n = self.r, self.K, self.used(t)
        cols, prev = slice(t * r, (t + 1) * r), slice(0, t * r)
        bprev = slice(0, t * self.C)
        w = self.w[:t]  # (t, C, r), s < t
        h = self.u[:n].copy()
        if t:
            h += self.s.m_U * self.eg * (self.G[0, :n, bprev] @ w.reshape(t * self.C, r))
        for k in range(K):
            x = h
            new, coef_old, coef_new = orthonormal_extension(self.Ef[k, :n, prev], x, self.rank_rtol)
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
                drift = self.s.drift_w * self.eg * (self.G[k + 1, :n, bprev] @ coef)
            self.drift[k, :n] = drift
            self.H[k, :n, cols] = x
            h = x + self.s.b * step + drift
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
                new, coef_old, coef_new = orthonormal_extension(
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
                drift = self.s.drift_w * self.eg * (self.H[k, :n, prev] @ coef)
            y = x + self.s.b * step + drift
            out[k] = y
            if not true_sensitivity:
                self.G[k, :n, bcols] = y
        return out
