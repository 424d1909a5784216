"""nfd: Neural Feature Dynamics — finite depth-muP ResNets and their infinite-width, infinite-depth
limit, compared on the same task from the same config (arXiv 2512.21075; spec NFD.md)."""

__version__ = "0.1.0"

from . import config as config
from . import experiments as experiments
from . import limit as limit
from . import model as model
from . import nn as nn
from . import param as param
from . import runs as runs
from . import tasks as tasks
from . import train as train
from .model import DecoupledWeights as DecoupledWeights
from .model import ResNet as ResNet
from .model import ReusedWeights as ReusedWeights
from .param import CompleteP as CompleteP
from .param import DepthMuP as DepthMuP
from .param import MuP as MuP
