"""Experiments: one pure function per figure family (config → result)."""

from ._demo import DemoResult as DemoResult
from ._demo import run_demo as run_demo
from ._finite import run_finite as run_finite
from ._limit import layer_steps as layer_steps
from ._limit import run_limit as run_limit
