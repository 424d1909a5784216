"""The n = ∞ limit: initialization kernels (spec NFD.md §2) and the limit solvers (§3, §4)."""

from ._recursion import InitKernels as InitKernels
from ._recursion import init_kernels as init_kernels
