"""Two-layer residual blocks in the particle limit solver (spec §1.2, §2, §6; issue 5).

Same tests as for one-layer blocks: the identity with the finite two-layer network at M = n, K = L
(T5d, with the W1 rate multiplier L^a ≠ 1), P1 as kernel descent with the network's empirical NTK,
and the t = 0 kernels against the two-layer dual-kernel recursion of spec §2.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mean_se, unit_inputs

import nfd
from nfd.limit import (
    FeatureReadout,
    NTKReadout,
    init_kernels,
    particles_from_resnet,
    sample_particles,
    simulate_limit,
)
from nfd.model import empirical_ntk
from nfd.nn import Erf, Relu, Tanh
from nfd.tasks import teacher_student
from nfd.train import MSE, CrossEntropy, batch_schedule, make_optimizer, train


def _batch(tree):
    return jax.tree.map(lambda a: a[None] if eqx.is_array(a) else a, tree)


@pytest.mark.parametrize(
    "backward,loss,out_dim,batch_size",
    [
        (nfd.ReusedWeights(), MSE(), 1, 0),
        (nfd.DecoupledWeights(), MSE(), 1, 4),
        (nfd.ReusedWeights(), CrossEntropy(), 3, 4),
    ],
)
def test_two_layer_particles_with_finite_weights_are_the_finite_network(
    backward, loss, out_dim, batch_size
):
    """T5d for two-layer blocks with a = 1/2: M = n, K = L and the network's own W1, W2 reproduce
    its trajectory, NTK, block movement and W1's own feature update δz^own to 1e-8 (float64)."""
    task = teacher_student(n_train=8, n_test=3, in_dim=5, out_dim=out_dim, key=jr.key(10))
    if isinstance(loss, CrossEntropy):
        labels = jnp.argmax(task.y_train, axis=1), jnp.argmax(task.y_test, axis=1)
        y_tr, y_te = (jax.nn.one_hot(lab, out_dim) for lab in labels)
        task = eqx.tree_at(lambda t: (t.y_train, t.y_test), task, (y_tr, y_te))
    param = nfd.DepthMuP(
        beta=1.1, gamma0=0.9, sigma_in=0.9, sigma_out=1.1, first_layer_lr_exponent=0.5
    )
    model = nfd.ResNet(
        5,
        out_dim,
        20,
        4,
        param=param,
        activation=Tanh(),
        backward=backward,
        block="two_layer",
        key=jr.key(11),
    )
    lr, T = 0.5, 10
    fin = train(
        _batch(model),
        task,
        optimizer="sgd",
        loss=loss,
        lr=jnp.array([lr]),
        num_steps=T,
        batch_size=batch_size,
        every=1,
        ntk=True,
        batch_key=jr.key(12),
        progress=False,
    )
    lim = simulate_limit(
        _batch(particles_from_resnet(model)),
        task.x_train,
        task.y_train,
        task.x_test,
        task.y_test,
        param=param,
        activation=Tanh(),
        readout=FeatureReadout(),
        loss=loss,
        lr=jnp.array([lr]),
        schedule=batch_schedule(8, batch_size, T, key=jr.key(12)),
        every=1,
        ntk=True,
        progress=False,
    )
    scale = float(jnp.max(jnp.abs(fin.f_train)))
    assert scale > 0.05  # the network did move
    for a, b in (
        (fin.f_train, lim.f_train),
        (fin.f_test, lim.f_test),
        (fin.loss_train, lim.loss_train),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * scale)
    np.testing.assert_allclose(fin.ntk, lim.ntk, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fin.h_rms, lim.h_rms, rtol=1e-10)
    assert fin.dz_own is not None and lim.dz_own is not None
    assert float(jnp.min(fin.dz_own[:, -1])) > 1e-4  # W1 did move its own features
    np.testing.assert_allclose(fin.dz_own, lim.dz_own, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(fin.block_movement, lim.block_movement, rtol=1e-7, atol=1e-12)


def test_two_layer_ntk_readout_is_kernel_descent_with_the_fields_own_ntk():
    """P1 with two-layer blocks at M = n, K = L: f(t+1) = f(t) + η0 Θ(t) c(t) with Θ the
    network's empirical NTK (W1 and W2 parts, a = 1), the network trained by P1's error signal."""
    task = teacher_student(n_train=6, n_test=2, in_dim=4, key=jr.key(13))
    param = nfd.DepthMuP(first_layer_lr_exponent=1.0)
    model = nfd.ResNet(
        4, 1, 16, 3, param=param, activation=Erf(), block="two_layer", key=jr.key(14)
    )
    lr, T = 0.4, 5
    opt = make_optimizer("sgd", model)
    f = jnp.zeros((8, 1))
    ref = [f]
    m = model
    for _ in range(T):
        theta = empirical_ntk(m, jnp.concatenate([task.x_train, task.x_test]))
        c = jnp.zeros((8, 1)).at[:6].set((task.y_train - f[:6]) / 6)

        def surrogate(mm, c=c):
            return -jnp.sum(jax.lax.stop_gradient(c)[:6] * jax.vmap(mm)(task.x_train))

        grads = eqx.filter_grad(surrogate)(m)
        params = eqx.filter(m, eqx.is_array)
        upd, _ = opt.update(grads, opt.init(params), params)
        m = eqx.apply_updates(m, jax.tree.map(lambda u: lr * u, upd))
        f = f + lr * theta @ c
        ref.append(f)
    lim = simulate_limit(
        _batch(particles_from_resnet(model)),
        task.x_train,
        task.y_train,
        task.x_test,
        task.y_test,
        param=param,
        activation=Erf(),
        readout=NTKReadout(),
        loss=MSE(),
        lr=jnp.array([lr]),
        schedule=batch_schedule(6, 0, T, key=jr.key(0)),
        every=1,
        progress=False,
    )
    ref = jnp.stack(ref)
    np.testing.assert_allclose(lim.f_train[0], ref[:, :6], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lim.f_test[0], ref[:, 6:], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "act,coupling",
    [(Relu(), nfd.ReusedWeights()), (Erf(), nfd.ReusedWeights()), (Erf(), nfd.DecoupledWeights())],
)
def test_two_layer_init_kernels_match_recursion_within_4_se(act, coupling):
    """At t = 0 the particle H_k, G_k and Θ (Θ̃ for mode B read out by P2) of two-layer blocks
    match the two-layer recursion of spec §2 (β, σ_in, σ_out ≠ 1, a = 1/2), full P×P matrices."""
    param = nfd.DepthMuP(beta=1.3, sigma_in=0.8, sigma_out=1.2, first_layer_lr_exponent=0.5)
    P, D, K, M, E = 3, 5, 4, 512, 12
    xs = unit_inputs(P, D, key=jr.key(15))
    ys = jnp.zeros((P, 1))
    ref = init_kernels(param, act, xs @ xs.T / D, K, "two_layer")
    particles = eqx.filter_vmap(
        lambda k: sample_particles(
            M, K, D, 1, sigma_out=1.2, coupling=coupling, block="two_layer", key=k
        )
    )(jr.split(jr.key(16), E))
    res = simulate_limit(
        particles,
        xs,
        ys,
        xs[:0],
        ys[:0],
        param=param,
        activation=act,
        readout=FeatureReadout(),
        loss=MSE(),
        lr=jnp.full((E,), 0.1),
        schedule=jnp.zeros((0, P), int),
        layer_times=(0.0, 0.5, 1.0),
        ntk=True,
        kernels=True,
        progress=False,
    )
    theta = ref.Theta if isinstance(coupling, nfd.ReusedWeights) else ref.Theta_decoupled
    # 7 kernels × 6 entries: a per-entry bound of 4 SE keeps the family-wise false-alarm rate
    # below 42 × 6e-5 ≈ 0.3% (as for the one-layer test)
    iu = np.triu_indices(P)
    pairs = [(res.ntk[:, 0], theta)]
    for r, k in enumerate((0, K // 2, K)):
        pairs += [(res.h_kernel[:, 0, r], ref.H[k]), (res.g_kernel[:, 0, r], ref.G[k])]
    for est, exact in pairs:
        mean, se = mean_se(est)
        z = np.abs(mean - np.asarray(exact))[iu] / np.maximum(se[iu], 1e-12)
        assert np.all(z < 4.0), (z, mean, exact)
