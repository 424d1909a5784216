"""The tracked points of a run and the batch sequence every dynamics of a config replays."""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..tasks import Task


class Points(eqx.Module):
    """All tracked inputs of a run, training points first (§3.4: "points").

    Attributes:
        x: inputs ``(Pts, D)``; the first ``num_train`` rows are the training set.
        y: targets ``(Pts, C)``.
        num_train: ``P``; the batches index the training rows, test rows are only tracked.
    """

    x: Float[Array, "Pts D"]
    y: Float[Array, "Pts C"]
    num_train: int = eqx.field(static=True)

    @classmethod
    def from_task(cls, task: Task) -> "Points":
        """Train ∪ test points of ``task``."""
        return cls(
            x=jnp.concatenate([task.x_train, task.x_test]),
            y=jnp.concatenate([task.y_train, task.y_test]),
            num_train=task.n_train,
        )

    @property
    def num_points(self) -> int:
        return self.x.shape[0]

    @property
    def in_dim(self) -> int:
        return self.x.shape[1]

    @property
    def out_dim(self) -> int:
        return self.y.shape[1]

    @property
    def kx(self) -> Float[Array, "Pts Pts"]:
        """The input Gram matrix ``K^x_μν = x_μ · x_ν / D``."""
        return jnp.einsum("pd,qd->pq", self.x, self.x, precision="highest") / self.in_dim


def batch_schedule(
    num_train: int, batch_size: int, num_steps: int, *, key: PRNGKeyArray
) -> Int[Array, "T B"]:
    """The minibatch index sequence of a run: row ``t`` holds the indices of ``B_t``.

    ``batch_size = 0`` (or ``>= num_train``) is full-batch GD: every row is ``0..P-1``. Otherwise each
    epoch is a fresh permutation (``jr.fold_in(key, epoch)``) cut into ``P // batch_size`` batches
    (the remainder is dropped). Every dynamics of a config (finite or limit) replays this sequence.
    """
    if batch_size <= 0 or batch_size >= num_train:
        return jnp.broadcast_to(jnp.arange(num_train), (num_steps, num_train))
    per_epoch = num_train // batch_size
    epochs = math.ceil(num_steps / per_epoch) if num_steps else 0
    if not epochs:
        return jnp.zeros((0, batch_size), jnp.int32)
    # one vectorised call for every epoch (a Python loop of per-epoch calls grew super-linearly)
    perms = _epoch_permutations(key, jnp.arange(epochs), num_train)[:, : per_epoch * batch_size]
    return perms.reshape(-1, batch_size)[:num_steps]


@functools.partial(jax.jit, static_argnums=2)
def _epoch_permutations(key: PRNGKeyArray, epochs: Int[Array, " E"], num_train: int):
    return jax.vmap(lambda e: jr.permutation(jr.fold_in(key, e), num_train))(epochs)
