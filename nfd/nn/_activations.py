"""Activations with their Gaussian dual kernels (docs/math §0 "Activations", §2).

Every activation ``φ`` knows, besides ``φ`` and ``φ'``, its two dual maps on a bivariate Gaussian
``(a, b) ~ N(0, [[h11, h12], [h12, h22]])``:

* ``dual(h11, h12, h22) = E[φ(a) φ(b)]`` (the map ``V`` of §2),
* ``dual_deriv(h11, h12, h22) = E[φ'(a) φ'(b)]`` (the map ``V'`` of §2).

Closed forms are used where §2 gives one (``linear``, ``relu``, ``erf``); ``tanh`` and
``gelu`` use the 2-D Gauss–Hermite rule of §2 (`gauss_hermite_expectation`). Like a Neural
Tangents layer, each finite activation carries its infinite-width kernel, so the finite model and
the limit cannot drift.

All maps are elementwise on arrays of one shape, work under ``jit``/``vmap`` in float32 and
float64, and never mix dtypes or ranks implicitly (the tests run with strict promotion, STYLE.md
§6).
"""

import abc
import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jaxtyping import Array, Float

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _safe_sqrt(x: Array) -> Array:
    """``sqrt(max(x, 0))`` with a zero (not NaN) gradient where ``x <= 0``."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


@functools.cache
def _hermgauss(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes ``x_i = sqrt(2) t_i`` and weights ``w_i / sqrt(π)``, in float64."""
    t, w = np.polynomial.hermite.hermgauss(num_nodes)
    return _SQRT2 * t, w / math.sqrt(math.pi)


def gauss_hermite_expectation(
    fn: Callable[[Array, Array], Array],
    h11: Float[Array, "*shape"],
    h12: Float[Array, "*shape"],
    h22: Float[Array, "*shape"],
    num_nodes: int = 64,
) -> Float[Array, "*shape"]:
    """``E[fn(a, b)]``, ``(a, b) ~ N(0, [[h11, h12], [h12, h22]])``, by 2-D Gauss–Hermite (§2).

    With ``Q = num_nodes`` physicists' nodes ``t_i``, weights ``w_i`` and ``x_i = sqrt(2) t_i``:
    ``a_i = sqrt(h11) x_i``, ``b_ij = (h12 / sqrt(h11)) x_i + sqrt(max(h22 - h12²/h11, 0)) x_j`` and
    ``E[fn(a, b)] ≈ (1/π) Σ_ij w_i w_j fn(a_i, b_ij)``. Where ``h11 = 0`` the coefficient
    ``h12 / sqrt(h11)`` is taken as 0 (then ``a = 0`` and ``b ~ N(0, h22)``). The nodes are
    computed in numpy at trace time and cast to the input dtype.

    Args:
        fn: elementwise function of two arrays of equal shape, e.g. ``lambda a, b: φ(a) * φ(b)``.
        h11: variance of ``a``.
        h12: covariance of ``a`` and ``b``.
        h22: variance of ``b``.
        num_nodes: ``Q``, nodes per dimension (§2 fixes 64).

    Returns:
        The quadrature estimate, of the common shape and dtype of ``h11, h12, h22``.

    Accuracy: the rule is exact for polynomials of degree < 2Q in each variable. For saturating
    activations it degrades as the variances grow (``φ(sqrt(h) x)`` steepens): for ``erf`` with
    ``Q = 64`` the error is below 1e-8 for variances up to about 1.5 and all correlations, but about
    2e-6 (``V``) and 3e-5 (``V'``) at variance 3 and ``ρ → 1``. Pass a larger ``num_nodes`` there.
    """
    dtype = jnp.result_type(h11, h12, h22)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)  # integer covariances: the default float dtype
    h11, h12, h22 = (jnp.asarray(h, dtype=dtype) for h in (h11, h12, h22))
    x_np, w_np = _hermgauss(num_nodes)
    x, w = jnp.asarray(x_np, dtype=dtype), jnp.asarray(w_np, dtype=dtype)
    xj = x.reshape((1,) * h11.ndim + (num_nodes,))  # second variable's nodes on a new last axis
    wj = w.reshape(xj.shape)

    sqrt_h11 = _safe_sqrt(h11)
    positive = h11 > 0
    safe_h11 = jnp.where(positive, h11, 1)
    coef = jnp.where(positive, h12 / jnp.where(positive, sqrt_h11, 1), 0)  # h12 / sqrt(h11)
    # h22 - h12²/h11 = (s - c)(s + c)/h11 with s = sqrt(h11 h22), c = clip(h12, -s, s): the same
    # max(·, 0) guard, but exactly 0 at ρ = ±1 (no sqrt(round-off) in the conditional std).
    s = _safe_sqrt(h11 * h22)
    c = jnp.clip(h12, -s, s)
    cond_var = jnp.where(positive, (s - c) * (s + c) / safe_h11, h22)
    cond_sd = _safe_sqrt(cond_var)  # sqrt(max(h22 - h12²/h11, 0))

    def outer_node(acc, node):  # one first-variable node i: memory O(size · Q), not O(size · Q²)
        xi, wi = node
        b = coef[..., None] * xi + cond_sd[..., None] * xj  # b_ij for all j
        a = jnp.broadcast_to((sqrt_h11 * xi)[..., None], b.shape)  # a_i
        return acc + wi * jnp.sum(wj * fn(a, b), axis=-1), None

    total, _ = lax.scan(outer_node, jnp.zeros(h11.shape, dtype), (x, w))
    return total


class AbstractActivation(eqx.Module):
    """An elementwise activation ``φ`` that knows its Gaussian dual kernels (§2).

    Subclasses implement ``φ`` (`__call__`), ``φ'`` (`deriv`), ``V`` (`dual`), ``V'``
    (`dual_deriv`) and the config name (`name`, the value of `model.activation`).
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`model.activation`)."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """``φ(x)``, elementwise."""

    @abc.abstractmethod
    def deriv(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """``φ'(x)``, elementwise (for ReLU, ``φ'(0) = 0``)."""

    @abc.abstractmethod
    def dual(
        self,
        h11: Float[Array, "*shape"],
        h12: Float[Array, "*shape"],
        h22: Float[Array, "*shape"],
    ) -> Float[Array, "*shape"]:
        """``E[φ(a) φ(b)]``, ``(a, b) ~ N(0, [[h11, h12], [h12, h22]])``, elementwise (§2)."""

    @abc.abstractmethod
    def dual_deriv(
        self,
        h11: Float[Array, "*shape"],
        h12: Float[Array, "*shape"],
        h22: Float[Array, "*shape"],
    ) -> Float[Array, "*shape"]:
        """``E[φ'(a) φ'(b)]``, ``(a, b) ~ N(0, [[h11, h12], [h12, h22]])``, elementwise (§2)."""


class Linear(AbstractActivation):
    """``φ(x) = x``: ``V[H] = H``, ``V'[H] = 1`` (§2)."""

    @property
    def name(self) -> str:
        return "linear"

    def __call__(self, x):
        return x

    def deriv(self, x):
        return jnp.ones_like(x)

    def dual(self, h11, h12, h22):
        return jnp.asarray(h12)

    def dual_deriv(self, h11, h12, h22):
        return jnp.ones_like(h12)


class Relu(AbstractActivation):
    """``φ(x) = max(x, 0)`` with ``φ'(0) = 0``; arc-cosine dual kernels (§2).

    With ``ρ = clip(h12 / sqrt(h11 h22), -1, 1)`` and ``θ = arccos ρ``:
    ``V = sqrt(h11 h22)(sin θ + (π - θ) ρ) / (2π)`` and ``V' = (π - θ) / (2π)``. It is evaluated
    as ``V = (sqrt(h11 h22 - c²) + (π - θ) c) / (2π)`` with ``c = clip(h12, ±sqrt(h11 h22))`` and
    ``θ = atan2(sqrt(h11 h22 - c²), c)``, which has no division: a zero variance gives ``V = 0``
    and ``V' = 0`` (``φ'(0) = 0``) without NaNs, the diagonal gives ``V = h/2`` exactly, and the
    gradients stay finite (and equal ``V'`` in ``h12``) at ``ρ = ±1``.
    """

    @property
    def name(self) -> str:
        return "relu"

    def __call__(self, x):
        return jnp.maximum(x, 0)

    def deriv(self, x):
        return jnp.where(x > 0, jnp.ones_like(x), jnp.zeros_like(x))

    def _angle(self, h11, h12, h22):
        h11, h12, h22 = jnp.asarray(h11), jnp.asarray(h12), jnp.asarray(h22)
        s2 = h11 * h22
        nonzero = s2 > 0
        s = _safe_sqrt(s2)
        # s·ρ with ρ clipped to [-1, 1]; the clip is straight-through for gradients, so at ρ = ±1
        # ∂V/∂h12 = V' (Price's theorem) instead of the half that a tie in jnp.clip would give.
        c = h12 + lax.stop_gradient(jnp.clip(h12, -s, s) - h12)
        sin_part = _safe_sqrt((s - c) * (s + c))  # s·sin θ; exactly 0 at ρ = ±1 (no cancellation)
        theta = jnp.arctan2(sin_part, jnp.where(nonzero, c, 1))
        return nonzero, c, sin_part, theta

    def dual(self, h11, h12, h22):
        nonzero, c, sin_part, theta = self._angle(h11, h12, h22)
        return jnp.where(nonzero, (sin_part + (jnp.pi - theta) * c) / (2 * jnp.pi), 0)

    def dual_deriv(self, h11, h12, h22):
        nonzero, _, _, theta = self._angle(h11, h12, h22)
        return jnp.where(nonzero, (jnp.pi - theta) / (2 * jnp.pi), 0)


class Erf(AbstractActivation):
    """``φ(x) = erf(x)`` (not rescaled), with closed-form dual kernels (§2).

    ``V = (2/π) arcsin(2 h12 / sqrt((1 + 2 h11)(1 + 2 h22)))`` and
    ``V' = (4/π) / sqrt((1 + 2 h11)(1 + 2 h22) - 4 h12²)``.
    """

    @property
    def name(self) -> str:
        return "erf"

    def __call__(self, x):
        return jsp.erf(x)

    def deriv(self, x):
        return (2 / math.sqrt(math.pi)) * jnp.exp(-x * x)

    def dual(self, h11, h12, h22):
        h11, h12, h22 = jnp.asarray(h11), jnp.asarray(h12), jnp.asarray(h22)
        return (2 / jnp.pi) * jnp.arcsin(2 * h12 / jnp.sqrt((1 + 2 * h11) * (1 + 2 * h22)))

    def dual_deriv(self, h11, h12, h22):
        h11, h12, h22 = jnp.asarray(h11), jnp.asarray(h12), jnp.asarray(h22)
        return (4 / jnp.pi) / jnp.sqrt((1 + 2 * h11) * (1 + 2 * h22) - 4 * h12 * h12)


class Tanh(AbstractActivation):
    """``φ(x) = tanh(x)``; dual kernels by 64-node Gauss–Hermite (§2)."""

    @property
    def name(self) -> str:
        return "tanh"

    def __call__(self, x):
        return jnp.tanh(x)

    def deriv(self, x):
        t = jnp.tanh(x)
        return 1 - t * t

    def dual(self, h11, h12, h22):
        return gauss_hermite_expectation(lambda a, b: self(a) * self(b), h11, h12, h22)

    def dual_deriv(self, h11, h12, h22):
        return gauss_hermite_expectation(lambda a, b: self.deriv(a) * self.deriv(b), h11, h12, h22)


class Gelu(AbstractActivation):
    """Exact GELU ``φ(x) = x · ½(1 + erf(x/√2))``; dual kernels by Gauss–Hermite (§2)."""

    @property
    def name(self) -> str:
        return "gelu"

    def __call__(self, x):
        return x * (0.5 * (1 + jsp.erf(x / _SQRT2)))

    def deriv(self, x):
        return 0.5 * (1 + jsp.erf(x / _SQRT2)) + x * (_INV_SQRT_2PI * jnp.exp(-0.5 * x * x))

    def dual(self, h11, h12, h22):
        return gauss_hermite_expectation(lambda a, b: self(a) * self(b), h11, h12, h22)

    def dual_deriv(self, h11, h12, h22):
        return gauss_hermite_expectation(lambda a, b: self.deriv(a) * self.deriv(b), h11, h12, h22)


def _diagonal(h: Array) -> Array:
    return jnp.diagonal(h, axis1=-2, axis2=-1)


def cross_kernel_map(
    act: AbstractActivation,
    h11: Float[Array, "*batch P"],
    h12: Float[Array, "*batch P Q"],
    h22: Float[Array, "*batch Q"],
    *,
    deriv: bool = False,
) -> Float[Array, "*batch P Q"]:
    """``V`` (or ``V'`` with ``deriv=True``) between two point sets (§2).

    Args:
        act: the activation ``φ``.
        h11: variances of the first points, ``H_μμ``.
        h12: cross covariances ``H_μν``.
        h22: variances of the second points, ``H_νν``.
        deriv: return ``E[φ'(a)φ'(b)]`` instead of ``E[φ(a)φ(b)]``.

    Returns:
        The ``(..., P, Q)`` matrix of dual-kernel values.
    """
    h11 = jnp.broadcast_to(h11[..., :, None], h12.shape)
    h22 = jnp.broadcast_to(h22[..., None, :], h12.shape)
    return (act.dual_deriv if deriv else act.dual)(h11, h12, h22)


def kernel_map(
    act: AbstractActivation, h: Float[Array, "*batch P P"]
) -> Float[Array, "*batch P P"]:
    """``V[H]_μν = E[φ(a)φ(b)]`` with ``(a, b) ~ N(0, [[H_μμ, H_μν], [H_μν, H_νν]])`` (§2).

    The result is symmetrised, ``(V + Vᵀ)/2``, so quadrature error cannot break symmetry (a no-op
    for the closed forms).

    Args:
        act: the activation ``φ``.
        h: a square PSD matrix (or a stack of them).

    Returns:
        ``V[H]``, of the shape and dtype of ``h``.
    """
    d = _diagonal(h)
    v = cross_kernel_map(act, d, h, d)
    return 0.5 * (v + jnp.swapaxes(v, -1, -2))


def kernel_map_deriv(
    act: AbstractActivation, h: Float[Array, "*batch P P"]
) -> Float[Array, "*batch P P"]:
    """``V'[H]_μν = E[φ'(a)φ'(b)]`` with ``(a, b)`` as in `kernel_map` (§2), symmetrised.

    Args:
        act: the activation ``φ``.
        h: a square PSD matrix (or a stack of them).

    Returns:
        ``V'[H]``, of the shape and dtype of ``h``.
    """
    d = _diagonal(h)
    v = cross_kernel_map(act, d, h, d, deriv=True)
    return 0.5 * (v + jnp.swapaxes(v, -1, -2))
