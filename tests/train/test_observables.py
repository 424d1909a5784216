"""The finite trainer's saved observables against a hand-written numpy float64 ResNet.

`NumpyResNet` re-implements §1.1–1.4 with its own backprop (g_ℓ = γ0 n ∂f/∂h_ℓ, §1.2)
and full-batch SGD with the raw rates η_θ = η0 γ0² n m_θ (§1.3: m = 1, W1: L^a), from the same
initial arrays as an `nfd.ResNet`. At every saved step it computes, from its own fields, what
`TrainResult` documents: centred f, the losses, h_rms, h_movement (RMS over points and coordinates
of h_ℓ(t) − h_ℓ(0)), block_movement (RMS of b ΔW_ℓ φ(h_ℓ)/√n, two-layer: b ΔW2_ℓ φ(z_ℓ)/√n),
dz_own (RMS of ΔW1_ℓ φ(h_ℓ)/√n), the NTK of §1.4 (class-averaged diagonal block) and the
h / g kernels at block round(τL). Both sides are float64 on identical arrays, so they agree to
round-off: 1e-10 relative leaves ~5 orders of magnitude of slack over 3 steps.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from helpers import train

import nfd
from nfd.nn import MSE, Tanh
from nfd.tasks import teacher_student

D, C, N, P, Q, T = 3, 2, 8, 4, 2, 3
LAYER_TIMES = (0.0, 0.5, 1.0)
BLOCKS = {"one_layer": nfd.OneLayer(), "two_layer": nfd.TwoLayer()}


def _tanh_deriv(x):
    return 1.0 - np.tanh(x) ** 2


class NumpyResNet:
    """A depth-muP ResNet (one- or two-layer blocks) in numpy, trained by full-batch SGD on the
    centred MSE loss (§1.1–1.3)."""

    def __init__(self, U, blocks, v, *, beta, gamma0, sigma_in, a, block):
        self.U, self.v = np.array(U), np.array(v)
        self.W = [np.array(w) for w in blocks]  # (W,) or (W1, W2), each (L, n, n)
        self.beta, self.gamma0, self.sigma_in, self.a, self.block = beta, gamma0, sigma_in, a, block
        self.n, self.D = self.U.shape
        self.L = self.W[0].shape[0]
        self.b = beta / np.sqrt(self.L)

    def fields(self, X):
        """h (L+1, P, n), z (L, P, n) or None, g (L+1, C, P, n), gz (L, C, P, n) or None, f (P, C)."""
        n, L, b = self.n, self.L, self.b
        h = [self.sigma_in * X @ self.U.T / np.sqrt(self.D)]
        z = []
        for ell in range(L):
            if self.block == "one_layer":
                h.append(h[-1] + b * np.tanh(h[-1]) @ self.W[0][ell].T / np.sqrt(n))
            else:
                z.append(np.tanh(h[-1]) @ self.W[0][ell].T / np.sqrt(n))
                h.append(h[-1] + b * np.tanh(z[-1]) @ self.W[1][ell].T / np.sqrt(n))
        f = np.tanh(h[-1]) @ self.v / (self.gamma0 * n)
        g = [None] * (L + 1)
        gz = [None] * L
        g[L] = _tanh_deriv(h[L])[None] * self.v.T[:, None, :]  # (C, P, n)
        for ell in reversed(range(L)):
            if self.block == "one_layer":
                back = g[ell + 1] @ self.W[0][ell] / np.sqrt(n)  # Wᵀ g, (C, P, n)
                g[ell] = g[ell + 1] + b * _tanh_deriv(h[ell])[None] * back
            else:
                gz[ell] = b * _tanh_deriv(z[ell])[None] * (g[ell + 1] @ self.W[1][ell]) / np.sqrt(n)
                back = gz[ell] @ self.W[0][ell] / np.sqrt(n)
                g[ell] = g[ell + 1] + _tanh_deriv(h[ell])[None] * back
        return (
            np.stack(h),
            np.stack(z) if z else None,
            np.stack(g),
            np.stack(gz) if z else None,
            f,
        )

    def sgd_step(self, X, c, lr):
        """θ ← θ + η_θ Σ_ν c_ν ∂f_ν/∂θ, η_θ = η0 γ0² n m_θ (c = −∂loss/∂f, shape (P, C))."""
        n, b = self.n, self.b
        h, z, g, gz, _ = self.fields(X)
        gc = np.einsum("lcpn,pc->lpn", g, c)  # Σ_a c^a g^a
        rate = lr * self.gamma0**2 * n / (self.gamma0 * n)  # η_θ × (1/(γ0 n)) from ∂f/∂θ
        dU = self.sigma_in / np.sqrt(self.D) * gc[0].T @ X
        dv = np.tanh(h[-1]).T @ c
        if self.block == "one_layer":
            dW = [b * np.einsum("lpi,lpj->lij", gc[1:], np.tanh(h[:-1])) / np.sqrt(n)]
            m = [1.0]
        else:
            gzc = np.einsum("lcpn,pc->lpn", gz, c)
            dW = [
                np.einsum("lpi,lpj->lij", gzc, np.tanh(h[:-1])) / np.sqrt(n),
                b * np.einsum("lpi,lpj->lij", gc[1:], np.tanh(z)) / np.sqrt(n),
            ]
            m = [float(self.L) ** self.a, 1.0]
        self.U = self.U + rate * dU
        self.v = self.v + rate * dv
        self.W = [w + rate * mm * d for w, mm, d in zip(self.W, m, dW, strict=True)]

    def ntk(self, X):
        """Spec §1.4, class-averaged diagonal block (C outputs): (P, P)."""
        h, z, g, gz, _ = self.fields(X)
        n, L = self.n, self.L
        kx = X @ X.T / self.D
        G = np.einsum("lcpn,lcqn->lpq", g, g) / (n * g.shape[1])
        Phi = np.einsum("lpn,lqn->lpq", np.tanh(h), np.tanh(h)) / n
        theta = self.sigma_in**2 * kx * G[0] + Phi[L]
        if self.block == "one_layer":
            return theta + self.b**2 * np.sum(G[1:] * Phi[:-1], axis=0)
        Phiz = np.einsum("lpn,lqn->lpq", np.tanh(z), np.tanh(z)) / n
        Gz = np.einsum("lcpn,lcqn->lpq", gz, gz) / (n * gz.shape[1])
        w1 = float(L) ** self.a * np.sum(Gz * Phi[:-1], axis=0)
        return theta + self.b**2 * np.sum(G[1:] * Phiz, axis=0) + w1


def _rms(x, axes):
    return np.sqrt(np.mean(x**2, axis=axes))


def numpy_trajectory(net: NumpyResNet, task, lr):
    """Saved observables at t = 0..T, computed in numpy (each a list over steps)."""
    X = np.concatenate([np.asarray(task.x_train), np.asarray(task.x_test)])
    Y = np.concatenate([np.asarray(task.y_train), np.asarray(task.y_test)])
    blocks = [int(round(tau * net.L)) for tau in LAYER_TIMES]
    h0, _, _, _, f0 = net.fields(X)
    W0 = [w.copy() for w in net.W]
    out = {k: [] for k in ("f", "loss_train", "loss_test", "h_rms", "h_movement")}
    out.update({k: [] for k in ("block_movement", "dz_own", "ntk", "h_kernel", "g_kernel")})
    for t in range(T + 1):
        h, z, g, _, f = net.fields(X)
        fc = f - f0
        loss = 0.5 * np.sum((fc - Y) ** 2, axis=1)
        out["f"].append(fc)
        out["loss_train"].append(loss[:P].mean())
        out["loss_test"].append(loss[P:].mean())
        out["h_rms"].append(_rms(h, (1, 2)))
        out["h_movement"].append(_rms(h - h0, (1, 2)))
        dW = [w - w0 for w, w0 in zip(net.W, W0, strict=True)]
        if net.block == "one_layer":
            moved = net.b * np.einsum("lij,lpj->lpi", dW[0], np.tanh(h[:-1])) / np.sqrt(net.n)
        else:
            moved = net.b * np.einsum("lij,lpj->lpi", dW[1], np.tanh(z)) / np.sqrt(net.n)
            dz = np.einsum("lij,lpj->lpi", dW[0], np.tanh(h[:-1])) / np.sqrt(net.n)
            out["dz_own"].append(_rms(dz, (1, 2)))
        out["block_movement"].append(_rms(moved, (1, 2)))
        out["ntk"].append(net.ntk(X))
        out["h_kernel"].append(np.einsum("rpn,rqn->rpq", h[blocks], h[blocks]) / net.n)
        gb = g[blocks]  # (R, C, P+Q, n)
        out["g_kernel"].append(np.einsum("rcpn,rcqn->rpq", gb, gb) / (net.n * C))
        if t < T:
            c = (Y[:P] - fc[:P]) / P  # c_ν = Δ_ν/|B| with Δ = y − f_c (MSE, full batch)
            net.sgd_step(X[:P], c, lr)
    return {k: np.stack(v) for k, v in out.items() if v}


def _compare_with_trainer(block: str, a: float):
    param = nfd.DepthMuP(
        beta=1.2, gamma0=0.8, sigma_in=0.9, sigma_out=1.1, first_layer_lr_exponent=a
    )
    task = teacher_student(n_train=P, n_test=Q, in_dim=D, out_dim=C, key=jr.key(0))
    lrs = jnp.array([0.7, 0.3])
    models = eqx.filter_vmap(
        lambda k: nfd.ResNet(D, C, N, 4, param=param, activation=Tanh(), block=BLOCKS[block], key=k)
    )(jr.split(jr.key(1), 2))
    res = train(
        models,
        task,
        optimizer="sgd",
        loss=MSE(),
        lr=lrs,
        num_steps=T,
        every=1,
        layer_times=LAYER_TIMES,
        ntk=True,
        kernels=True,
        batch_key=jr.key(2),
        progress=False,
    )
    np.testing.assert_array_equal(res.steps, np.arange(T + 1))
    for e in range(2):
        m = jax.tree.map(lambda x, e=e: x[e] if eqx.is_array(x) else x, models)
        net = NumpyResNet(m.U, m.blocks, m.v, beta=1.2, gamma0=0.8, sigma_in=0.9, a=a, block=block)
        ref = numpy_trajectory(net, task, float(lrs[e]))
        got = {
            "f": np.concatenate([res.f_train[e], res.f_test[e]], axis=1),
            "loss_train": res.loss_train[e],
            "loss_test": res.loss_test[e],
            "h_rms": res.h_rms[e],
            "h_movement": res.h_movement[e],
            "block_movement": res.block_movement[e],
            "ntk": res.ntk[e],
            "h_kernel": res.h_kernel[e],
            "g_kernel": res.g_kernel[e],
        }
        if block == "two_layer":
            got["dz_own"] = res.dz_own[e]
        assert set(got) == set(ref)
        for name, want in ref.items():
            # every observable that moves must have moved: the comparison is not of zeros
            if name in ("f", "h_movement", "block_movement", "dz_own"):
                assert np.min(np.abs(want[1:])) > 1e-5, name
            scale = np.max(np.abs(want))
            np.testing.assert_allclose(
                np.asarray(got[name]), want, rtol=1e-10, atol=1e-12 * scale, err_msg=name
            )
        # the kernels did change with training (τ > 0 and t > 0 are compared, not just t = 0)
        assert np.max(np.abs(ref["h_kernel"][-1] - ref["h_kernel"][0])) > 1e-3
        assert np.max(np.abs(ref["g_kernel"][-1] - ref["g_kernel"][0])) > 1e-3


def test_trainer_observables_match_numpy_one_layer():
    """One-layer depth-muP ResNet (n = 8, L = 4, C = 2, tanh; two members, two learning rates)."""
    _compare_with_trainer("one_layer", 0.0)


def test_trainer_observables_match_numpy_two_layer():
    """Two-layer blocks with a = 1/2 (W1's raw rate × L^a): adds dz_own and the W1/W2 NTK terms."""
    _compare_with_trainer("two_layer", 0.5)
