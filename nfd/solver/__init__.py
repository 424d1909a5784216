"""The generic SDE machinery over depth-time ``τ ∈ [0, 1]``, free of neural networks (STYLE.md §1).

Brownian increments (`brownian_increments`, `coarsen`), terms (`AbstractTerm`, `SDETerm`), Itô
solvers (`AbstractItoSolver`, `EulerMaruyama`) and the scan over layer steps (`solve_depth`, which
returns a `DepthSolution`), split as in Diffrax. `nfd.limit` builds its forward and backward terms
on these (docs/math §3.4, §4.1).
"""

from ._brownian import brownian_increments as brownian_increments
from ._brownian import coarsen as coarsen
from ._solve import DepthSolution as DepthSolution
from ._solve import solve_depth as solve_depth
from ._solvers import AbstractItoSolver as AbstractItoSolver
from ._solvers import EulerMaruyama as EulerMaruyama
from ._terms import AbstractTerm as AbstractTerm
from ._terms import SDETerm as SDETerm
