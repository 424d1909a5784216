"""The n = ∞ limit: initialization kernels (docs/math §2) and the limit methods (§3, §4), each a
dynamics driven by `nfd.dynamics.evolve`."""

from ._cholesky import CholeskyParticles as CholeskyParticles
from ._cholesky_factor import CholeskyInfo as CholeskyInfo
from ._cholesky_factor import cholesky_info as cholesky_info
from ._continuum import ContinuumKernels as ContinuumKernels
from ._continuum import continuum_kernels as continuum_kernels
from ._fixed_point import FixedPointInfo as FixedPointInfo
from ._fixed_point import KernelFixedPoint as KernelFixedPoint
from ._fixed_point import fixed_point_se as fixed_point_se
from ._fixed_point import layer_refinement_pair as layer_refinement_pair
from ._lean import DriftHistory as DriftHistory
from ._lean import NoiseKeys as NoiseKeys
from ._linear_exact import LinearExact as LinearExact
from ._linear_exact import first_step_response as first_step_response
from ._matrix import MatrixParticles as MatrixParticles
from ._matrix import ParticleState as ParticleState
from ._matrix import estimate_memory as estimate_memory
from ._matrix import step_flops as step_flops
from ._particles import Particles as Particles
from ._particles import particles_from_resnet as particles_from_resnet
from ._particles import sample_particles as sample_particles
from ._recursion import InitKernels as InitKernels
from ._recursion import init_kernels as init_kernels
