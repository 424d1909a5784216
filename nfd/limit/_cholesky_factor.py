"""The factor algebra of the Cholesky particle method (docs/math §4.2): the causal extension of
a whitened Gaussian history by a block of new pairs, with a semi-definite factor.

A *noise history* of one layer step keeps the fields of the evaluated pairs (``φ(h_k)`` for ``ξ``,
``g_{k+1}`` for ``ρ``) in ``N`` preallocated slots, and the lower-triangular factor ``L`` of their
empirical kernel with its (pseudo-)inverse. `extend` draws the noise of ``b`` new pairs from the
conditional law given the history, and `NoiseHistory.write` stores the new pairs. `CholeskyInfo`
(`cholesky_info`) collects a run's diagnostics of the factors.
"""

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..dynamics import Trajectory
from ._particles import HIGHEST

# A pivot of the Schur complement below PIVOT_RTOL_EPS · eps · (the pair's own variance) is round-off
# (an exactly dependent pair): it is set to 0 and its mass logged. 1000·eps is 2e-13 in float64 and
# 1e-4 in float32; the conditional variances of genuinely new pairs are O((η0γ0)²) relative.
PIVOT_RTOL_EPS = 1000.0


def mm(a, b):
    """``a @ b`` at full float precision."""
    return jnp.matmul(a, b, precision=HIGHEST)


def pivot_rtol(dtype) -> float:
    """The relative round-off tolerance of a pivot in ``dtype`` (`PIVOT_RTOL_EPS` · eps)."""
    return PIVOT_RTOL_EPS * float(jnp.finfo(dtype).eps)


def psd_factor(S: Float[Array, "b b"], scale: Float[Array, " b"], rtol: float):
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
    Sp = mm(V * jnp.maximum(lam, 0)[None, :], V.T)
    n = S.shape[0]
    tol = rtol * scale
    idx = jnp.arange(n)

    def column(j, carry):
        L, dropped = carry
        col = Sp[:, j] - mm(L, L[j])  # columns >= j of L are still zero
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
        x = (jnp.where(idx == i, 1.0, 0.0).astype(S.dtype) - mm(L[i], X)) / safe[i]
        return X.at[i].set(jnp.where(live[i] & live, x, 0))

    L_inv = lax.fori_loop(0, n, row, jnp.zeros_like(S))
    return L, L_inv, clipped, dropped


class Extension(eqx.Module):
    """The noise of one block of new pairs and the new rows of the factors (stacked over the layer
    steps when returned by a scan).

    Attributes:
        noise: the new noise columns ``(M, b)``.
        rows: the new rows of ``L``, ``[L_{new,old}, L_{new,new}, 0]`` ``(b, N)``.
        inv_rows: the new rows of ``L⁻¹`` ``(b, N)``.
        cross: ``hist_oldᵀ new / M`` ``(N, b)`` (zero on unfilled slots), reused by the drift.
        clipped, dropped: the clipped negative Schur mass and the dropped round-off pivots.
    """

    noise: Float[Array, "*K M b"]
    rows: Float[Array, "*K b N"]
    inv_rows: Float[Array, "*K b N"]
    cross: Float[Array, "*K N b"]
    clipped: Float[Array, "*K"]
    dropped: Float[Array, "*K"]


def extend(
    L_inv: Float[Array, "N N"],
    hist: Float[Array, "M N"],
    z: Float[Array, "M N"],
    new: Float[Array, "M b"],
    start: Int[Array, ""],
    rtol: float,
) -> Extension:
    """The noise of ``b`` new columns ``new`` (slots ``start…``) and the new rows of the factors.

    ``X = L_old⁻¹ hist_oldᵀ new / M`` (``= L_{new,old}ᵀ``), ``L_{new,new} = chol(S₊)`` with
    ``S = newᵀnew/M − XᵀX``, and the noise ``Z_old X + Z_new L_{new,new}ᵀ`` (§4.2 steps 1–3).
    The inverse grows by the block rule ``[[L_o, 0], [B, L_n]]⁻¹ = [[L_o⁻¹, 0], [−L_n⁻¹ B L_o⁻¹, L_n⁻¹]]``.
    """
    M = hist.shape[0]
    cross = mm(hist.T, new) / M
    X = mm(L_inv, cross)  # zero rows at unfilled slots and zero pivots
    gram = mm(new.T, new) / M
    L_nn, L_nn_inv, clipped, dropped = psd_factor(gram - mm(X.T, X), jnp.diagonal(gram), rtol)
    z_new = lax.dynamic_slice_in_dim(z, start, new.shape[1], axis=1)
    return Extension(
        noise=mm(z, X) + mm(z_new, L_nn.T),  # X is zero on unfilled slots
        rows=lax.dynamic_update_slice(X.T, L_nn, (jnp.int32(0), start)),
        inv_rows=lax.dynamic_update_slice(
            -mm(L_nn_inv, mm(X.T, L_inv)), L_nn_inv, (jnp.int32(0), start)
        ),
        cross=cross,
        clipped=clipped,
        dropped=dropped,
    )


class NoiseHistory(eqx.Module):
    """The revealed history of one noise (``ξ`` or ``ρ``) at every layer step.

    ``N`` columns are (pair) slots, filled step by step; unfilled columns (and rows and columns of
    ``L``, ``L_inv``) are zero. The whitened ``N(0, 1)`` draws ``Z`` of every slot are fixed for the
    whole run and kept with the initial draw.

    Attributes:
        hist: the fields of the evaluated pairs ``(K, M, N)``: ``φ(h_k)`` (ξ) or ``g_{k+1}`` (ρ).
        L: lower-triangular ``L`` with ``L Lᵀ = hist_kᵀ hist_k / M`` on the filled pairs ``(K, N, N)``;
            the noise is ``Z Lᵀ``.
        L_inv: the (pseudo-)inverse of ``L``, lower-triangular ``(K, N, N)``: ``L⁻¹`` on the pairs with
            non-zero pivots, zero rows and columns at zero pivots. It turns §4.2's solve
            ``L_old L_{new,old}ᵀ = Φ̂(old, new)`` into a product (no triangular solves under jit).
    """

    hist: Float[Array, "K M N"]
    L: Float[Array, "K N N"]
    L_inv: Float[Array, "K N N"]

    @classmethod
    def empty(cls, num_layer_steps: int, num_particles: int, num_slots: int, dtype):
        square = jnp.zeros((num_layer_steps, num_slots, num_slots), dtype)
        hist = jnp.zeros((num_layer_steps, num_particles, num_slots), dtype)
        return cls(hist=hist, L=square, L_inv=square)

    def write(
        self,
        cols: Float[Array, "K M b"],
        ext: Extension,
        start: Int[Array, ""],
        keep: Bool[Array, ""],
    ) -> "NoiseHistory":
        """The history with one step's columns and factor rows written at slot ``start`` (zeros,
        i.e. unchanged empty slots, where ``keep`` is false)."""

        def put(a, u, axis):
            return lax.dynamic_update_slice_in_dim(a, jnp.where(keep, u, 0), start, axis=axis)

        return NoiseHistory(
            hist=put(self.hist, cols, 2),
            L=put(self.L, ext.rows, 1),
            L_inv=put(self.L_inv, ext.inv_rows, 1),
        )

    def zero_pivots(self, num_filled: Int[Array, ""]) -> Int[Array, ""]:
        """Zero pivots of ``L`` among the first ``num_filled`` pairs, over all layer steps."""
        d = jnp.diagonal(self.L, axis1=-2, axis2=-1)  # (K, N)
        used = jnp.arange(d.shape[-1], dtype=num_filled.dtype)[None, :] < num_filled
        return jnp.sum((d == 0) & used).astype(jnp.int32)


def flat(g: Float[Array, "C M P"]) -> Float[Array, "M CP"]:
    """``(C, M, Pts) → (M, C·Pts)``, column ``c·Pts + μ``."""
    return jnp.transpose(g, (1, 0, 2)).reshape(g.shape[1], -1)


def unflat(a: Float[Array, "M CP"], num_outputs: int) -> Float[Array, "C M P"]:
    """The inverse of `flat`."""
    return jnp.transpose(a.reshape(a.shape[0], num_outputs, -1), (1, 0, 2))


def conditional_transpose(
    g: Float[Array, "M CP"],
    hist: Float[Array, "M N"],
    z: Float[Array, "M N"],
    L_inv: Float[Array, "N N"],
    z_fresh: Float[Array, "M CP"],
) -> Float[Array, "M CP"]:
    """``W_kᵀ g/sqrt(M)`` for ``W_k`` drawn from its conditional law given the revealed ``ξ_k``.

    Given ``W φ(H)/sqrt(M) = ξ = Z Lᵀ`` on the revealed columns, ``W = sqrt(M) ξ (φᵀφ)⁺ φᵀ +
    W'(I − P_φ)`` with ``W'`` fresh and ``P_φ = φ L⁻ᵀ L⁻¹ φᵀ/M`` the projector on the stored ``φ``
    columns, so ``W_kᵀ g/sqrt(M) = φ L⁻ᵀ Zᵀ g/M + (I − P_φ) y`` with ``y ~ N(0, gᵀg/M)`` row-wise
    (``y = z_fresh Qᵀ`` for any ``Q Qᵀ = gᵀg/M``: here from its eigendecomposition, as only the law
    of ``y`` matters).
    """
    M = hist.shape[0]
    known = mm(hist, mm(L_inv.T, mm(z.T, g) / M))
    lam, V = jnp.linalg.eigh(mm(g.T, g) / M)
    y = mm(z_fresh, (V * jnp.sqrt(jnp.maximum(lam, 0))[None, :]).T)
    return known + y - mm(hist, mm(L_inv.T, mm(L_inv, mm(hist.T, y) / M)))


# -- diagnostics -------------------------------------------------------------------------------
class CholeskyInfo(eqx.Module):
    """Diagnostics of the Cholesky noise of a run (leading axis E = members), `cholesky_info`.

    Attributes:
        clipped_xi, clipped_rho: summed mass ``Σ max(−λ, 0)`` of the negative eigenvalues of all
            Schur complements (all steps, layer steps) clipped to 0, for ``ξ`` and ``ρ``: round-off,
            ``O(eps)`` unless the history is (near) singular.
        dropped_xi, dropped_rho: summed non-negative pivots below the round-off tolerance that were
            set to 0 (exactly dependent pairs carry no new randomness).
        num_zero_pivots: number of zero pivots of ``ξ`` and ``ρ`` factors in the final histories
            ``(E, 2)`` (filled pairs only; 0 for a full-rank history).
        num_pairs: ``N = (T+1)·Pts``, the (point, step) pairs revealed per layer step (ρ has
            ``N·C``).
    """

    clipped_xi: Float[Array, " E"]
    clipped_rho: Float[Array, " E"]
    dropped_xi: Float[Array, " E"]
    dropped_rho: Float[Array, " E"]
    num_zero_pivots: Int[Array, "E 2"]
    num_pairs: int = eqx.field(static=True)


def cholesky_info(traj: Trajectory) -> CholeskyInfo:
    """The Cholesky diagnostics of a run of `CholeskyParticles` (its observables ``clipped``,
    ``dropped`` and ``zero_pivots``), at each member's last recorded step: the final observation,
    or the last one before the member diverged."""
    steps = np.asarray(traj.steps)
    failed = np.asarray(traj.failed_step)
    recorded = (failed[:, None] < 0) | (steps[None, :] <= failed[:, None])  # a prefix of the saves
    last = np.maximum(recorded.sum(axis=1) - 1, 0)
    members = np.arange(traj.num_members)

    def at_last(name):
        return jnp.asarray(np.asarray(traj.extras[name])[members, last])

    clipped, dropped = at_last("clipped"), at_last("dropped")
    num_points = traj.f_train.shape[2] + traj.f_test.shape[2]
    return CholeskyInfo(
        clipped_xi=clipped[:, 0],
        clipped_rho=clipped[:, 1],
        dropped_xi=dropped[:, 0],
        dropped_rho=dropped[:, 1],
        num_zero_pivots=at_last("zero_pivots"),
        num_pairs=(int(steps[-1]) + 1) * num_points,
    )
