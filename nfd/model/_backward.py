"""Backward-weight modes: the gradient-independence question as a type (spec §1.6).

`ReusedWeights` is ordinary backpropagation: the backward pass uses the forward weights ``W(t)``.
`DecoupledWeights` backpropagates through ``W̃(t) = W̃(0) + [W(t) − W(0)] = W(t) + E`` with
``W̃(0)`` an independent standard Gaussian copy of ``W(0)`` and ``E = W̃(0) − W(0)`` fixed: this is the
network whose infinite-width limit is the gradient-independence assumption (GIA, mode B).
"""

import abc

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


class AbstractBackwardWeights(eqx.Module):
    """How the backward pass treats a residual block's weight matrix."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`model.backward`)."""

    @abc.abstractmethod
    def offset(
        self, w: Float[Array, "*L N N"], *, key: PRNGKeyArray
    ) -> Float[Array, "*L N N"] | None:
        """The fixed backward offset ``E = W̃(0) − W(0)``, or ``None`` for reused weights."""


class ReusedWeights(AbstractBackwardWeights):
    """Standard backpropagation: the backward pass reuses the forward weights (mode A's network)."""

    @property
    def name(self) -> str:
        return "reused"

    def offset(self, w, *, key):
        del w, key
        return None


class DecoupledWeights(AbstractBackwardWeights):
    """GIA: the backward pass uses an independent initial copy plus the same updates (mode B)."""

    @property
    def name(self) -> str:
        return "decoupled"

    def offset(self, w, *, key):
        return jr.normal(key, w.shape, w.dtype) - w


BACKWARD: dict[str, type[AbstractBackwardWeights]] = {
    "reused": ReusedWeights,
    "decoupled": DecoupledWeights,
}


def block_matvec(
    w: Float[Array, "N N"], offset: Float[Array, "N N"] | None, a: Float[Array, " N"]
) -> Float[Array, " N"]:
    """``W a`` whose cotangent to ``a`` is taken through ``(W + E)ᵀ`` when ``offset`` is ``E``.

    The gradient with respect to ``W`` is the ordinary ``ct aᵀ`` in both modes (spec §1.6). Written
    with `stop_gradient` rather than a `custom_vjp` so that under `vmap` over examples the weight
    cotangent is a single batched matmul, as in ordinary autodiff.
    """
    if offset is None:
        return w @ a
    e = jax.lax.stop_gradient(offset)
    return (w + e) @ a - e @ jax.lax.stop_gradient(a)


__all__ = [
    "AbstractBackwardWeights",
    "BACKWARD",
    "DecoupledWeights",
    "ReusedWeights",
    "block_matvec",
]
