"""Parameterizations, block kinds and backward-weight modes: read by the finite model
(`nfd.model`) and by every limit method (`nfd.limit`), so the two cannot drift apart."""

from ._backward import AbstractBackwardWeights as AbstractBackwardWeights
from ._backward import DecoupledWeights as DecoupledWeights
from ._backward import ReusedWeights as ReusedWeights
from ._blocks import AbstractBlock as AbstractBlock
from ._blocks import OneLayer as OneLayer
from ._blocks import TwoLayer as TwoLayer
from ._param import AbstractParameterization as AbstractParameterization
from ._param import CompleteP as CompleteP
from ._param import DepthMuP as DepthMuP
from ._param import MuP as MuP
from ._param import TensorRates as TensorRates
