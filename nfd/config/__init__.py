"""Configs: strict TOML → frozen dataclasses → objects (STYLE.md §8)."""

from ._build import build_activation as build_activation
from ._build import build_loss as build_loss
from ._build import build_model as build_model
from ._build import build_param as build_param
from ._build import build_task as build_task
from ._build import run_keys as run_keys
from ._load import apply_overrides as apply_overrides
from ._load import dumps as dumps
from ._load import from_dict as from_dict
from ._load import load as load
from ._load import parse_override as parse_override
from ._load import to_dict as to_dict
from ._schema import Config as Config
from ._schema import ConfigError as ConfigError
from ._schema import DemoConfig as DemoConfig
from ._schema import LimitConfig as LimitConfig
from ._schema import ModelConfig as ModelConfig
from ._schema import OptimConfig as OptimConfig
from ._schema import OutputConfig as OutputConfig
from ._schema import SweepConfig as SweepConfig
from ._schema import TaskConfig as TaskConfig
