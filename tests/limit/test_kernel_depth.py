"""The kernel fixed point in depth: its ``O(1/K)`` discretisation error (§7.1, weak order 1),
the ``K → ∞`` Richardson extrapolation over coupled ``K``/``2K`` runs, and the kernel diagnostics
(smallest eigenvalues of ``Φ_k``, ``G_k``) recorded in `FixedPointInfo`.

Runs at different ``K`` share one Brownian path in depth (`KernelFixedPoint.draw_refinement`): the
normals of the ``K``-step run are the normalised group sums of the finest run's. The noises are
additive (their covariances are kernels, not functions of the sample), so the depth scheme is
pathwise of order 1: ``f_K − f_ref`` is ``O(1/K)`` per draw set, a mean (weak) part plus a
random part of zero mean.
"""

import dataclasses

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import slope, unit_inputs

import nfd
from nfd.dynamics import Points, SaveAt, batch_schedule, evolve, save_steps
from nfd.limit import KernelFixedPoint, layer_refinement_pair
from nfd.nn import MSE, FeatureReadout, Linear

K_REF = 1024


def _setup(num_steps: int = 2):
    x = unit_inputs(4, 4, key=jr.key(0))
    y = jnp.array([[1.0], [-1.0], [1.0], [-1.0]], x.dtype)  # both classes among the 3 train points
    points = Points(x=x, y=y, num_train=3)
    return points, batch_schedule(3, 0, num_steps, key=jr.key(1))


def _f(dyn, points, schedule, E: int = 2) -> np.ndarray:
    traj = evolve(
        dyn,
        points,
        lr=jnp.full((E,), 0.3),
        schedule=schedule,
        saveat=SaveAt(steps=save_steps(int(schedule.shape[0]), 1)),
        keys=jr.split(jr.key(2), E),
    )
    assert bool(jnp.all(traj.info.converged)), traj.info.residual
    return np.concatenate([np.asarray(traj.f_train), np.asarray(traj.f_test)], axis=2)


def _dyn(K: int, readout, *, refinement: int = 1) -> KernelFixedPoint:
    return KernelFixedPoint(
        num_samples=256,
        num_layer_steps=K,
        param=nfd.DepthMuP(beta=1.2, gamma0=1.0, sigma_in=1.1, sigma_out=0.9),
        activation=Linear(),
        loss=MSE(),
        coupling=nfd.ReusedWeights(),
        readout=readout,
        orthogonalize=False,  # S = 256 < the columns of K = 1024 draws
        tol=1e-6,  # the relative change of tiny response coefficients stalls near 1e-6
        max_iter=200,
        draw_refinement=refinement,
    )


@pytest.mark.slow  # 30 s: the K = 1024 reference
def test_depth_error_has_slope_minus_one_and_richardson_removes_it():
    """``‖f_K − f_1024‖`` (coupled draws, mode A, linear net, two draw sets) against
    ``K = 4 … 32``: slope ``−1 ± 0.25`` (§7.1; measured −1.02). The Richardson values
    ``2 f(2K) − f(K)`` remove the *mean* ``1/K`` term, so their error must lie below ``f(2K)``'s at
    every ``K``; per draw set what remains is mostly the pathwise ``O(1/K)`` part of zero mean
    (measured: 0.75 → 0.72 → 0.32 of ``f(2K)``'s error), which averages out over members and
    is part of a ``K → ∞`` estimate's member spread (its SE), not a bias."""
    points, schedule, readout = *_setup(), FeatureReadout()
    Ks = [4, 8, 16, 32, 64]
    ref = _f(_dyn(K_REF, readout), points, schedule)
    fs = {K: _f(_dyn(K, readout, refinement=K_REF // K), points, schedule) for K in Ks}
    err = {K: float(np.sqrt(np.mean((fs[K] - ref) ** 2))) for K in Ks}
    s = slope(Ks[:-1], [err[K] for K in Ks[:-1]])
    assert abs(s + 1) <= 0.25, (s, err)
    rich = {K: float(np.sqrt(np.mean((2 * fs[2 * K] - fs[K] - ref) ** 2))) for K in Ks[:-1]}
    assert all(rich[K] < err[2 * K] for K in rich), (rich, err)


@pytest.mark.slow  # 14 s cold: three more compilations
def test_layer_refinement_pair_is_the_coupled_richardson_pair():
    """`layer_refinement_pair` gives ``(K, r = 2)`` and ``(2K, r = 1)``; the coarse run's draws are
    the fine run's group sums, so with identical keys the pair differs by the ``O(1/K)`` depth error
    only (0.066 here, as in the slope test), while runs from independent draws also differ by their
    Monte Carlo spread (0.25 here): the coupled gap must be below half the independent one."""
    points, schedule = _setup()
    coarse, fine = layer_refinement_pair(_dyn(8, FeatureReadout()))
    assert (coarse.num_layer_steps, coarse.draw_refinement) == (8, 2)
    assert (fine.num_layer_steps, fine.draw_refinement) == (16, 1)
    f_c, f_f = _f(coarse, points, schedule), _f(fine, points, schedule)
    independent = _f(dataclasses.replace(coarse, draw_refinement=1), points, schedule)
    coupled_gap = np.sqrt(np.mean((f_f - f_c) ** 2))
    independent_gap = np.sqrt(np.mean((f_f - independent) ** 2))
    assert coupled_gap < 0.5 * independent_gap, (coupled_gap, independent_gap)
    with pytest.raises(ValueError, match="draw_refinement"):
        layer_refinement_pair(coarse)


def test_min_eigenvalues_match_numpy_on_the_reported_kernels():
    """At ``T = 0`` the fixed point's ``Φ_k`` of a linear net is the sample Gram matrix of
    ``h_k(0)``, which the observables report (``h_kernel``) at the saved layers: the recorded
    relative smallest eigenvalue equals numpy's ``eigvalsh`` of it over its mean diagonal."""
    points, schedule = _setup(num_steps=0)
    K = 4
    dyn = dataclasses.replace(_dyn(K, FeatureReadout()), activation=Linear(), orthogonalize=True)
    taus = (0.25, 0.5, 0.75, 1.0)
    traj = evolve(
        dyn,
        points,
        lr=jnp.full((1,), 0.5),
        schedule=schedule,
        saveat=SaveAt(steps=(0,), kernels=True, layer_times=taus),
        keys=jr.split(jr.key(2), 1),
    )
    H = np.asarray(traj.h_kernel)[0, 0]  # (R, P, P) at k = τ K
    lam = np.linalg.eigvalsh(H)[:, 0] / np.mean(np.diagonal(H, axis1=1, axis2=2), axis=1)
    got = np.asarray(traj.info.phi_min_eig)[0, [round(t * K) for t in taus]]
    np.testing.assert_allclose(got, lam, rtol=1e-8, atol=1e-12)
    assert "Stein pivots" in dyn.describe(traj)


@pytest.mark.parametrize("S,same_as", [(256, False), (1024, True)])
def test_auto_orthogonalize_moment_matches_exactly_when_the_samples_allow(S, same_as):
    """``orthogonalize=None`` (the config's choice) is ``True`` when ``S ≥ D + C + K N (1 + C)``
    (K = 4, N = 12 pairs: 4 + 1 + 4·12·2 = 101 ≤ 1024) and plain normals below it (K = 16:
    389 > 256): bitwise the same run as the explicit choice."""
    points, schedule = _setup()
    K = 16 if S == 256 else 4
    auto = dataclasses.replace(_dyn(K, FeatureReadout()), num_samples=S, orthogonalize=None)
    explicit = dataclasses.replace(auto, orthogonalize=same_as)
    np.testing.assert_array_equal(_f(auto, points, schedule), _f(explicit, points, schedule))
