"""Residual block kinds as types (docs/math §1.1, §6), read by the finite model and the limit.

`OneLayer` is the NFD setting, ``h_{ℓ+1} = h_ℓ + b W_ℓ φ(h_ℓ)/sqrt(n)``; `TwoLayer` has an internal
layer, ``z_ℓ = W1_ℓ φ(h_ℓ)/sqrt(n)``, ``h_{ℓ+1} = h_ℓ + b W2_ℓ φ(z_ℓ)/sqrt(n)``. A block knows the
names of its trainable matrices (in the order they are applied) and which of them carries the
branch multiplier; everything that differs between the two kinds is read from here, so no module
compares block names.
"""

import abc
from typing import ClassVar

import equinox as eqx


class AbstractBlock(eqx.Module):
    """A residual block kind.

    Attributes:
        matrices: names of the block's trainable matrices in the order they are applied
            (``("W",)`` or ``("W1", "W2")``); the last one carries the branch multiplier.
        first_layer: the matrix whose learning rate is multiplied by ``L**a``
            (`optim.first_layer_lr_exponent`), or ``None``.
    """

    matrices: ClassVar[tuple[str, ...]]
    first_layer: ClassVar[str | None]

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`model.block`)."""

    @property
    def branch(self) -> str:
        """The matrix that writes into the residual stream (it carries the branch multiplier)."""
        return self.matrices[-1]

    @property
    def tensors(self) -> tuple[str, ...]:
        """All trainable tensors of a network with these blocks: ``("U", *matrices, "v")``."""
        return ("U", *self.matrices, "v")

    @property
    def two_layer(self) -> bool:
        """Whether the block has an internal layer ``z`` (and the fields ``z``, ``g^z``)."""
        return len(self.matrices) == 2


class OneLayer(AbstractBlock):
    """``h_{ℓ+1} = h_ℓ + b W_ℓ φ(h_ℓ)/sqrt(n)``: the NFD setting."""

    matrices: ClassVar[tuple[str, ...]] = ("W",)
    first_layer: ClassVar[str | None] = None

    @property
    def name(self) -> str:
        return "one_layer"


class TwoLayer(AbstractBlock):
    """``z_ℓ = W1_ℓ φ(h_ℓ)/sqrt(n)``, ``h_{ℓ+1} = h_ℓ + b W2_ℓ φ(z_ℓ)/sqrt(n)`` (§6)."""

    matrices: ClassVar[tuple[str, ...]] = ("W1", "W2")
    first_layer: ClassVar[str | None] = "W1"

    @property
    def name(self) -> str:
        return "two_layer"
