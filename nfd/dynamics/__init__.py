"""The dynamics interface and THE training loop (`evolve`) that every dynamics shares.

`AbstractDynamics` (``draw/start/step/observe``: the finite network, the particle methods) and
`AbstractPathDynamics` (``solve``: the kernel fixed point, the exact linear oracle) are driven by
`evolve`, which returns one `Trajectory` type; `SaveAt` says what is saved; `Points` are the tracked
inputs and `batch_schedule` the batch sequence every dynamics of a config replays.
"""

from ._base import AbstractDynamics as AbstractDynamics
from ._base import AbstractPathDynamics as AbstractPathDynamics
from ._base import Observables as Observables
from ._base import PathSolution as PathSolution
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointMismatch as CheckpointMismatch
from ._checkpoint import Interrupted as Interrupted
from ._checkpoint import active_checkpoint as active_checkpoint
from ._checkpoint import checkpointing as checkpointing
from ._checkpoint import stop_on_signals as stop_on_signals
from ._evolve import assemble as assemble
from ._evolve import draw_members as draw_members
from ._evolve import evolve as evolve
from ._evolve import map_members as map_members
from ._memory import available_memory as available_memory
from ._memory import chunk_size as chunk_size
from ._points import Points as Points
from ._points import batch_schedule as batch_schedule
from ._saveat import SaveAt as SaveAt
from ._saveat import save_steps as save_steps
from ._sharding import describe_mesh as describe_mesh
from ._sharding import fetch as fetch
from ._sharding import initialize_distributed as initialize_distributed
from ._sharding import is_writer as is_writer
from ._sharding import max_devices as max_devices
from ._sharding import member_mesh as member_mesh
from ._sharding import mesh_shape as mesh_shape
from ._trajectory import MEMBER_FIELDS as MEMBER_FIELDS
from ._trajectory import Trajectory as Trajectory
