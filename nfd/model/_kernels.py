"""Empirical kernels of a finite network from its fields (docs/math §0, §1.4).

The NTK is normalised so that ``f(t+1) ≈ f(t) + η0 Θ(t) c(t)`` under SGD (§1.4):

    Θ = m_U σ_in² K^x ⊙ G_0 + m_W b² Σ_ℓ G_{ℓ+1} ⊙ Φ_ℓ + m_v Φ_L              (one-layer)
    Θ = m_U σ_in² K^x ⊙ G_0 + Σ_ℓ [m_W2 b² G_{ℓ+1} ⊙ Φ^z_ℓ + m_W1 G^z_ℓ ⊙ Φ_ℓ] + m_v Φ_L   (two-layer)

with ``b`` the branch multiplier and ``m_θ`` the SGD multipliers of the parameterization. It is exact
at every width (the weight gradients are rank one per example). For a decoupled network the function
moves with the non-symmetric ``Θ̃``: true sensitivities ``g`` on the left (row index), decoupled ``g̃``
on the right (§1.6). With ``C > 1`` outputs the class-averaged diagonal block is returned.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import nn
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
    """The per-tensor terms of the NTK of §1.4 (keys ``U, W, v`` or ``U, W1, W2, v``), from
    batched fields (``left``: true ``g``; ``right``: propagated), by `nfd.nn.ntk_parts`."""
    phi = model.activation
    phi_h = phi(left.h)
    kernels = {
        "kx": jnp.einsum("pd,qd->pq", xs, xs, precision=HIGHEST) / model.in_dim,
        "G": class_gram(left.g, right.g),  # (L+1, P, P)
        "Phi": gram(phi_h, phi_h),  # (L+1, P, P)
    }
    if model.block.two_layer:
        assert left.z is not None and left.gz is not None and right.gz is not None
        phi_z = phi(left.z)
        kernels |= {"Gz": class_gram(left.gz, right.gz), "Phiz": gram(phi_z, phi_z)}
    weights = model.ntk_weights()
    return nn.ntk_parts(weights, model.block, **kernels)


def ntk_from_fields(
    model: ResNet, xs: Float[Array, "P D"], left: ResNetFields, right: ResNetFields
) -> Float[Array, "P P"]:
    """The NTK of §1.4 from batched fields (``left``: true ``g``; ``right``: propagated)."""
    return nn.sum_parts(ntk_parts(model, xs, left, right))


def _fields_pair(model: ResNet, xs) -> tuple[ResNetFields, ResNetFields]:
    """(true-sensitivity fields, the network's own fields) on ``xs``: the same for reused weights."""
    right = point_fields(model, xs)
    left = right if model.offsets is None else point_fields(model.as_reused(), xs)
    return left, right


def empirical_ntk_parts(model: ResNet, xs: Float[Array, "P D"]) -> dict[str, Float[Array, "P P"]]:
    """`ntk_parts` of ``model`` on the points ``xs`` (``Θ̃``'s for decoupled networks)."""
    return ntk_parts(model, xs, *_fields_pair(model, xs))


def empirical_ntk(model: ResNet, xs: Float[Array, "P D"]) -> Float[Array, "P P"]:
    """The empirical NTK ``Θ`` (``Θ̃`` for decoupled networks) on the points ``xs`` (§1.4)."""
    return ntk_from_fields(model, xs, *_fields_pair(model, xs))


def ntk_apply(
    model: ResNet,
    xs: Float[Array, "P D"],
    left: ResNetFields,
    right: ResNetFields,
    c: Float[Array, "P C"],
) -> Float[Array, "P C"]:
    """``(Θ c)^a_μ = Σ_ν Σ_b Θ^{ab}_{μν} c^b_ν`` with the full ``C × C`` blocks of the NTK from
    batched fields (``left`` on the rows): the first-order change of ``f`` under SGD, per unit ``η0``.

    Built from `nfd.nn.ntk_parts` per output pair (``G^{ab} = g^a · g^b / N``); the readout term is
    diagonal in the outputs.
    """
    phi = model.activation
    weights = model.ntk_weights()
    phi_h = phi(left.h)
    base = {
        "kx": jnp.einsum("pd,qd->pq", xs, xs, precision=HIGHEST) / model.in_dim,
        "Phi": gram(phi_h, phi_h),
    }
    if model.block.two_layer:
        assert left.z is not None and left.gz is not None and right.gz is not None
        phi_z = phi(left.z)
        base["Phiz"] = gram(phi_z, phi_z)
    num_out = c.shape[1]
    rows = []
    for a in range(num_out):
        acc = jnp.zeros(c.shape[:1], c.dtype)
        for b in range(num_out):
            kernels = {**base, "G": gram(left.g[:, a], right.g[:, b])}
            if model.block.two_layer:
                kernels["Gz"] = gram(left.gz[:, a], right.gz[:, b])  # type: ignore[index]
            parts = nn.ntk_parts(weights, model.block, **kernels)
            if a != b:
                parts.pop("v")
            acc = acc + nn.sum_parts(parts) @ c[:, b]
        rows.append(acc)
    return jnp.stack(rows, axis=1)
