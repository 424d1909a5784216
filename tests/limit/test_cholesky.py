"""The Cholesky particle realisation (§4.2, mode B) against the matrix realisation (§4.1), the
n = ∞ initial kernels (§2), the lazy oracle (§3.5), its own in-sample exactness and retracing.

Given the same ``M``, the Cholesky noise has *the same law* as the random-matrix noise with
`DecoupledWeights` (module docstring of `nfd.limit._cholesky`), so the two agree within Monte Carlo
error at any ``M``, not only as ``M → ∞``.
"""

from types import SimpleNamespace
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mean_se, simulate

import nfd
from nfd.dynamics import Points, SaveAt, _evolve, batch_schedule, evolve, map_members, save_steps
from nfd.limit import Particles, init_kernels
from nfd.limit._cholesky import CholeskyParticles
from nfd.limit._cholesky_factor import CholeskyInfo, cholesky_info
from nfd.nn import MSE, CrossEntropy, FeatureReadout, NTKReadout, Relu, Tanh
from nfd.tasks import teacher_student

# entries are compared one by one at 4 combined SE; with ~100 (correlated) comparisons and
# E ≈ 16 repetitions per side the family-wise false-alarm rate stays at a few per cent at most
K_SE = 4.0


def _task(out_dim=1, cross_entropy=False):
    task = teacher_student(n_train=6, n_test=2, in_dim=5, out_dim=out_dim, key=jr.key(0))
    if cross_entropy:
        y = jax.nn.one_hot(jnp.argmax(task.y_train, axis=1), out_dim)
        yt = jax.nn.one_hot(jnp.argmax(task.y_test, axis=1), out_dim)
        task = eqx.tree_at(lambda t: (t.y_train, t.y_test), task, (y, yt))
    return task


def _decoupled_particles(E, M, K, D, C, sigma_out, *, key):
    """`sample_particles` in mode B (W̃ an independent copy of W), for E repetitions at once; the
    normals are drawn flat (XLA:CPU compiles a flat threefry several times faster)."""
    sizes = (E * M * D, E * K * M * M, E * K * M * M, E * M * C)
    flat = jr.normal(key, (sum(sizes),))
    U, W, W_back, v = jnp.split(flat, np.cumsum(sizes)[:-1])
    return Particles(
        U=U.reshape(E, M, D),
        W=W.reshape(E, K, M, M),
        W_back=W_back.reshape(E, K, M, M),
        v=sigma_out * v.reshape(E, M, C),
    )


def _draw(dyn, points, keys):
    """The members' initial draws (`draw_members`, whose ``keys`` annotation takes one key)."""
    return map_members(lambda key: dyn.draw(points, key=key), keys)


def _cholesky(task, act, readout, *, param, M, K, lr, schedule, key, loss=None, every=1, **save):
    """A Cholesky run with `evolve`: (trajectory, info, the members' initial draws)."""
    T = int(schedule.shape[0])
    dyn = CholeskyParticles(
        num_particles=M,
        num_layer_steps=K,
        num_steps=T,
        param=param,
        activation=act,
        loss=MSE() if loss is None else loss,
        coupling=nfd.DecoupledWeights(),
        readout=readout,
    )
    points = Points.from_task(task)
    initial = _draw(dyn, points, jr.split(key, lr.shape[0]))
    traj = evolve(
        dyn,
        points,
        lr=lr,
        schedule=schedule,
        saveat=SaveAt(steps=save_steps(T, every), **save),
        initial=initial,
        progress=False,
    )
    return traj, cholesky_info(traj), initial


def _run_both(
    task, act, readout, *, param, M, K, T, E, batch_size, lr, loss=None, seed=0, fn=None, step=None
):
    """The same system in both realisations: (cholesky result, info, matrix result, the Cholesky
    initial draws); ``fn``: extra observables of the Cholesky run (`SaveAt.fn`); ``step``: the
    jitted step `evolve` uses for the Cholesky run (default: its own)."""
    schedule = batch_schedule(task.n_train, batch_size, T, key=jr.key(100 + seed))
    common: dict[str, Any] = dict(
        param=param, readout=readout, loss=MSE() if loss is None else loss, schedule=schedule
    )
    lrs = jnp.full((E,), lr)
    with pytest.MonkeyPatch.context() as mp:
        if step is not None:
            mp.setattr(_evolve, "_step", step)
        chol, info, initial = _cholesky(
            task,
            act,
            M=M,
            K=K,
            lr=lrs,
            key=jr.key(200 + seed),
            ntk=True,
            kernels=True,
            fn=fn,
            **common,
        )
    D, C = task.x_train.shape[1], task.y_train.shape[1]
    parts = _decoupled_particles(E, M, K, D, C, param.sigma_out, key=jr.key(300 + seed))
    matrix = simulate(parts, task, activation=act, lr=lrs, ntk=True, kernels=True, **common)
    return chol, info, matrix, initial


def _assert_same_mean(a, b, name):
    """Per entry: |mean_a − mean_b| ≤ K_SE combined SE (equal where both are deterministic)."""
    ma, sa = mean_se(a)
    mb, sb = mean_se(b)
    se = np.sqrt(sa**2 + sb**2)
    exact = se == 0
    np.testing.assert_allclose(ma[exact], mb[exact], atol=1e-12, err_msg=name)
    z = np.abs(ma - mb)[~exact] / se[~exact]
    assert np.all(z < K_SE), (name, np.max(z), ma, mb)


def _assert_agree(chol, matrix):
    """f trajectories, losses and the kernels at the last step (diagonals, NTK) agree in law."""
    last = -1
    for name in ("f_train", "f_test", "loss_train", "loss_test", "h_rms", "block_movement"):
        _assert_same_mean(getattr(chol, name), getattr(matrix, name), name)
    for name in ("h_kernel", "g_kernel"):  # (E, S, R, Pts, Pts): diagonals at every layer time
        a, b = getattr(chol, name)[:, last], getattr(matrix, name)[:, last]
        _assert_same_mean(
            np.diagonal(a, axis1=-2, axis2=-1), np.diagonal(b, axis1=-2, axis2=-1), name
        )
    _assert_same_mean(chol.ntk[:, last], matrix.ntk[:, last], "ntk")


DEFAULT: dict[str, Any] = dict(M=512, K=4, T=4, E=16, batch_size=3, lr=1.0)
PARAM = nfd.DepthMuP(beta=1.1, sigma_in=0.9, sigma_out=1.1)


def _default_task():
    """C = 2 outputs; the first test point duplicates a training point (exact zero pivots)."""
    task = _task(out_dim=2)
    x_test = jnp.concatenate([task.x_train[:1], task.x_test[:1]])
    y_test = jnp.concatenate([task.y_train[:1], task.y_test[:1]])
    return eqx.tree_at(lambda t: (t.x_test, t.y_test), task, (x_test, y_test))


def _record(dyn, initial, state, points):
    """`SaveAt.fn`: the noises of the step that follows the observation (the step's own draw),
    the fields of its pairs and the factors with them revealed."""
    revealed, xi, rho = dyn.reveal(initial, state, points)
    Pts, C = points.num_points, points.out_dim

    def fields(hist, per):  # the step's columns of a history
        return jax.lax.dynamic_slice_in_dim(hist.hist, state.count * Pts * per, Pts * per, axis=2)

    return {
        "xi": xi,
        "rho": rho,
        "xi_fields": fields(revealed.xi, 1),
        "rho_fields": fields(revealed.rho, C),
        "xi_L": revealed.xi.L,
        "rho_L": revealed.rho.L,
        "count": revealed.count,
    }


@pytest.fixture(scope="module")
def recorded():
    """The default-tier run shared by most tests (tanh, P2 with Θ̃, minibatch SGD, C = 2), with
    the jitted step of `evolve` wrapped in `eqx.debug.assert_max_traces` and its noises recorded
    (`_record` at every step: the noise each step draws, and the histories after the last)."""
    counted = eqx.debug.assert_max_traces(_evolve._step.__wrapped__, max_traces=1)
    chol, info, matrix, initial = _run_both(
        _default_task(),
        Tanh(),
        FeatureReadout(),
        param=PARAM,
        fn=_record,
        step=eqx.filter_jit(counted, donate="all-except-first"),
        **DEFAULT,
    )
    ex = {k: np.asarray(v) for k, v in chol.extras.items()}
    saves = range(ex["xi"].shape[1])
    calls = [{"xi": ex["xi"][:, s], "rho": ex["rho"][:, s]} for s in saves]

    def history(name, z):
        hist = np.concatenate([ex[f"{name}_fields"][:, s] for s in saves], axis=-1)
        return SimpleNamespace(hist=hist, L=ex[f"{name}_L"][:, -1], z=z)

    state = SimpleNamespace(
        xi=history("xi", initial.z_xi), rho=history("rho", initial.z_rho), count=ex["count"][:, -1]
    )
    return dict(chol=chol, info=info, matrix=matrix, noises=calls, state=state, counted=counted)


def test_cholesky_agrees_with_matrix_realisation(recorded):
    """Spec §4.2 vs §4.1 in mode B: the same law at the same M (tanh, P2, minibatch SGD, C = 2,
    a duplicated point): f trajectories, losses and kernels within 4 combined SE."""
    chol, info, matrix = recorded["chol"], recorded["info"], recorded["matrix"]
    assert np.max(np.abs(np.asarray(matrix.f_train[:, -1]).mean(0))) > 0.05  # it learned
    _assert_agree(chol, matrix)
    T, K, C, Pts = DEFAULT["T"], DEFAULT["K"], 2, 8
    assert isinstance(info, CholeskyInfo) and info.num_pairs == (T + 1) * Pts
    assert np.all(np.asarray(info.clipped_xi) < 1e-10) and np.all(
        np.asarray(info.clipped_rho) < 1e-10
    )
    # the duplicated point's pairs (once per step and layer step, times C for ρ) and no other
    np.testing.assert_array_equal(info.num_zero_pivots, [[K * (T + 1), K * (T + 1) * C]] * 16)
    assert np.all(np.asarray(chol.status) == 0)


@pytest.mark.slow
@pytest.mark.parametrize("act", [Tanh(), Relu()])
@pytest.mark.parametrize("readout", [NTKReadout(), FeatureReadout()])
@pytest.mark.parametrize("batch_size", [0, 3])
def test_cholesky_agrees_with_matrix_realisation_grid(act, readout, batch_size):
    """The same agreement for tanh/relu × P1/P2 × full/minibatch (K = 4, T = 6, M = 1024), and
    the t = 0 kernels (Θ(0) under P1, Θ̃(0) under P2) against §2."""
    param = nfd.DepthMuP(beta=1.0, gamma0=1.0)
    chol, info, matrix, _ = _run_both(
        _task(),
        act,
        readout,
        param=param,
        M=1024,
        K=4,
        T=6,
        E=16,
        batch_size=batch_size,
        lr=1.0,
        seed=1,
    )
    _assert_agree(chol, matrix)
    assert np.all(np.asarray(info.clipped_xi) < 1e-10)
    theta = "Theta" if isinstance(readout, NTKReadout) else "Theta_decoupled"
    _assert_initial_kernels(chol, _task(), param, act, 4, theta)


@pytest.mark.slow
def test_cholesky_agrees_with_matrix_realisation_cross_entropy():
    """C = 3 outputs with cross-entropy: the ρ noise over (point, step, output) pairs."""
    chol, _, matrix, _ = _run_both(
        _task(out_dim=3, cross_entropy=True),
        Relu(),
        FeatureReadout(),
        param=nfd.DepthMuP(),
        M=512,
        K=4,
        T=3,
        E=16,
        batch_size=3,
        lr=1.0,
        loss=CrossEntropy(),
        seed=2,
    )
    _assert_agree(chol, matrix)


def _assert_initial_kernels(res, task, param, act, K, theta):
    """t = 0: H_k, G_k (k = 0, K/2, K) and the saved NTK (``theta``: ``Theta`` or
    ``Theta_decoupled``) against the recursion of §2, on the first 3 points (6 entries each,
    as the matrix realisation's own test), within 4 SE."""
    x_all = jnp.concatenate([task.x_train, task.x_test])
    ref = init_kernels(param, act, x_all @ x_all.T / x_all.shape[1], K)
    iu = np.triu_indices(3)
    pairs = [(res.ntk[:, 0], getattr(ref, theta))]
    for r, k in enumerate((0, K // 2, K)):
        pairs += [(res.h_kernel[:, 0, r], ref.H[k]), (res.g_kernel[:, 0, r], ref.G[k])]
    for est, exact in pairs:
        mean, se = mean_se(np.asarray(est)[:, :3, :3])
        z = np.abs(mean - np.asarray(exact)[:3, :3])[iu] / np.maximum(se[iu], 1e-12)
        assert np.all(z < K_SE), (z, mean, exact)


def test_initial_kernels_match_recursion(recorded):
    """At t = 0: H_k, G_k and Θ̃(0) (P2 in mode B: the true-sensitivity rows drawn from the
    conditional law of W) match the dual-kernel recursion of §2 within 4 SE."""
    _assert_initial_kernels(
        recorded["chol"], _default_task(), PARAM, Tanh(), DEFAULT["K"], "Theta_decoupled"
    )


def _lazy(readout, kernel):
    gamma0, E, M, K, T, lr = 1e-3, 8, 384, 4, 8, 2.0
    param = nfd.DepthMuP(gamma0=gamma0)
    task = teacher_student(n_train=5, n_test=2, in_dim=4, key=jr.key(7))
    x_all = jnp.concatenate([task.x_train, task.x_test])
    theta = getattr(init_kernels(param, Tanh(), x_all @ x_all.T / 4, K), kernel)
    f = jnp.zeros((7, 1))
    ref = [f]
    for _ in range(T):
        c = jnp.zeros((7, 1)).at[:5].set((task.y_train - f[:5]) / 5)
        f = f + lr * theta @ c
        ref.append(f)
    ref = np.asarray(jnp.stack(ref))[..., 0]  # (T+1, 7)
    res, info, _ = _cholesky(
        task,
        Tanh(),
        readout,
        param=param,
        M=M,
        K=K,
        lr=jnp.full((E,), lr),
        schedule=batch_schedule(5, 0, T, key=jr.key(0)),
        every=3,  # saved steps 0, 3, 6, 8: the unsaved steps skip the observables
        key=jr.key(8),
    )
    np.testing.assert_array_equal(res.steps, [0, 3, 6, 8])
    ref = ref[np.asarray(res.steps)]
    est = np.concatenate([res.f_train, res.f_test], axis=2)[..., 0]  # (E, S, 7)
    mean, se = mean_se(est)
    assert np.max(np.abs(ref[-1])) > 0.1  # it learned something
    assert np.all(np.abs(mean - ref) <= K_SE * se + 50 * gamma0), np.max(
        np.abs(mean - ref) / (se + 1e-9)
    )
    # near γ0 → 0 the fields hardly leave the span of their past: the conditional variance of
    # step t is O((η0γ0)^{2t}), below round-off from t ≈ 4 on (those pivots are zero); the clipped
    # negative mass stays at round-off
    assert np.all(np.asarray(info.num_zero_pivots) > 0)
    assert np.all(np.asarray(info.clipped_xi) < 1e-10) and np.all(
        np.asarray(info.clipped_rho) < 1e-10
    )


def test_lazy_limit_features_readout_is_kernel_descent_with_theta_tilde():
    """T4 / §3.5: as γ0 → 0, mode B read out by P2 is kernel GD with Θ̃(0) (train and test)."""
    _lazy(FeatureReadout(), "Theta_decoupled")


@pytest.mark.slow
def test_lazy_limit_ntk_readout_is_kernel_descent_with_theta():
    """T4 / §3.5: as γ0 → 0, mode B read out by P1 is kernel GD with Θ(0)."""
    _lazy(NTKReadout(), "Theta")


def test_noise_is_the_exact_conditional_gaussian_of_the_empirical_kernels(recorded):
    """Spec §4.2, in sample: for every layer step, over all evaluated pairs (with an exactly
    duplicated point, so some pivots are zero),

    * the factors reproduce the empirical kernels, ``L Lᵀ = φ(H)ᵀφ(H)/M`` and ``Ĝ_{k+1}`` (C × C
      blocks): the covariance of the generated noise *given* the particles' fields is the empirical
      kernel to float precision (sample-conditional);
    * the generated noises are ``ξ = Z Lᵀ``; each step's noise minus its fresh part is the
      conditional mean ``ξ_old Φ̂_old⁺ Φ̂(old, new)`` (against numpy's pseudo-inverse);
    * the particle-empirical covariance ``ξᵀξ/M`` equals ``Φ̂`` within its sampling error
      (not to float precision: the rows of ``Z`` are Gaussian, as the rows of ``W`` are).
    """
    state, calls = recorded["state"], recorded["noises"]
    T, M, K, C = DEFAULT["T"], DEFAULT["M"], DEFAULT["K"], 2
    assert len(calls) == T + 1 and np.all(np.asarray(state.count) == T + 1)
    for name, hist, noise in (
        ("xi", state.xi, jnp.concatenate([n["xi"] for n in calls], axis=-1)),
        ("rho", state.rho, jnp.concatenate([n["rho"] for n in calls], axis=-1)),
    ):
        for e in range(2):  # two of the repetitions
            for k in range(K):
                fields = np.asarray(hist.hist[e, k])  # (M, n)
                L = np.asarray(hist.L[e, k])
                xi = np.asarray(noise[e, k])
                emp = fields.T @ fields / M
                scale = np.max(np.abs(emp))
                np.testing.assert_array_equal(L, np.tril(L), err_msg=name)
                np.testing.assert_allclose(L @ L.T, emp, atol=1e-11 * scale, err_msg=name)
                np.testing.assert_allclose(xi, np.asarray(hist.z[e, k]) @ L.T, atol=1e-10)
                zero = np.diagonal(L) == 0
                assert np.all(L[:, zero] == 0), name  # zero pivots: zero columns
                assert zero.sum() == (T + 1) * (1 if name == "xi" else C)  # the duplicate
                b = L.shape[0] // (T + 1)
                for t in range(1, T + 1):
                    old, new = slice(0, t * b), slice(t * b, (t + 1) * b)
                    fresh = np.asarray(hist.z[e, k])[:, new] @ L[new, new].T
                    mean = xi[:, old] @ np.linalg.pinv(emp[old, old], rcond=1e-10) @ emp[old, new]
                    np.testing.assert_allclose(xi[:, new] - fresh, mean, atol=1e-8, err_msg=name)
                # the particle average of ξᵀξ/M is Φ̂ up to its O(M^-1/2) sampling error
                diag = np.sqrt(np.outer(np.diagonal(emp), np.diagonal(emp)))
                assert np.all(np.abs(xi.T @ xi / M - emp) <= 6 * np.sqrt(2 / M) * diag + 1e-12)


def test_simulation_compiles_one_step_for_all_training_steps(recorded):
    """No retrace across t (histories preallocated; t and the save flag are arrays): the jitted
    step traced once for the T training steps and the final observation."""
    assert len(recorded["noises"]) == DEFAULT["T"] + 1
    assert eqx.debug.get_num_traces(recorded["counted"]) == 1


def test_mode_a_and_too_many_pairs_are_rejected():
    """Mode A has no Cholesky realisation (§4.2); N_T = (T+1)·Pts must not exceed M."""
    task = _task()
    kwargs: dict[str, Any] = dict(
        param=nfd.DepthMuP(),
        activation=Tanh(),
        num_layer_steps=2,
        num_steps=3,
        readout=FeatureReadout(),
        loss=MSE(),
    )
    points = Points.from_task(task)
    with pytest.raises(ValueError, match="limit.noise"):
        CholeskyParticles(num_particles=64, coupling=nfd.ReusedWeights(), **kwargs)
    with pytest.raises(ValueError, match="particles"):
        dyn = CholeskyParticles(num_particles=16, coupling=nfd.DecoupledWeights(), **kwargs)
        _draw(dyn, points, jr.split(jr.key(2), 1))
    with pytest.raises(ValueError, match="one_layer"):
        CholeskyParticles(
            num_particles=64, coupling=nfd.DecoupledWeights(), block=nfd.TwoLayer(), **kwargs
        )
