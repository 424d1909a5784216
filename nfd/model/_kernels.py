"""Empirical kernels of a finite network from its fields (spec NFD.md §0, §1.4).

The NTK is normalised so that ``f(t+1) ≈ f(t) + η0 Θ(t) c(t)`` under SGD (spec §1.4):

    Θ = m_U σ_in² K^x ⊙ G_0 + m_W b² Σ_ℓ G_{ℓ+1} ⊙ Φ_ℓ + m_v Φ_L              (one-layer)
    Θ = m_U σ_in² K^x ⊙ G_0 + Σ_ℓ [m_W2 b² G_{ℓ+1} ⊙ Φ^z_ℓ + m_W1 G^z_ℓ ⊙ Φ_ℓ] + m_v Φ_L   (two-layer)

with ``b`` the branch multiplier and ``m_θ`` the SGD multipliers of the parameterization. It is exact
at every width (the weight gradients are rank one per example). For a decoupled network the function
moves with the non-symmetric ``Θ̃``: true sensitivities ``g`` on the left (row index), decoupled ``g̃``
on the right (spec §1.6). With ``C > 1`` outputs the class-averaged diagonal block is returned.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._resnet import ResNet, ResNetFields

HIGHEST = jax.lax.Precision.HIGHEST


def gram(a: Float[Array, "P ... N"], b: Float[Array, "Q ... N"]) -> Float[Array, "... P Q"]:
    """``a_p · b_q / N`` for every leading index, averaged over nothing (width-normalised Gram)."""
    n = a.shape[-1]
    return jnp.einsum("p...n,q...n->...pq", a, b, precision=HIGHEST) / n


def class_gram(
    a: Float[Array, "P C ... N"], b: Float[Array, "Q C ... N"]
) -> Float[Array, "... P Q"]:
    """``(1/C) Σ_a g^a_p · g^a_q / N``: the class-averaged diagonal block of a backward kernel."""
    n, c = a.shape[-1], a.shape[1]
    return jnp.einsum("pc...n,qc...n->...pq", a, b, precision=HIGHEST) / (n * c)


def point_fields(model: ResNet, xs: Float[Array, "P D"]) -> ResNetFields:
    """`ResNet.fields` of every row of ``xs`` (a vmap)."""
    return jax.vmap(model.fields)(xs)


def ntk_parts(
    model: ResNet, xs: Float[Array, "P D"], left: ResNetFields, right: ResNetFields
) -> dict[str, Float[Array, "P P"]]:
    """The per-tensor terms of the NTK of spec §1.4 (keys ``U, W, v`` or ``U, W1, W2, v``), from
    batched fields (``left``: true ``g``; ``right``: propagated); they sum to `ntk_from_fields`."""
    p = model.param
    m = p.sgd_multipliers(model.depth, model.block)
    b2 = p.branch_multiplier(model.depth) ** 2
    phi = model.activation
    kx = jnp.einsum("pd,qd->pq", xs, xs, precision=HIGHEST) / model.in_dim
    G = class_gram(left.g, right.g)  # (L+1, P, P)
    Phi = gram(phi(left.h), phi(left.h))  # (L+1, P, P)
    parts = {"U": m["U"] * p.sigma_in**2 * kx * G[0], "v": m["v"] * Phi[-1]}
    if model.block == "one_layer":
        parts["W"] = m["W"] * b2 * jnp.sum(G[1:] * Phi[:-1], axis=0)
    else:
        assert left.z is not None and left.gz is not None and right.gz is not None
        Phi_z = gram(phi(left.z), phi(left.z))
        Gz = class_gram(left.gz, right.gz)
        parts["W2"] = m["W2"] * b2 * jnp.sum(G[1:] * Phi_z, axis=0)
        parts["W1"] = m["W1"] * jnp.sum(Gz * Phi[:-1], axis=0)
    return parts


def ntk_from_fields(
    model: ResNet, xs: Float[Array, "P D"], left: ResNetFields, right: ResNetFields
) -> Float[Array, "P P"]:
    """The NTK of spec §1.4 from batched fields (``left``: true ``g``; ``right``: propagated)."""
    parts = ntk_parts(model, xs, left, right)
    return _sum_parts(parts)


def _sum_parts(parts: dict[str, Array]) -> Array:
    values = list(parts.values())
    out = values[0]
    for v in values[1:]:
        out = out + v
    return out


def empirical_ntk_parts(model: ResNet, xs: Float[Array, "P D"]) -> dict[str, Float[Array, "P P"]]:
    """`ntk_parts` of ``model`` on the points ``xs`` (``Θ̃``'s for decoupled networks)."""
    right = point_fields(model, xs)
    left = right if model.offsets is None else point_fields(model.as_reused(), xs)
    return ntk_parts(model, xs, left, right)


def empirical_ntk(model: ResNet, xs: Float[Array, "P D"]) -> Float[Array, "P P"]:
    """The empirical NTK ``Θ`` (``Θ̃`` for decoupled networks) on the points ``xs`` (spec §1.4)."""
    right = point_fields(model, xs)
    left = right if model.offsets is None else point_fields(model.as_reused(), xs)
    return ntk_from_fields(model, xs, left, right)
