"""Experiments: one pure function per figure family (config → result arrays; no files, no prints).

Their analysis is `nfd.analysis`, their words `nfd.reports`, their figures `nfd.plots`; the
`nfd.gallery` registers each kind."""

from ._decoupling import run_decoupling as run_decoupling
from ._demo import DemoResult as DemoResult
from ._demo import run_demo as run_demo
from ._dry_run import dry_run as dry_run
from ._dry_run import parse_bytes as parse_bytes
from ._feature_norms import run_feature_norms as run_feature_norms
from ._finite import member_grid as member_grid
from ._finite import run_finite as run_finite
from ._gia import limit_method as limit_method
from ._gia import run_gia as run_gia
from ._gia_limit import run_gia_limit as run_gia_limit
from ._gia_members import InitCouplingResult as InitCouplingResult
from ._gia_members import init_coupling as init_coupling
from ._limit import run_limit as run_limit
from ._nondegeneracy import run_nondegeneracy as run_nondegeneracy
from ._sweep import SweepResult as SweepResult
from ._sweep import run_limits as run_limits
from ._sweep import run_sweep as run_sweep
from ._sweep import sweep_arrays as sweep_arrays
from ._sweep_cells import SweepUnit as SweepUnit
from ._sweep_cells import cell_units as cell_units
from ._sweep_cells import merge_cells as merge_cells
from ._sweep_cells import parse_cell as parse_cell
from ._sweep_cells import run_cell as run_cell
from ._sweep_cells import sweep_units as sweep_units
from ._transfer import run_transfer as run_transfer
