"""Feature norms across layers, pre- vs post-activation (arXiv 2512.21075 Fig. 1, T10): the
n = ∞ reference, the analysis on tables with a known answer, config errors, and (slow tier) the
smoke run end to end."""

import pathlib

import numpy as np
import pytest

from nfd import config
from nfd.analysis import feature_norms_analysis
from nfd.analysis._feature_norms import ratios
from nfd.cli import main
from nfd.config import ConfigError
from nfd.experiments._norms import init_norm_ref
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs/figures/smoke/feature_norms.toml"


def test_init_reference_is_the_relu_closed_form():
    """ReLU, depth-μP, β = 1: E[φ(h)²] = H/2, so the recursion H_{ℓ+1} = H_ℓ (1 + 1/(2L)) gives
    H_ℓ = H_0 (1 + 1/(2L))^ℓ at every point (docs/math; → e^{τ/2}); an identity up to round-off."""
    cfg = config.load(SMOKE)
    x = np.random.default_rng(0).standard_normal((5, 8))
    h0 = np.mean(np.sum(x**2, axis=1) / 8)
    for depth in (1, 16):
        want = h0 * (1 + 1 / (2 * depth)) ** np.arange(depth + 1)
        np.testing.assert_allclose(init_norm_ref(cfg, x, depth), want, rtol=1e-12)


def _exact_noise(rng, shape, axis):
    """Noise with mean exactly 0 and SD exactly 1 along ``axis``."""
    z = rng.standard_normal(shape)
    z = z - z.mean(axis, keepdims=True)
    return z / z.std(axis, ddof=1, keepdims=True)


def _arrays(post_exponent: float, *, shift: float = 0.0, seeds: int = 50):
    """A run's arrays with known answers: the pre-activation profile is the ReLU recursion times
    (1 + 0.02 noise) per member (seed means exact), shifted by ``shift``; the post-activation
    last-layer norm² is ``L^(2 c)`` (RMS exponent ``c = post_exponent``), exactly."""
    depths = np.array([4, 16, 64])
    rng = np.random.default_rng(3)
    J, E, S, W = len(depths), seeds, 2, depths.max() + 1
    pre = np.full((J, E, S, W), np.nan)
    post = np.full((J, E, S, W), np.nan)
    ref = np.full((J, W), np.nan)
    for j, L in enumerate(depths):
        prof = (1 + 1 / (2 * L)) ** np.arange(L + 1)
        ref[j, : L + 1] = prof
        noise = _exact_noise(rng, (E, S, 1), 0)
        pre[j, ..., : L + 1] = prof * (1 + 0.02 * noise)
        pre[j, ..., L] += shift
        post[j, ..., : L + 1] = 1.0
        post[j, ..., L] = float(L) ** (2 * post_exponent) * (1 + 0.01 * noise[..., 0])
    return {
        "depths": depths,
        "steps": np.array([0, 10]),
        "width": np.asarray(64),
        "norm2_pre": pre,
        "norm2_post": post,
        "ref_init": ref,
        "limit_norm2": np.full((J, 2, S, W), np.nan),
        "limit_skipped": np.asarray(["feature_norms.limit = false"]),
    }


def test_analysis_recovers_ratio_exponent_and_verdicts():
    """The ratio is the profile's last/first value; the post-activation RMS exponent is the
    constructed 0.3 (noise 1% gives an SE ≈ 0.001, so 0.01 is > 5 SE); the pre-activation
    stream equals the reference (z ≈ 0) and stays O(1); a shift of 20 SE at the last layer, or
    a last layer growing like L^0.3, makes it "not O(1)"; with no limit the end-of-training check
    rests on the growth alone."""
    a = _arrays(0.3)
    np.testing.assert_allclose(
        ratios(a["ref_init"][:, None, None], a["depths"])[:, 0, 0],
        (1 + 1 / (2 * a["depths"])) ** a["depths"],
        rtol=1e-12,
    )
    s = feature_norms_analysis(a)
    for when in ("init", "end"):
        g = s[when]["post"]["growth"]
        assert abs(g["slope"] - 0.3) < 0.01 and g["slope_se"] < 0.005, g
        assert s[when]["post"]["verdict"] == "grows"
    assert s["init"]["pre"]["check"]["verdict"] == "stays O(1)"
    assert s["init"]["pre"]["check"]["max_z"] < 1e-6
    assert s["end"]["pre"]["check"]["within"] is None  # no limit: no reference at the end
    assert s["end"]["pre"]["check"]["verdict"] == "stays O(1)"
    flat = feature_norms_analysis(_arrays(0.0))
    assert flat["init"]["post"]["verdict"] == "no growth resolved"
    # SE of the last/first ratio ≈ 0.02 × 1.6 / √50 ≈ 0.0045: a shift of 0.1 is ≈ 20 SE
    off = feature_norms_analysis(_arrays(0.3, shift=0.1))
    assert off["init"]["pre"]["check"]["verdict"] == "does not stay O(1)"
    assert (
        off["init"]["pre"]["check"]["within"] is False and not off["init"]["pre"]["check"]["grows"]
    )
    # a last layer growing like L^0.3 (n = ∞: 0.005) is growth beyond GROWTH_TOL = 0.1
    a = _arrays(0.3)
    a["norm2_pre"] = a["norm2_post"] * a["norm2_pre"][..., :1]
    grow = feature_norms_analysis(a)["end"]["pre"]["check"]
    assert grow["grows"] and grow["verdict"] == "does not stay O(1)"


@pytest.mark.parametrize(
    "override,start",
    [
        ("feature_norms.depths=[]", "feature_norms.depths: must not be empty"),
        ("feature_norms.depths=[8, 4]", "feature_norms.depths: must be strictly increasing"),
        ("feature_norms.limit_seeds=-1", "feature_norms.limit_seeds"),
        ("model.block='two_layer'", "model.block: feature_norms compares one-layer blocks"),
        ("feature_norms.widths=[2]", "feature_norms.widths: unknown key"),
    ],
)
def test_feature_norms_config_errors(override, start):
    with pytest.raises(ConfigError) as err:
        config.load(SMOKE, [override])
    assert str(err.value).startswith(start), str(err.value)


def test_bad_config_exits_2_with_one_line(tmp_path, capsys):
    code = main(["run", str(SMOKE), "--set", "feature_norms.depths=[]", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "feature_norms.depths" in err, err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("norms") / "run"
    assert main(["run", str(SMOKE), "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_smoke_run_matches_the_recursion_and_replots(smoke_run, capsys):
    """The smoke run (width 32, 3 seeds): the pre-activation mean squared feature at t = 0 per
    layer agrees with the n = ∞ recursion within 4 SE over seeds (unbiased up to O(1/n)); the
    limit at K = L is finite at every saved step and layer ≤ L, NaN beyond; both figures and the
    report exist, and `nfd plot` redraws the same figures from the saved arrays."""
    a = load_run(smoke_run).arrays
    for j, L in enumerate(a["depths"]):
        x = a["norm2_pre"][j, :, 0, : L + 1]
        mean, se = x.mean(0), x.std(0, ddof=1) / np.sqrt(x.shape[0])
        assert np.all(np.abs(mean - a["ref_init"][j, : L + 1]) <= 4 * se + 1e-12), (L, mean)
        assert np.all(np.isfinite(a["limit_norm2"][j, ..., : L + 1]))
        assert np.all(np.isnan(a["limit_norm2"][j, ..., L + 1 :]))
        assert np.all(np.isfinite(a["norm2_post"][j, ..., : L + 1]))
    report = (smoke_run / "report.md").read_text()
    assert "Pre-activation, initialisation:" in report and "Post-activation" in report
    names = sorted(p.name for p in smoke_run.glob("*.png"))
    assert names == ["growth.png", "norms.png"]
    for p in smoke_run.glob("*.png"):
        p.unlink()
    capsys.readouterr()
    assert main(["plot", str(smoke_run)]) == 0
    assert sorted(p.name for p in smoke_run.glob("*.png")) == names
