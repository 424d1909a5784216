"""The finite ResNet against independent references: a hand-written numpy forward/backward."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import unit_inputs

import nfd
from nfd.nn import Erf, Relu, Tanh

BLOCKS = {"one_layer": nfd.OneLayer(), "two_layer": nfd.TwoLayer()}


def numpy_fields(model: nfd.ResNet, x, decoupled: bool):
    """Spec §1.1–§1.2 written out in numpy: h_ℓ, and g_ℓ = γ0 n ∂f/∂h_ℓ by the explicit recursion."""
    U, v = np.asarray(model.U), np.asarray(model.v)
    Ws = [np.asarray(w) for w in model.blocks]
    Es = [np.asarray(e) for e in model.offsets] if decoupled else [np.zeros_like(w) for w in Ws]
    p, act = model.param, model.activation
    n, L, D = model.width, model.depth, model.in_dim
    b = p.beta / np.sqrt(L) if isinstance(p, nfd.DepthMuP) else p.branch_multiplier(L)
    phi = lambda a: np.asarray(act(jnp.asarray(a)))  # noqa: E731
    dphi = lambda a: np.asarray(act.deriv(jnp.asarray(a)))  # noqa: E731
    x = np.asarray(x)
    hs, zs = [p.sigma_in / np.sqrt(D) * U @ x], []
    for l in range(L):
        h = hs[-1]
        if not model.block.two_layer:
            hs.append(h + b * Ws[0][l] @ phi(h) / np.sqrt(n))
        else:
            z = Ws[0][l] @ phi(h) / np.sqrt(n)
            zs.append(z)
            hs.append(h + b * Ws[1][l] @ phi(z) / np.sqrt(n))
    f = v.T @ phi(hs[-1]) / (p.gamma0 * n)
    g = [None] * (L + 1)
    gz = [None] * L
    g[L] = dphi(hs[L])[None, :] * v.T  # (C, n)
    for l in reversed(range(L)):
        if not model.block.two_layer:
            Wb = Ws[0][l] + Es[0][l]
            g[l] = g[l + 1] + b * dphi(hs[l])[None] * (g[l + 1] @ Wb) / np.sqrt(n)
        else:
            W2b, W1b = Ws[1][l] + Es[1][l], Ws[0][l] + Es[0][l]
            gz[l] = b * dphi(zs[l])[None] * (g[l + 1] @ W2b) / np.sqrt(n)
            g[l] = g[l + 1] + dphi(hs[l])[None] * (gz[l] @ W1b) / np.sqrt(n)
    return f, np.stack(hs), np.stack(g, axis=1), (np.stack(gz, axis=1) if zs else None)


@pytest.mark.parametrize("block", ["one_layer", "two_layer"])
@pytest.mark.parametrize("backward", [nfd.ReusedWeights(), nfd.DecoupledWeights()])
@pytest.mark.parametrize("act", [Relu(), Tanh(), Erf()])
def test_fields_match_explicit_recursion(block, backward, act):
    param = nfd.DepthMuP(beta=1.3, gamma0=0.7, sigma_in=0.8, sigma_out=1.2)
    model = nfd.ResNet(
        5,
        3,
        24,
        4,
        param=param,
        activation=act,
        block=BLOCKS[block],
        backward=backward,
        key=jr.key(1),
    )
    x = unit_inputs(1, 5, key=jr.key(2))[0]
    fields = model.fields(x)
    f, hs, g, gz = numpy_fields(model, x, decoupled=backward.decoupled)
    np.testing.assert_allclose(fields.f, f, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fields.h, hs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fields.g, g, rtol=1e-11, atol=1e-12)
    if block == "two_layer":
        np.testing.assert_allclose(fields.gz, gz, rtol=1e-11, atol=1e-12)


def test_parameterizations_branch_and_rates():
    """Spec §1.3: depth-muP SGD rates are η0γ0²n (flat in L); Adam block rate η0/sqrt(nL)."""
    p = nfd.DepthMuP(gamma0=0.5, sigma_in=2.0)
    assert p.branch_multiplier(16) == pytest.approx(0.25)
    sgd = p.sgd_rates(0.1, 64, 16, nfd.TwoLayer())
    assert sgd == pytest.approx({"U": 1.6, "W1": 1.6, "W2": 1.6, "v": 1.6})
    adam = p.adam_rates(0.1, 64, 9, 16)
    assert adam == pytest.approx({"U": 0.1 / (2.0 * 3.0), "W": 0.1 / 32.0, "v": 0.05})
    q = nfd.DepthMuP(first_layer_lr_exponent=0.5)
    assert q.sgd_multipliers(16, nfd.TwoLayer())["W1"] == pytest.approx(4.0)
    assert nfd.CompleteP().effective_branch_sq(8) == pytest.approx(1 / 8)
    assert nfd.MuP(beta=0.5).effective_branch_sq(8) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="first_layer_lr_exponent"):
        q.sgd_multipliers(4, nfd.OneLayer())


@pytest.mark.slow  # ~18 s of compilation; the decoupled backward pass is checked by hand in
# test_plain.py and against the particles in tests/limit
def test_decoupled_with_equal_initial_weights_reproduces_reused():
    """Spec §1.6: with W̃(0) = W(0) (E = 0) the decoupled network is the reused one, every step."""
    from helpers import train

    from nfd.nn import MSE
    from nfd.tasks import teacher_student

    task = teacher_student(n_train=12, n_test=4, in_dim=6, key=jr.key(0))
    param = nfd.DepthMuP(beta=1.2)

    def make(backward):
        return nfd.ResNet(
            6,
            1,
            32,
            6,
            param=param,
            activation=Tanh(),  # noqa: E731
            backward=backward,
            key=jr.key(3),
        )

    reused = make(nfd.ReusedWeights())
    dec = make(nfd.DecoupledWeights())
    assert dec.offsets is not None and float(jnp.max(jnp.abs(dec.offsets[0]))) > 0.1
    dec = eqx.tree_at(lambda m: m.offsets, dec, tuple(jnp.zeros_like(e) for e in dec.offsets))
    batch = lambda m: jax.tree.map(lambda a: a[None] if eqx.is_array(a) else a, m)  # noqa: E731
    runs = [
        train(
            batch(m),
            task,
            optimizer=opt,
            loss=MSE(),
            lr=jnp.array([0.3]),
            num_steps=8,
            every=1,
            ntk=True,
            batch_key=jr.key(5),
            progress=False,
        )
        for opt in ("sgd", "adam")
        for m in (reused, dec)
    ]
    for a, b in (runs[:2], runs[2:]):
        np.testing.assert_allclose(a.f_train, b.f_train, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12, atol=1e-14)
    # and a genuinely decoupled network does differ (the test can fail)
    other = train(
        batch(make(nfd.DecoupledWeights())),
        task,
        optimizer="sgd",
        loss=MSE(),
        lr=jnp.array([0.3]),
        num_steps=8,
        batch_key=jr.key(5),
        progress=False,
    )
    assert float(jnp.max(jnp.abs(other.f_train[:, -1] - runs[0].f_train[:, -1]))) > 1e-4
