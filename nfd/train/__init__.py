"""Training finite networks: the `FiniteNetwork` dynamics and its optimizers (an optax transform
with the parameterization's per-tensor rates)."""

from ._network import FiniteNetwork as FiniteNetwork
from ._network import FiniteState as FiniteState
from ._network import tensors as tensors
from ._network import with_tensors as with_tensors
from ._optim import SGD as SGD
from ._optim import AbstractOptimizer as AbstractOptimizer
from ._optim import Adam as Adam
from ._optim import adam_eps as adam_eps
