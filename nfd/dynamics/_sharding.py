"""Ensembles over devices: the member axis of an `evolve` call sharded over the local devices.

Members never interact, so an ensemble splits across devices without communication: a `Mesh` of
``d`` local devices with one axis ``"members"``, each member-leading array placed with
``NamedSharding(mesh, P("members"))`` and everything else replicated; the jitted step then runs
each device's members where they live (XLA's SPMD partitioner). ``d`` is the largest number of
devices (at most `NFD_DEVICES`, default all) that divides the member count, so shards are equal;
with one device (or ``d = 1``) nothing changes. Results equal the one-device run to float
round-off (the per-device batched products may sum in another order: ~1e-16 relative in float64).
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


def member_mesh(num_members: int) -> Mesh | None:
    """The mesh an ensemble of ``num_members`` runs on, or ``None`` for one device."""
    d = math.gcd(num_members, max_devices())
    if d <= 1:
        return None
    return Mesh(np.asarray(jax.local_devices()[:d]), ("members",))


def shard_members(tree: Any, num_members: int, mesh: Mesh | None) -> Any:
    """``tree``'s arrays placed on ``mesh``: split along a leading axis of length
    ``num_members``, replicated otherwise (unchanged without a mesh)."""
    if mesh is None:
        return tree
    split = NamedSharding(mesh, PartitionSpec("members"))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(x):
        if not isinstance(x, jax.Array | np.ndarray):
            return x
        lead = x.ndim > 0 and x.shape[0] == num_members
        return jax.device_put(x, split if lead else whole)

    return jax.tree.map(place, tree)


def describe_mesh(mesh: Mesh | None) -> dict[str, Any]:
    """The mesh as `meta.json` records it: axis names and sizes, and the platform."""
    if mesh is None:
        return {"axes": {}, "devices": 1}
    return {
        "axes": dict(zip(mesh.axis_names, mesh.devices.shape, strict=True)),
        "devices": int(mesh.devices.size),
        "platform": mesh.devices.flat[0].platform,
    }
