"""Activations with their Gaussian expectations, losses and the error signal, prediction readouts,
and the one NTK assembly: the pieces every dynamics (finite or limit) shares."""

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
from ._losses import MSE as MSE
from ._losses import AbstractLoss as AbstractLoss
from ._losses import CrossEntropy as CrossEntropy
from ._losses import batch_loss as batch_loss
from ._losses import error_signal as error_signal
from ._losses import split_accuracy as split_accuracy
from ._losses import split_losses as split_losses
from ._ntk import block_pairs as block_pairs
from ._ntk import ntk as ntk
from ._ntk import ntk_parts as ntk_parts
from ._ntk import sum_parts as sum_parts
from ._readouts import AbstractReadout as AbstractReadout
from ._readouts import FeatureReadout as FeatureReadout
from ._readouts import NTKReadout as NTKReadout
