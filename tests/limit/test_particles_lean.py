"""The lean particle form (issue 13): W_k, W̃_k regenerated from per-layer keys inside the layer
scan give the stored form's trajectories, and its memory estimate is the stored one less
``(1 + 2·[mode B]) K M²`` per block matrix."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nfd
from nfd.dynamics import Points, SaveAt, batch_schedule, evolve
from nfd.limit import MatrixParticles, NoiseKeys, estimate_memory, sample_particles
from nfd.limit._lean import draw_noise_keys
from nfd.limit._particles import layer_matrices
from nfd.nn import MSE, FeatureReadout, NTKReadout, Tanh
from nfd.tasks import teacher_student

M, K, T = 32, 4, 5
COUPLINGS = {"A": nfd.ReusedWeights(), "B": nfd.DecoupledWeights()}
BLOCKS = {"one_layer": nfd.OneLayer(), "two_layer": nfd.TwoLayer()}
READOUTS = {"P2": FeatureReadout(), "P1": NTKReadout()}
# The forms differ only in association: stored B_k(t) = ((b W_k/√M + Δ_1) + Δ_2) + …, lean
# b W_k/√M + ((Δ_1 + Δ_2) + …). Both are bitwise equal through the second training step (no sum
# of two increments yet); afterwards each B_k entry differs by a few ulps per step, carried to f
# through O(K) Lipschitz layer steps: far below 1e-13 in float64 over T = 5 steps.
RTOL = 1e-13


def _run(store_noise: bool, coupling: str, block: str, readout: str):
    task = teacher_student(n_train=6, n_test=2, in_dim=3, key=jr.key(0))
    dyn = MatrixParticles(
        num_particles=M,
        num_layer_steps=K,
        param=nfd.DepthMuP(),
        activation=Tanh(),
        loss=MSE(),
        coupling=COUPLINGS[coupling],
        readout=READOUTS[readout],
        block=BLOCKS[block],
        store_noise=store_noise,
    )
    return evolve(
        dyn,
        Points.from_task(task),
        lr=jnp.full((2,), 0.5),
        schedule=batch_schedule(6, 3, T, key=jr.key(1)),
        saveat=SaveAt(steps=tuple(range(T + 1)), ntk=True, kernels=True),
        keys=jr.split(jr.key(2), 2),
    )


@pytest.mark.parametrize("coupling", ["A", "B"])
@pytest.mark.parametrize("block", ["one_layer", "two_layer"])
def test_noise_keys_regenerate_the_stored_draw_bitwise(coupling, block):
    kw = {"coupling": COUPLINGS[coupling], "block": BLOCKS[block], "key": jr.key(5)}
    stored = sample_particles(M, K, 3, 2, sigma_out=1.0, **kw)
    lean = draw_noise_keys(M, K, 3, 2, sigma_out=1.0, **kw)
    np.testing.assert_array_equal(lean.U, stored.U)
    np.testing.assert_array_equal(lean.v, stored.v)
    pairs: list = [(lean.w_key, lean.back_key, stored.W, stored.W_back)]
    if block == "two_layer":
        pairs.append((lean.w1_key, lean.back1_key, stored.W1, stored.W1_back))

    def regenerate(w_key, back_key):  # one layer at a time inside a scan, as the sweeps do
        def body(carry, k):
            return carry, layer_matrices(w_key, back_key, k, M, stored.W.dtype, lean.coupling)

        return jax.lax.scan(body, None, jnp.arange(K))[1]

    for w_key, back_key, W, W_back in pairs:
        W_lean, W_back_lean = jax.jit(regenerate)(w_key, back_key)
        np.testing.assert_array_equal(W_lean, W)
        # W̃ = W + (N − W): XLA's CPU fusions may contract N's last product into the subtraction
        # (an FMA) in one context and not the other, so W̃ agrees to its last few bits
        ulp = np.finfo(np.float64).eps * np.max(np.abs(np.asarray(W_back)))
        np.testing.assert_allclose(W_back_lean, W_back, rtol=0, atol=4 * ulp)
    assert (coupling == "B") == bool(jnp.any(stored.W_back != stored.W))


@pytest.mark.parametrize("coupling", ["A", "B"])
@pytest.mark.parametrize(
    "block,readout", [("one_layer", "P2"), ("one_layer", "P1"), ("two_layer", "P2")]
)
def test_lean_and_stored_particles_give_the_same_trajectory(coupling, block, readout):
    stored = _run(True, coupling, block, readout)
    lean = _run(False, coupling, block, readout)
    assert np.all(np.asarray(stored.status) == 0) and np.all(np.asarray(lean.status) == 0)
    for name in ("f_train", "f_test", "loss_train", "ntk", "h_kernel", "g_kernel", "h_rms"):
        a, b = np.asarray(getattr(lean, name)), np.asarray(getattr(stored, name))
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.max(np.abs(b)), err_msg=name)
    # the block's own movement: the stored form subtracts b W/√M from B(t) (cancellation of
    # |B|/|ΔB| ~ 1e2 here), the lean form holds ΔB itself: equal to that cancellation's rounding
    for name in ("block_movement", "dz_own") if block == "two_layer" else ("block_movement",):
        a, b = np.asarray(getattr(lean, name)), np.asarray(getattr(stored, name))
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11 * np.max(np.abs(b)), err_msg=name)


def test_lean_draw_is_noise_keys_and_explicit_particles_run_stored():
    task = teacher_student(n_train=4, n_test=0, in_dim=3, key=jr.key(0))
    points = Points.from_task(task)
    dyn = MatrixParticles(
        num_particles=M,
        num_layer_steps=K,
        param=nfd.DepthMuP(),
        activation=Tanh(),
        loss=MSE(),
        coupling=nfd.DecoupledWeights(),
        store_noise=False,
    )
    lean = dyn.draw(points, key=jr.key(3))
    assert isinstance(lean, NoiseKeys)
    assert dyn.start(lean, points).B_back is None  # one drift per block matrix, shared
    stored = sample_particles(M, K, 3, 1, sigma_out=1.0, coupling=dyn.coupling, key=jr.key(3))
    state = dyn.start(stored, points)  # a finite network's own matrices: the stored form
    assert state.B_back is not None
    # the same matrices; XLA may fuse the regenerated B_k into the product (another summation
    # order), so the t = 0 outputs agree to rounding
    np.testing.assert_allclose(state.F0, dyn.start(lean, points).F0, rtol=RTOL)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("blocks", [1, 2])
def test_lean_memory_estimate_saves_the_noise_buffers(decoupled, blocks):
    Mb, Kb, P, C, D = 1024, 16, 64, 3, 10
    stored, lean = (
        estimate_memory(
            Mb, Kb, P, C, D, 2, itemsize=4, decoupled=decoupled, blocks=blocks, store_noise=store
        )
        for store in (True, False)
    )
    # stored per block: W, W̃ (B), B, B̃ (B), one transient = 3 + 2·[B] buffers of K M²;
    # lean: the drift and the transient, 2, plus four M² draws of one layer step in flight
    saved = (1 + 2 * decoupled) * Kb * Mb**2 - 4 * Mb**2
    assert stored - lean == 2 * blocks * saved * 4
