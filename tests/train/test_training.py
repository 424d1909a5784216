"""Trainer: coordinate check across width and depth, batch schedule, no retracing, divergence."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import slope, train

import nfd
from nfd.dynamics import _evolve as evolve_module
from nfd.dynamics import batch_schedule, save_steps
from nfd.nn import MSE, Relu
from nfd.tasks import teacher_student

TASK = dict(n_train=8, n_test=4, in_dim=8)


def _run(param, width, depth, *, steps=3, lr=0.5, seeds=1, task=None, **kw):
    task = teacher_student(**TASK, key=jr.key(0)) if task is None else task
    keys = jr.split(jr.key(width * 1000 + depth), seeds)
    models = eqx.filter_vmap(
        lambda k: nfd.ResNet(
            task.in_dim, task.out_dim, width, depth, param=param, activation=Relu(), key=k
        )
    )(keys)
    return train(
        models,
        task,
        optimizer=kw.pop("optimizer", "sgd"),
        loss=MSE(),
        lr=jnp.full((seeds,), lr),
        num_steps=steps,
        every=1,
        batch_key=jr.key(1),
        progress=False,
        **kw,
    )


def _sizes(res):
    """Last-layer activation RMS, L × mean per-block feature change, RMS last function step."""
    depth = res.block_movement.shape[-1]
    return (
        float(res.h_rms[0, -1, -1]),
        float(depth * jnp.mean(res.block_movement[0, -1])),
        float(jnp.sqrt(jnp.mean((res.f_train[0, -1] - res.f_train[0, -2]) ** 2))),
    )


@pytest.mark.slow  # ~40 s of CPU; T8 also runs in the transfer smoke run's coordinate check
def test_coord_check_depth_mup_flat_and_unscaled_control_grows():
    """Depth-muP: activation sizes, L·(per-block update) and function steps are O(1) in n and L
    (fitted log-log slopes near 0). The unscaled control (MuP, no 1/sqrt(L)) visibly grows."""
    p = nfd.DepthMuP()
    widths, depths = [64, 256, 1024], [4, 16, 64]
    by_width = np.array([_sizes(_run(p, n, 16)) for n in widths])
    by_depth = np.array([_sizes(_run(p, 256, L)) for L in depths])
    for j in range(3):
        assert abs(slope(widths, by_width[:, j])) < 0.15, (j, by_width[:, j])
        assert abs(slope(depths, by_depth[:, j])) < 0.15, (j, by_depth[:, j])
    # the control's features blow up (that is what it measures): no divergence threshold
    control = np.array(
        [_sizes(_run(nfd.MuP(), 256, L, steps=1, lr=1e-6, blowup=np.inf)) for L in depths]
    )
    assert slope(depths, control[:, 0]) > 1.0, control[:, 0]  # features blow up with depth
    assert slope(depths, control[:, 1]) > 1.0, control[:, 1]  # so does L·(block update)


def test_batch_schedule_epochs_are_permutations():
    sched = np.asarray(batch_schedule(10, 3, 7, key=jr.key(0)))
    assert sched.shape == (7, 3)
    for epoch in range(2):  # 3 batches per epoch, the 10th point dropped each epoch
        rows = sched[3 * epoch : 3 * epoch + 3].ravel()
        assert len(set(rows.tolist())) == 9 and rows.min() >= 0 and rows.max() <= 9
    np.testing.assert_array_equal(sched, batch_schedule(10, 3, 7, key=jr.key(0)))
    full = np.asarray(batch_schedule(5, 0, 2, key=jr.key(0)))
    np.testing.assert_array_equal(full, [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_array_equal(save_steps(10, 4), [0, 4, 8, 10])
    np.testing.assert_array_equal(save_steps(0, 4), [0])


def test_one_compile_across_steps(monkeypatch):
    """The loop's step and observe trace once for a whole run (no retracing across steps)."""
    step = eqx.filter_jit(
        eqx.debug.assert_max_traces(evolve_module._step.__wrapped__, max_traces=1),
        donate="all-except-first",
    )
    obs = eqx.filter_jit(
        eqx.debug.assert_max_traces(evolve_module._observe.__wrapped__, max_traces=1)
    )
    monkeypatch.setattr(evolve_module, "_step", step)
    monkeypatch.setattr(evolve_module, "_observe", obs)
    task = teacher_student(n_train=12, n_test=0, in_dim=4, key=jr.key(2))
    res = _run(nfd.DepthMuP(), 16, 3, steps=6, task=task, batch_size=4, optimizer="adam")
    assert res.steps.shape == (7,)
    assert eqx.debug.get_num_traces(step) == 1 and eqx.debug.get_num_traces(obs) == 1


def test_steps_zero_observes_initialisation_only():
    task = teacher_student(**TASK, key=jr.key(0))
    res = _run(nfd.DepthMuP(), 32, 2, steps=0, task=task, ntk=True, kernels=True)
    assert res.steps.tolist() == [0] and res.ntk is not None and res.h_kernel is not None
    # centred outputs vanish at initialisation; the loss is then ½ mean |y|²
    np.testing.assert_allclose(res.f_train, 0.0, atol=1e-14)
    np.testing.assert_allclose(res.loss_train[0, 0], 0.5 * jnp.mean(task.y_train**2), rtol=1e-12)
    # h_kernel at τ = 0 is σ_in² K^x exactly... up to the finite-width fluctuation of U x
    kx = task.x_train @ task.x_train.T / task.in_dim
    h0 = res.h_kernel[0, 0, 0, :8, :8]
    assert float(jnp.max(jnp.abs(h0 - kx))) < 6 / np.sqrt(32)


def test_diverging_member_is_recorded_and_others_continue():
    """An ensemble member with a huge learning rate diverges; it is frozen and recorded."""
    task = teacher_student(**TASK, key=jr.key(0))
    keys = jr.split(jr.key(3), 2)
    models = eqx.filter_vmap(
        lambda k: nfd.ResNet(8, 1, 32, 4, param=nfd.DepthMuP(), activation=Relu(), key=k)
    )(keys)
    res = train(
        models,
        task,
        optimizer="sgd",
        loss=MSE(),
        lr=jnp.array([0.1, 1e6]),
        num_steps=20,
        every=5,
        batch_key=jr.key(1),
        progress=False,
    )
    assert res.status.tolist() == [0, 1]
    assert int(res.failed_step[0]) == -1 and 0 <= int(res.failed_step[1]) < 20
    assert bool(jnp.all(jnp.isfinite(res.loss_train[0])))
    assert float(res.loss_train[0, -1]) < float(res.loss_train[0, 0])
    jax.block_until_ready(res.f_train)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_ensemble_equals_separate_runs(optimizer):
    """A vmapped learning-rate grid gives exactly the runs made one learning rate at a time."""
    task = teacher_student(**TASK, key=jr.key(0))
    key = jr.key(7)
    make = lambda k: nfd.ResNet(8, 1, 16, 3, param=nfd.DepthMuP(), activation=Relu(), key=k)  # noqa: E731
    lrs = jnp.array([0.05, 0.2])
    both = train(
        eqx.filter_vmap(make)(jnp.stack([key, key])),
        task,
        optimizer=optimizer,
        loss=MSE(),
        lr=lrs,
        num_steps=4,
        batch_key=jr.key(1),
        progress=False,
    )
    for i in range(2):
        one = train(
            eqx.filter_vmap(make)(key[None]),
            task,
            optimizer=optimizer,
            loss=MSE(),
            lr=lrs[i : i + 1],
            num_steps=4,
            batch_key=jr.key(1),
            progress=False,
        )
        np.testing.assert_allclose(both.f_train[i], one.f_train[0], rtol=1e-12, atol=1e-14)


def test_gamma0_and_beta_scan_compiles_once(monkeypatch):
    """γ0 and β are traced array leaves of the parameterization (STYLE.md §3): a scan over their
    values reuses one compilation of the loop's step, and the values do reach the dynamics (the
    runs differ)."""
    step = eqx.filter_jit(
        eqx.debug.assert_max_traces(evolve_module._step.__wrapped__, max_traces=1),
        donate="all-except-first",
    )
    monkeypatch.setattr(evolve_module, "_step", step)
    task = teacher_student(n_train=12, n_test=0, in_dim=4, key=jr.key(2))
    runs = [
        _run(nfd.DepthMuP(gamma0=g, beta=b), 16, 3, steps=3, task=task)
        for g, b in ((0.5, 1.0), (1.5, 1.0), (1.5, 0.7))
    ]
    assert eqx.debug.get_num_traces(step) == 1
    finals = [np.asarray(r.f_train[0, -1]) for r in runs]
    assert np.max(np.abs(finals[0] - finals[1])) > 1e-3
    assert np.max(np.abs(finals[1] - finals[2])) > 1e-3
