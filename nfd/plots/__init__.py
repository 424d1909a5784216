"""Figures from saved runs (plots never compute)."""

from ._plots import demo_figure as demo_figure
from ._plots import loss_figure as loss_figure
from ._plots import style as style
from ._plots import sweep_figure as sweep_figure
