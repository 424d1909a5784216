"""nfd: Neural Feature Dynamics — finite depth-muP ResNets and their infinite-width, infinite-depth
limit, compared on the same task from the same config (arXiv 2512.21075).

The mathematics the code implements is in the repository's ``docs/math``: a "§x.y" in a docstring,
report or figure refers to the section of that number there, and "T1"–"T11" to its acceptance
tests (``docs/math/9-acceptance-tests.md``)."""

__version__ = "0.1.0"

from . import config as config
from . import dynamics as dynamics
from . import limit as limit
from . import model as model
from . import nn as nn
from . import param as param
from . import tasks as tasks
from . import train as train
from .dynamics import SaveAt as SaveAt
from .dynamics import Trajectory as Trajectory
from .dynamics import evolve as evolve
from .model import ResNet as ResNet
from .param import CompleteP as CompleteP
from .param import DecoupledWeights as DecoupledWeights
from .param import DepthMuP as DepthMuP
from .param import MuP as MuP
from .param import OneLayer as OneLayer
from .param import ReusedWeights as ReusedWeights
from .param import TwoLayer as TwoLayer

# the upper layers (experiments and their analysis, reports, figures) load on first use, so that
# `import nfd` and the command line start without them
_LAZY = ("experiments", "analysis", "reports", "runs", "plots", "gallery")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nfd' has no attribute {name!r}")
