"""The n = ∞ limit: initialization kernels (spec NFD.md §2) and the limit solvers (§3, §4)."""

from ._cholesky import CholeskyInfo as CholeskyInfo
from ._cholesky import simulate_limit_cholesky as simulate_limit_cholesky
from ._fixed_point import FixedPointInfo as FixedPointInfo
from ._fixed_point import fixed_point as fixed_point
from ._linear_exact import first_step_response as first_step_response
from ._linear_exact import linear_exact as linear_exact
from ._particles import READOUTS as READOUTS
from ._particles import AbstractReadout as AbstractReadout
from ._particles import FeatureReadout as FeatureReadout
from ._particles import NTKReadout as NTKReadout
from ._particles import Particles as Particles
from ._particles import available_memory as available_memory
from ._particles import estimate_memory as estimate_memory
from ._particles import particle_observe as particle_observe
from ._particles import particle_step as particle_step
from ._particles import particles_from_resnet as particles_from_resnet
from ._particles import sample_particles as sample_particles
from ._particles import simulate_limit as simulate_limit
from ._particles import step_flops as step_flops
from ._recursion import InitKernels as InitKernels
from ._recursion import init_kernels as init_kernels
