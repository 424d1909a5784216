"""Initialization kernels at n = ∞: the depth-K recursions of docs/math §2.

At t = 0 every field of the infinite-width network is a Gaussian process whose kernels obey a
deterministic recursion over the ``K`` layer steps (exact at n = ∞ for a network of ``L = K``
blocks; the Euler scheme of the depth continuum otherwise). With ``b = param.branch_multiplier(K)``
(``β/sqrt(K)`` for depth-muP) and the SGD multipliers ``m = param.sgd_multipliers(K, block)``
(§1.3):

One-layer blocks (§2):

* ``H_0 = σ_in² K^x``, ``H_{k+1} = H_k + b² V[H_k]``;
* ``G_K = σ_out² V'[H_K]``, ``G_k = G_{k+1} ⊙ (1 + b² V'[H_k])``;
* ``Θ = m_U σ_in² K^x ⊙ G_0 + m_W b² Σ_k G_{k+1} ⊙ V[H_k] + m_v V[H_K]``.

Two-layer blocks (§2, §6), with ``Z_k = V[H_k]`` the kernel of ``z_k = W1_k φ(h_k)/sqrt(n)``:

* ``H_{k+1} = H_k + b² V[Z_k]``;
* ``G_k = G_{k+1} ⊙ (1 + b² V'[H_k] ⊙ V'[Z_k])``;
* ``Θ = m_U σ_in² K^x ⊙ G_0 + Σ_k [m_W2 b² G_{k+1} ⊙ V[Z_k] + m_W1 b² V'[Z_k] ⊙ G_{k+1} ⊙ V[H_k]]
  + m_v V[H_K]``.

The W1 term follows from ``γ0 n ∂f/∂W1_k = g^z_k φ(h_k)ᵀ/sqrt(n)`` with
``g^z_k = b φ'(z_k) ⊙ W2_kᵀ g_{k+1}/sqrt(n)``, whose kernel is ``G^z_k = b² V'[Z_k] ⊙ G_{k+1}``;
for depth-muP (``m_W1 = L^a``, ``b² = β²/L``) it is the ``L^a (β²/L) V'[Z] ⊙ G ⊙ V[H]`` of
§2 and §6.

Decoupled backward weights (§1.6) give the non-symmetric kernel ``Θ̃`` with the true ``g``
on the left and the decoupled ``g̃`` on the right. At t = 0 the two share only the readout ``v``:
each block adds to ``g`` and ``g̃`` terms built from independent matrices (``W`` versus ``W̃``),
whose cross kernel vanishes at n = ∞, so ``g_k · g̃_k / n = σ_out² V'[H_K]`` at every ``k``.
Hence (§2)

* one-layer: ``Θ̃ = [m_U σ_in² K^x + m_W b² Σ_k V[H_k]] ⊙ σ_out² V'[H_K] + m_v V[H_K]``;
* two-layer (derived here): the U and W2 terms take the cross kernel ``σ_out² V'[H_K]`` in place of
  ``G_0`` and ``G_{k+1}``; the W1 term needs ``g^z_k · g̃^z_k / n``, the cross kernel of
  ``b φ'(z) ⊙ W2ᵀ g/sqrt(n)`` and ``b φ'(z) ⊙ W̃2ᵀ g̃/sqrt(n)``, which vanishes because ``W2`` and
  ``W̃2`` are independent. So
  ``Θ̃ = m_U σ_in² K^x ⊙ σ_out² V'[H_K] + m_W2 b² Σ_k σ_out² V'[H_K] ⊙ V[Z_k] + m_v V[H_K]``,
  and W1 contributes nothing to the decoupled function step at t = 0 (only O(n^-1/2) fluctuations).
"""

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import nn
from ..nn import AbstractActivation, kernel_map, kernel_map_deriv
from ..param import AbstractBlock, AbstractParameterization, OneLayer


class InitKernels(eqx.Module):
    """The t = 0 kernels of the n = ∞ network on ``P`` points (§2).

    Index ``k`` runs over layer steps; ``H[k]``, ``Phi[k]`` and ``G[k]`` are the kernels at the
    input of step ``k`` (``k = K``: the last residual stream, read out by ``v``). The leading axis
    of ``H``, ``Phi`` and ``G`` has length ``K+1`` (named ``Kp1`` in the annotations).

    Attributes:
        H: forward preactivation kernels ``H_k``, ``k = 0..K``, shape ``(K+1, P, P)``.
        Phi: feature kernels ``Φ_k = V[H_k]``, ``k = 0..K``, shape ``(K+1, P, P)``.
        G: backward kernels ``G_k`` (per output; ``G^{ab} = δ^{ab} G``), shape ``(K+1, P, P)``.
        Theta: the NTK ``Θ(0)`` (per output; §1.4 normalisation), shape ``(P, P)``.
        Theta_decoupled: ``Θ̃(0)`` of decoupled backward weights (§1.6, §2), shape ``(P, P)``.
        Theta_parts: the per-tensor terms of ``Θ`` (keys ``U, W, v`` or ``U, W1, W2, v``); they
            sum to ``Theta``.
        Theta_decoupled_parts: the per-tensor terms of ``Θ̃`` (same keys), summing to it.
        Z: two-layer blocks only: the kernels ``Z_k = V[H_k]`` of ``z_k``, shape ``(K, P, P)``;
            ``None`` for one-layer blocks.
        block: `OneLayer` or `TwoLayer` (`model.block`).
    """

    H: Float[Array, "Kp1 P P"]
    Phi: Float[Array, "Kp1 P P"]
    G: Float[Array, "Kp1 P P"]
    Theta: Float[Array, "P P"]
    Theta_decoupled: Float[Array, "P P"]
    Theta_parts: dict[str, Float[Array, "P P"]]
    Theta_decoupled_parts: dict[str, Float[Array, "P P"]]
    Z: Float[Array, "K P P"] | None
    block: AbstractBlock


def _backward(b2):
    """Scan body of the backward recursion: carry ``G_{k+1}``, emit it, return ``G_k``."""

    def body(g_next, factor):  # factor: V'[H_k] (one-layer) or V'[H_k] ⊙ V'[Z_k] (two-layer)
        return g_next * (1 + b2 * factor), g_next

    return body


@eqx.filter_jit
def init_kernels(
    param: AbstractParameterization,
    activation: AbstractActivation,
    kx: Float[Array, "P P"],
    num_steps: int,
    block: AbstractBlock = OneLayer(),
) -> InitKernels:
    """The t = 0 kernels ``H_k, G_k, Θ, Θ̃`` by the depth-``K`` recursion of §2.

    Exact at n = ∞ for a network with ``L = num_steps`` blocks; for the depth continuum it is the
    Euler scheme with ``dτ = 1/K`` (error O(1/K)). The branch factor and the multipliers are read
    from ``param`` at depth ``K`` (``b = param.branch_multiplier(K)``,
    ``param.sgd_multipliers(K, block)``), so depth-muP gives the ``β²/L`` of §2 and the other
    parameterizations their own weights. Both recursions run as ``lax.scan`` over the layer steps,
    so compile time does not grow with ``K``.

    Args:
        param: the parameterization (``β``, ``σ_in``, ``σ_out``, multipliers).
        activation: ``φ``.
        kx: the input Gram matrix ``K^x_μν = x_μ · x_ν / D``.
        num_steps: ``K``, the number of layer steps (`limit.layer_steps`; ``= L`` for exactness).
        block: `OneLayer` or `TwoLayer` (`model.block`).

    Returns:
        An `InitKernels` holding ``H``, ``Φ``, ``G`` (``K+1`` each), ``Θ``, ``Θ̃`` and their parts.

    Raises:
        ValueError: if ``num_steps < 1`` or ``kx`` is not square.
    """
    if num_steps < 1:
        raise ValueError(f"[limit] layer_steps must be >= 1, got num_steps={num_steps}.")
    if kx.ndim != 2 or kx.shape[0] != kx.shape[1]:
        raise ValueError(f"kx must be a square (P, P) Gram matrix, got shape {kx.shape}.")
    weights = param.ntk_weights(num_steps, block)
    b2 = param.branch_multiplier(num_steps) ** 2
    phi = activation
    h0 = param.sigma_in**2 * kx

    def forward(h, _):
        v_h = kernel_map(phi, h)
        vp_h = kernel_map_deriv(phi, h)
        out = {"h": h, "v_h": v_h, "vp_h": vp_h}
        if block.two_layer:
            out["v_z"] = kernel_map(phi, v_h)  # V[Z_k] with Z_k = V[H_k]
            out["vp_z"] = kernel_map_deriv(phi, v_h)
            return h + b2 * out["v_z"], out
        return h + b2 * v_h, out

    # K + 1 steps: the last one only evaluates V[H_K], V'[H_K] (its update is discarded), so the
    # kernel maps are traced once, inside the scan body.
    _, stacked = lax.scan(forward, h0, None, length=num_steps + 1)
    hs, phis, vp_hs = stacked["h"], stacked["v_h"], stacked["vp_h"]  # (K+1, P, P) each
    g_last = param.sigma_out**2 * vp_hs[-1]
    cross = jnp.broadcast_to(g_last, hs.shape)  # g_k · g̃_k / n at every k for decoupled weights
    own = {"kx": kx, "Phi": phis}
    if block.two_layer:
        v_zs, vp_zs = stacked["v_z"][:-1], stacked["vp_z"][:-1]
        g0, g_nexts = lax.scan(_backward(b2), g_last, vp_hs[:-1] * vp_zs, reverse=True)
        # G^z_k = b² V'[Z_k] ⊙ G_{k+1}; for decoupled weights g^z · g̃^z / n = 0 (W2, W̃2 independent)
        own |= {"Phiz": v_zs, "Gz": b2 * vp_zs * g_nexts}
        dec = {**own, "Gz": jnp.zeros_like(v_zs)}
    else:
        g0, g_nexts = lax.scan(_backward(b2), g_last, vp_hs[:-1], reverse=True)
        dec = dict(own)
    G = jnp.concatenate([g0[None], g_nexts])
    parts = nn.ntk_parts(weights, block, G=G, **own)
    parts_dec = nn.ntk_parts(weights, block, G=cross, **dec)

    return InitKernels(
        H=hs,
        Phi=phis,
        G=G,
        Theta=nn.sum_parts(parts),
        Theta_decoupled=nn.sum_parts(parts_dec),
        Theta_parts=parts,
        Theta_decoupled_parts=parts_dec,
        Z=phis[:-1] if block.two_layer else None,
        block=block,
    )
