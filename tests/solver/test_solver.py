"""The depth solver on textbook SDEs against independent references (STYLE.md §10).

Closed forms (GBM, the exact AR(1) moments of Euler–Maruyama on OU), Diffrax's ``Euler`` on the same
increments, and explicit numpy loops; orders are slopes on nested grids of one fixed path.
"""

import inspect

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import pytest
from helpers import mean_se, slope

from nfd._results import RESULTS
from nfd.solver import (
    AbstractTerm,
    EulerMaruyama,
    SDETerm,
    brownian_increments,
    coarsen,
    solve_depth,
)

MU, SIGMA = 0.5, 0.75  # geometric Brownian motion dh = μ h dτ + σ h dW
THETA, SIGMA_OU = 1.5, 0.8  # Ornstein–Uhlenbeck dh = -θ h dτ + σ dW


def gbm() -> SDETerm:
    return SDETerm(lambda tau, h, args: MU * h, lambda tau, h, args: SIGMA * h)


class OU(AbstractTerm):
    """dh = -θ h dτ + σ dW, with θ and σ as arrays (swept values must not retrace)."""

    theta: jax.Array
    sigma: jax.Array

    def drift(self, tau, y, args):
        return -self.theta * y

    def noise(self, tau, y, args, dW):
        return self.sigma * dW


def ou() -> OU:
    return OU(jnp.asarray(THETA), jnp.asarray(SIGMA_OU))


class MatrixNoise(AbstractTerm):
    """dh = A_k tanh(h) dτ + β dW_k tanh(h) / sqrt(M): the random-matrix noise of §4.1."""

    beta: jax.Array

    def drift(self, tau, y, args):
        return args @ jnp.tanh(y)  # args = A_k, this step's (M, M) drift matrix

    def noise(self, tau, y, args, dW):
        return self.beta * dW @ jnp.tanh(y) / np.sqrt(y.shape[0])


def final_state(terms, h0, dWs):
    """The Euler–Maruyama state at τ = 1."""
    return solve_depth(terms, EulerMaruyama(), h0, dWs, save_all=False).ys[0]


def rms(x) -> float:
    return float(jnp.sqrt(jnp.mean(x**2)))


# --- increments ---


@pytest.mark.parametrize("dtype", [None, jnp.float32])
def test_brownian_increments_have_variance_dtau(dtype):
    num_steps, paths = 16, 2**14
    dWs = brownian_increments(num_steps, (paths,), key=jr.key(0), dtype=dtype)
    assert dWs.shape == (num_steps, paths)
    assert dWs.dtype == (jnp.zeros(()).dtype if dtype is None else dtype)
    # the sample variance of N(0, dτ) over E samples has standard error dτ sqrt(2 / (E - 1))
    var = np.asarray(dWs, np.float64).var(axis=1, ddof=1)
    se = np.sqrt(2.0 / (paths - 1)) / num_steps
    assert np.all(np.abs(var - 1.0 / num_steps) < 4 * se)


def test_coarsen_sums_consecutive_increments_of_one_path():
    dWs = brownian_increments(12, (5, 2), key=jr.key(1))
    coarse = coarsen(dWs, 3)
    assert coarse.shape == (4, 5, 2)
    np.testing.assert_allclose(coarse[1], dWs[3] + dWs[4] + dWs[5], rtol=1e-14)
    np.testing.assert_allclose(jnp.cumsum(coarse, 0), jnp.cumsum(dWs, 0)[2::3], atol=1e-14)
    pair = coarsen((dWs, dWs[:, 0]), 4)  # a pytree of increments coarsens leaf by leaf
    assert pair[0].shape == (3, 5, 2) and pair[1].shape == (3, 2)
    with pytest.raises(ValueError, match="not divisible by factor=5"):
        coarsen(dWs, 5)


# --- convergence orders ---


def test_euler_maruyama_strong_order_half_on_gbm():
    h0 = jnp.ones((4096, 2))
    k_fine = 2**10
    dWs = brownian_increments(k_fine, h0.shape, key=jr.key(0))  # one fine path, fixed seed
    exact = h0 * jnp.exp(MU - SIGMA**2 / 2 + SIGMA * dWs.sum(0))  # closed form at τ = 1
    ks = [2**j for j in range(2, 8)]  # nested grids, K = 4 ... 128
    errs = [rms(final_state(gbm(), h0, coarsen(dWs, k_fine // k)) - exact) for k in ks]
    assert abs(slope(ks, errs) + EulerMaruyama.strong_order) < 0.1


def test_euler_maruyama_weak_order_one_on_gbm():
    # E h(1) = h0 e^μ, and Euler–Maruyama has E h_K = h0 (1 + μ/K)^K exactly (independent,
    # mean-zero increments). The weak error E h_K - E h(1) is estimated by common random numbers,
    # mean(h_K - h(1)) on the same paths, whose standard error is far below the bias.
    paths, k_fine = 2**16, 16
    h0 = jnp.ones((paths,))
    dWs = brownian_increments(k_fine, h0.shape, key=jr.key(2))
    exact = h0 * jnp.exp(MU - SIGMA**2 / 2 + SIGMA * dWs.sum(0))
    ks = [2, 4, 8, 16]
    errs = []
    for k in ks:
        h_k = solve_depth(gbm(), EulerMaruyama(), h0, coarsen(dWs, k_fine // k)).ys[-1]
        err, se = mean_se(h_k - exact)
        bias = (1 + MU / k) ** k - np.exp(MU)  # the exact weak error of the scheme
        assert abs(err - bias) < 4 * se
        assert se < 0.1 * abs(bias)
        errs.append(err)
    assert abs(slope(ks, errs) + EulerMaruyama.weak_order) < 0.25


# --- Ornstein–Uhlenbeck: diffrax and exact moments ---


def test_ou_equals_diffrax_euler_on_the_same_increments():
    num_steps, paths = 32, 8
    h0 = jnp.linspace(-1.0, 1.0, paths)
    dWs = brownian_increments(num_steps, (paths,), key=jr.key(3))
    sol = solve_depth(ou(), EulerMaruyama(), h0, dWs)

    taus = jnp.arange(num_steps + 1) / num_steps
    path = jnp.concatenate([jnp.zeros((1, paths)), jnp.cumsum(dWs, axis=0)])  # W(τ_k)
    control = diffrax.LinearInterpolation(ts=taus, ys=path)
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, args: -THETA * y),
        diffrax.ControlTerm(
            lambda t, y, args: lx.DiagonalLinearOperator(SIGMA_OU * jnp.ones_like(y)), control
        ),
    )
    ref = diffrax.diffeqsolve(
        terms,
        diffrax.Euler(),
        t0=0.0,
        t1=1.0,
        dt0=None,
        y0=h0,
        stepsize_controller=diffrax.StepTo(ts=taus),
        saveat=diffrax.SaveAt(ts=taus),
    )
    np.testing.assert_allclose(sol.taus, taus, rtol=0, atol=1e-15)
    np.testing.assert_allclose(sol.ys, ref.ys, rtol=0, atol=1e-12)


def test_ou_moments_equal_the_exact_euler_ar1_moments():
    # h_{k+1} = (1 - θ dτ) h_k + σ dW_k is an AR(1): h_K ~ N(r^K h0, σ² dτ Σ_{j<K} r^{2j}), r = 1 - θ dτ
    num_steps, paths, h0 = 64, 2**15, 1.0
    dWs = brownian_increments(num_steps, (paths,), key=jr.key(4))
    h_k = solve_depth(ou(), EulerMaruyama(), jnp.full((paths,), h0), dWs).ys[-1]
    dtau = 1.0 / num_steps
    r = 1.0 - THETA * dtau
    mean = r**num_steps * h0
    var = SIGMA_OU**2 * dtau * sum(r ** (2 * j) for j in range(num_steps))
    h_k = np.asarray(h_k)
    assert abs(h_k.mean() - mean) / np.sqrt(var / paths) < 4
    assert abs(h_k.var(ddof=1) - var) / (var * np.sqrt(2.0 / (paths - 1))) < 4  # Gaussian


def test_gradient_through_the_checkpointed_scan():
    num_steps = 16
    dWs = brownian_increments(num_steps, (3,), key=jr.key(5))

    def final(h0):
        return solve_depth(ou(), EulerMaruyama(), h0, dWs, save_all=False).ys[-1].sum()

    grad = jax.grad(final)(jnp.ones(3))  # d h_K / d h0 = (1 - θ dτ)^K for each path
    np.testing.assert_allclose(grad, (1 - THETA / num_steps) ** num_steps, rtol=1e-13)


# --- reverse mode, pytree states, matrix noise ---


def test_reverse_mode_equals_numpy_backward_loop():
    # g_k = g_{k+1} + (a_k g_{k+1} + τ_{k+1}) dτ + b dW_k, from g_K = g_end, with per-step a_k
    num_steps, n, b = 8, 5, 0.3
    key_a, key_w, key_g = jr.split(jr.key(6), 3)
    a = jr.normal(key_a, (num_steps, n))
    dWs = brownian_increments(num_steps, (n,), key=key_w)
    g_end = jr.normal(key_g, (n,))
    term = SDETerm(lambda tau, g, a_k: a_k * g + tau, lambda tau, g, a_k: b)
    sol = solve_depth(term, EulerMaruyama(), g_end, dWs, a, reverse=True)

    dtau = 1.0 / num_steps
    a, dWs = np.asarray(a), np.asarray(dWs)
    gs = [None] * num_steps + [np.asarray(g_end)]
    for k in reversed(range(num_steps)):
        tau = (k + 1) / num_steps
        gs[k] = gs[k + 1] + (a[k] * gs[k + 1] + tau) * dtau + b * dWs[k]
    np.testing.assert_allclose(sol.taus, np.arange(num_steps + 1) / num_steps, atol=1e-15)
    np.testing.assert_allclose(sol.ys, np.stack(gs), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sol.ys[-1], g_end)

    last = solve_depth(term, EulerMaruyama(), g_end, dWs, a, reverse=True, save_all=False)
    assert last.ys.shape == (1, n)
    np.testing.assert_allclose(last.taus, [0.0])
    np.testing.assert_allclose(last.ys[0], gs[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_pytree_state_equals_numpy_loop(reverse):
    # a noisy damped oscillator on a tuple state: dx = v dτ, dv = (-x - γ v) dτ + σ dW (diagonal)
    num_steps, n, gamma, sigma = 8, 4, 0.5, 0.7
    key_x, key_v, key_w = jr.split(jr.key(7), 3)
    y0 = (jr.normal(key_x, (n,)), jr.normal(key_v, (n, 2)))
    dWs = (jnp.zeros((num_steps, n)), brownian_increments(num_steps, (n, 2), key=key_w))
    term = SDETerm(
        lambda tau, y, args: (y[1].sum(1), -y[0][:, None] - gamma * y[1]),
        lambda tau, y, args: (0.0, sigma),
    )
    sol = solve_depth(term, EulerMaruyama(), y0, dWs, reverse=reverse)

    dtau = 1.0 / num_steps
    dW = np.asarray(dWs[1])
    x, v = np.asarray(y0[0]), np.asarray(y0[1])
    xs, vs = {0: x, num_steps: x}, {0: v, num_steps: v}
    steps = reversed(range(num_steps)) if reverse else range(num_steps)
    for k in steps:
        x, v = x + v.sum(1) * dtau, v + (-x[:, None] - gamma * v) * dtau + sigma * dW[k]
        xs[k if reverse else k + 1], vs[k if reverse else k + 1] = x, v
    assert isinstance(sol.ys, tuple) and sol.ys[0].shape == (num_steps + 1, n)
    np.testing.assert_allclose(
        sol.ys[0], np.stack([xs[k] for k in range(num_steps + 1)]), atol=1e-12
    )
    np.testing.assert_allclose(
        sol.ys[1], np.stack([vs[k] for k in range(num_steps + 1)]), atol=1e-12
    )


def test_matrix_noise_term_equals_numpy_loop():
    # h_{k+1} = h_k + A_k tanh(h_k) dτ + β dW_k tanh(h_k) / sqrt(M), dW_k an (M, M) increment
    num_steps, m, p, beta = 8, 6, 3, 0.7
    key_h, key_a, key_w = jr.split(jr.key(8), 3)
    h0 = jr.normal(key_h, (m, p))
    a = jr.normal(key_a, (num_steps, m, m)) / m
    dWs = brownian_increments(num_steps, (m, m), key=key_w)
    sol = solve_depth(MatrixNoise(jnp.asarray(beta)), EulerMaruyama(), h0, dWs, a)

    dtau = 1.0 / num_steps
    a, dWs = np.asarray(a), np.asarray(dWs)
    hs = [np.asarray(h0)]
    for k in range(num_steps):
        h = hs[-1]
        hs.append(h + a[k] @ np.tanh(h) * dtau + beta * dWs[k] @ np.tanh(h) / np.sqrt(m))
    np.testing.assert_allclose(sol.ys, np.stack(hs), rtol=0, atol=1e-12)


# --- dtypes, errors, retracing ---


def test_float32_state_stays_float32():
    num_steps, n = 16, 32
    dWs = brownian_increments(num_steps, (n,), key=jr.key(9), dtype=jnp.float32)
    h0 = jnp.ones((n,), jnp.float32)
    sol32 = solve_depth(gbm(), EulerMaruyama(), h0, dWs)
    assert sol32.ys.dtype == jnp.float32 and sol32.taus.dtype == jnp.float32
    sol64 = solve_depth(gbm(), EulerMaruyama(), h0.astype(jnp.float64), dWs.astype(jnp.float64))
    np.testing.assert_allclose(sol32.ys, sol64.ys, rtol=1e-5)


def test_nonfinite_state_is_reported_or_raised():
    num_steps = 4
    dWs = jnp.zeros((num_steps, 2))
    exploding = SDETerm(lambda tau, h, args: jnp.exp(h), lambda tau, h, args: 1.0)
    h0 = jnp.full((2,), 5.0)  # 5 -> 42 -> 4e17 -> inf
    sol = solve_depth(exploding, EulerMaruyama(), h0, dWs, throw=False)
    assert sol.result == RESULTS.nonfinite
    assert solve_depth(gbm(), EulerMaruyama(), h0, dWs).result == RESULTS.successful
    # vmapped sweep: each member reports its own code
    swept = jax.vmap(lambda h: solve_depth(exploding, EulerMaruyama(), h, dWs, throw=False))(
        jnp.stack([h0, -h0])
    )
    np.testing.assert_array_equal(swept.result == RESULTS.nonfinite, [True, False])
    with pytest.raises(eqx.EquinoxRuntimeError, match="Non-finite"):
        jax.block_until_ready(solve_depth(exploding, EulerMaruyama(), h0, dWs))
    with pytest.raises(eqx.EquinoxRuntimeError, match="Non-finite"):
        jax.block_until_ready(solve_depth(exploding, EulerMaruyama(), h0, dWs, save_all=False))


def _bad_drift():
    return SDETerm(lambda tau, h, args: h[:2], lambda tau, h, args: 1.0)


@pytest.mark.parametrize(
    ("terms", "y0", "dWs", "args", "match"),
    [
        (
            gbm(),
            (jnp.ones(3),) * 2,
            (jnp.ones((4, 3)), jnp.ones((5, 3))),
            None,
            "share the leading",
        ),
        (gbm(), jnp.ones(3), jnp.ones((4, 3)), jnp.ones((5, 3)), r"args.*K = 4"),
        (gbm(), jnp.ones(3), jnp.ones((4, 2)), None, "diagonal noise"),
        (_bad_drift(), jnp.ones(3), jnp.ones((4, 3)), None, "terms.drift"),
        (gbm(), jnp.ones(3), jnp.ones((0, 3)), None, "K >= 1"),
    ],
    ids=["dWs-leading-axes", "args-leading-axis", "sde-dW-shape", "drift-shape", "no-steps"],
)
def test_bad_shapes_raise_at_trace_time(terms, y0, dWs, args, match):
    with pytest.raises(ValueError, match=match):
        solve_depth(terms, EulerMaruyama(), y0, dWs, args)


def test_bad_increment_arguments_raise():
    with pytest.raises(ValueError, match="num_steps >= 1"):
        brownian_increments(0, (3,), key=jr.key(0))
    with pytest.raises(ValueError, match="factor >= 1"):
        coarsen(jnp.ones((4, 3)), 0)


def test_new_increments_and_coefficients_do_not_retrace():
    solve = eqx.filter_jit(eqx.debug.assert_max_traces(inspect.unwrap(solve_depth), max_traces=1))
    num_steps, n = 8, 4
    for seed in range(3):
        key_w, key_h = jr.split(jr.key(seed))
        dWs = brownian_increments(num_steps, (n,), key=key_w)
        term = OU(jnp.asarray(THETA + seed), jnp.asarray(SIGMA_OU))  # swept values are arrays
        jax.block_until_ready(solve(term, EulerMaruyama(), jr.normal(key_h, (n,)), dWs))
