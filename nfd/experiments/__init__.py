"""Experiments: one pure function per figure family (config → result)."""

from ._demo import DemoResult as DemoResult
from ._demo import run_demo as run_demo
from ._finite import member_grid as member_grid
from ._finite import run_finite as run_finite
from ._gia import InitCouplingResult as InitCouplingResult
from ._gia import constant_fit as constant_fit
from ._gia import gia_experiment as gia_experiment
from ._gia import init_coupling as init_coupling
from ._limit import layer_steps as layer_steps
from ._limit import run_limit as run_limit
from ._sweep import SweepResult as SweepResult
from ._sweep import convergence_summary as convergence_summary
from ._sweep import fit_depth_scaling as fit_depth_scaling
from ._sweep import fit_inverse_width as fit_inverse_width
from ._sweep import run_limits as run_limits
from ._sweep import run_sweep as run_sweep
from ._sweep import summary_table as summary_table
from ._sweep import sweep_arrays as sweep_arrays
from ._sweep import sweep_report as sweep_report
from ._transfer import transfer_experiment as transfer_experiment
