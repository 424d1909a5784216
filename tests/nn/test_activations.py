"""Activations and their Gaussian dual kernels (docs/math §2) against independent references.

Everything under test is called through ``jax.jit`` so that each test compiles a few programs
instead of dispatching (and compiling) dozens of small eager operations.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from nfd.config import ACTIVATIONS
from nfd.nn import (
    AbstractActivation,
    Erf,
    Gelu,
    Linear,
    Relu,
    Tanh,
    cross_kernel_map,
    gauss_hermite_expectation,
    kernel_map,
    kernel_map_deriv,
)

ALL = [Linear(), Relu(), Erf(), Tanh(), Gelu()]
IDS = [a.name for a in ALL]


def _np_gelu(x):
    return x * 0.5 * (1 + scipy.special.erf(x / math.sqrt(2)))


def _np_gelu_deriv(x):
    return 0.5 * (1 + scipy.special.erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(
        2 * math.pi
    )


NP_FN = {  # independent numpy versions of φ and φ' for the Monte Carlo references
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "gelu": (_np_gelu, _np_gelu_deriv),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(np.float64)),
}


def random_covariances(num: int, seed: int, max_var: float = 1.5, max_abs_rho: float = 1.0):
    """Random PSD 2×2 covariances as float64 arrays (h11, h12, h22); ρ = ±1 appended if allowed."""
    rng = np.random.default_rng(seed)
    h11, h22 = rng.uniform(0.05, max_var, size=(2, num + 2))
    rho = rng.uniform(-max_abs_rho, max_abs_rho, size=num + 2)
    if max_abs_rho == 1.0:
        rho[-2:] = [1.0, -1.0]
    return h11, rho * np.sqrt(h11 * h22), h22


def monte_carlo(fn, h11, h12, h22, num_samples: int, seed: int):
    """Mean and standard error of ``fn(a, b)``, ``(a, b) ~ N(0, [[h11, h12], [h12, h22]])``."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=(2, num_samples))
    rho = np.clip(h12 / math.sqrt(h11 * h22), -1.0, 1.0)
    a = math.sqrt(h11) * z1
    b = math.sqrt(h22) * (rho * z1 + math.sqrt(1 - rho**2) * z2)
    values = fn(a, b)
    return values.mean(), values.std() / math.sqrt(num_samples)


def test_registry_names_match_classes():
    assert sorted(ACTIVATIONS) == sorted(IDS)
    for name, cls in ACTIVATIONS.items():
        assert cls().name == name
        assert issubclass(cls, AbstractActivation)


@pytest.mark.parametrize("act", ALL, ids=IDS)
def test_deriv_matches_autodiff(act):
    x = jnp.linspace(
        -3.0, 3.0, 60
    )  # an even count: 0 is not a node (relu is not differentiable there)
    deriv, expected = jax.jit(lambda x: (act.deriv(x), jax.vmap(jax.grad(act))(x)))(x)
    np.testing.assert_allclose(deriv, expected, rtol=1e-12, atol=1e-14)


def test_relu_derivative_at_zero_is_zero():
    assert Relu().deriv(jnp.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_erf_closed_form_matches_gauss_hermite():
    # §2: "for erf the quadrature must match the closed form to 1e-8". It does for variances up
    # to about 1.5 and every ρ in [-1, 1]; it degrades beyond (see gauss_hermite_expectation).
    act = Erf()

    @jax.jit
    def both(h11, h12, h22):
        gh = gauss_hermite_expectation(lambda a, b: act(a) * act(b), h11, h12, h22)
        gh_d = gauss_hermite_expectation(lambda a, b: act.deriv(a) * act.deriv(b), h11, h12, h22)
        return act.dual(h11, h12, h22), gh, act.dual_deriv(h11, h12, h22), gh_d

    v, v_gh, vp, vp_gh = both(*(jnp.asarray(h) for h in random_covariances(50, seed=0)))
    np.testing.assert_allclose(v, v_gh, rtol=0, atol=1e-8)
    np.testing.assert_allclose(vp, vp_gh, rtol=0, atol=1e-8)


def test_gauss_hermite_exact_on_polynomials():
    # Isserlis: E[a² b²] = h11 h22 + 2 h12², E[a b] = h12; exact for low-degree polynomials.
    h11, h12, h22 = (jnp.asarray(h) for h in random_covariances(10, seed=1, max_var=4.0))
    fourth, second = jax.jit(
        lambda *h: (
            gauss_hermite_expectation(lambda a, b: a * a * b * b, *h),
            gauss_hermite_expectation(lambda a, b: a * b, *h),
        )
    )(h11, h12, h22)
    np.testing.assert_allclose(fourth, h11 * h22 + 2 * h12**2, rtol=1e-12)
    np.testing.assert_allclose(second, h12, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("which", ["dual", "dual_deriv"])
@pytest.mark.parametrize("act", [Tanh(), Gelu(), Relu()], ids=["tanh", "gelu", "relu"])
def test_dual_kernels_match_monte_carlo(act, which):
    f = NP_FN[act.name][0 if which == "dual" else 1]  # φ for V, φ' for V'
    cov = random_covariances(3, seed=2, max_var=3.0, max_abs_rho=0.95)
    values = jax.jit(getattr(act, which))(*(jnp.asarray(h) for h in cov))
    for i, (h11, h12, h22) in enumerate(zip(*cov, strict=True)):
        mean, se = monte_carlo(lambda a, b: f(a) * f(b), h11, h12, h22, 400_000, seed=10 + i)
        assert abs(float(values[i]) - mean) / se < 4, (float(values[i]), mean, se)


def test_relu_special_cases():
    act = Relu()
    h = jnp.asarray([0.3, 1.0, 2.5])
    h11, h22 = h, 2 * h
    s = jnp.sqrt(h11 * h22)
    v, vp = jax.jit(act.dual), jax.jit(act.dual_deriv)
    # ρ = 1 on the diagonal: V = h/2 exactly, V' = 1/2.
    np.testing.assert_array_equal(v(h, h, h), h / 2)
    np.testing.assert_array_equal(vp(h, h, h), 0.5 * jnp.ones_like(h))
    # ρ = 1 off the diagonal: V = sqrt(h11 h22)/2, V' = 1/2.
    np.testing.assert_allclose(v(h11, s, h22), s / 2, rtol=1e-14)
    np.testing.assert_allclose(vp(h11, s, h22), 0.5, rtol=1e-7)  # arccos(1 - ε) ≈ sqrt(2ε)
    # ρ = 0: V = sqrt(h11 h22)/(2π), V' = 1/4.
    np.testing.assert_allclose(v(h11, 0 * s, h22), s / (2 * math.pi), rtol=1e-14)
    np.testing.assert_allclose(vp(h11, 0 * s, h22), 0.25, rtol=1e-14)
    # ρ = -1: V = 0, V' = 0.
    np.testing.assert_allclose(v(h11, -s, h22), 0.0, atol=1e-15)
    np.testing.assert_allclose(vp(h11, -s, h22), 0.0, atol=1e-7)
    # round-off past |ρ| = 1 is clipped
    np.testing.assert_allclose(v(h, h * (1 + 1e-12), h), h / 2, rtol=1e-15)


def test_relu_zero_variance_has_no_nans():
    act = Relu()
    h11, h12, h22 = jnp.asarray([0.0, 0.0, 1.0]), jnp.zeros(3), jnp.asarray([0.0, 1.0, 0.0])

    @jax.jit
    def values_and_grads(h11, h12, h22):
        grad = jax.vmap(jax.grad(lambda *h: act.dual(*h) + act.dual_deriv(*h), argnums=(0, 1, 2)))
        return act.dual(h11, h12, h22), act.dual_deriv(h11, h12, h22), grad(h11, h12, h22)

    v, vp, grads = values_and_grads(h11, h12, h22)
    np.testing.assert_array_equal(v, jnp.zeros(3))
    np.testing.assert_array_equal(vp, jnp.zeros(3))  # φ'(0) = 0
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    # along the diagonal V(h, h, h) = h/2, including the gradient at ρ = 1
    grad_diag = jax.jit(jax.grad(lambda h: act.dual(h, h, h)))(jnp.ones(()))
    np.testing.assert_allclose(grad_diag, 0.5, rtol=1e-14)


def test_linear_is_exact():
    act = Linear()
    h11, h12, h22 = (jnp.asarray(h) for h in random_covariances(5, seed=3))
    np.testing.assert_array_equal(act.dual(h11, h12, h22), h12)
    np.testing.assert_array_equal(act.dual_deriv(h11, h12, h22), jnp.ones_like(h12))


@pytest.mark.parametrize("act", ALL, ids=IDS)
def test_price_theorem(act):
    # Price's theorem: ∂E[φ(a)φ(b)]/∂h12 = E[φ'(a)φ'(b)] ties dual to dual_deriv. Closed forms
    # satisfy it to round-off, relu also at ρ = ±1. The derivative of the Gauss–Hermite rule is only
    # close to the rule for the derivative, and wrong at |ρ| = 1 (infinite d(cond. std)/dh12), so
    # |ρ| <= 0.9 there.
    closed_form = act.name in ("linear", "relu", "erf")
    max_abs_rho, tol = (1.0, 1e-8) if closed_form else (0.9, 1e-6)
    cov = random_covariances(8, seed=4, max_abs_rho=max_abs_rho)
    grad, vp = jax.jit(
        lambda *h: (jax.vmap(jax.grad(act.dual, argnums=1))(*h), act.dual_deriv(*h))
    )(*(jnp.asarray(h) for h in cov))
    np.testing.assert_allclose(grad, vp, rtol=0, atol=tol)


def random_psd(p: int, seed: int, dtype=jnp.float64):
    x = np.random.default_rng(seed).normal(size=(p, 5))
    return jnp.asarray(x @ x.T / 5, dtype=dtype)


@pytest.mark.parametrize("act", ALL, ids=IDS)
def test_kernel_map_is_the_symmetrised_elementwise_dual(act):
    h = random_psd(4, seed=5)
    d = jnp.diagonal(h)

    @jax.jit
    def maps(h):
        return (
            kernel_map(act, h),
            kernel_map_deriv(act, h),
            cross_kernel_map(act, d[:2], h[:2, 1:], d[1:]),
        )

    v, vp, cross = maps(h)
    hn = np.asarray(h)
    i, j = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    args = (hn[i, i], hn[i, j], hn[j, j])
    swapped = (hn[j, j], hn[i, j], hn[i, i])
    dual = jax.jit(lambda *h: (act.dual(*h), act.dual_deriv(*h)))
    (v1, vp1), (v2, vp2) = dual(*args), dual(*swapped)
    # kernel maps are symmetrised: the quadrature is symmetric only up to its error (~1e-9)
    np.testing.assert_allclose(v, 0.5 * (v1 + v2), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(vp, 0.5 * (vp1 + vp2), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(v, v.T)
    np.testing.assert_allclose(cross, v1[:2, 1:], rtol=1e-13)  # not symmetrised: rows a, columns b


@pytest.mark.parametrize("act", ALL, ids=IDS)
def test_kernel_map_float32_under_jit_and_vmap(act):
    hs = jnp.stack([random_psd(3, seed=s) for s in range(2)])
    v64, vp64 = jax.jit(lambda h: (kernel_map(act, h), kernel_map_deriv(act, h)))(hs)  # batch axis
    fn = eqx.filter_jit(jax.vmap(lambda h: (kernel_map(act, h), kernel_map_deriv(act, h))))
    v, vp = fn(hs.astype(jnp.float32))
    assert v.dtype == vp.dtype == jnp.float32
    assert v.shape == vp.shape == (2, 3, 3)
    np.testing.assert_allclose(v, v64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vp, vp64, rtol=1e-5, atol=1e-6)
