"""Finite residual networks (spec NFD.md §1)."""

from ._backward import (
    BACKWARD as BACKWARD,
)
from ._backward import (
    AbstractBackwardWeights as AbstractBackwardWeights,
)
from ._backward import (
    DecoupledWeights as DecoupledWeights,
)
from ._backward import (
    ReusedWeights as ReusedWeights,
)
from ._kernels import empirical_ntk as empirical_ntk
from ._kernels import empirical_ntk_parts as empirical_ntk_parts
from ._resnet import ResNet as ResNet
from ._resnet import ResNetFields as ResNetFields
