"""The plain network (``model.residual = false``) against independent references: a hand-written
numpy forward, a hand-written backward through ``W + E``, ``c_φ`` by numerical integration, the
Jacobian NTK, and its config errors."""

import pathlib

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import unit_inputs
from scipy import integrate

import nfd
from nfd.cli import main
from nfd.model._resnet import variance_gain
from nfd.nn import Erf, Gelu, Linear, Relu, Tanh

BLOCKS = {"one_layer": nfd.OneLayer(), "two_layer": nfd.TwoLayer()}


def _np(act):
    return (
        lambda a: np.asarray(act(jnp.asarray(a))),  # noqa: E731
        lambda a: np.asarray(act.deriv(jnp.asarray(a))),  # noqa: E731
    )


def _gain_quad(act) -> float:
    """``E[φ(z)²]^{-1/2}`` by adaptive quadrature against the standard normal density."""
    phi = _np(act)[0]
    dens = lambda z: float(phi(np.array(z)) ** 2) * np.exp(-(z**2) / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    val, _ = integrate.quad(dens, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)
    return val**-0.5


@pytest.mark.parametrize("act", [Linear(), Relu(), Erf(), Tanh(), Gelu()])
def test_gain_matches_numerical_integration(act):
    # quad is accurate to ~1e-12 here; tanh and GELU use the package's Gauss–Hermite rule, whose
    # error on these smooth integrands is far below 1e-8
    assert abs(float(variance_gain(act)) - _gain_quad(act)) < 1e-8
    if isinstance(act, Relu):
        assert abs(float(variance_gain(act)) - np.sqrt(2.0)) < 1e-14


def _plain(block: str, act, backward=None, *, depth=3, width=24):
    param = nfd.MuP(beta=1.3, gamma0=0.7, sigma_in=0.8, sigma_out=1.2)
    return nfd.ResNet(
        5,
        2,
        width,
        depth,
        param=param,
        activation=act,
        block=BLOCKS[block],
        backward=backward or nfd.ReusedWeights(),
        residual=False,
        key=jr.key(3),
    )


def _numpy_plain(model: nfd.ResNet, x, offsets):
    """The plain recursion written out, and ``∂f^a/∂x`` by the explicit backward pass through
    ``W + E`` (``offsets``: the ``E``'s, zeros for reused weights). Returns ``f``, ``h``, ``J``."""
    U, v = np.asarray(model.U), np.asarray(model.v)
    Ws = [np.asarray(w) for w in model.blocks]
    p, n, L, D = model.param, model.width, model.depth, model.in_dim
    phi, dphi = _np(model.activation)
    c = _gain_quad(model.activation) * float(p.beta)  # MuP: b = β, times c_φ
    two = model.block.two_layer
    hs, zs = [float(p.sigma_in) / np.sqrt(D) * U @ x], []
    for l in range(L):
        a = phi(hs[-1])
        if two:
            zs.append(Ws[0][l] @ a / np.sqrt(n))
            a = phi(zs[-1])
        hs.append(c * Ws[-1][l] @ a / np.sqrt(n))
    f = v.T @ phi(hs[-1]) / (float(p.gamma0) * n)
    dh = dphi(hs[L])[None] * v.T / (float(p.gamma0) * n)  # (C, N): ∂f/∂h_L
    for l in reversed(range(L)):
        Wb = Ws[-1][l] + offsets[-1][l]
        if two:
            dz = dphi(zs[l])[None] * (c * dh @ Wb / np.sqrt(n))
            dh = dphi(hs[l])[None] * (dz @ (Ws[0][l] + offsets[0][l]) / np.sqrt(n))
        else:
            dh = dphi(hs[l])[None] * (c * dh @ Wb / np.sqrt(n))
    jac = float(p.sigma_in) / np.sqrt(D) * dh @ U
    return f, np.stack(hs), jac


@pytest.mark.parametrize("block", ["one_layer", "two_layer"])
@pytest.mark.parametrize("act", [Relu(), Tanh()])
def test_plain_forward_matches_numpy_loop(block, act):
    model = _plain(block, act)
    x = np.asarray(unit_inputs(1, 5, key=jr.key(1))[0])
    f, hs, _ = _numpy_plain(model, x, [np.zeros_like(w) for w in model.blocks])
    fields = model.fields(jnp.asarray(x))
    # ReLU: c_φ = √2 exactly, float64 round-off over a few N = 24 matmuls (1e-12 relative); tanh:
    # the package's Gauss–Hermite c_φ differs from quad's by ~1e-8, compounded over L = 3 layers
    rtol = 1e-12 if isinstance(act, Relu) else 1e-7
    np.testing.assert_allclose(fields.h, hs, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(model(jnp.asarray(x)), f, rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("block", ["one_layer", "two_layer"])
def test_decoupled_plain_input_gradient_goes_through_w_plus_e(block):
    model = _plain(block, Tanh(), nfd.DecoupledWeights())
    assert model.offsets is not None
    x = np.asarray(unit_inputs(1, 5, key=jr.key(2))[0])
    offsets = [np.asarray(e) for e in model.offsets]
    f, _, jac = _numpy_plain(model, x, offsets)
    got = jax.jacrev(model)(jnp.asarray(x))
    # tanh's Gauss–Hermite c_φ vs quad's (~1e-8, compounded over 3 layers), as above
    np.testing.assert_allclose(model(jnp.asarray(x)), f, rtol=1e-7, atol=1e-14)
    # (absolute in units of the largest entry: a small entry is a sum of cancelling terms)
    np.testing.assert_allclose(got, jac, rtol=0, atol=1e-7 * np.abs(jac).max())
    # and the reused backward differs (the offsets are not zero): the test can fail
    assert np.max(np.abs(jax.jacrev(model.as_reused())(jnp.asarray(x)) - jac)) > 1e-3


def test_ntk_weights_carry_the_gain():
    model = _plain("two_layer", Relu())
    w, w0 = model.ntk_weights(), model.param.ntk_weights(model.depth, model.block)
    assert abs(float(w["W2"] / w0["W2"]) - 2.0) < 1e-14  # c_φ² = 2 for ReLU
    assert float(w["W1"]) == float(w0["W1"]) and float(w["U"]) == float(w0["U"])


def _write(tmp_path, text):
    path = pathlib.Path(tmp_path) / "c.toml"
    path.write_text(text)
    return path


MINIMAL = '[task]\nname = "teacher_student"\nn_train = 4\nn_test = 2\n'


@pytest.mark.parametrize(
    "text,start",
    [
        (MINIMAL + "[model]\nresidual = false\n", "model.residual: false (the plain network) "),
        (
            'kind = "limit"\n' + MINIMAL + '[model]\nresidual = false\nparam = "mup"\n',
            "model.residual: false (the plain network) has no limit solver",
        ),
        (
            'kind = "demo"\n' + MINIMAL + '[model]\nresidual = false\nparam = "mup"\n',
            "model.residual: false (the plain network) has no limit solver",
        ),
    ],
)
def test_plain_config_errors(tmp_path, capsys, text, start):
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, text)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: " + start), err
    assert not out.exists()


def test_plain_config_builds_the_plain_network():
    cfg = nfd.config.from_dict(
        {
            "task": {"name": "teacher_student", "n_train": 4, "n_test": 2},
            "model": {"residual": False, "param": "mup", "width": 8, "depth": 2},
        }
    )
    net = nfd.config.build_network(cfg)
    assert net.residual is False
    task = nfd.config.build_task(cfg, key=jr.key(0))
    model = net.draw(nfd.dynamics.Points.from_task(task), key=jr.key(0))
    assert model.residual is False and model.offsets is None
