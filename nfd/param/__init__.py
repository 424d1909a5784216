"""Parameterizations: read by the finite model (`nfd.model`) and the limit solver (`nfd.limit`)."""

from ._param import (
    AbstractParameterization as AbstractParameterization,
)
from ._param import (
    CompleteP as CompleteP,
)
from ._param import (
    DepthMuP as DepthMuP,
)
from ._param import (
    MuP as MuP,
)
from ._param import (
    TensorRates as TensorRates,
)
