"""Per-example losses ``ℓ(f, y)`` (docs/math §1.1) and the one error signal of every dynamics.

The error signal is ``Δ = −∂ℓ/∂f``; with minibatch ``B_t`` the sample weights of a training step are
``c_ν = 1[ν ∈ B_t] Δ_ν / |B_t|`` (`error_signal`), read by the finite network and every limit method.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


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


def error_signal(
    loss: AbstractLoss, f: Float[Array, "Pts C"], y: Float[Array, "Pts C"], idx: Int[Array, " B"]
) -> Float[Array, "Pts C"]:
    """``c_ν = 1[ν ∈ B] Δ_ν / |B|`` over all tracked points (§1.1); zero off the batch."""
    delta = jax.vmap(loss.error_signal)(f[idx], y[idx]) / idx.shape[0]
    return jnp.zeros(f.shape, f.dtype).at[idx].add(delta)


def batch_loss(
    loss: AbstractLoss, f: Float[Array, "Pts C"], y: Float[Array, "Pts C"], idx: Int[Array, " B"]
) -> Float[Array, ""]:
    """The mean loss over the batch ``idx`` (what a training step minimises)."""
    return jnp.mean(jax.vmap(loss)(f[idx], y[idx]))


def split_losses(
    loss: AbstractLoss, f: Float[Array, "Pts C"], y: Float[Array, "Pts C"], num_train: int
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean training and test losses of all tracked points (train rows first); the test loss is
    NaN when there are no test points."""
    losses = jax.vmap(loss)(f, y)
    test = (
        jnp.mean(losses[num_train:]) if f.shape[0] > num_train else jnp.array(jnp.nan, losses.dtype)
    )
    return jnp.mean(losses[:num_train]), test


def split_accuracy(
    loss: AbstractLoss, f: Float[Array, "Pts C"], y: Float[Array, "Pts C"], num_train: int
) -> dict[str, Float[Array, ""]]:
    """Training and test accuracy (the fraction of points whose largest output is their class)
    of a classification loss (`CrossEntropy`: targets one-hot or class probabilities); empty for
    other losses. The test accuracy is NaN when there are no test points."""
    if not isinstance(loss, CrossEntropy):
        return {}
    hit = (jnp.argmax(f, axis=-1) == jnp.argmax(y, axis=-1)).astype(f.dtype)
    test = jnp.mean(hit[num_train:]) if f.shape[0] > num_train else jnp.array(jnp.nan, f.dtype)
    return {"acc_train": jnp.mean(hit[:num_train]), "acc_test": test}
