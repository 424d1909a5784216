"""Shared test helpers: small inputs, standard errors, slopes."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np


def unit_inputs(num: int, dim: int, *, key) -> jnp.ndarray:
    """``num`` Gaussian inputs rescaled to |x|² = D (the spec's oracle convention)."""
    x = jr.normal(key, (num, dim))
    return x * jnp.sqrt(dim / jnp.sum(x**2, axis=1, keepdims=True))


def mean_se(x, axis: int = 0):
    """Sample mean and its standard error along ``axis``."""
    x = np.asarray(x)
    return x.mean(axis), x.std(axis, ddof=1) / np.sqrt(x.shape[axis])


def slope(xs, ys) -> float:
    """Least-squares slope of log|y| against log x."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.abs(np.asarray(ys))), 1)[0])
