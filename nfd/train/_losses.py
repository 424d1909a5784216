"""Per-example losses ``ℓ(f, y)`` (spec NFD.md §1.1); the error signal is ``Δ = −∂ℓ/∂f``."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class AbstractLoss(eqx.Module):
    """A per-example loss; training minimises its mean over the batch."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`optim.loss`)."""

    @abc.abstractmethod
    def __call__(self, f: Float[Array, " C"], y: Float[Array, " C"]) -> Float[Array, ""]:
        """``ℓ(f, y)`` for one example."""

    def error_signal(self, f: Float[Array, " C"], y: Float[Array, " C"]) -> Float[Array, " C"]:
        """``Δ = −∂ℓ/∂f``: ``y − f`` for MSE, ``y − softmax(f)`` for cross-entropy."""
        return -jax.grad(self.__call__)(f, y)


class MSE(AbstractLoss):
    """``ℓ = ½‖f − y‖²``."""

    @property
    def name(self) -> str:
        return "mse"

    def __call__(self, f, y):
        return 0.5 * jnp.sum((f - y) ** 2)


class CrossEntropy(AbstractLoss):
    """Softmax cross-entropy against target probabilities ``y`` (one-hot for labels)."""

    @property
    def name(self) -> str:
        return "cross_entropy"

    def __call__(self, f, y):
        return -jnp.sum(y * jax.nn.log_softmax(f))


LOSSES: dict[str, type[AbstractLoss]] = {"mse": MSE, "cross_entropy": CrossEntropy}
