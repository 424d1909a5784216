"""One Adam step of the finite network against the §1.3 Adam table, written here.

From a fresh optax state, Adam's first update is −rate·m̂/(√v̂ + ε) with m̂ = grad, v̂ = grad², i.e.
−rate·grad/(|grad| + ε) = −rate·sign(grad) up to a relative ε/|grad| (ε = 1e-8/n by default). So
after one `FiniteNetwork.step` (the step `evolve` runs) every raw tensor moves by
η0 × rate_θ × sign(∂loss/∂θ) elementwise, with rate_θ from the docs/math table:
U: 1/(σ_in √D), W and W2: 1/√(nL), W1: L^a/√(nL), v: γ0 (depth-muP). The gradients are this
test's own `jax.grad` of the centred MSE loss; the decoupled offsets E must not move."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import network_of

import nfd
from nfd.dynamics import Points
from nfd.nn import Tanh
from nfd.tasks import teacher_student

N, L, D, A = 16, 4, 5, 0.5
GAMMA0, SIGMA_IN, ETA0 = 0.7, 0.8, 0.05
BLOCKS = {"one_layer": nfd.OneLayer(), "two_layer": nfd.TwoLayer()}


def spec_adam_rates(block: str) -> dict[str, float]:
    w = 1.0 / np.sqrt(N * L)
    rates = {"U": 1.0 / (SIGMA_IN * np.sqrt(D)), "v": GAMMA0}
    if block == "one_layer":
        rates["W"] = w
    else:
        rates.update(W1=L**A * w, W2=w)
    return rates


@pytest.mark.parametrize(
    "block,backward",
    [("one_layer", nfd.ReusedWeights()), ("two_layer", nfd.DecoupledWeights())],
)
def test_first_adam_step_is_spec_rate_times_gradient_sign(block, backward):
    """Δθ = −η0 rate_θ sign(grad θ) within η0 rate_θ (1e-12 + 2ε/|grad|) elementwise (the ε term
    is Adam's own; at |grad| ≳ 1e-6 it is ≤ 1e-3 relative), for every trained tensor."""
    a = A if block == "two_layer" else 0.0
    param = nfd.DepthMuP(beta=1.1, gamma0=GAMMA0, sigma_in=SIGMA_IN, first_layer_lr_exponent=a)
    task = teacher_student(n_train=6, n_test=0, in_dim=D, key=jr.key(0))
    model = nfd.ResNet(
        D,
        1,
        N,
        L,
        param=param,
        activation=Tanh(),
        block=BLOCKS[block],
        backward=backward,
        key=jr.key(1),
    )
    x, y = task.x_train, task.y_train
    f0 = eqx.filter_jit(lambda m: jax.vmap(m)(x))(model)

    def loss(m):  # centred MSE (§1.1): ½ mean ‖f − f(θ(0)) − y‖²
        return 0.5 * jnp.mean(jnp.sum((jax.vmap(m)(x) - f0 - y) ** 2, axis=1))

    grads = eqx.filter_jit(eqx.filter_grad(loss))(model)
    net = network_of(model, optimizer="adam")
    points = Points.from_task(task)

    @eqx.filter_jit
    def one_step(net, model):
        state = net.start(model, points)
        new_state, _, _ = net.step(
            model, state, points, jnp.arange(6), jnp.asarray(ETA0), jnp.asarray(True)
        )
        return new_state.model

    new = one_step(net, model)
    eps = 1e-8 / N
    names = ("W",) if block == "one_layer" else ("W1", "W2")
    tensors = lambda m: {"U": m.U, "v": m.v, **dict(zip(names, m.blocks, strict=True))}  # noqa: E731
    before, after, grad = tensors(model), tensors(new), tensors(grads)
    for name, rate in spec_adam_rates(block).items():
        g = np.asarray(grad[name])
        step = np.asarray(after[name] - before[name])
        want = -ETA0 * rate * np.sign(g)
        assert np.min(np.abs(g)) > 0  # sign() is defined everywhere
        tol = ETA0 * rate * (1e-12 + 2 * eps / np.abs(g))
        bad = np.abs(step - want) > tol
        assert not bad.any(), (name, np.max(np.abs(step - want) / (ETA0 * rate)))
    if model.offsets is not None:
        for o0, o1 in zip(model.offsets, new.offsets, strict=True):
            np.testing.assert_array_equal(o0, o1)
