"""Remedies for the first-layer collapse of two-layer blocks in the transfer kind (§6, T9):
`transfer.params` (depth-μP W1 rate × L^a; CompleteP's 1/L branch; μP), the variant each runs,
the expected δz^own slopes, and the report's per-remedy argmin slopes."""

import dataclasses
import pathlib
import types

import numpy as np
import pytest

from nfd import config
from nfd.analysis import transfer_analysis
from nfd.config import ConfigError, build_task, run_keys
from nfd.experiments import run_finite
from nfd.experiments._transfer import _final_losses, run_transfer
from nfd.experiments._transfer_variants import dz_expected, variant_label, variants
from nfd.reports import transfer_report
from nfd.reports._format import slope_text

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs/figures/smoke/remedies.toml"
TINY = [
    "transfer.optimizers=['sgd']",
    "transfer.exponents=[0.0]",
    "transfer.widths=[8]",
    "transfer.lrs=[0.25, 1.0]",
    "transfer.limit=false",
    "transfer.collapse=false",
    "optim.steps=3",
]


def test_variants_labels_and_expected_slopes():
    """CompleteP runs once with a = 0 whatever the exponents (its ×L block rate and 1/L branch
    already give W1 an O(1) own update); the expected δz^own slope is a + (block-rate exponent)
    − (branch exponent): depth-μP a − ½, CompleteP 0, μP a (§1.3 table, §6)."""
    cfg = config.load(
        SMOKE,
        ["transfer.params=['depth_mup', 'completep', 'mup']", "transfer.exponents=[0.0, 0.5]"],
    )
    vs = variants(cfg)
    assert vs == [
        ("two_layer", 0.0, "depth_mup"),
        ("two_layer", 0.5, "depth_mup"),
        ("two_layer", 0.0, "completep"),
        ("two_layer", 0.0, "mup"),
        ("two_layer", 0.5, "mup"),
    ]
    labels = [variant_label(*v) for v in vs]
    assert labels[1] == "two-layer, a=0.5" and labels[2] == "two-layer, 1/L branch"
    assert labels[4] == "two-layer, a=0.5, μP"
    np.testing.assert_array_equal(dz_expected(cfg, vs), [-0.5, 0.0, 0.0, 0.0, 0.5])


@pytest.mark.parametrize(
    "override,start",
    [
        ("transfer.params=[]", "transfer.params: must not be empty"),
        ("transfer.params=['completep', 'completep']", "transfer.params: lists one twice"),
        ("transfer.params=['ntk']", "transfer.params"),
    ],
)
def test_params_config_errors(override, start):
    with pytest.raises(ConfigError) as err:
        config.load(SMOKE, [override])
    assert str(err.value).startswith(start), str(err.value)


def _exact_noise(rng, shape):
    z = rng.standard_normal(shape)
    z = z - z.mean(-1, keepdims=True)
    return z / z.std(-1, ddof=1, keepdims=True)


def test_report_names_each_remedys_argmin_slope_on_a_known_table():
    """A loss table with known argmins: depth-μP a = 0 has its optimum at η* = 4/L (slope −1 in
    log-log), the 1/L branch at η* = 1 for every L (slope 0); seed noise 1e-3 (exact SD) keeps
    every tie range one grid point wide. The report's remedies table names both slopes."""
    cfg = config.load(SMOKE, ["transfer.optimizers=['sgd']", "transfer.exponents=[0.0]"])
    lrs = 2.0 ** np.arange(-3, 4)
    depths = np.array([2, 4, 8, 16])
    best = np.stack([4.0 / depths, np.ones(4)])  # (V, J)
    curve = (np.log2(lrs)[None, None] - np.log2(best)[..., None]) ** 2 + 0.1  # (V, J, R)
    S = 8
    loss = curve[None, :, None, :, :, None] + 1e-3 * _exact_noise(
        np.random.default_rng(0), (1, 2, 1, 4, 7, S)
    )
    arrays = {
        "loss_train": loss,
        "loss_test": loss,
        "limit_loss_train": np.full((1, 2, 4, 7, S), np.nan),
        "limit_loss_test": np.full((1, 2, 4, 7, S), np.nan),
        "lrs": lrs[None],
        "widths": np.array([32]),
        "depths": depths,
        "exponents": np.array([0.0, 0.0]),
        "params": np.array(["depth_mup", "completep"]),
        "two_layer": np.array([True, True]),
        "dz_expected": np.array([-0.5, 0.0]),
        "limit_skipped": np.array([""]),
    }
    summary = transfer_analysis(arrays, ["sgd"])
    np.testing.assert_allclose(summary["rows"][0]["argmin"], 4.0 / depths)
    assert abs(summary["rows"][0]["slope"] + 1) < 1e-12 and abs(summary["rows"][1]["slope"]) < 1e-12
    text = transfer_report(types.SimpleNamespace(arrays=arrays, config=cfg), summary)
    assert "| sgd | two-layer, a=0 | -1.00 ± 0.00 |" in text, text
    assert "| sgd | two-layer, 1/L branch | +0.00 ± 0.00 |" in text, text
    assert "Other remedies: `two-layer, 1/L branch` transfers" in text


@pytest.fixture(scope="module")
def tiny():
    """One SGD transfer grid, depth-μP a = 0 and CompleteP, width 8, L = 2, 4, two η0, 3 steps."""
    cfg = config.load(SMOKE, TINY)
    return cfg, run_transfer(cfg, progress=False)


@pytest.mark.slow
def test_completep_member_is_the_finite_completep_run(tiny):
    """The CompleteP variant's losses are those of `run_finite` on the equivalent finite config
    (two-layer, `model.param = "completep"`, a = 0), to round-off (1e-12: the same computation
    in float64); the depth-μP variant differs from it (the 1/L branch is a different network)."""
    cfg, a = tiny
    assert list(a["params"]) == ["depth_mup", "completep"]
    np.testing.assert_array_equal(a["dz_expected"], [-0.5, 0.0])
    task = build_task(cfg, key=run_keys(cfg)["task"])
    fcfg = dataclasses.replace(
        cfg,
        kind="finite",
        model=dataclasses.replace(cfg.model, block="two_layer", param="completep"),
        optim=dataclasses.replace(cfg.optim, name="sgd", first_layer_lr_exponent=0.0),
    )
    for j, L in enumerate(cfg.transfer.depths):
        res = run_finite(fcfg, width=8, depth=L, lrs=[0.25, 1.0], task=task, progress=False)
        lt, le = _final_losses(res, cfg.seeds, 2)
        np.testing.assert_allclose(a["loss_train"][0, 1, 0, j], lt, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a["loss_test"][0, 1, 0, j], le, rtol=0, atol=1e-12)
        assert np.max(np.abs(a["loss_train"][0, 0, 0, j] - lt)) > 1e-6


@pytest.mark.slow
def test_report_names_each_remedys_argmin_slope(tiny):
    """Every (optimizer, remedy) row of the remedies table carries the argmin slopes of
    `transfer_summary` (least squares and weighted) and its verdict."""
    cfg, a = tiny
    summary = transfer_analysis(a, cfg.transfer.optimizers)
    text = transfer_report(types.SimpleNamespace(arrays=a, config=cfg), summary)
    assert "Remedies for two-layer blocks" in text
    for r in summary["rows"]:
        cells = (
            f"| {r['optimizer']} | {r['variant']} | {slope_text(r['slope'], r['slope_se'])} | "
            f"{slope_text(r['weighted_slope'], r['weighted_slope_se'])} | {r['verdict']} |"
        )
        assert cells in text, cells
    assert "two-layer, 1/L branch" in text and "the limit overlay is for depth_mup only" not in text
