"""The kernel fixed-point method in mode A (`ReusedWeights`) against standard finite networks
(`FiniteNetwork`, reused weights, centred outputs) extrapolated in the width n: mode A read out by
P2 (`FeatureReadout`, the network's own centred output) is the n = ∞ limit of the finite network
at L = K, and the finite seed mean approaches it like c + a/n.

Nonlinear cases with β, σ_in, σ_out ≠ 1 (β = 0.8, σ_in = 1.2, σ_out = 0.9, γ0 = 1, η0 = 0.5),
L = K = 4 one-layer blocks, P = 4 training and 2 test points in D = 8, full-batch SGD for T steps:
tanh with MSE (labels ±2) and ReLU with cross-entropy (C = 3 classes).

The finite ensembles are the package's antithetic pairs (`run_finite(..., antithetic=True)`:
members 2p, 2p + 1 share U, W and have v(0), −v(0)); the independent units are the pair means
(the law is invariant under v(0) → −v(0), so a pair mean is unbiased and cancels the part of the
fluctuations odd in v(0)). Every width has its own `seed`: with JAX's partitionable threefry the
same key draws the width-64 U as the first 64 rows of the width-128 U, which would correlate the
width means that the fit treats as independent.

Every tolerance is a multiple of a standard error measured from independent units (pair means,
kernel draw sets), never a stored number.
"""

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mean_se, unit_inputs

import nfd
from nfd.config import build_activation, build_loss, build_param, build_schedule, from_dict
from nfd.dynamics import Points, SaveAt, Trajectory, evolve, save_steps
from nfd.experiments import run_finite
from nfd.limit import KernelFixedPoint
from nfd.nn import FeatureReadout, split_losses
from nfd.tasks import Task

REUSED, DECOUPLED = nfd.ReusedWeights(), nfd.DecoupledWeights()
P, Q, D, L = 4, 2, 8, 4  # train points, test points, input dimension, depth (= K)
CASES = {  # name: (activation, loss, outputs C, label scale)
    "tanh_mse": ("tanh", "mse", 1, 2.0),
    "relu_ce3": ("relu", "cross_entropy", 3, 1.0),
}


def _setup(case: str, steps: int, pairs: int):
    """The config (β, σ's ≠ 1; `seeds` = 2 × pairs members) and its task: unit inputs,
    ``y = scale · sign(x₁ + 0.3 x₂)`` (C = 1) or one-hot classes of ``argmax x[:C]`` (C = 3)."""
    act, loss, out_dim, scale = CASES[case]
    x = unit_inputs(P + Q, D, key=jr.key(0))
    if out_dim == 1:
        y = scale * jnp.sign(x[:, :1] + 0.3 * x[:, 1:2])
    else:
        y = jax.nn.one_hot(jnp.argmax(x[:, :out_dim], axis=1), out_dim, dtype=x.dtype)
    task = Task(
        name="fixed_points",
        x_train=x[:P],
        y_train=y[:P],
        x_test=x[P:],
        y_test=y[P:],
        num_classes=0 if out_dim == 1 else out_dim,
    )
    cfg = from_dict(
        {
            "task": {"name": "teacher_student", "n_train": P, "n_test": Q, "in_dim": D},
            "seeds": 2 * pairs,
            "precision": "float64",
            "model": {
                "depth": L,
                "activation": act,
                "branch_scale": 0.8,
                "gamma0": 1.0,
                "sigma_in": 1.2,
                "sigma_out": 0.9,
            },
            "optim": {"lr": 0.5, "steps": steps, "loss": loss},
            "output": {"every": 1},
        }
    )
    return cfg, task


def _observables(traj: Trajectory) -> np.ndarray:
    """Per member, the f of every train and test point and output, then the train loss, at each
    saved step t = 1..T: ``(E, T, Pts·C + 1)``."""
    f = np.concatenate([np.asarray(traj.f_train), np.asarray(traj.f_test)], axis=2)
    f = f.reshape(f.shape[0], f.shape[1], -1)
    loss = np.asarray(traj.loss_train)[:, :, None]
    return np.concatenate([f, loss], axis=-1)[:, 1:]


def _finite(cfg, task, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed mean and SE over the antithetic pair means of width-``width`` networks (own seed)."""
    traj = run_finite(
        dataclasses.replace(cfg, seed=seed), width=width, task=task, progress=False, antithetic=True
    )
    obs = _observables(traj)
    units = 0.5 * (obs[0::2] + obs[1::2])
    assert np.all(np.isfinite(units)), f"diverged member at n = {width}"
    return mean_se(units)


def _fit_inverse_width(widths, means, ses) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of ``mean(n) = c + a/n`` per entry (weights 1/SE²): ``c`` and its SE
    from the fit's covariance ``(Xᵀ W X)⁻¹``. ``means``, ``ses``: ``(W, ...)``."""
    x = (1.0 / np.asarray(widths, float)).reshape(-1, *([1] * (means.ndim - 1)))
    w = 1.0 / ses**2
    s0, s1, s2 = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    det = s0 * s2 - s1**2
    c = (s2 * (w * means).sum(0) - s1 * (w * x * means).sum(0)) / det
    return c, np.sqrt(s2 / det)


def _kernel(cfg, task, coupling, *, S: int, E: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SE over ``E`` independent draw sets of the kernel fixed point (P2, K = L), built
    from the finite config's parameterization, activation and loss, on its batch sequence. The
    train loss is that of the member-mean prediction with its jackknife SE: a member's own loss
    carries a Jensen bias (½ Var for MSE) from its Monte Carlo spread that the finite n → ∞
    limit does not have."""
    points = Points.from_task(task)
    schedule = build_schedule(cfg, task)
    loss = build_loss(cfg)
    dyn = KernelFixedPoint(
        num_samples=S,
        num_layer_steps=L,
        param=build_param(cfg),
        activation=build_activation(cfg),
        loss=loss,
        coupling=coupling,
        readout=FeatureReadout(),
    )
    traj = evolve(
        dyn,
        points,
        lr=jnp.full((E,), cfg.optim.lr),
        schedule=schedule,
        saveat=SaveAt(steps=save_steps(int(schedule.shape[0]), 1)),
        keys=jr.split(jr.key(2), E),
    )
    assert bool(jnp.all(traj.info.converged)), traj.info.residual
    obs = _observables(traj)
    f = obs[..., :-1]  # (E, T, Pts·C)
    mean, se = mean_se(obs)

    def train_loss(fbar):  # (T, Pts·C) -> (T,)
        fb = jnp.asarray(fbar.reshape(fbar.shape[0], points.num_points, -1))
        tr, _ = jax.vmap(lambda g: split_losses(loss, g, points.y, points.num_train))(fb)
        return np.asarray(tr)

    loo = np.stack([train_loss((f.sum(0) - f[e]) / (E - 1)) for e in range(E)])
    mean[..., -1] = train_loss(f.mean(0))
    se[..., -1] = np.sqrt((E - 1) / E * np.sum((loo - loo.mean(0)) ** 2, axis=0))
    return mean, se


# Sizes: widths, antithetic pairs per width, steps T, kernel samples S and draw sets E.
DEFAULT = dict(widths=(64, 128, 256), pairs=64, steps=2, S=1024, E=8)
LARGE = dict(widths=(64, 128, 256), pairs=96, steps=3, S=2048, E=8)
KERNEL_VS_FINITE = [
    pytest.param("tanh_mse", DEFAULT, id="tanh_mse", marks=pytest.mark.slow),  # 35 s cold
    pytest.param("relu_ce3", DEFAULT, id="relu_ce3", marks=pytest.mark.slow),
    pytest.param("tanh_mse", LARGE, id="tanh_mse-T3", marks=pytest.mark.slow),
    pytest.param("relu_ce3", LARGE, id="relu_ce3-T3", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case,sizes", KERNEL_VS_FINITE)
def test_kernel_mode_a_is_the_width_extrapolated_finite_network(case, sizes):
    """f (every train and test point and output) and the train loss at t = 1..T: the finite
    networks' seed means at n = 64, 128, 256 (antithetic pair means; 64 pairs, T = 2, or 96 pairs,
    T = 3), fitted by c + a/n per entry (weighted least squares, weights
    1/SE²), agree with kernel mode A (K = L, P2; E = 8 draw sets of S = 1024, or 2048 slow) within
    4 combined SE, sqrt(SE_c² + SE_kernel²), at every entry. The entries (15–39 per step) are
    strongly correlated; even as independent tests the chance that one of ≤ 80 standard normals
    passes 4 is < 0.5%, so a per-entry 4 SE bound is a family-wide one. The finite train loss is
    the members' mean loss (its O(1/n) Jensen part is in a/n).

    Discrimination: kernel mode B (`DecoupledWeights`, the GIA limit) is more than 4 combined SE
    from c at some entry, so dropping the response terms fails (the first assertion, given mode B's
    answer, fails at 7.0 SE; a kernel answer scaled by 1.05 fails at 16 SE, tanh, and 10 SE, ReLU).
    Measured maxima, mode A: 1.4 (tanh) and 1.6 SE (ReLU) at T = 2, 1.6 and 1.7 SE at T = 3;
    mode B: 7.0, 5.6, 8.7 and 7.3 SE. Every case is in the slow tier for time only (25–35 s each on
    two cores with a cold compile cache; the default tier's budget went to the GIA experiments)."""
    cfg, task = _setup(case, sizes["steps"], sizes["pairs"])
    widths = sizes["widths"]
    fin = [_finite(cfg, task, n, seed=10 + i) for i, n in enumerate(widths)]
    c, se_c = _fit_inverse_width(widths, *(np.stack(x) for x in zip(*fin, strict=True)))
    z = {}
    for coupling in (REUSED, DECOUPLED):
        mean, se = _kernel(cfg, task, coupling, S=sizes["S"], E=sizes["E"])
        z[coupling] = np.abs(c - mean) / np.sqrt(se_c**2 + se**2)
    assert np.all(z[REUSED] <= 4.0), (float(z[REUSED].max()), np.round(z[REUSED], 2))
    assert np.max(z[DECOUPLED]) > 4.0, float(z[DECOUPLED].max())  # the check is discriminating
