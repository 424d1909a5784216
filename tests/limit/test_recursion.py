"""The t = 0 kernel recursions (docs/math §2; acceptance tests T1, T2a, T3) against oracles."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfd.limit import InitKernels, continuum_kernels, init_kernels
from nfd.nn import Erf, Gelu, Linear, Relu, Tanh
from nfd.param import CompleteP, DepthMuP, MuP, OneLayer, TwoLayer

BLOCKS = {"one_layer": OneLayer(), "two_layer": TwoLayer()}

UNIT = jnp.ones((1, 1))  # one input with K^x = |x|²/D = 1


def unit_norm_gram(p: int, d: int, seed: int) -> np.ndarray:
    """``K^x = x·x'/D`` of ``p`` random inputs with ``|x|² = D`` (§0)."""
    x = np.random.default_rng(seed).normal(size=(p, d))
    x *= math.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T / d


# ----------------------------------------------------------------------------------------------
# Independent float64 reference: plain numpy and python loops over entries and layers (§2).


def np_duals(name: str, h11: float, h12: float, h22: float) -> tuple[float, float]:
    """``(V, V')`` for one entry, written out from §2 with ``math``."""
    if name == "relu":
        rho = min(max(h12 / math.sqrt(h11 * h22), -1.0), 1.0)
        theta = math.acos(rho)
        v = math.sqrt(h11 * h22) * (math.sin(theta) + (math.pi - theta) * rho) / (2 * math.pi)
        return v, (math.pi - theta) / (2 * math.pi)
    if name == "erf":
        d = (1 + 2 * h11) * (1 + 2 * h22)
        return (2 / math.pi) * math.asin(2 * h12 / math.sqrt(d)), (4 / math.pi) / math.sqrt(
            d - 4 * h12**2
        )
    raise ValueError(name)


def np_maps(name: str, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = h.shape[0]
    v, vp = np.empty((p, p)), np.empty((p, p))
    for i in range(p):
        for j in range(p):
            v[i, j], vp[i, j] = np_duals(name, h[i, i], h[i, j], h[j, j])
    return v, vp


def np_reference(name, kx, depth, block, sigma_in, sigma_out, b2, m):
    """``H_L, G_0, Θ, Θ̃`` by the recursions of §2 with branch² ``b2`` and multipliers ``m``."""
    hs, zs = [sigma_in**2 * kx], []
    for _ in range(depth):
        h = hs[-1]
        v, _ = np_maps(name, h)
        if block == "one_layer":
            hs.append(h + b2 * v)
        else:
            zs.append(v)
            vz, _ = np_maps(name, v)
            hs.append(h + b2 * vz)
    v_last, vp_last = np_maps(name, hs[-1])
    gs = [None] * (depth + 1)
    gs[depth] = sigma_out**2 * vp_last
    theta_w = np.zeros_like(kx)
    theta_w1 = np.zeros_like(kx)
    theta_w2 = np.zeros_like(kx)
    sum_v = np.zeros_like(kx)
    sum_vz = np.zeros_like(kx)
    for k in reversed(range(depth)):
        v, vp = np_maps(name, hs[k])
        if block == "one_layer":
            gs[k] = gs[k + 1] * (1 + b2 * vp)
            theta_w += b2 * gs[k + 1] * v
            sum_v += v
        else:
            vz, vpz = np_maps(name, zs[k])
            gs[k] = gs[k + 1] * (1 + b2 * vp * vpz)
            theta_w2 += b2 * gs[k + 1] * vz
            theta_w1 += b2 * vpz * gs[k + 1] * v  # g^z = b φ'(z) ⊙ W2ᵀg/√n, times φ(h)
            sum_vz += vz
    u = m["U"] * sigma_in**2 * kx
    cross = gs[depth]  # decoupled: g and g̃ share only v
    if block == "one_layer":
        theta = u * gs[0] + m["W"] * theta_w + m["v"] * v_last
        theta_dec = (u + m["W"] * b2 * sum_v) * cross + m["v"] * v_last
    else:
        theta = u * gs[0] + m["W1"] * theta_w1 + m["W2"] * theta_w2 + m["v"] * v_last
        theta_dec = u * cross + m["W2"] * b2 * sum_vz * cross + m["v"] * v_last
    return hs[-1], gs[0], theta, theta_dec


# The branch² and multipliers are written here from §1.3 / the parameterization table, not read
# from the parameterization object, so the test checks that `init_kernels` reads them correctly.
CASES = [
    # (param, depth, block, b², m)
    ("depth_mup", 4, "one_layer", 1.3**2 / 4, {"U": 1, "W": 1, "v": 1}),
    ("depth_mup_a", 4, "two_layer", 1.3**2 / 4, {"U": 1, "W1": 4**0.5, "W2": 1, "v": 1}),
    ("completep", 3, "one_layer", 1.3**2 / 9, {"U": 1, "W": 3, "v": 1}),
    ("mup_frozen_u", 3, "two_layer", 1.3**2, {"U": 0, "W1": 1, "W2": 1, "v": 1}),
]
PARAMS = {
    "depth_mup": DepthMuP(beta=1.3, sigma_in=0.8, sigma_out=1.2),
    "depth_mup_a": DepthMuP(beta=1.3, sigma_in=0.8, sigma_out=1.2, first_layer_lr_exponent=0.5),
    "completep": CompleteP(beta=1.3, sigma_in=0.8, sigma_out=1.2),
    "mup_frozen_u": MuP(beta=1.3, sigma_in=0.8, sigma_out=1.2, train_input=False),
}


@pytest.mark.parametrize("act", [Relu(), Erf()], ids=["relu", "erf"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] + "-" + c[2] for c in CASES])
def test_full_kernels_match_numpy_reference(case, act):
    pname, depth, block, b2, m = case
    kx = unit_norm_gram(4, 6, seed=0)
    out = init_kernels(PARAMS[pname], act, jnp.asarray(kx), depth, BLOCKS[block])
    h_last, g0, theta, theta_dec = np_reference(act.name, kx, depth, block, 0.8, 1.2, b2, m)
    np.testing.assert_allclose(out.H[-1], h_last, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.G[0], g0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.Theta, theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.Theta_decoupled, theta_dec, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.Theta, sum(out.Theta_parts.values()), rtol=1e-14)
    assert sorted(out.Theta_parts) == sorted(m)
    assert out.H.shape == out.G.shape == out.Phi.shape == (depth + 1, 4, 4)
    if block == "two_layer":
        assert out.Z is not None and out.Z.shape == (depth, 4, 4)
    else:
        assert out.Z is None


@functools.cache
def relu_kernels(num_steps: int) -> InitKernels:
    """Default depth-muP ReLU kernels of three unit-norm inputs, shared by the depth tests."""
    return init_kernels(DepthMuP(), Relu(), jnp.asarray(unit_norm_gram(3, 6, seed=2)), num_steps)


@pytest.mark.parametrize("depth", [1, 4, 16, 64])
def test_relu_diagonal_closed_forms(depth):
    # T1, T2a: H_L(x, x) = q^L and Θ(x, x) = q^L + q^{L-1}/4 with q = 1 + 1/(2L), |x|² = D.
    out = relu_kernels(depth)
    q = 1 + 1 / (2 * depth)
    np.testing.assert_allclose(jnp.diagonal(out.H[-1]), q**depth, rtol=0, atol=1e-12)
    theta = jnp.diagonal(out.Theta)
    np.testing.assert_allclose(theta, q**depth + 0.25 * q ** (depth - 1), rtol=0, atol=1e-10)
    table = {1: 1.7500, 4: 1.9578, 16: 2.0328, 64: 2.0537}  # §2 table
    np.testing.assert_allclose(theta, table[depth], rtol=0, atol=1e-4)
    if depth == 4:
        np.testing.assert_allclose(out.H[-1, 0, 0], 1.6018, rtol=0, atol=1e-4)


@pytest.mark.parametrize("depth", [1, 4, 16, 64])
def test_linear_ntk_and_decoupled_ratio(depth):
    # T3: Θ(0) = (q^{L-1} + 2q^L) K^x and Θ̃/Θ = 2q/(1 + 2q), q = 1 + 1/L, on full P×P matrices.
    kx = jnp.asarray(unit_norm_gram(4, 6, seed=1))
    out = init_kernels(DepthMuP(), Linear(), kx, depth)
    q = 1 + 1 / depth
    np.testing.assert_allclose(out.Theta, (q ** (depth - 1) + 2 * q**depth) * kx, rtol=1e-12)
    ratio = float(jnp.trace(out.Theta_decoupled) / jnp.trace(out.Theta))
    np.testing.assert_allclose(ratio, 2 * q / (1 + 2 * q), rtol=1e-12)
    table = {1: 0.8000, 4: 0.7143, 16: 0.6800, 64: 0.6701}
    np.testing.assert_allclose(ratio, table[depth], rtol=0, atol=1e-4)


def _slope(ks, errs) -> float:
    return float(np.polyfit(np.log(ks), np.log(errs), 1)[0])


def test_continuum_error_is_first_order_in_depth():
    # T1/T2a: Euler error O(1/K) against K = 1024, and approach to (5/4)e^{1/2} for the ReLU NTK.
    ks = [4, 8, 16, 32, 64]
    ref = relu_kernels(1024)
    err_theta = [abs(float(relu_kernels(k).Theta[0, 0] - ref.Theta[0, 0])) for k in ks]
    err_h = [float(jnp.max(jnp.abs(relu_kernels(k).H[-1] - ref.H[-1]))) for k in ks]  # full P×P
    assert abs(_slope(ks, err_theta) + 1) < 0.1
    assert abs(_slope(ks, err_h) + 1) < 0.1
    exact = 1.25 * math.exp(0.5)
    err_exact = [abs(float(relu_kernels(k).Theta[0, 0]) - exact) for k in ks]
    assert abs(_slope(ks, err_exact) + 1) < 0.1
    np.testing.assert_allclose(float(ref.Theta[0, 0]), exact, rtol=0, atol=1e-3)  # ≈ 0.46 / K


@pytest.mark.parametrize(
    "act, block", [(Tanh(), "one_layer"), (Gelu(), "two_layer")], ids=["tanh", "gelu-two_layer"]
)
def test_quadrature_activations_give_symmetric_psd_kernels(act, block):
    kx = jnp.asarray(unit_norm_gram(3, 6, seed=3))
    out = init_kernels(DepthMuP(), act, kx, 8, BLOCKS[block])
    for mat in (out.H[-1], out.G[0], out.Theta):
        np.testing.assert_array_equal(mat, mat.T)
        assert float(jnp.min(jnp.linalg.eigvalsh(mat))) > 0


def test_jit_vmap_float32_and_errors():
    kxs = jnp.stack([jnp.asarray(unit_norm_gram(2, 6, seed=s)) for s in range(3)])
    batched = jax.vmap(lambda kx: init_kernels(DepthMuP(), Relu(), kx, 4).Theta)(kxs)
    single = init_kernels(DepthMuP(), Relu(), kxs[1], 4).Theta
    np.testing.assert_allclose(batched[1], single, rtol=1e-14)
    out32 = init_kernels(DepthMuP(), Relu(), kxs[1].astype(jnp.float32), 4)
    assert isinstance(out32, InitKernels)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(out32))
    np.testing.assert_allclose(out32.Theta, single, rtol=1e-5)
    with pytest.raises(ValueError, match="layer_steps"):
        init_kernels(DepthMuP(), Relu(), kxs[0], 0)
    # TypeError: under the jaxtyping import hook the "P P" annotation rejects it first
    with pytest.raises((ValueError, TypeError), match="square|P P"):
        init_kernels(DepthMuP(), Relu(), jnp.ones((2, 3)), 4)
    with pytest.raises((ValueError, TypeError), match="block"):
        init_kernels(DepthMuP(), Relu(), kxs[0], 4, "three_layer")  # type: ignore[arg-type]


def test_zero_input_is_finite():
    out = init_kernels(DepthMuP(), Relu(), jnp.zeros((2, 2)), 4)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(out))
    np.testing.assert_array_equal(out.Theta, jnp.zeros((2, 2)))  # φ = φ' = 0 at h = 0


@pytest.mark.parametrize("beta, sigma_in, sigma_out", [(1.0, 1.0, 1.0), (1.3, 0.8, 1.2)])
def test_continuum_kernels_match_closed_forms(beta, sigma_in, sigma_out):
    """Spec §2 continuum by Diffrax against its closed forms. Linear: H(1) = σ_in² e^{β²} K^x,
    Θ = σ_in² e^{β²} (σ_out² (1 + β²) + 1) K^x, Θ̃ = σ_in² e^{β²} (σ_out² + 1) K^x (so Θ̃/Θ → 2/(2+β²)
    at σ = 1, docs/math's 0.6667); ReLU at β = σ = 1, |x|² = D: H(1)_μμ = e^{1/2},
    Θ_μμ = (5/4) e^{1/2} = 2.0609."""
    kx = jnp.asarray(unit_norm_gram(4, 6, seed=3))
    param = DepthMuP(beta=beta, sigma_in=sigma_in, sigma_out=sigma_out)
    lin = continuum_kernels(param, Linear(), kx)
    grow = sigma_in**2 * math.exp(beta**2)
    np.testing.assert_allclose(lin.H1, grow * kx, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lin.Theta, grow * (sigma_out**2 * (1 + beta**2) + 1) * kx, rtol=1e-9)
    np.testing.assert_allclose(lin.Theta_decoupled, grow * (sigma_out**2 + 1) * kx, rtol=1e-9)
    if beta == 1.0:
        relu = continuum_kernels(param, Relu(), kx)
        np.testing.assert_allclose(jnp.diagonal(relu.H1), math.exp(0.5), rtol=1e-9)
        np.testing.assert_allclose(jnp.diagonal(relu.Theta), 1.25 * math.exp(0.5), rtol=1e-9)
        np.testing.assert_allclose(jnp.diagonal(relu.Theta), 2.0609, atol=1e-4)  # §2 table


@pytest.mark.parametrize("act", [Tanh(), Erf()], ids=["tanh", "erf"])
def test_depth_recursion_approaches_the_continuum_at_first_order(act):
    """T1: the K-step recursion is the Euler scheme of the continuum, so its error against the
    Diffrax solution (no closed form for tanh, erf) has slope −1 ± 0.1 in K = 4 … 64, on the full
    P×P matrices H(1), G(0), Θ and Θ̃ (β, σ ≠ 1)."""
    kx = jnp.asarray(unit_norm_gram(3, 5, seed=4))
    param = DepthMuP(beta=1.2, sigma_in=0.9, sigma_out=1.1)
    ref = continuum_kernels(param, act, kx)
    ks = [4, 8, 16, 32, 64]
    outs = [init_kernels(param, act, kx, k) for k in ks]
    for name, pick in (
        ("H1", lambda o: o.H[-1]),
        ("G0", lambda o: o.G[0]),
        ("Theta", lambda o: o.Theta),
        ("Theta_decoupled", lambda o: o.Theta_decoupled),
    ):
        errs = [float(jnp.max(jnp.abs(pick(o) - getattr(ref, name)))) for o in outs]
        assert abs(_slope(ks, errs) + 1) < 0.1, (name, errs)


def test_continuum_needs_depth_mup():
    with pytest.raises(ValueError, match="depth_mup"):
        continuum_kernels(CompleteP(), Relu(), jnp.eye(2))
