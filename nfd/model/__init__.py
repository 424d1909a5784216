"""Finite residual networks (docs/math §1)."""

from ._kernels import class_gram as class_gram
from ._kernels import empirical_ntk as empirical_ntk
from ._kernels import empirical_ntk_parts as empirical_ntk_parts
from ._kernels import gram as gram
from ._kernels import ntk_from_fields as ntk_from_fields
from ._kernels import point_fields as point_fields
from ._resnet import ResNet as ResNet
from ._resnet import ResNetFields as ResNetFields
from ._resnet import variance_gain as variance_gain
