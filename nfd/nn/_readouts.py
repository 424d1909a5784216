"""Prediction readouts (docs/math §3.3): how a dynamics turns its fields into the function ``f``.

Every dynamics (the finite network and each limit method) carries two candidate predictions: the
*feature* output ``(vᵀφ(h_L) − F0)/(γ0 n)`` (centred by its ``t = 0`` value) and the *kernel*
output ``f_ntk``, advanced by ``f(t+1) = f(t) + η0 Θ(t) c(t)`` with the fields' own NTK from
``f(0) = 0``. The readout decides which one drives the error signal and is reported, and whether
the kernel output must be advanced at all (its ``Θ c`` is computed only when it is needed).
"""

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float


class AbstractReadout(eqx.Module):
    """How predictions are read out (`limit.readout`).

    Attributes:
        true_sensitivity: whether the reported ``f`` moves with the true sensitivity
            ``γ0 n ∂f/∂h`` (the feature readout P2, whose gradient backpropagates through the
            forward weights), so that a decoupled network's saved NTK is the non-symmetric ``Θ̃``
            (§1.6); the kernel readout P1 moves with the fields' own kernel.
    """

    true_sensitivity: ClassVar[bool]

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`limit.readout`)."""

    @abc.abstractmethod
    def predict(
        self, features: Float[Array, "Pts C"], kernel: Float[Array, "Pts C"]
    ) -> Float[Array, "Pts C"]:
        """The prediction that is reported and drives the error signal."""

    @abc.abstractmethod
    def advance(
        self,
        kernel: Float[Array, "Pts C"],
        lr: Float[Array, ""],
        theta_c: Callable[[], Float[Array, "Pts C"]],
    ) -> Float[Array, "Pts C"]:
        """The kernel output after a step: ``f + η0 Θ c`` (P1) or unchanged (``theta_c`` is a thunk,
        evaluated only when needed)."""


class NTKReadout(AbstractReadout):
    """P1: ``f(0) = 0``, ``f(t+1) = f(t) + η0 Θ(t) c(t)`` with the fields' own NTK."""

    true_sensitivity: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return "ntk"

    def predict(self, features, kernel):
        del features
        return kernel

    def advance(self, kernel, lr, theta_c):
        return kernel + lr * theta_c()


class FeatureReadout(AbstractReadout):
    """P2: ``f(t) = E[v(t) φ(h(1, t))]/γ0``, centred by its ``t = 0`` value (a control variate)."""

    true_sensitivity: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "features"

    def predict(self, features, kernel):
        del kernel
        return features

    def advance(self, kernel, lr, theta_c):
        del lr, theta_c
        return kernel
