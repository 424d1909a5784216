"""The house look of every nfd figure: one palette, one style for the limit, and legends outside
the data that say what every colour, line style and band means.

**Palette.** Categorical series (limit modes, observables, activations, variants) take the
Okabe–Ito colours (Okabe & Ito 2008, *Color Universal Design*; Wong 2011, Nature Methods 8:441),
chosen to stay distinct under protan, deutan and tritan colour vision, without two of them: its
yellow ``#F0E442`` (contrast about 1.3:1 on a white page, so a thin line vanishes) and its black,
kept for the limit. Matplotlib's ``tab10`` is not used: its olive ``#BCBD22`` is yellow on white
and its red/green pair merges under deuteranopia. Ordered series (widths, depths) take
`line_colours`: viridis, perceptually uniform and monotone in lightness (the order reads for
colour-blind readers and in greyscale), sampled on [0.1, 0.78] only, so it stops before viridis's
yellow end ``#FDE725`` and starts above its near-black purple, which could pass for the limit.

**Lines.** Every n = ∞ limit is black, thick and dashed (`LIMIT`); where several limits share an
axes (one per depth), their markers carry the series' colour. Guides (∝ 1/n, ratio 1) are thin,
grey and dotted (`GUIDE`). A band is its series' colour at `BAND_ALPHA`, explained by a legend
entry (`band_entry`). `legend_outside` puts a legend right of the axes or below the figure (the
constrained layout makes room); `log_axis` keeps an axis linear when it has fewer than two
positive values to span (a one-width or one-depth sweep), and `note_empty` marks a panel with
no finite value (every member diverged).
"""

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.rcsetup import cycler  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

# Okabe–Ito without yellow and black: blue, vermillion, bluish green, reddish purple, orange, sky blue
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
SEQUENTIAL = ("viridis", 0.1, 0.78)  # colour map and the part of it `line_colours` samples
LIMIT: dict[str, Any] = {"color": "black", "ls": "--", "lw": 2.0}  # every n = ∞ limit
GUIDE: dict[str, Any] = {"color": "0.45", "ls": ":", "lw": 1.0}  # reference slopes, ratio 1
BAND_ALPHA = 0.2  # ± SE bands: the series' colour, this opaque
EMPTY = "no finite values: every member diverged"

HOUSE: dict[str, Any] = {
    "figure.dpi": 120,
    "savefig.dpi": 150,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=PALETTE),
    "font.size": 9,
    "legend.fontsize": 7,
    "legend.frameon": False,
}


@contextlib.contextmanager
def style():
    """The house style for every nfd figure (an `rc_context`: no global rcParams)."""
    with plt.rc_context(HOUSE):  # pyright: ignore[reportArgumentType]
        yield


def colour(k: int) -> str:
    """The ``k``-th colour of a categorical series (`PALETTE`, cycled)."""
    return PALETTE[k % len(PALETTE)]


def line_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` colours for an ordered series (widths, depths), dark to light, without yellow."""
    name, lo, hi = SEQUENTIAL
    cmap = matplotlib.colormaps[name]
    return [cmap(lo + (hi - lo) * i / max(n - 1, 1)) for i in range(n)]


def entry(label: str, **kw: Any) -> Line2D:
    """A legend-only handle: a line or marker drawn nowhere, to explain a style."""
    return Line2D([], [], label=label, **kw)


def limit_entry(label: str, **kw: Any) -> Line2D:
    """The legend handle of a limit in `LIMIT` style (``kw``: a marker, say)."""
    return entry(label, **{**LIMIT, **kw})


def band_entry(what: str = "±1 SE over seeds") -> Patch:
    """The legend handle that explains a band: ``band: <what>``."""
    return Patch(facecolor="0.4", alpha=BAND_ALPHA * 1.5, label=f"band: {what}")


def _collect(axes: Iterable[Axes]) -> list[Any]:
    """The labelled artists (and containers: error bars) of ``axes``, each label once."""
    handles, seen = [], set()
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in seen:
                seen.add(label)
                handles.append(handle)
    return handles


def legend_outside(
    target: Figure | Axes,
    handles: Sequence[Any] | None = None,
    *,
    where: Literal["right", "below"] = "right",
    ncols: int = 1,
    title: str | None = None,
    fontsize: float | int = 7,
) -> Legend | None:
    """A legend outside every axes' data area; ``None`` when there is nothing to explain.

    Args:
        target: a Figure (its axes' labelled artists, each label once, right of or below all
            axes) or one Axes (right of it). Needs a constrained layout to make room.
        handles: the entries (labelled artists, `entry`, `band_entry`); default: collected.
        where: ``"right"`` or (figures only) ``"below"``.
        ncols, title, fontsize: as in `matplotlib.legend.Legend`.
    """
    axes = target.axes if isinstance(target, Figure) else [target]
    handles = _collect(axes) if handles is None else list(handles)
    if not handles:
        return None
    kw: dict[str, Any] = {"ncols": ncols, "title": title, "fontsize": fontsize}
    kw["title_fontsize"] = fontsize
    if isinstance(target, Figure):
        loc = "outside right center" if where == "right" else "outside lower center"
        return target.legend(handles=handles, loc=loc, **kw)
    return target.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw
    )


def _drawn_values(
    axes: Iterable[Axes], axis: Literal["x", "y"], *, spanning: bool = True
) -> np.ndarray:
    """The ``axis`` coordinates of every finite point the lines of ``axes`` draw (a point with a
    NaN coordinate is not drawn); of a line spanning the axes (`axhline`), its data side, unless
    ``spanning`` is false."""
    vals = [np.empty(0)]
    for a in axes:
        for line in a.get_lines():
            in_data = line.get_transform().contains_branch_seperately(a.transData)
            x, y = (np.asarray(v, float).ravel() for v in line.get_data())
            ok = np.ones(max(x.size, y.size), bool)
            for flag, v in zip(in_data, (x, y), strict=True):
                ok &= np.isfinite(v) if flag else True
            if in_data[0 if axis == "x" else 1] and (spanning or all(in_data)):
                vals.append((x if axis == "x" else y)[ok])
    return np.concatenate(vals)


def log_axis(
    ax: Axes,
    axis: Literal["x", "y"] = "y",
    *,
    base: int | float = 10,
    values: ArrayLike | None = None,
) -> bool:
    """A log ``axis`` when its values (default: the drawn points') span two positive numbers
    and some point is drawn at a positive value; else linear, with a lone given value as the only
    tick, centred. Returns whether it is logarithmic."""
    group = ax.get_shared_x_axes() if axis == "x" else ax.get_shared_y_axes()
    drawn = _drawn_values(group.get_siblings(ax), axis)  # shared axes share their scale
    v = drawn if values is None else np.asarray(values, float).ravel()
    pos = np.unique(v[np.isfinite(v) & (v > 0)])
    if pos.size >= 2 and np.any(drawn > 0):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=base)
        return True
    if values is not None:
        lone_value(ax, pos, axis)
    return False


def lone_value(ax: Axes, values: ArrayLike, axis: Literal["x", "y"] = "x") -> None:
    """On a linear ``axis`` that has one grid value (one width or depth): that value as its
    only tick, centred; nothing with several values."""
    v = np.unique(np.asarray(values, float).ravel())
    v = v[np.isfinite(v)]
    if v.size == 1:
        (ax.set_xticks if axis == "x" else ax.set_yticks)(v)
        half = 0.5 * abs(v[0]) if v[0] else 1.0
        (ax.set_xlim if axis == "x" else ax.set_ylim)(v[0] - half, v[0] + half)


def note_empty(ax: Axes, text: str = EMPTY) -> bool:
    """Say so (``text``) in the middle of ``ax`` when none of its data lines (reference lines
    such as `axhline` aside) has a finite value; returns whether it did."""
    if _drawn_values([ax], "y", spanning=False).size:
        return False
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.3")
    return True
