"""Backward-weight modes: the gradient-independence question as a type (§1.6).

`ReusedWeights` is ordinary backpropagation: the backward pass uses the forward weights ``W(t)``.
`DecoupledWeights` backpropagates through ``W̃(t) = W̃(0) + [W(t) − W(0)] = W(t) + E`` with
``W̃(0)`` an independent standard Gaussian copy of ``W(0)`` and ``E = W̃(0) − W(0)`` fixed: this is the
network whose infinite-width limit is the gradient-independence assumption (GIA, mode B).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


class AbstractBackwardWeights(eqx.Module):
    """How the backward pass treats a residual block's weight matrix.

    One type for one concept: the finite network's `model.backward` (``reused`` | ``decoupled``)
    and the limit's `limit.coupling` (``exact`` = mode A | ``decoupled`` = mode B) both build one
    of these (`nfd.config`).

    Attributes:
        decoupled: whether the backward pass uses an independent copy ``W̃`` (mode B, GIA).
    """

    decoupled: ClassVar[bool]

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

    decoupled: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return "reused"

    def offset(self, w, *, key):
        del w, key
        return None


class DecoupledWeights(AbstractBackwardWeights):
    """GIA: the backward pass uses an independent initial copy plus the same updates (mode B)."""

    decoupled: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "decoupled"

    def offset(self, w, *, key):
        return jr.normal(key, w.shape, w.dtype) - w


__all__ = ["AbstractBackwardWeights", "DecoupledWeights", "ReusedWeights"]
