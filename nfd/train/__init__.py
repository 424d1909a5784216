"""Training finite networks: optimizers, losses, the ensemble trainer."""

from ._losses import LOSSES as LOSSES
from ._losses import MSE as MSE
from ._losses import AbstractLoss as AbstractLoss
from ._losses import CrossEntropy as CrossEntropy
from ._optim import OPTIMIZERS as OPTIMIZERS
from ._optim import make_optimizer as make_optimizer
from ._optim import tensor_labels as tensor_labels
from ._train import TrainResult as TrainResult
from ._train import batch_schedule as batch_schedule
from ._train import block_indices as block_indices
from ._train import make_step as make_step
from ._train import observe as observe
from ._train import save_steps as save_steps
from ._train import train as train
