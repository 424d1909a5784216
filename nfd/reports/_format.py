"""Numbers in words: the one copy of ± formatting, p-values and fixed-width numbers."""

import math

import numpy as np


def pm(x, se, digits: int = 3, *, show_zero: bool = True) -> str:
    """``x ± se`` (``digits`` significant digits, the SE to 2), ``x`` alone without a finite SE,
    ``n/a`` without a finite ``x``; with ``show_zero=False`` an SE of 0 (an exact value) is not
    shown."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if se is None or not np.isfinite(se) or (se == 0 and not show_zero):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}g} ± {se:.2g}"


def pval(p) -> str:
    """A χ² p-value; ``None`` marks a fit to exact values (no χ²)."""
    return "n/a (exact values)" if p is None else (f"{p:.2g}" if p >= 1e-4 else "< 1e-4")


def slope_text(s: float, se: float) -> str:
    """A slope with two decimals and its sign, ``± se`` when the SE is finite."""
    if not np.isfinite(s):
        return "n/a"
    return f"{s:+.2f}" + (f" ± {se:.2f}" if np.isfinite(se) else "")


def fixed(x, digits: int = 2, kind: str = "e") -> str:
    """A table cell: ``x`` in format ``kind`` (``f`` signed) with ``digits`` digits; ``None`` is
    NaN."""
    x = math.nan if x is None else float(x)
    return f"{x:+.{digits}{kind}}" if kind == "f" else f"{x:.{digits}{kind}}"


# a decay or scaling verdict needs at least this many depths (or widths): with fewer, a two- or
# three-parameter fit has no degrees of freedom left to test it against
MIN_POINTS = 4
UNDETERMINED = "undetermined at this size"


def too_few(count: int, what: str, minimum: int = MIN_POINTS) -> str | None:
    """``None`` when ``count`` points can decide a fit, else the words that say why not."""
    if count >= minimum:
        return None
    return f"{UNDETERMINED} ({count} {what}; a verdict needs at least {minimum})"


SMOKE_BANNER = (
    "> **Smoke size.** This run checks that every piece works, at sizes that run in minutes; its "
    "numbers cannot decide the question it asks. The full-size verdicts are in "
    "`docs/experiments/` (`nfd figures --full`)."
)
