"""Brownian increments on the uniform depth-time grid ``dτ = 1/K`` (STYLE.md §5).

The depth solver takes increments, not a key: given the path the dynamics are deterministic, and a
convergence test sums fine increments into coarse ones with `coarsen`, so every resolution sees
*one* Brownian path (as Diffrax's order tests nest grids on one ``VirtualBrownianTree``).
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import PyTree

from .._typing import Array, Float, PRNGKeyArray


def brownian_increments(
    num_steps: int,
    shape: tuple[int, ...],
    *,
    key: PRNGKeyArray,
    dtype: DTypeLike | None = None,
) -> Float[Array, "K ..."]:
    """``K = num_steps`` independent increments ``dW_k ~ N(0, dτ)`` of a Brownian motion on [0, 1].

    The grid is uniform, ``τ_k = k / K`` and ``dτ = 1 / K``, so ``dW_k = sqrt(1/K) z_k`` with
    ``z_k`` i.i.d. standard normal of the given ``shape``. For the random-matrix noise of
    docs/math §4.1 pass ``shape=(M, M)``: ``dW_k = sqrt(dτ) W_k`` with ``W_k ~ N(0, 1)``.

    Args:
        num_steps: ``K >= 1``, the number of layer steps.
        shape: the shape of one increment (the state's shape for diagonal noise).
        key: the noise key (used once).
        dtype: a floating dtype; `None` gives JAX's default float (float64 under x64).

    Returns:
        The increments, of shape ``(K, *shape)``; ``dWs[k]`` drives the step from ``τ_k`` to
        ``τ_{k+1}``.

    Raises:
        ValueError: if ``num_steps < 1``, ``shape`` has a negative entry or ``dtype`` is not
            floating.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(
            f"brownian_increments needs num_steps >= 1 (K), got num_steps={num_steps!r}."
        )
    shape = tuple(shape)
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"brownian_increments needs a shape of non-negative ints, got {shape!r}.")
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"brownian_increments needs a floating dtype, got dtype={dtype!r}.")
    z = jr.normal(key, (num_steps, *shape), dtype=dtype)
    return z * math.sqrt(1.0 / num_steps)  # a weakly typed scalar: keeps z's dtype


def coarsen(dWs: PyTree[Float[Array, "_K ..."]], factor: int) -> PyTree[Float[Array, "_Kc ..."]]:
    """Sums consecutive groups of ``factor`` increments: the same path on a grid ``factor`` x coarser.

    ``coarse[j] = Σ_{i < factor} dWs[j·factor + i]``, so ``coarse`` has ``K / factor`` steps of
    ``dτ = factor / K`` and the same cumulative path at the coarse grid points. Every leaf of a
    pytree of increments is coarsened alike.

    Args:
        dWs: increments with leading step axis ``K`` (a pytree allowed; every leaf has axis ``K``).
        factor: a positive divisor of ``K``.

    Returns:
        The coarse increments, leading axis ``K // factor``, same dtypes and trailing shapes.

    Raises:
        ValueError: if ``factor < 1``, a leaf has no leading axis or ``K`` is not divisible by
            ``factor``.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"coarsen needs an integer factor >= 1, got factor={factor!r}.")
    leaves = jax.tree_util.tree_leaves_with_path(dWs)
    for path, leaf in leaves:
        name = "dWs" + jax.tree_util.keystr(path)
        if jnp.ndim(leaf) == 0:
            raise ValueError(f"coarsen needs a leading step axis K on `{name}`, got a scalar.")
        num_steps = jnp.shape(leaf)[0]
        if num_steps % factor:
            raise ValueError(
                f"coarsen: K = {num_steps} steps of `{name}` (shape {jnp.shape(leaf)}) are not "
                f"divisible by factor={factor}; pick a factor dividing K."
            )
    return jax.tree.map(
        lambda a: jnp.sum(jnp.reshape(a, (-1, factor, *jnp.shape(a)[1:])), axis=1), dWs
    )
