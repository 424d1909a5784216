"""Optimizers with the parameterization's per-tensor learning rates (docs/math §1.3).

An optimizer is an optax `GradientTransformation` at learning rate 1 together with the rule that
gives each tensor its raw rate. Both SGD's and Adam's updates are linear in the learning rate, so
the finite network multiplies the transform's update of tensor ``θ`` by ``η0 × rate_θ``: a grid of
``η0`` (and of the traced scalars ``γ0``, ``β``, ``σ``) is one vmapped, once-compiled computation.
Any base-rate-1 optax transform can be passed with either rate rule.
"""

import abc
import functools

import equinox as eqx
import optax
from jaxtyping import Array, Float

from ..param import AbstractBlock, AbstractParameterization, TensorRates


class AbstractOptimizer(eqx.Module):
    """An optax transform at learning rate 1 and the per-tensor raw rates it is scaled by.

    Attributes:
        transform: the optax `GradientTransformation` (learning rate 1), applied to the trainable
            tensors ``U``, the block matrices and ``v``.
    """

    transform: eqx.AbstractVar[optax.GradientTransformation]

    @abc.abstractmethod
    def rates(
        self,
        param: AbstractParameterization,
        width: int,
        in_dim: int,
        depth: int,
        block: AbstractBlock,
    ) -> TensorRates:
        """The raw rate of each tensor at base learning rate ``η0 = 1``."""


class SGD(AbstractOptimizer):
    """SGD, the limit theory's optimizer: raw rate ``η0 γ0² N m_θ`` (§1.3)."""

    transform: optax.GradientTransformation = eqx.field(static=True, default=optax.sgd(1.0))

    def rates(self, param, width, in_dim, depth, block):
        del in_dim
        return param.sgd_rates(1.0, width, depth, block)


class Adam(AbstractOptimizer):
    """Adam with the raw rates of §1.3's second table.

    Attributes:
        eps: Adam's ``ε``; §1.3 asks ``ε ≤ 1e-8/n`` (`adam_eps`).
    """

    eps: float = eqx.field(static=True)
    transform: optax.GradientTransformation = eqx.field(static=True, init=False)

    def __post_init__(self):
        self.transform = _adam(float(self.eps))

    def rates(self, param, width, in_dim, depth, block):
        return param.adam_rates(1.0, width, in_dim, depth, block)


@functools.cache
def _adam(eps: float) -> optax.GradientTransformation:
    """One transform per ``ε``: equal optimizers are the same static object, so jit reuses its
    compilation."""
    return optax.adam(1.0, eps=eps)


def adam_eps(width: int) -> float:
    """The default Adam ``ε = 1e-8 / N`` of a width-``N`` network (§1.3)."""
    return 1e-8 / width


def scale_updates(updates, rates: dict[str, Float[Array, ""]], lr, names: tuple[str, ...]):
    """``η0 × rate_θ × update_θ`` for a tuple of per-tensor updates in the order ``names``."""
    return tuple(lr * rates[n] * u for n, u in zip(names, updates, strict=True))
