"""The one NTK assembly (docs/math §1.4), shared by the finite network and every limit method.

The NTK is normalised so that ``f(t+1) ≈ f(t) + η0 Θ(t) c(t)`` under SGD:

    Θ = m_U σ_in² K^x ⊙ G_0 + m_W b² Σ_ℓ G_{ℓ+1} ⊙ Φ_ℓ + m_v Φ_L                       (one-layer)
    Θ = m_U σ_in² K^x ⊙ G_0 + Σ_ℓ [m_W2 b² G_{ℓ+1} ⊙ Φ^z_ℓ + m_W1 G^z_ℓ ⊙ Φ_ℓ] + m_v Φ_L   (two-layer)

with ``b`` the branch multiplier; the weights come from
`nfd.param.AbstractParameterization.ntk_weights`. Which backward field multiplies which feature
in each block matrix's gradient (`block_pairs`) is written once here, and serves both the kernels
(``G ⊙ Φ``) and the fields themselves (a block's update is ``Σ_ν (left_ν · c_ν) right_νᵀ``).
"""

import functools
import operator

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..param import AbstractBlock


def block_pairs(
    block: AbstractBlock,
    g: Array,
    phi_h: Array,
    gz: Array | None = None,
    phi_z: Array | None = None,
) -> dict[str, tuple[Array, Array]]:
    """Per block matrix, its (backward, feature) factors, layer axis first.

    ``g`` and ``phi_h`` run over ``ℓ = 0..L`` (``L + 1`` entries), ``gz`` and ``phi_z`` over the
    blocks ``ℓ = 0..L−1``: ``W``: ``(g_{ℓ+1}, φ(h_ℓ))``; ``W2``: ``(g_{ℓ+1}, φ(z_ℓ))``;
    ``W1``: ``(g^z_ℓ, φ(h_ℓ))``. The arguments may be fields or their kernels.
    """
    if not block.two_layer:
        return {"W": (g[1:], phi_h[:-1])}
    if gz is None or phi_z is None:
        raise ValueError("two-layer blocks need the internal fields (gz, phi_z).")
    return {"W2": (g[1:], phi_z), "W1": (gz, phi_h[:-1])}


def ntk_parts(
    weights: dict[str, Array],
    block: AbstractBlock,
    *,
    kx: Float[Array, "P Q"],
    G: Float[Array, "Lp1 P Q"],
    Phi: Float[Array, "Lp1 P Q"],
    Gz: Float[Array, "L P Q"] | None = None,
    Phiz: Float[Array, "L P Q"] | None = None,
) -> dict[str, Float[Array, "P Q"]]:
    """The per-tensor terms of the NTK (keys ``U, W, v`` or ``U, W1, W2, v``).

    Args:
        weights: `ntk_weights` of the parameterization at the network's depth.
        block: the block kind.
        kx: the input Gram matrix ``x_μ · x_ν / D``.
        G: backward kernels ``G_ℓ`` (class-averaged; left fields on the rows), ``ℓ = 0..L``.
        Phi: feature kernels ``Φ_ℓ`` of ``φ(h_ℓ)``, ``ℓ = 0..L``.
        Gz, Phiz: the internal layer's kernels of ``g^z_ℓ`` and ``φ(z_ℓ)`` (two-layer blocks).
    """
    parts = {"U": weights["U"] * kx * G[0], "v": weights["v"] * Phi[-1]}
    for name, (left, right) in block_pairs(block, G, Phi, Gz, Phiz).items():
        parts[name] = weights[name] * jnp.sum(left * right, axis=0)
    return parts


def ntk(weights: dict[str, Array], block: AbstractBlock, **kernels: Array) -> Array:
    """``Θ``: the sum of `ntk_parts`."""
    return sum_parts(ntk_parts(weights, block, **kernels))


def sum_parts(parts: dict[str, Array]) -> Array:
    """The sum of per-tensor NTK terms."""
    return functools.reduce(operator.add, parts.values())
