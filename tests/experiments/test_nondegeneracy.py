"""The nondegeneracy experiment: the 1/n fit on synthetic data, the verdict rules, the Gram of the
`SaveAt.fn` hook against `ResNet.fields`, config errors, and (slow tier) the smoke run against the
n = ∞ init-kernel recursion."""

import dataclasses
import pathlib
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nfd
from nfd import config
from nfd.analysis._nondegeneracy import cell_verdict, fit_width, min_eig
from nfd.cli import main
from nfd.config import ConfigError, build_activation, build_param, build_task, run_keys
from nfd.dynamics import Points
from nfd.experiments._finite import finite_ensemble
from nfd.experiments._nondegeneracy import GramObservables, gram_matrices, layers_of
from nfd.limit import init_kernels
from nfd.model import ResNet
from nfd.nn import Tanh
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs/figures/smoke/nondegeneracy.toml"
FULL = ROOT / "configs/figures/full/nondegeneracy.toml"
GPU = ROOT / "configs/figures/gpu/nondegeneracy.toml"


def test_width_fit_recovers_known_lambda_inf():
    """λ(n) = 0.3 − 2/n: exact values give λ_∞ and a to round-off; 64 noisy seeds per width (SD
    0.05/√(n/32), the O(1/√n) law) give λ_∞ within 4 of its SE, the SE the propagated one."""
    widths = np.array([32.0, 64.0, 128.0, 256.0])
    exact = 0.3 - 2.0 / widths
    f = fit_width(widths, exact, np.full(4, 1e-3))
    assert abs(f["lam_inf"] - 0.3) < 1e-12 and abs(f["a"] + 2.0) < 1e-10 and f["chi2"] < 1e-20
    rng = np.random.default_rng(0)
    sd = 0.05 / np.sqrt(widths / 32)
    x = exact[:, None] + sd[:, None] * rng.standard_normal((4, 64))
    mean, se = x.mean(1), x.std(1, ddof=1) / 8
    f = fit_width(widths, mean, se)
    assert abs(f["lam_inf"] - 0.3) < 4 * f["lam_inf_se"], f
    # the SE of the intercept of a two-parameter WLS fit, by hand
    A = np.stack([np.ones(4), 1 / widths], 1) / se[:, None]
    assert abs(f["lam_inf_se"] - np.sqrt(np.linalg.inv(A.T @ A)[0, 0])) < 1e-12
    assert 0.0 < f["p"] <= 1.0


def test_cell_verdict_rules():
    """Both the fit and the n = ∞ value at ≥ 2 SE: non-degenerate; either within 2 SE of 0:
    degenerate; under 3 widths, or a fit significantly below 0: undetermined."""
    assert cell_verdict(0.3, 0.01, 0.29, 0.0, 4) == "non-degenerate"
    assert cell_verdict(0.3, 0.01, np.nan, np.nan, 4) == "non-degenerate"  # no limit after t = 0
    assert cell_verdict(0.015, 0.01, 0.29, 0.0, 4) == "degenerate"
    assert cell_verdict(0.3, 0.01, 0.01, 0.01, 4) == "degenerate"
    assert cell_verdict(0.3, 0.01, 0.29, 0.0, 2) == "undetermined at this size"
    assert cell_verdict(-0.3, 0.01, 0.29, 0.0, 4) == "undetermined at this size"


def test_min_eig_of_a_known_matrix():
    """diag(1, 2, 3) rotated: λ_min = 1, mean diagonal 2."""
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    m = q @ np.diag([1.0, 2.0, 3.0]) @ q.T
    out = min_eig(m[None])
    np.testing.assert_allclose([out["abs"][0], out["rel"][0]], [1.0, 0.5], rtol=1e-12)


def _direct_grams(model: ResNet, x: np.ndarray, blocks) -> tuple[np.ndarray, np.ndarray]:
    """Φ_ℓ and the class-averaged G_ℓ from `ResNet.fields` of each point, summed by hand."""
    fields = eqx.filter_jit(ResNet.fields)
    out = [fields(model, xi) for xi in x]
    hs, gs = [np.asarray(f.h) for f in out], [np.asarray(f.g) for f in out]
    P, N, R = len(x), model.width, len(blocks)
    phi, g = np.zeros((R, P, P)), np.zeros((R, P, P))
    for r, ell in enumerate(blocks):
        for p in range(P):
            for q in range(P):
                phi[r, p, q] = np.sum(np.tanh(hs[p][ell]) * np.tanh(hs[q][ell])) / N
                g[r, p, q] = np.mean(np.sum(gs[p][:, ell] * gs[q][:, ell], axis=-1)) / N
    return phi, g


def test_hook_gram_equals_fields_of_each_point():
    """`GramObservables` (the `SaveAt.fn` hook) on one network with C = 2 outputs and test rows
    (which it must skip) equals the sums over `ResNet.fields`: float64 sums of N = 24 products,
    so 1e-10 is round-off with a wide margin."""
    D, C, N, L = 5, 2, 24, 3
    model = ResNet(D, C, N, L, param=nfd.DepthMuP(), activation=Tanh(), key=jr.key(3))
    x = np.asarray(jr.normal(jr.key(4), (6, D)))
    points = Points(x=jnp.asarray(x), y=jnp.zeros((6, C)), num_train=4)
    blocks = layers_of((0.0, 0.5, 1.0), L)
    hook = GramObservables(blocks)
    got = eqx.filter_jit(lambda m, pts: hook(None, m, types.SimpleNamespace(model=m), pts))(
        model, points
    )
    phi, g = _direct_grams(model, x[:4], blocks)
    np.testing.assert_allclose(np.asarray(got["phi_gram"]), phi, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(got["g_gram"]), g, rtol=0, atol=1e-10)


def test_initial_lambda_min_fluctuates_like_one_over_root_n_around_the_recursion():
    """At t = 0 (no training: 16 networks drawn per width, the smoke task, L = 2, τ = 1) the
    seed mean of λ_min(Φ)/mean diag at n = 128 is the recursion's within 4 SE (its O(1/n) bias,
    ≈ 2/128 from the smoke fit's slope, is under 1 SE there), and the seed SD falls like n^-1/2:
    SD(128)/SD(32) = 0.5 expected; each log SD of 16 draws has SE ≈ 1/√30, so the log ratio is
    within ±0.7 (2.7 of its SE) of log 0.5, i.e. the ratio in [0.25, 1]."""
    cfg = config.load(SMOKE, ["seeds=16"])
    task = build_task(cfg, key=run_keys(cfg)["task"])
    L, blocks = 2, (2,)
    ref = min_eig(np.asarray(_reference_phi(cfg, task, L)))["rel"]
    fcfg = dataclasses.replace(cfg, kind="finite")
    means, sds = [], []
    for n in (32, 128):
        _, models, _ = finite_ensemble(fcfg, task, width=n, depth=L)
        grams = eqx.filter_jit(
            eqx.filter_vmap(
                lambda m: gram_matrices(m, task.x_train, blocks)["phi_gram"],
                in_axes=eqx.if_array(0),
            )
        )(models)
        x = min_eig(np.asarray(grams))["rel"][:, 0]  # (16,)
        means.append(x.mean())
        sds.append(x.std(ddof=1))
    assert abs(means[-1] - ref) < 4 * sds[-1] / 4, (means, ref, sds)  # SE = SD/√16
    assert 0.25 <= sds[1] / sds[0] <= 1.0, sds


def _reference_phi(cfg, task, L):
    kx = jnp.asarray(task.x_train @ task.x_train.T) / task.in_dim
    return init_kernels(build_param(cfg), build_activation(cfg), kx, L).Phi[L]


@pytest.mark.parametrize(
    "override,key,start",
    [
        ("nondegeneracy.widths=[2, 64]", "nondegeneracy.widths", "the smallest width 2 is below"),
        ("nondegeneracy.widths=[64, 32]", "nondegeneracy.widths", "must be strictly increasing"),
        ("nondegeneracy.widths=[]", "nondegeneracy.widths", "must not be empty"),
        ("nondegeneracy.taus=[0.5, 1.5]", "nondegeneracy.taus", "contains 1.5"),
        ("nondegeneracy.limit_seeds=1", "nondegeneracy.limit_seeds", "needs >= 2"),
        ("seeds=1", "seeds", "needs >= 2"),
        ("optim.name='adam'", "optim.name", "'adam' has no limit solver"),
        ("model.block='two_layer'", "model.block", "the kernel fixed point solves"),
    ],
)
def test_config_errors(override, key, start):
    with pytest.raises(ConfigError) as err:
        config.load(SMOKE, [override])
    assert err.value.key == key and err.value.what.startswith(start), str(err.value)


def test_adam_without_limit_is_allowed_and_cli_error_is_one_line(tmp_path, capsys):
    cfg = config.load(SMOKE, ["optim.name='adam'", "nondegeneracy.limit=false"])
    assert cfg.optim.name == "adam"
    args = ["run", str(SMOKE), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--set", "task.n_train=32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: nondegeneracy.widths: "), err
    assert not (tmp_path / "o").exists()


def test_packaged_configs_load_with_p_at_most_the_smallest_width():
    for path in (SMOKE, FULL, GPU):
        cfg = config.load(path)
        assert cfg.kind == "nondegeneracy" and cfg.task.n_train <= min(cfg.nondegeneracy.widths)
    gpu = config.load(GPU)
    assert gpu.nondegeneracy.widths == (512, 1024, 2048, 4096) and gpu.seeds == 5


# -- the smoke run (slow tier: one training program per width compiles; ~1 min on 2 loaded cores)
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("nondegeneracy") / "run"
    assert main(["run", str(SMOKE), "--out", str(out), "--quiet"]) == 0
    return out, load_run(out)


@pytest.mark.slow
def test_smoke_initial_lambda_min_approaches_the_recursion(smoke):
    """At t = 0 the finite λ_min / mean diag (seed mean, largest width) is the recursion's within
    4 SE (its O(1/n) bias is under 1 SE there: the 1/n fit's slope × 1/n), the seed spread falls
    with n (O(1/√n) fluctuations: the SD at n = 64 below that at n = 16), and the 1/n fit's λ_∞ is
    the recursion's within 4 of its SE."""
    _, run = smoke
    a = run.arrays
    s = nfd.analysis.nondegeneracy_summary(a)
    q = s["phi"]["rel"]
    ref = min_eig(a["ref_phi"])["rel"]  # (J, R)
    x = min_eig(a["phi_gram"])["rel"]  # (I, J, E, S, R)
    for r in range(len(s["taus"])):
        mean, se = q["mean"][-1][0][0][r], q["se"][-1][0][0][r]
        assert abs(mean - ref[0, r]) < 4 * se, (r, mean, ref[0, r], se)
        sd = x[:, 0, :, 0, r].std(axis=1, ddof=1)
        assert sd[-1] < sd[0], sd
        lam, lam_se = q["lam_inf"][0][0][r], q["lam_inf_se"][0][0][r]
        assert abs(lam - ref[0, r]) < 4 * lam_se, (lam, lam_se, ref[0, r])
        assert q["limit"][0][0][r] == pytest.approx(ref[0, r], rel=1e-12)


@pytest.mark.slow
def test_smoke_saved_gram_is_the_direct_one_of_member_zero(smoke):
    """The hook's Φ_ℓ(0), G_ℓ(0) saved for member 0 at the smallest width equal `ResNet.fields` of
    `finite_ensemble`'s member 0 summed by hand (float64: 1e-10)."""
    _, run = smoke
    cfg = run.config
    task = build_task(cfg, key=run_keys(cfg)["task"])
    n, L = cfg.nondegeneracy.widths[0], cfg.nondegeneracy.depths[0]
    fcfg = dataclasses.replace(cfg, kind="finite")
    _, models, _ = finite_ensemble(fcfg, task, width=n, depth=L, members=slice(0, 1))
    model0 = jax.tree.map(lambda v: v[0] if isinstance(v, jax.Array) else v, models)  # member 0
    phi, g = _direct_grams(model0, np.asarray(task.x_train), layers_of(cfg.nondegeneracy.taus, L))
    np.testing.assert_allclose(run.arrays["phi_gram"][0, 0, 0, 0], phi, rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.arrays["g_gram"][0, 0, 0, 0], g, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_smoke_writes_figures_and_a_report_from_the_numbers(smoke):
    out, run = smoke
    assert sorted(p.name for p in out.glob("*.png")) == ["eigs.png", "eigs_g.png", "spectrum.png"]
    a = run.arrays
    I, J, E, S, R, P = 3, 1, 8, 2, 2, 4
    assert a["phi_gram"].shape == (I, J, E, S, R, P, P) and np.all(np.isfinite(a["phi_gram"]))
    assert a["limit_phi"].shape == (J, 2, S, R, P, P) and np.all(a["limit_converged"])
    # the saved per-member λ_min are the analysis's eigenvalues of the saved Grams
    for k in ("phi", "g"):
        ref = min_eig(a[f"{k}_gram"])
        np.testing.assert_allclose(a[f"{k}_min_eig"], ref["abs"], rtol=1e-12)
        np.testing.assert_allclose(a[f"{k}_min_eig_rel"], ref["rel"], rtol=1e-12)
    report = (out / "report.md").read_text()
    assert "**Verdict:**" in report and "λ_∞ (1/n fit)" in report
