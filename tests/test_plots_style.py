"""Figures a person reads at a glance (issue 12): no yellow on white, legends outside the data,
and a one-width one-depth sweep or a series where every member diverged still draws.

Every figure of `nfd.plots` is drawn from small synthetic arrays (numpy, positive values so that
log axes apply) through the real `nfd.analysis` summaries; nothing is trained."""

import pathlib
import warnings
from collections.abc import Iterator
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from nfd import analysis, plots
from nfd.config import from_dict
from nfd.plots._style import PALETTE, line_colours
from nfd.runs import Run

YELLOW_HUE = (45 / 360, 70 / 360)  # hue of yellow (and yellow-green, orange-yellow) in [0, 1)
YELLOW_MIN_S, YELLOW_MIN_V = 0.5, 0.7  # ... at high saturation and value: on a white page
OVERLAP_PX = 1.0  # a legend may touch an axes' edge, not reach into it


def _fill(rng, dims: dict[str, int], spec: dict[str, str]) -> dict[str, np.ndarray]:
    """Positive random arrays, each shaped by the dimension letters of ``spec``."""
    return {k: rng.lognormal(-2.0, 0.3, [dims[c] for c in v.split()]) for k, v in spec.items()}


def _run(kind: str, arrays: dict[str, np.ndarray]) -> Run:
    cfg = from_dict({"kind": kind, "seeds": 3, "task": {"name": "teacher_student"}})
    return Run(path=pathlib.Path("."), config=cfg, meta={"kind": kind}, arrays=arrays)


def _diverge(a: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> None:
    """Every member diverged: the float arrays whose name starts with a prefix become NaN."""
    for k, v in a.items():
        if k.startswith(prefixes) and v.dtype.kind == "f":
            a[k] = np.full_like(v, np.nan)


def _summary(fn, *args):
    """The analysis of degenerate inputs may warn (a mean of nothing); the plots must not."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args)


# -- one builder per figure kind: (widths, depths, diverged) -> named figures ------------------
def _demo(widths, depths, nan) -> dict[str, Figure]:
    rng = np.random.default_rng(0)
    dims = {"W": len(widths), "Ld": len(depths), "E": 3, "S": 5}
    a = _fill(rng, dims, {k: "W Ld E S" for k in ("loss_train", "loss_test")})
    a |= _fill(rng, dims, {k: "Ld E S" for k in ("limit_loss_train", "limit_loss_test")})
    if nan:
        _diverge(a, ("loss", "limit"))
    a |= {"widths": np.array(widths), "depths": np.array(depths), "steps": np.arange(5) * 10}
    a["status"] = np.zeros((len(widths), len(depths), 3), np.int32)
    summary = _summary(analysis.curves_summary, a)
    finite = {k: a[k][0, 0] for k in ("loss_train", "loss_test")} | {"steps": a["steps"]}
    loss = plots.loss_figure(_run("finite", finite), _summary(analysis.curves_summary, finite))
    return {"demo": plots.demo_figure(_run("finite", a), summary), "loss": loss}


def _sweep(widths, depths, nan) -> dict[str, Figure]:
    rng = np.random.default_rng(1)
    dims = {"W": len(widths), "Ld": len(depths), "R": 1, "E": 6, "S": 3, "P": 3, "C": 1, "X": 2}
    a = _fill(
        rng,
        dims,
        {
            "loss_train": "W Ld R E S",
            "loss_test": "W Ld R E S",
            "f_train": "W Ld R E S P C",
            "f_test": "W Ld R E S P C",
            "limit_loss_train": "X Ld R E S",
            "limit_loss_test": "X Ld R E S",
            "limit_f_train": "X Ld R E S P C",
            "limit_f_test": "X Ld R E S P C",
            "ntk_mean": "W Ld R S P P",
            "ntk_var": "W Ld R S P P",
            "limit_ntk_mean": "X Ld R S P P",
            "limit_ntk_var": "X Ld R S P P",
        },
    )
    if nan:
        _diverge(a, ("loss", "f_", "ntk"))
    a |= {
        "widths": np.array(widths),
        "depths": np.array(depths),
        "lrs": np.array([0.5]),
        "steps": np.arange(3),
        "couplings": np.array(["exact", "decoupled"]),
        "antithetic": np.array(False),
        "limit_antithetic": np.array(False),
        "limit_particles": np.array(64),
        "ntk_units": np.full((len(widths), len(depths), 1), 6),
        "limit_ntk_units": np.full((2, len(depths), 1), 6),
    }
    summary = _summary(lambda x: analysis.convergence_summary(x, num_boot=8), a)
    run = _run("sweep", a)
    return {
        "sweep": plots.sweep_figure(run, summary),
        "depth_scaling": plots.depth_scaling_figure(run, summary),
        "kernels": plots.kernel_figure(run, summary),
    }


def _gia(widths, depths, nan) -> dict[str, Figure]:
    rng = np.random.default_rng(2)
    taus = np.array([0.5, 1.0])
    dims = {"W": len(widths), "Ld": len(depths), "E": 4, "R": 2, "P": 3, "C": 1, "S": 3}
    dims |= {"El": 1, "G": 2, "Lm": max(depths)}
    spec = {"init_gap": "W Ld E", "gamma_dphi_gap": "G", "gamma_f_gap": "G S"}
    for m in ("std", "dec"):
        spec |= {f"{m}_{k}": "W Ld E R P P" for k in ("dphi", "dg")}
        spec |= {f"{m}_dtheta": "W Ld E P P", f"{m}_chi": "W Ld E Lm", f"{m}_g0": "W Ld E"}
        spec |= {f"{m}_{k}": "W Ld E S P C" for k in ("f_p1", "f_p2")}
        spec |= {f"{m}_{k}": "W Ld E S" for k in ("loss_p1", "loss_p2")}
    for m in ("limA", "limB"):
        spec |= {f"{m}_{k}": "Ld El R P P" for k in ("dphi", "dg")}
        spec |= {f"{m}_dtheta": "Ld El P P", f"{m}_chi": "Ld El Lm"}
        spec |= {f"{m}_f_p1": "Ld El S P C", f"{m}_loss_p1": "Ld El S"}
    a = _fill(rng, dims, spec)
    if nan:
        _diverge(a, ("std", "dec", "init"))
    blocks = np.array([np.minimum((taus * L).astype(int), L - 1) for L in depths])
    a |= {"widths": np.array(widths), "depths": np.array(depths), "layer_times": taus}
    a |= {
        "blocks": blocks,
        "chi_blocks": blocks,
        "steps": np.arange(3),
        "gammas": np.array([0.5, 1.0]),
    }
    return plots.gia_figures(_run("gia", a), _summary(analysis.gia_summary, a))


def _gia_limit(widths, depths, nan) -> dict[str, Figure]:
    del widths  # n = ∞ only
    rng = np.random.default_rng(3)
    dims = {"A": 2, "Ld": len(depths), "E": 3, "R": 2, "P": 3, "C": 1, "S": 3, "G": 2}
    spec = {"gamma_f_gap": "A G E S", "gamma_dphi_gap": "A G E"}
    for m in ("A", "B"):
        for k in ("L", "inf"):
            spec |= {f"{m}_{k}_dphi": "A Ld E R P P", f"{m}_{k}_theta": "A Ld E S P P"}
            spec |= {f"{m}_{k}_f": "A Ld E S P C", f"{m}_{k}_loss": "A Ld E S"}
        spec |= {f"{m}_L_{f}_min_eig": "A Ld E R" for f in ("phi", "g", "phi_point")}
    a = _fill(rng, dims, spec)
    if nan:
        _diverge(a, ("A_", "B_", "gamma_"))
    shape = (2, len(depths), 3)
    a |= {f"{m}_{k}_converged": np.ones(shape, bool) for m in "AB" for k in ("L", "inf")}
    a |= {"moment_matched": np.zeros(shape[:2], bool), "depths": np.array(depths)}
    a |= {
        "layer_times": np.array([0.5, 1.0]),
        "steps": np.arange(3),
        "gammas": np.array([0.5, 1.0]),
    }
    a["gamma_depth"] = np.array(depths[-1])
    summary = _summary(analysis.gia_limit_summary, a, ["tanh", "relu"])
    return plots.gia_limit_figures(_run("gia_limit", a), summary)


def _transfer(widths, depths, nan) -> dict[str, Figure]:
    rng = np.random.default_rng(4)
    dims = {"O": 2, "V": 2, "W": len(widths), "Ld": len(depths), "R": 3, "E": 2, "I": 4, "T": 3}
    spec = {k: "O V W Ld R E" for k in ("loss_train", "loss_test", "dz_own", "block_move")}
    spec |= {"df_step": "O V W Ld R E", "limit_dz_own": "O V Ld R E"}
    spec |= {k: "O V Ld R E" for k in ("limit_loss_train", "limit_loss_test")}
    spec |= {"k_w1": "V Ld", "k_w1_finite": "V W Ld I", "t10_ref": "Ld T"}
    spec |= {k: "Ld I T" for k in ("t10_pre", "t10_post")}
    a = _fill(rng, dims, spec)
    if nan:
        _diverge(a, ("loss", "dz", "block", "df", "limit", "t10", "k_w1_finite"))
    lrs = np.array([[0.25, 1.0, 4.0], [0.01, 0.04, 0.16]])
    a |= {"lrs": lrs, "collapse_lr": lrs[:, 1], "taus": np.linspace(0, 1, 3)}
    a |= {"widths": np.array(widths), "depths": np.array(depths)}
    a |= {"exponents": np.array([0.0, 0.5]), "two_layer": np.array([False, True])}
    a["limit_skipped"] = np.array(["", ""])
    run = _run("transfer", a)
    return plots.transfer_figures(run, _summary(analysis.transfer_analysis, a, ("sgd", "adam")))


KINDS = {
    "demo": _demo,
    "sweep": _sweep,
    "gia": _gia,
    "gia_limit": _gia_limit,
    "transfer": _transfer,
}
GRID = ([16, 32, 64], [2, 4, 8])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _yellow(rgba) -> bool:
    r, g, b, alpha = mcolors.to_rgba(rgba)
    h, s, v = mcolors.rgb_to_hsv((r, g, b))
    hue = YELLOW_HUE[0] <= h <= YELLOW_HUE[1]
    return alpha > 0 and hue and s >= YELLOW_MIN_S and v >= YELLOW_MIN_V


def _colours(ax) -> Iterator[Any]:
    """Every colour a line, marker, band or error bar of ``ax`` is drawn in."""
    for line in ax.get_lines():
        yield line.get_color()
        yield line.get_markerfacecolor()
        yield line.get_markeredgecolor()
    for coll in ax.collections:
        yield from coll.get_facecolor()
        yield from coll.get_edgecolor()
    for patch in ax.patches:
        yield patch.get_facecolor()


def _overlap(fig: Figure) -> float:
    """The largest area (px²) that a legend of ``fig`` shares with an axes' data area."""
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    worst = 0.0
    for legend in legends:
        box = legend.get_window_extent()
        for ax in fig.axes:
            inter = Bbox.intersection(box, ax.get_window_extent())
            worst = max(worst, 0.0 if inter is None else inter.width * inter.height)
    return worst


def _check(kind: str, figs: dict[str, Figure]) -> None:
    """Draw each figure (the suite turns any warning into an error) and check (a) and (b)."""
    for name, fig in figs.items():
        fig.canvas.draw()
        assert fig.axes, f"{kind}/{name}: nothing drawn"
        yellow = [c for ax in fig.axes for c in _colours(ax) if _yellow(c)]
        assert not yellow, f"{kind}/{name}: yellow on white {mcolors.to_hex(yellow[0])}"
        area = _overlap(fig)
        assert area <= OVERLAP_PX**2, f"{kind}/{name}: a legend covers {area:.0f} px² of data"


def test_palette_has_no_yellow_and_the_check_sees_yellow():
    """The check flags viridis's end, Okabe–Ito's yellow and tab10's olive; the house palette
    and the ordered colours pass it."""
    assert all(_yellow(c) for c in ("#FDE725", "#F0E442", "#BCBD22"))
    assert not any(_yellow(c) for c in (*PALETTE, *line_colours(12)))


@pytest.mark.parametrize("kind", KINDS)
def test_figures_draw_no_yellow_and_keep_legends_off_the_data(kind):
    """(a) no line, marker, band or error bar is yellow-ish (hue 45°–70° at high saturation and
    value: unreadable on white); (b) no legend reaches into any axes' data area."""
    _check(kind, KINDS[kind](*GRID, nan=False))


CASES = {  # widths, depths, every member diverged
    "one-width-one-depth": ([32], [4], False),
    "one-width": ([32], [2, 4], False),
    "one-depth": ([16, 32], [4], False),
    "all-diverged": (*GRID, True),
}
SWEEPS = ("demo", "sweep")  # a widths × depths grid: one width and one depth apart too


@pytest.mark.parametrize(
    "kind, case",
    [(k, c) for c in CASES for k in KINDS if k in SWEEPS or c.startswith(("one-width-", "all"))],
)
def test_figures_draw_one_point_sweeps_and_diverged_series(kind, case):
    """(c) one width and/or one depth (no fit, no log axis over one point) and series where every
    member diverged (all NaN) draw without an error or a warning, legends still outside."""
    widths, depths, nan = CASES[case]
    _check(kind, KINDS[kind](widths, depths, nan=nan))
