"""Ensembles over devices: the member axis of an `evolve` call sharded over the local devices,
and, for particle methods, the particle axis over the devices the members leave.

Members never interact, so an ensemble splits across devices without communication: a `Mesh` of
``d`` local devices with one axis ``"members"``, each member-leading array placed with
``NamedSharding(mesh, P("members"))`` and everything else replicated; the jitted step then runs
each device's members where they live (XLA's SPMD partitioner). ``d`` is the largest number of
devices (at most `NFD_DEVICES`, default all) that divides the member count, so shards are equal;
with one device (or ``d = 1``) nothing changes. Results equal the one-device run to float
round-off (the per-device batched products may sum in another order: ~1e-16 relative in float64).

A particle method (``num_particles`` M) whose members leave devices unused gets a second mesh
axis ``"particles"`` of ``gcd(M, devices left)`` devices: every array with a particle axis (the
first axis of length M after the member axis: the rows of the ``K × M × M`` matrices, the
particles of ``U``, ``v`` and the fields) is split along it, so one system's matrices spread over
several devices' memories; the partitioner adds the reductions over particles (kernels, NTK,
predictions) across devices.
"""

import math
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def max_devices() -> int:
    """Local devices an ensemble may use: all, or the environment's ``NFD_DEVICES`` (≥ 1)."""
    count = jax.local_device_count()
    limit = os.environ.get("NFD_DEVICES", "")
    return max(1, min(count, int(limit))) if limit.strip() else count


def member_mesh(num_members: int, num_particles: int | None = None) -> Mesh | None:
    """The mesh an ensemble of ``num_members`` runs on, or ``None`` for one device.

    In one process: ``gcd(members, local devices)`` local devices. Across processes
    (`initialize_distributed`): all processes' devices in equal numbers, ``gcd(members, global
    devices)`` of them, when that is a multiple of the process count (every process holds a
    share); else each process runs the whole ensemble on its own devices (the same numbers, no
    speed-up)."""
    processes = jax.process_count()
    if processes > 1 and not os.environ.get("NFD_DEVICES", "").strip():
        d = math.gcd(num_members, jax.device_count())
        if d % processes == 0:
            per = d // processes
            devices = [dev for p in range(processes) for dev in _process_devices(p)[:per]]
            return Mesh(np.asarray(devices), ("members",))
    d, p = mesh_shape(num_members, num_particles, max_devices())
    if d * p <= 1:
        return None
    if p == 1:
        return Mesh(np.asarray(jax.local_devices()[:d]), ("members",))
    grid = np.asarray(jax.local_devices()[: d * p]).reshape(d, p)
    return Mesh(grid, ("members", "particles"))


def mesh_shape(num_members: int, num_particles: int | None, devices: int) -> tuple[int, int]:
    """``(d, p)``: ``d = gcd(members, devices)`` devices for the members (equal shards) and, for a
    particle method, ``p = gcd(M, devices // d)`` of the rest for each member's particles."""
    d = math.gcd(num_members, devices)
    return d, (math.gcd(num_particles, devices // d) if num_particles else 1)


def _process_devices(process: int) -> list:
    return [dev for dev in jax.devices() if dev.process_index == process]


def shard_members(
    tree: Any, num_members: int, mesh: Mesh | None, num_particles: int | None = None
) -> Any:
    """``tree``'s arrays placed on ``mesh``: split along a leading axis of length
    ``num_members`` and, on a mesh with a ``"particles"`` axis, along their first later axis of
    length ``num_particles``; replicated otherwise (unchanged without a mesh). Across processes
    every process passes the same values (they are drawn from the same keys) and keeps its
    share."""
    if mesh is None:
        return tree
    spans = jax.process_count() > 1
    particles = "particles" in mesh.axis_names

    def spec(x) -> PartitionSpec:
        lead = x.ndim > 0 and x.shape[0] == num_members
        axes: list[str | None] = ["members" if lead else None] + [None] * (x.ndim - 1)
        if particles and lead:
            rows = [i for i in range(1, x.ndim) if x.shape[i] == num_particles]
            if rows:
                axes[rows[0]] = "particles"
        return PartitionSpec(*axes) if lead else PartitionSpec()

    def place(x):
        if not isinstance(x, jax.Array | np.ndarray):
            return x
        local = isinstance(x, np.ndarray) or x.is_fully_addressable
        where = NamedSharding(mesh, spec(x))
        return jax.device_put(np.asarray(x) if spans and local else x, where)

    return jax.tree.map(place, tree)


def fetch(tree: Any) -> Any:
    """``tree``'s arrays on the host (NumPy), gathered from every process when they span several
    (`jax.device_get` in one process)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(one, tree)


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join a multi-process run (`jax.distributed.initialize`): from the environment (a cluster
    scheduler such as Slurm) when the arguments are ``None``, else explicitly. On CPUs the
    collectives run over gloo. Must be called before any JAX computation."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def is_writer() -> bool:
    """Whether this process writes files (the first of a multi-process run; always in one)."""
    return jax.process_index() == 0


def describe_mesh(mesh: Mesh | None) -> dict[str, Any]:
    """The mesh as `meta.json` records it: axis names and sizes, and the platform."""
    if mesh is None:
        return {"axes": {}, "devices": 1}
    return {
        "axes": dict(zip(mesh.axis_names, mesh.devices.shape, strict=True)),
        "devices": int(mesh.devices.size),
        "processes": len({dev.process_index for dev in mesh.devices.flat}),
        "platform": mesh.devices.flat[0].platform,
    }
