"""Antithetic pairs v(0) ↔ −v(0) (§5.3: "average antithetic pairs"), as the experiments
construct them: the finite ensembles (`finite_ensemble`, used by `run_finite` and the sweep) and
the GIA experiment's members (`draw_members`, paired and averaged by `run_gia`). The references are
the symmetry itself: partners share U, W, W̃ exactly and have exactly negated readouts, so the
uncentred f(0) and g(0) (linear in v(0)) are exactly opposite, every kernel at t = 0 (even in
v(0)) is identical, and an experiment's pair average equals the average of a network and its
hand-negated copy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import nfd
from nfd.config import build_network, build_task, run_keys
from nfd.dynamics import Points, batch_schedule
from nfd.experiments import run_finite
from nfd.experiments._finite import finite_ensemble
from nfd.experiments._gia import run_gia
from nfd.experiments._gia_measure import measure_mode
from nfd.experiments._gia_members import draw_members
from nfd.model import point_fields

FIN_CFG = {
    "seed": 1,
    "seeds": 4,
    "precision": "float64",
    "task": {"name": "teacher_student", "n_train": 5, "n_test": 2, "in_dim": 4},
    "model": {"width": 12, "depth": 3, "activation": "tanh", "backward": "decoupled"},
    "optim": {"lr": 0.5, "steps": 0},
    "output": {"every": 1, "kernels": True, "layer_times": [0.0, 1.0]},
}


def _member_of(tree, e):
    return jax.tree.map(lambda x: x[e] if eqx.is_array(x) else x, tree)


def test_finite_ensemble_pairs_share_weights_and_negate_the_readout():
    """Members 2p, 2p+1 of an antithetic ensemble: U, W and the decoupled offsets E (hence
    W̃ = W + E) identical, v(0) exactly negated, and the two pairs are different draws."""
    cfg = nfd.config.from_dict(FIN_CFG)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    _, models, _ = finite_ensemble(cfg, task, antithetic=True)
    for p in range(2):
        a, b = _member_of(models, 2 * p), _member_of(models, 2 * p + 1)
        np.testing.assert_array_equal(a.U, b.U)
        np.testing.assert_array_equal(a.blocks[0], b.blocks[0])
        np.testing.assert_array_equal(a.offsets[0], b.offsets[0])
        np.testing.assert_array_equal(b.v, -a.v)
        assert float(jnp.max(jnp.abs(a.v))) > 0.5
        # g(0) of the true (reused) and the decoupled backward pass: linear in v(0)
        fields = eqx.filter_jit(point_fields)
        for m_a, m_b in ((a, b), (a.as_reused(), b.as_reused())):
            fa, fb = fields(m_a, task.x_train), fields(m_b, task.x_train)
            np.testing.assert_array_equal(fa.h, fb.h)
            np.testing.assert_allclose(fb.g, -fa.g, rtol=0, atol=1e-14)
    a0, a1 = _member_of(models, 0), _member_of(models, 2)
    assert float(jnp.max(jnp.abs(a0.U - a1.U))) > 0.5  # pairs are distinct draws


def test_run_finite_antithetic_pair_mean_cancels_f0_and_keeps_even_kernels():
    """Through `run_finite(antithetic=True)` with uncentred outputs: f(0) of the partners sums
    to exactly 0 at every train and test point (it is linear in v(0)), while the even observables
    at t = 0 (the h kernel, the g kernel, h_rms) are identical within a pair (round-off only)."""
    raw = {**FIN_CFG, "model": {**FIN_CFG["model"], "center_output": False}}
    cfg = nfd.config.from_dict(raw)
    res = run_finite(cfg, progress=False, antithetic=True)
    for f in (res.f_train, res.f_test):
        f0 = np.asarray(f[:, 0])
        assert np.min(np.abs(f0)) > 1e-4  # O(1/√n) at n = 12: a non-trivial cancellation
        np.testing.assert_allclose(f0[1::2] + f0[0::2], 0.0, rtol=0, atol=1e-14)
    for k in (res.h_kernel, res.g_kernel, res.h_rms):
        k = np.asarray(k[:, 0])
        np.testing.assert_allclose(k[1::2], k[0::2], rtol=1e-13, atol=1e-14)
    assert np.max(np.abs(np.asarray(res.g_kernel[0, 0]) - np.asarray(res.g_kernel[2, 0]))) > 1e-3


GIA_CFG = {
    "kind": "gia",
    "seed": 2,
    "seeds": 2,
    "precision": "float64",
    "task": {"name": "teacher_student", "n_train": 4, "n_test": 2, "in_dim": 6},
    "model": {"activation": "linear"},
    "optim": {"lr": 0.3},
    "gia": {
        "widths": [12],
        "depths": [2],
        "layer_times": [0.5, 1.0],
        "steps": 1,
        "antithetic": True,
        "init_estimator": "sample",
    },
}


PAIRS, N_GIA, L_GIA = 2, 12, 2


def _gia_net(cfg):
    """The network `measure_depth` draws the members of (decoupled weights, centred outputs)."""
    import dataclasses

    net = build_network(cfg, width=N_GIA, depth=L_GIA, backward="decoupled")
    return dataclasses.replace(net, center=True)


def test_gia_members_partners_share_weights_and_have_opposite_output():
    """`draw_members(..., antithetic=True)`: member s and its partner (same kind, s + pairs) share
    U, W, E exactly and have v(0) exactly negated; the standard and decoupled members of seed s
    share U, W, v(0); the uncentred f(0) and g(0) of partners are exactly opposite and the P×P
    feature and backward kernels identical."""
    cfg = nfd.config.from_dict(GIA_CFG)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    points = Points.from_task(task)
    models, _ = draw_members(_gia_net(cfg), points, jr.key(4), [N_GIA], PAIRS, True)
    take = lambda i: jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, models)  # noqa: E731
    fields = eqx.filter_jit(point_fields)
    per = 2 * PAIRS
    for j in (0, 1):  # standard, decoupled
        for s in range(PAIRS):
            a, b = take(j * per + s), take(j * per + PAIRS + s)
            np.testing.assert_array_equal(a.U, b.U)
            np.testing.assert_array_equal(a.blocks[0], b.blocks[0])
            np.testing.assert_array_equal(a.offsets[0], b.offsets[0])
            np.testing.assert_array_equal(b.v, -a.v)
            assert float(jnp.max(jnp.abs(a.v))) > 0.5
            assert (float(jnp.max(jnp.abs(a.offsets[0]))) > 0.5) == (j == 1)
            fa, fb = fields(a, points.x), fields(b, points.x)
            assert float(jnp.min(jnp.abs(fa.f))) > 1e-4
            np.testing.assert_allclose(fa.f + fb.f, 0.0, rtol=0, atol=1e-14)
            np.testing.assert_allclose(fa.g + fb.g, 0.0, rtol=0, atol=1e-14)
            for ka, kb in ((fa.h, fb.h), (fa.g, fb.g)):
                gram_a = jnp.einsum("p...n,q...n->...pq", ka, ka) / N_GIA
                gram_b = jnp.einsum("p...n,q...n->...pq", kb, kb) / N_GIA
                np.testing.assert_allclose(gram_a, gram_b, rtol=1e-13, atol=1e-14)
    for s in range(PAIRS):  # the standard and decoupled members of a seed share U, W(0), v(0)
        a, d = take(s), take(per + s)
        np.testing.assert_array_equal(a.U, d.U)
        np.testing.assert_array_equal(a.blocks[0], d.blocks[0])
        np.testing.assert_array_equal(a.v, d.v)


def test_run_gia_pair_average_is_a_network_and_its_negated_copy():
    """`run_gia`'s antithetic pair averages equal the average of the measurements (`measure_mode`)
    of each pair's +v(0) networks and of those networks with v(0) negated by hand (1e-12: both
    sides are the same float64 arithmetic on the same arrays). The one-step changes δΦ, δG, δΘ and
    χ have a part odd in v(0) that the pair average removes, so a partner that is not flipped (or
    a pair that is not averaged) changes them by O(1): checked against the single network."""
    cfg = nfd.config.from_dict(GIA_CFG)
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"])
    out = run_gia(cfg, task=task, progress=False)
    points = Points.from_task(task)
    schedule = batch_schedule(task.n_train, 0, cfg.gia.steps, key=keys["batch"])
    blocks = tuple(int(b) for b in out["blocks"][0])
    net = _gia_net(cfg)
    # the +v(0) members of (L, n): `measure_depth`'s draw without the antithetic partners
    key = jr.fold_in(keys["init"], L_GIA)
    plus, _ = draw_members(net, points, key, [N_GIA], PAIRS, False)  # [std, dec] × pairs
    minus = eqx.tree_at(lambda m: m.v, plus, -plus.v)
    lr = np.full((2 * PAIRS,), cfg.optim.lr)  # one width, no padding: `measure_depth`'s rate
    meas = [
        measure_mode(net, points, m, lr, schedule, blocks, p2=False, progress=False, desc="")
        for m in (plus, minus)
    ]
    for j, kind in enumerate(("std", "dec")):
        part = [{k: v[j * PAIRS : (j + 1) * PAIRS] for k, v in m.items()} for m in meas]
        for name, field in (("dphi", "phi"), ("dg", "g"), ("dtheta", "theta")):
            one = [p[field][:, 1] - p[field][:, 0] for p in part]
            ref = 0.5 * (one[0] + one[1])
            got = out[f"{kind}_{name}"][0, 0]
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
            # the odd part is resolved: one network alone is far from the pair average
            assert np.max(np.abs(one[0] - ref)) > 1e-3 * np.max(np.abs(ref)) + 1e-8, name
        chi = [p["chi"][:, 1] for p in part]
        got = out[f"{kind}_chi"][0, 0][:, :L_GIA]
        np.testing.assert_allclose(got, 0.5 * (chi[0] + chi[1]), rtol=1e-12, atol=1e-15)
