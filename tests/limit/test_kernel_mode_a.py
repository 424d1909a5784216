"""The kernel fixed-point method in mode A (`ReusedWeights`, `limit.coupling = "exact"`; §3.4,
§4.3): against the exact linear oracle (§4.4), the random-matrix particle method (§4.1) extrapolated
in M, and the lazy closed form (§3.5).

Every tolerance is a multiple of a standard error measured from independent draw sets (kernel
members, which are independent draw sets of S samples, and particle seeds), never a stored number.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mean_se, simulate, unit_inputs

import nfd
from nfd.dynamics import Points, SaveAt, Trajectory, batch_schedule, evolve, save_steps
from nfd.limit import KernelFixedPoint, LinearExact, init_kernels, sample_particles
from nfd.nn import (
    MSE,
    CrossEntropy,
    Erf,
    FeatureReadout,
    Gelu,
    Linear,
    NTKReadout,
    Relu,
    Tanh,
    split_losses,
)

REUSED, DECOUPLED = nfd.ReusedWeights(), nfd.DecoupledWeights()
P1, P2 = NTKReadout(), FeatureReadout()
READOUTS = pytest.mark.parametrize("readout", [P1, P2], ids=["P1", "P2"])
NAMES = ("f", "loss_train", "loss_test")  # f: train and test points together


def _points(num_train: int, num_test: int, dim: int, out_dim: int, *, scale: float = 1.0):
    """Unit inputs; ``y = scale · sign(x₁ + 0.3 x₂)`` (C = 1) or one-hot classes (C > 1)."""
    x = unit_inputs(num_train + num_test, dim, key=jr.key(0))
    if out_dim == 1:
        y = scale * jnp.sign(x[:, :1] + 0.3 * x[:, 1:2])
    else:
        y = jax.nn.one_hot(jnp.argmax(x[:, :out_dim], axis=1), out_dim, dtype=x.dtype)
    return Points(x=x, y=y, num_train=num_train)


def _saveat(schedule, ntk: bool = False) -> SaveAt:
    return SaveAt(steps=save_steps(int(schedule.shape[0]), 1), ntk=ntk)


def _arrays(traj: Trajectory) -> dict[str, np.ndarray]:
    """``f`` on train and test points ``(E, S, Pts, C)`` and the losses ``(E, S)`` as numpy."""
    f = np.concatenate([np.asarray(traj.f_train), np.asarray(traj.f_test)], axis=2)
    out = {"f": f, "loss_train": np.asarray(traj.loss_train)}
    out["loss_test"] = np.asarray(traj.loss_test)
    if traj.ntk is not None:
        out["ntk"] = np.asarray(traj.ntk)
    return out


def _mean_losses(loss, f, points) -> tuple[np.ndarray, np.ndarray]:
    """The train and test losses of the member-mean prediction, ``L(mean_e f_e)`` ``(S, 2)``, and
    their jackknife SE over members. (The mean of the members' own losses carries a Jensen bias,
    ``½ Var(f_e)`` for MSE, from their Monte Carlo spread, which differs between methods.)"""

    def losses(fbar):
        tr, te = jax.vmap(lambda g: split_losses(loss, g, points.y, points.num_train))(fbar)
        return np.stack([np.asarray(tr), np.asarray(te)], axis=-1)

    E = f.shape[0]
    loo = np.stack([losses(jnp.asarray((f.sum(0) - f[e]) / (E - 1))) for e in range(E)])
    se = np.sqrt((E - 1) / E * np.sum((loo - loo.mean(0)) ** 2, axis=0))
    return losses(jnp.asarray(f.mean(0))), se


def _kernel(
    points, schedule, readout, *, act, loss, param, lr, K, S, E, coupling=REUSED, ntk=False, **kw
):
    """``E`` independent draw sets of the kernel fixed point (keys ``jr.split(jr.key(2), E)``)."""
    dyn = KernelFixedPoint(
        num_samples=S,
        num_layer_steps=K,
        param=param,
        activation=act,
        loss=loss,
        coupling=coupling,
        readout=readout,
        **kw,
    )
    return evolve(
        dyn,
        points,
        lr=jnp.full((E,), lr),
        schedule=schedule,
        saveat=_saveat(schedule, ntk),
        keys=jr.split(jr.key(2), E),
    )


def _exact(points, schedule, readout, coupling, *, loss, param, lr, K, ntk=False):
    dyn = LinearExact(
        num_layer_steps=K,
        param=param,
        activation=Linear(),
        loss=loss,
        coupling=coupling,
        readout=readout,
    )
    return evolve(
        dyn, points, lr=jnp.full((1,), lr), schedule=schedule, saveat=_saveat(schedule, ntk)
    )


# -- 1. linear networks: the exact oracle -----------------------------------------------------
LIN_PARAM = nfd.DepthMuP(beta=1.3, gamma0=1.5, sigma_in=0.9, sigma_out=1.2)


@pytest.mark.parametrize(
    "K,readout",
    [
        pytest.param(2, P1, id="2-P1", marks=pytest.mark.slow),
        pytest.param(2, P2, id="2-P2"),
        pytest.param(4, P1, id="4-P1"),
        pytest.param(4, P2, id="4-P2", marks=pytest.mark.slow),
    ],
)
def test_linear_matches_the_exact_oracle_within_4_se(K, readout):
    """φ = id, MSE, full batch, P = 3 (+1 test point), T = 3, η0 = 0.2, γ0 = 1.5, β = 1.3,
    σ_in = 0.9, σ_out = 1.2: mode A's f (train and test) and both losses at every step agree with
    `LinearExact` mode A (zero Monte Carlo error) within 4 SE. Plain Monte Carlo draws
    (``orthogonalize=False``), S = 4096, 16 independent draw sets give the SE (losses: of the mean
    prediction, jackknife SE); the fixed point of the sampled map also has an O(1/S) bias (measured
    for P2, K = 4, t = 3: about 1 SE here), inside the tolerance. The oracle's mode B lies more than
    6 SE away (measured 9.2, 43, 26, 131 SE for K = 2, 4 and P1, P2), so the check fails if the
    response terms are dropped. Measured maxima of the agreement: 1.6–2.3 SE."""
    points = _points(3, 1, 3, 1)
    schedule = batch_schedule(3, 0, 3, key=jr.key(1))
    common = dict(loss=MSE(), param=LIN_PARAM, lr=0.2, K=K)
    ref = {c: _arrays(_exact(points, schedule, readout, c, **common)) for c in (REUSED, DECOUPLED)}
    traj = _kernel(
        points, schedule, readout, act=Linear(), S=4096, E=16, orthogonalize=False, **common
    )
    assert bool(jnp.all(traj.info.converged)), traj.info.residual
    f = _arrays(traj)["f"]
    exact = ref[REUSED]
    pairs = [(mean_se(f), exact["f"][0])]
    pairs.append(
        (
            _mean_losses(MSE(), f, points),
            np.stack([exact["loss_train"][0], exact["loss_test"][0]], -1),
        )
    )
    for (mean, se), want in pairs:
        gap = np.abs(mean - want)
        assert np.all(gap <= 4 * se + 1e-12), np.max(gap / np.maximum(se, 1e-300))
    mean, se = mean_se(f)
    z_b = np.abs(mean - ref[DECOUPLED]["f"][0])[1:] / se[1:]
    assert np.max(z_b) > 6, np.max(z_b)


@READOUTS
def test_linear_moment_matched_draws_reproduce_the_exact_oracle(readout):
    """Cross-entropy with C = 3, minibatches of 2, K = 3, T = 3 (β, γ0, σ's ≠ 1): with the default
    moment-matched draws every field of a linear net is linear in draws whose sample covariance is
    exactly I, so every sample moment (kernels and Stein coefficients) is exact and the Monte Carlo
    error vanishes: the two draw sets agree to round-off (SE < 1e-12, asserted). What is left is
    the stopping rule (tol = 1e-10 on the relative change of the iterate; measured f error 3e-10),
    so f, both losses and the NTK (mode A: the fields' own Θ for both readouts) match `LinearExact`
    mode A within 4 SE + 1e-7 relative; mode B differs at O(1)."""
    points = _points(3, 1, 3, 3)
    schedule = batch_schedule(3, 2, 3, key=jr.key(1))
    common = dict(loss=CrossEntropy(), param=LIN_PARAM, lr=0.3, K=3, ntk=True)
    ref = {c: _arrays(_exact(points, schedule, readout, c, **common)) for c in (REUSED, DECOUPLED)}
    traj = _kernel(
        points, schedule, readout, act=Linear(), S=512, E=2, tol=1e-10, max_iter=100, **common
    )
    assert bool(jnp.all(traj.info.converged)), traj.info.residual
    est = _arrays(traj)
    for name in (*NAMES, "ntk"):
        mean, se = mean_se(est[name])
        exact = ref[REUSED][name][0]
        assert np.max(se) < 1e-12 * np.max(np.abs(exact)), (name, np.max(se))
        tol = 4 * se + 1e-7 * np.max(np.abs(exact))
        assert np.all(np.abs(mean - exact) <= tol), (name, np.max(np.abs(mean - exact)))
        assert np.max(np.abs(ref[DECOUPLED][name][0] - exact)) > 1e-2 * np.max(np.abs(exact))


# -- 2. nonlinear networks: the particle method, Richardson-extrapolated in M -----------------
NONLINEAR = {  # name: (activation, loss, outputs, label scale, batch size, η0, parameterization)
    "tanh_mse": (Tanh(), MSE(), 1, 3.0, 0, 0.5, nfd.DepthMuP(gamma0=2.0)),
    "relu_ce3": (Relu(), CrossEntropy(), 3, 1.0, 2, 1.0, nfd.DepthMuP()),
}
NL_K, NL_T, NL_P, NL_D = 4, 3, 3, 4


def _nonlinear(name):
    act, loss, out_dim, scale, batch, lr, param = NONLINEAR[name]
    points = _points(NL_P, 1, NL_D, out_dim, scale=scale)
    schedule = batch_schedule(NL_P, batch, NL_T, key=jr.key(1))
    return points, schedule, dict(act=act, loss=loss, param=param, lr=lr)


def _particles(points, schedule, readout, coupling, *, M, E, act, loss, param, lr):
    """``E`` seeds of `MatrixParticles` with ``M`` particles (keys depend on ``M``: independent)."""
    C = points.out_dim
    parts = eqx.filter_vmap(
        lambda k: sample_particles(M, NL_K, NL_D, C, sigma_out=1.0, coupling=coupling, key=k)
    )(jr.split(jr.key(3 + M), E))
    traj = simulate(
        parts,
        points,
        param=param,
        activation=act,
        readout=readout,
        loss=loss,
        lr=jnp.full((E,), lr),
        schedule=schedule,
        coupling=coupling,
    )
    return _arrays(traj)


def _richardson(small, large):
    """``2 f(2M) − f(M)`` and its SE (independent seeds): ``sqrt(4 SE(2M)² + SE(M)²)``."""
    (m1, s1), (m2, s2) = mean_se(small), mean_se(large)
    return 2 * m2 - m1, np.sqrt(4 * s2**2 + s1**2)


_SLOW = pytest.mark.slow
NONLINEAR_CASES = [  # default tier: one case per readout in which mode B is resolved (> 4 SE away)
    pytest.param("tanh_mse", P1, id="tanh_mse-P1"),
    pytest.param("tanh_mse", P2, id="tanh_mse-P2", marks=_SLOW),  # mode B within 1.1 SE here
    pytest.param("relu_ce3", P1, id="relu_ce3-P1", marks=_SLOW),
    pytest.param("relu_ce3", P2, id="relu_ce3-P2"),
]


@pytest.mark.parametrize("case,readout", NONLINEAR_CASES)
def test_nonlinear_agrees_with_particles_extrapolated_in_M(case, readout):
    """tanh with MSE (labels ±3, γ0 = 2, full batch) and ReLU with cross-entropy (C = 3, minibatches
    of 2): mode A's f (train and test) and both losses at t = 1..3 agree with `MatrixParticles`
    mode A (W̃ = W), Richardson-extrapolated in M (2 f(512) − f(256), 32 seeds each, removing the
    O(1/M) bias), within 4 combined SE (kernel: 8 draw sets of S = 2048; losses of the mean
    prediction, jackknife SE). Measured maxima: 1.5–2.2 SE. The kernel method's mode B lies 4.2
    (tanh, P1), 7.2 and 6.3 SE (ReLU, P1 and P2) from the reference, so dropping the response terms
    fails here; for tanh with P2 the effect (0.015) is below the particles' SE (1.1 SE).
    `test_mode_a_effect_agrees_with_particles` (slow) compares the effect itself."""
    points, schedule, common = _nonlinear(case)
    traj = _kernel(points, schedule, readout, K=NL_K, S=2048, E=8, **common)
    assert bool(jnp.all(traj.info.converged)), traj.info.residual
    f = _arrays(traj)["f"][:, 1:]
    small, large = (
        _particles(points, schedule, readout, REUSED, M=M, E=32, **common)["f"][:, 1:]
        for M in (256, 512)
    )
    loss = common["loss"]
    (l1, s1), (l2, s2) = (_mean_losses(loss, x, points) for x in (small, large))
    pairs = [(mean_se(f), _richardson(small, large))]
    pairs.append((_mean_losses(loss, f, points), (2 * l2 - l1, np.sqrt(4 * s2**2 + s1**2))))
    for (mean, se), (rich, rse) in pairs:
        z = np.abs(mean - rich) / np.sqrt(se**2 + rse**2)
        assert np.all(z < 4.0), float(z.max())


@pytest.mark.slow
@READOUTS
@pytest.mark.parametrize("case", list(NONLINEAR))
def test_mode_a_effect_agrees_with_particles(case, readout):
    """The mode-A effect itself, Δ = f(mode A) − f(mode B) on common random numbers (the kernel
    method's members reuse their draws, the particle seeds their U, W, v(0)), agrees with the
    particle method's Richardson-extrapolated Δ (M = 256, 512; 32 seeds) within 4 combined SE.
    Measured: at most 2.6 SE apart; the particles resolve Δ ≠ 0 at 6.0 (tanh, P1), 2.1 (tanh, P2),
    10.5 and 12.9 SE (ReLU, P1 and P2)."""
    points, schedule, common = _nonlinear(case)
    f = {}
    for c in (REUSED, DECOUPLED):
        f[c] = _arrays(
            _kernel(points, schedule, readout, K=NL_K, S=2048, E=8, coupling=c, **common)
        )
    mean, se = mean_se((f[REUSED]["f"] - f[DECOUPLED]["f"])[:, 1:])
    deltas = []
    for M in (256, 512):
        pair = [_particles(points, schedule, readout, c, M=M, E=32, **common)["f"] for c in f]
        deltas.append((pair[0] - pair[1])[:, 1:])
    rich, rse = _richardson(*deltas)
    z = np.abs(mean - rich) / np.sqrt(se**2 + rse**2)
    assert np.all(z < 4.0), float(z.max())


# -- 3. the lazy limit ------------------------------------------------------------------------
LAZY_CASES = [(a, P2) for a in (Linear(), Relu(), Erf(), Tanh(), Gelu())]
LAZY_CASES += [(Tanh(), P1), (Relu(), P1)]
LAZY_DEFAULT = {"Relu-features", "Tanh-ntk"}  # one per readout in the default tier; all when slow


@pytest.mark.parametrize(
    "act,readout",
    [
        pytest.param(
            a,
            r,
            id=f"{type(a).__name__}-{r.name}",
            marks=() if f"{type(a).__name__}-{r.name}" in LAZY_DEFAULT else _SLOW,
        )
        for a, r in LAZY_CASES
    ],
)
def test_lazy_limit_is_kernel_gradient_descent_with_theta0(act, readout):
    """γ0 = 1e-4, η0 = 0.3, full-batch MSE (§3.5): mode A read out by P1 or P2 follows
    f(t+1) = f(t) + η0 Θ(0) c(t) on train and test points with Θ(0) from `init_kernels` (both
    readouts: mode A moves with the true Θ), within 4 SE (8 draw sets) + 50 γ0 (the O(γ0) distance
    from lazy).
    Every activation with P2, where the response term acts at O(η0) although it is O(η0 γ0) in the
    fields (P2 divides by γ0; without it f would follow Θ̃(0), 27% lower for linear nets at K = 3;
    the tolerance is asserted below 10% of f), and tanh, ReLU with P1. Measured: at most 0.6 of the
    tolerance."""
    gamma0, lr, K, T, P = 1e-4, 0.3, 3, 3, 3
    param = nfd.DepthMuP(gamma0=gamma0)
    points = _points(P, 2, 4, 1)
    schedule = batch_schedule(P, 0, T, key=jr.key(1))
    traj = _kernel(
        points, schedule, readout, act=act, loss=MSE(), param=param, lr=lr, K=K, S=512, E=8
    )
    assert bool(jnp.all(traj.info.converged)), traj.info.residual
    theta = init_kernels(param, act, points.kx, K).Theta
    f, ref = jnp.zeros((P + 2, 1)), []
    for _ in range(T + 1):
        ref.append(f)
        c = jnp.zeros((P + 2, 1)).at[:P].set((points.y[:P] - f[:P]) / P)
        f = f + lr * theta @ c
    ref = np.asarray(jnp.stack(ref))
    mean, se = mean_se(_arrays(traj)["f"])
    assert np.max(np.abs(ref[-1])) > 0.3  # it learned
    tol = 4 * se + 50 * gamma0
    assert np.max(tol) < 0.1 * np.max(np.abs(ref))  # resolves Θ(0) from Θ̃(0)
    gap = np.abs(mean - ref)
    assert np.all(gap <= tol), np.max(gap / tol)


# -- 4. the readouts: P1 against P2 ----------------------------------------------------------
def _readout_gap(lr: float, gamma0: float, coupling=REUSED) -> np.ndarray:
    """f(P1) − f(P2) at t = 1, 2 on train and test points ``(2, Pts, C)`` of a linear net (MSE,
    labels ±1, full batch, K = 4, β = 1.2, σ_in = 0.9) from moment-matched draws, which make the
    kernel method exact for φ = id (two draw sets; their agreement to round-off is asserted)."""
    points = _points(3, 1, 4, 1)
    schedule = batch_schedule(3, 0, 2, key=jr.key(1))
    param = nfd.DepthMuP(gamma0=gamma0, beta=1.2, sigma_in=0.9)
    common = dict(act=Linear(), loss=MSE(), param=param, lr=lr, K=4, S=512, E=2)
    f = [
        _arrays(_kernel(points, schedule, r, coupling=coupling, tol=1e-11, max_iter=100, **common))
        for r in (P1, P2)
    ]
    gap = (f[0]["f"] - f[1]["f"])[:, 1:]
    assert np.max(np.abs(gap[0] - gap[1])) < 1e-9 * np.max(np.abs(f[1]["f"])), "draw sets differ"
    return gap[0]


def _local_slopes(xs, gaps) -> np.ndarray:
    """Log-log slopes of ``max |gap|`` between consecutive grid points."""
    m = np.array([np.max(np.abs(g)) for g in gaps])
    return np.diff(np.log(m)) / np.diff(np.log(np.asarray(xs)))


@pytest.mark.slow  # ~45 s of CPU: the default tier's budget (P1 and P2 meet in test_linear_*)
def test_p1_and_p2_gap_orders_in_eta0_and_gamma0():
    """Spec §3.3: in mode A, P2 is exact for discrete GD and P1 (first order in η0 per step) differs
    from it by at most O(η0² γ0) per step, zero at t = 1 for linear nets; in mode B, P1 moves with Θ
    and P2 with Θ̃, so they differ at O(η0). Linear net, exact draws (no Monte Carlo error):

    * mode A: the t = 1 gap vanishes (< 1e-9 of f). At t = 2 the gap is O(η0³ γ0²), inside the
      spec's bound: the η0² γ0 coefficient multiplies f(1) = O(η0) for a linear net. The local log-log
      slope in η0 (γ0 = 1; η0 = 0.01 … 0.08, doubling) tends to 3 at the rate of the next order (the
      deviation about doubles, ratio 2 ± 0.7, with each doubling of η0; measured 2.2, 2.7), the
      finest within 0.25 (measured 2.79); the slope in γ0 (η0 = 0.02; γ0 = 0.25 … 2) is 2 within 0.05
      (measured 2.001–2.014).
    * mode B: the gap is O(η0) already at t = 1: slope 1 within 0.01 there, and flat in γ0.

    (For tanh the η0² γ0 coefficient vanishes too, by the symmetry φ(−h) = −φ(h); for ReLU it does
    not, but its Monte Carlo error at default-tier sizes hides the slope.)"""
    etas, gammas = (0.01, 0.02, 0.04, 0.08), (0.25, 0.5, 1.0, 2.0)
    gaps = [_readout_gap(lr, 1.0) for lr in etas]
    assert all(np.max(np.abs(g[0])) < 1e-9 * np.max(np.abs(g[1]) + 1) for g in gaps)
    dev = _local_slopes(etas, [g[1] for g in gaps]) - 3.0
    assert abs(dev[0]) < 0.25, dev
    assert np.all(np.abs(dev[1:] / dev[:-1] - 2.0) < 0.7), dev
    gaps = [_readout_gap(0.02, g) for g in gammas]
    assert np.all(np.abs(_local_slopes(gammas, [g[1] for g in gaps]) - 2.0) < 0.05)
    gaps_b = [_readout_gap(lr, 1.0, DECOUPLED) for lr in etas]
    assert np.all(np.abs(_local_slopes(etas, [g[0] for g in gaps_b]) - 1.0) < 0.01)
    gaps_b = [_readout_gap(0.02, g, DECOUPLED) for g in gammas]
    assert np.all(np.abs(_local_slopes(gammas, [g[0] for g in gaps_b])) < 0.01)


# -- status and wiring ------------------------------------------------------------------------
def test_unconverged_member_is_recorded_not_failed():
    """With max_iter = 2 the mode-A iteration stops above tol: `info.converged` is False and the
    reported (finite) observables are the last iterate's; `describe` counts the member."""
    points, schedule, common = _nonlinear("relu_ce3")
    traj = _kernel(points, schedule, P2, K=NL_K, S=512, E=2, max_iter=2, **common)
    info = traj.info
    assert not bool(jnp.any(info.converged)) and np.all(np.asarray(info.iterations) == 2)
    assert np.all(np.asarray(info.residual) >= 1e-4)
    assert np.all(np.isfinite(np.asarray(traj.f_train))) and np.all(traj.failed_step == -1)
    dyn = KernelFixedPoint(
        num_samples=512,
        num_layer_steps=NL_K,
        param=nfd.DepthMuP(),
        activation=Relu(),
        loss=CrossEntropy(),
        coupling=REUSED,
        max_iter=2,
    )
    assert "2 of 2 member(s) not converged" in (dyn.describe(traj) or "")


def test_diverging_member_is_a_failure_never_converged():
    """ReLU, mode A, undamped iteration (damping 1) at η0 = 0.5, K = 16, T = 10: one of these two
    draw sets blows up to NaN while the stopping rule fires on a residual computed before (4
    iterations). It is recorded as failed at its first non-finite step, and `info.converged` is
    False for it: a member with non-finite values never counts as converged."""
    P, T, D = 8, 10, 8
    x = jr.normal(jr.key(0), (P, D))
    x = x * jnp.sqrt(D / jnp.sum(x**2, axis=1, keepdims=True))
    points = Points(x=x, y=jnp.sign(x[:, :1]), num_train=P)
    dyn = KernelFixedPoint(
        num_samples=256,
        num_layer_steps=16,
        param=nfd.DepthMuP(),
        activation=Relu(),
        loss=MSE(),
        coupling=REUSED,
        readout=P2,
        orthogonalize=False,
        damping=1.0,
        max_iter=100,
    )
    traj = evolve(
        dyn,
        points,
        lr=jnp.full((2,), 0.5),
        schedule=batch_schedule(P, 0, T, key=jr.key(1)),
        saveat=SaveAt(steps=save_steps(T, 1)),
        keys=jr.split(jr.key(2), 2),
    )
    failed = np.asarray(traj.failed_step) >= 0
    assert failed.any(), "the case no longer diverges: pick another"
    assert not np.any(np.asarray(traj.info.converged)[failed])


@pytest.mark.slow  # ~40 s of CPU; a regression guard for one jaxlib version's runtime
def test_many_pairs_do_not_deadlock_the_cpu_runtime():
    """P = 8 points over T = 10 steps (N = 88 pairs), two members: jaxlib 0.10's CPU runtime
    deadlocked (every worker idle, forever) when the kernel method factored its layer batch in one
    batched LAPACK call (`one_at_a_time`). Run in a subprocess with a deadline, so a regression fails
    instead of hanging the suite; both modes converge."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, jax.random as jr
        import nfd
        from nfd.dynamics import Points, SaveAt, batch_schedule, evolve, save_steps
        from nfd.limit import KernelFixedPoint
        from nfd.nn import MSE, Tanh
        x = jr.normal(jr.key(0), (10, 8))
        pts = Points(x=x, y=jnp.sign(x[:, :1]), num_train=8)
        sched = batch_schedule(8, 0, 10, key=jr.key(1))
        for coupling in (nfd.ReusedWeights(), nfd.DecoupledWeights()):
            dyn = KernelFixedPoint(num_samples=256, num_layer_steps=4, param=nfd.DepthMuP(),
                activation=Tanh(), loss=MSE(), coupling=coupling, orthogonalize=False)
            traj = evolve(dyn, pts, lr=jnp.full((2,), 0.5), schedule=sched,
                saveat=SaveAt(steps=save_steps(10, 5)), keys=jr.split(jr.key(2), 2))
            assert bool(jnp.all(traj.info.converged)), traj.info.residual
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
