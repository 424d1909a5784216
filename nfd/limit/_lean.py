"""The lean form of the random-matrix particles (docs/math §4.1, *Cost*; issue 13).

The Gaussian matrices ``W_k`` (and ``W̃_k`` in mode B) are not stored: each layer step regenerates
its own from the counter-based keys ``fold_in(w_key, k)``, ``fold_in(back_key, k)``
(`nfd.limit._particles.layer_matrices`, the draw that the stored form stacks), inside the
layer scan of the sweep. The state keeps only the drift ``D_k = B_k − b W_k/sqrt(M)``, the ``M × M``
accumulator of §4.1 (one per block matrix, shared by ``B_k`` and ``B̃_k``: both receive the same
increment), and the sweep forms ``B_k = b W_k/sqrt(M) + D_k`` one layer step at a time.

Per block matrix this holds one ``K M²`` buffer instead of ``W`` and ``B`` (mode A) or ``W, W̃, B,
B̃`` (mode B), at the price of drawing ``M²`` normals per layer step and direction (two in a mode-B
backward pass). The finite network's own matrices (`particles_from_resnet`) have no keys: they
always take the stored form.

**History form.** The drift is a sum of rank-``|B_t|`` increments, one per training step, so over
``T`` steps ``D_k = left_k right_kᵀ`` with ``left_k, right_k`` of ``r = T |B_t|`` columns
(`DriftHistory`: the update writes its ``|B_t|`` columns, the sweeps apply ``D_k`` as ``left_k
(right_kᵀ x)``, `LowRankPlus`). It holds ``2 K M r`` numbers per block matrix instead of ``K M²``:
the smaller one when ``2 r < M``. The buffers are sized for the whole run, so every step costs
what the last one does (``O(K M r Pts (1 + C))`` more than the regenerated matrices' products).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, Key

from ..nn import AbstractActivation
from ..param import AbstractBackwardWeights, AbstractBlock, OneLayer
from ..solver import AbstractItoSolver, solve_depth
from ._particles import (
    HIGHEST,
    LowRankPlus,
    _Backward1,
    _Backward2,
    _ControlTerm,
    _Forward1,
    _Forward2,
    draw_keys,
    layer_matrices,
)


class NoiseKeys(eqx.Module):
    """The lean draw of one particle system: ``U`` and ``v(0)`` stored, the block matrices as keys.

    ``U``, ``v`` and every ``W_k``, ``W̃_k`` are bitwise those of `sample_particles` with the same
    key (same splits, same per-layer keys).

    Attributes:
        U: input weights ``(M, D)``. v: readout ``(M, C)``.
        w_key, back_key: the keys of ``W_k`` and ``W̃_k`` (the branch matrices, as `Particles.W`).
        w1_key, back1_key: those of the two-layer block's first matrices, or ``None``.
        coupling: how ``W̃_k`` follows from ``W_k`` (`ReusedWeights`: ``W̃ = W``).
        num_layer_steps: ``K``.
    """

    U: Float[Array, "*E M D"]
    v: Float[Array, "*E M C"]
    w_key: Key[Array, "*E"]
    back_key: Key[Array, "*E"]
    w1_key: Key[Array, "*E"] | None
    back1_key: Key[Array, "*E"] | None
    coupling: AbstractBackwardWeights
    num_layer_steps: int = eqx.field(static=True)

    @property
    def num_particles(self) -> int:
        return self.U.shape[-2]


def draw_noise_keys(
    num_particles: int,
    num_layer_steps: int,
    in_dim: int,
    out_dim: int,
    *,
    sigma_out,
    coupling: AbstractBackwardWeights,
    block: AbstractBlock = OneLayer(),
    dtype=None,
    key: Key[Array, ""],
) -> NoiseKeys:
    """The lean counterpart of `sample_particles` (same arguments, same numbers: `draw_keys`)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    U, v, (w_key, back_key), keys1 = draw_keys(
        num_particles,
        num_layer_steps,
        in_dim,
        out_dim,
        sigma_out=sigma_out,
        block=block,
        dtype=dtype,
        key=key,
    )
    w1_key, back1_key = (None, None) if keys1 is None else keys1
    return NoiseKeys(
        U=U,
        v=v,
        w_key=w_key,
        back_key=back_key,
        w1_key=w1_key,
        back1_key=back1_key,
        coupling=coupling,
        num_layer_steps=num_layer_steps,
    )


class DriftHistory(eqx.Module):
    """The drift ``D_k = left_k right_kᵀ`` of every layer step as the history of its rank-``|B_t|``
    increments: ``filled`` of the ``r`` columns are written (the rest are zero).

    Attributes:
        left, right: ``(K, M, r)``: column ``j`` of step ``t`` is ``(m b² η0γ0/M)(g_{k+1,ν}·c_ν)``
            and ``φ(h_{k,ν})`` for the ``ν``-th point of the batch ``B_t``, ``j = t |B_t| + ν``.
        filled: the number of columns written.
    """

    left: Float[Array, "K M r"]
    right: Float[Array, "K M r"]
    filled: Int[Array, ""]

    @classmethod
    def zeros(cls, num_layer_steps: int, num_particles: int, rank: int, dtype) -> "DriftHistory":
        shape = (num_layer_steps, num_particles, rank)
        zero = jnp.zeros((), jnp.int32)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), zero)

    def append(self, left: Float[Array, "K M b"], right: Float[Array, "K M b"]) -> "DriftHistory":
        """The history with the increment ``left rightᵀ`` written in the next ``b`` columns (in
        place: the state is donated); raises if they are not free (``rank`` below ``T |B_t|``)."""
        filled = eqx.error_if(
            self.filled,
            self.filled + left.shape[-1] > self.left.shape[-1],
            "drift history full: MatrixParticles.drift_rank must be at least steps × batch size",
        )
        at = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), filled)
        new_left = jax.lax.dynamic_update_slice(self.left, left, at)
        new_right = jax.lax.dynamic_update_slice(self.right, right, at)
        return DriftHistory(new_left, new_right, filled + left.shape[-1])

    def control(self) -> tuple[Float[Array, "K M r"], Float[Array, "K M r"]]:
        """What the sweeps scan over (`lean_forward_sweep`'s ``D``)."""
        return self.left, self.right

    def times(self, features: Float[Array, "K M Pts"]) -> Float[Array, "K M Pts"]:
        """``D_k features_k`` for every layer step."""
        inner = jnp.einsum("kjr,kjn->krn", self.right, features, precision=HIGHEST)
        return jnp.einsum("kir,krn->kin", self.left, inner, precision=HIGHEST)


class _Regenerated(_ControlTerm):
    """``term`` with its block matrices formed inside layer step ``k``.

    The control increment is the drift ``D_k`` and the per-step arguments are ``(k, D1_k, rest)``;
    ``term`` sees ``B_k = scale W_k + D_k`` (``W̃_k`` if ``back``) and, for two-layer blocks,
    ``B1_k = W1_k / root + D1_k`` in front of ``rest``: the expressions with which the stored form's
    `MatrixParticles.start` builds ``B(0)``. The forms differ in association only (stored
    ``(b W_k/√M + Δ_1) + Δ_2``, lean ``b W_k/√M + (Δ_1 + Δ_2)``) and in XLA's fusion of the formed
    matrix into its product: trajectories agree to rounding (float64: 1e-13 relative in the tests).
    """

    term: _ControlTerm
    keys: NoiseKeys
    scale: Float[Array, ""] | float
    root: float = eqx.field(static=True)
    back: bool = eqx.field(static=True)

    def _draw(self, w_key, back_key, k):
        keys = self.keys
        W, W_back = layer_matrices(
            w_key, back_key, k, keys.num_particles, keys.U.dtype, keys.coupling
        )
        return W_back if self.back else W

    def noise(self, tau, y, args, dW):
        k, D1, rest = args
        B = _plus(self.scale * self._draw(self.keys.w_key, self.keys.back_key, k), dW)
        if D1 is None:
            return self.term.noise(tau, y, rest, B)
        B1 = _plus(self._draw(self.keys.w1_key, self.keys.back1_key, k) / self.root, D1)
        return self.term.noise(tau, y, B1 if rest is None else (B1, *rest), B)


def _plus(noise, drift):
    """``noise + drift`` for the accumulator (an ``M × M`` matrix) or a history layer step
    (``(left_k, right_k)``: a `LowRankPlus`, not formed)."""
    return LowRankPlus(noise, *drift) if isinstance(drift, tuple) else noise + drift


def lean_forward_sweep(
    activation: AbstractActivation,
    solver: AbstractItoSolver,
    h0: Float[Array, "M Pts"],
    keys: NoiseKeys,
    scale,
    D: Float[Array, "K M M"] | tuple,
    D1: Float[Array, "K M M"] | tuple | None,
):
    """`forward_sweep` with ``B_k = scale W_k + D_k`` (``B1_k = W1_k/sqrt(M) + D1_k``) regenerated;
    ``D``, ``D1``: the accumulators, or `DriftHistory.control`'s factors."""
    ks = jnp.arange(keys.num_layer_steps)
    root = keys.num_particles**0.5
    if D1 is None:
        term = _Regenerated(_Forward1(activation), keys, scale, root, back=False)
        return solve_depth(term, solver, h0, D, (ks, None, None), throw=False)
    term = _Regenerated(_Forward2(activation), keys, scale, root, back=False)
    y0 = (h0, jnp.zeros_like(h0))
    return solve_depth(term, solver, y0, D, (ks, D1, None), throw=False)


def lean_backward_sweep(
    activation: AbstractActivation,
    solver: AbstractItoSolver,
    H: Float[Array, "Kp1 M Pts"],
    Z: Float[Array, "K M Pts"] | None,
    v: Float[Array, "M C"],
    keys: NoiseKeys,
    scale,
    D: Float[Array, "K M M"] | tuple,
    D1: Float[Array, "K M M"] | tuple | None,
    *,
    back: bool,
):
    """`backward_sweep` through ``B̃_k = scale W̃_k + D_k`` (``W_k`` unless ``back``) regenerated."""
    ks = jnp.arange(keys.num_layer_steps)
    root = keys.num_particles**0.5
    gK = activation.deriv(H[-1])[None] * v.T[:, :, None]  # (C, M, Pts)
    if Z is None:
        term = _Regenerated(_Backward1(activation), keys, scale, root, back=back)
        bwd = solve_depth(term, solver, gK, D, (ks, None, H[:-1]), reverse=True, throw=False)
        return bwd.ys, None, bwd.result
    term = _Regenerated(_Backward2(activation), keys, scale, root, back=back)
    y0 = (gK, jnp.zeros_like(gK))
    bwd = solve_depth(term, solver, y0, D, (ks, D1, (H[:-1], Z)), reverse=True, throw=False)
    return bwd.ys[0], bwd.ys[1][:-1], bwd.result
