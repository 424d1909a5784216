"""Activations that know their Gaussian dual kernels (spec NFD.md §2)."""

from ._activations import ACTIVATIONS as ACTIVATIONS
from ._activations import AbstractActivation as AbstractActivation
from ._activations import Erf as Erf
from ._activations import Gelu as Gelu
from ._activations import Linear as Linear
from ._activations import Relu as Relu
from ._activations import Tanh as Tanh
from ._activations import cross_kernel_map as cross_kernel_map
from ._activations import gauss_hermite_expectation as gauss_hermite_expectation
from ._activations import kernel_map as kernel_map
from ._activations import kernel_map_deriv as kernel_map_deriv
