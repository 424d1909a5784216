"""Figures: a saved run and its summary (`nfd.analysis`) in, matplotlib Figures out; plots never
compute. One house look (`_style`): a colour-blind-safe palette without yellow, the limit black and
dashed, legends outside the data."""

from ._decoupling import decoupling_figures as decoupling_figures
from ._feature_norms import feature_norms_figures as feature_norms_figures
from ._gia import gia_figures as gia_figures
from ._gia_limit import gia_limit_figures as gia_limit_figures
from ._nondegeneracy import nondegeneracy_figures as nondegeneracy_figures
from ._plots import demo_figure as demo_figure
from ._plots import loss_figure as loss_figure
from ._scaling import scaling_figure as scaling_figure
from ._style import style as style
from ._sweep import depth_scaling_figure as depth_scaling_figure
from ._sweep import kernel_figure as kernel_figure
from ._sweep import sweep_figure as sweep_figure
from ._transfer import transfer_figures as transfer_figures
