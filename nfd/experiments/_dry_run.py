"""`nfd run CONFIG --dry-run`: what a run would hold in memory and cost, before any computing.

Reads the same estimates the memory plan reads (`AbstractDynamics.estimate_memory`,
`step_flops`) for the largest piece of each kind: the finite network at the grid's widest, deepest
cell and, where the kind has one, the limit at its deepest depth. Only the task's data are built
(the inputs and targets); no network or particle system is drawn.
"""

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

from ..config import (
    STORED_KINDS,
    Config,
    ConfigError,
    build_limit,
    build_network,
    build_task,
    run_keys,
)
from ..dynamics import Points, available_memory
from ._finite import member_grid
from ._plan import (
    FINITE_SIZE_KEYS,
    LIMIT_SIZE_KEYS,
    MEMORY_FRACTION,
    accelerators,
    batch_size,
    choose_storage,
    plan_members,
)

GIB = 2**30


def _grid(cfg: Config, name: str, default: int) -> int:
    """The largest value of the kind table's ``widths``/``depths`` grid, else ``default``."""
    table = getattr(cfg, cfg.kind, None)
    values = getattr(table, name, None)
    return max(values) if values else default


def _pieces(cfg: Config) -> Iterator[tuple[str, Any, int, tuple[str, ...]]]:
    """``(label, dynamics, members, size keys)`` of the run's largest finite and limit parts."""
    width, depth = _grid(cfg, "widths", cfg.model.width), _grid(cfg, "depths", cfg.model.depth)
    lrs = getattr(getattr(cfg, cfg.kind, None), "lrs", None)
    members = len(member_grid(cfg, lrs)[0])
    if cfg.kind != "limit":
        net = build_network(cfg, width=width, depth=depth)
        yield f"finite n = {width}, L = {depth}", net, members, FINITE_SIZE_KEYS
    if cfg.kind == "limit" or (cfg.kind == "sweep" and cfg.sweep.couplings):
        K = cfg.limit.layer_steps or depth
        if cfg.kind == "sweep":
            K *= 2 if cfg.sweep.extrapolate_layers else 1
            members = (cfg.sweep.limit_seeds or cfg.seeds) * len(cfg.sweep.couplings)
        dyn = build_limit(cfg, depth=depth, layer_steps_override=K)
        yield f"limit L = {depth}, K = {K}", dyn, members, LIMIT_SIZE_KEYS
    elif (cfg.kind == "transfer" and cfg.transfer.limit) or (cfg.kind == "demo" and cfg.demo.limit):
        yield f"limit L = K = {depth}", build_limit(cfg, depth=depth), members, LIMIT_SIZE_KEYS


def _describe(cfg, label, dyn, members, keys, points, batch, memory) -> str:
    storage = ""
    if label.startswith("limit"):
        if cfg.kind in STORED_KINDS:
            why = f"kind = {cfg.kind!r} couples stored draws"
        else:
            dyn, why = choose_storage(
                *(cfg.limit.storage, dyn, points, members),
                **dict(steps=cfg.optim.steps, batch=batch, memory=memory),
            )
        if hasattr(dyn, "store_noise"):
            form = "stored" if dyn.store_noise else "history" if dyn.drift_rank else "lean"
            storage = f"; particles {form} ({why or 'limit.storage = ' + repr(cfg.limit.storage)})"
    per = dyn.estimate_memory(points, 1) if hasattr(dyn, "estimate_memory") else None
    name = type(dyn).__name__
    if per is None:
        return f"{label}: {name}: solved one member at a time (no ensemble estimate){storage}"
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the plan's own line: said below
            chunk = plan_members(
                dyn, points, members, batch=batch, size_keys=keys, quiet=True, memory=memory
            )
        plan = "one batch" if chunk >= members else f"chunks of {chunk} members"
    except ConfigError as err:
        plan = f"DOES NOT FIT: {err}"
    flops = dyn.step_flops(points, batch) or 0.0
    cost = f"; ~{members * flops * cfg.optim.steps / 1e12:.3g} TFLOP over {cfg.optim.steps} steps"
    return (
        f"{label}: {name}: {members} members × {per / GIB:.3g} GiB = "
        f"{members * per / GIB:.3g} GiB, {plan}{cost if flops else ''}{storage}"
    )


def dry_run(cfg: Config, *, memory: int | str | None = None) -> list[str]:
    """The lines `nfd run --dry-run` prints: the memory the plan works with, and per piece of the
    run its members, estimated memory, chunking, cost and (particles) storage form.
    ``memory``: plan for a machine with this many bytes, or a size like ``"80GiB"`` (a GPU)
    instead of this one (`parse_bytes`)."""
    memory = parse_bytes(memory) if isinstance(memory, str) else memory
    task = build_task(cfg, key=run_keys(cfg)["task"])
    # the estimates read the item size off the points: the run's precision, whatever this
    # process's default (a test session runs float64)
    dtype = jnp.float32 if cfg.precision == "float32" else jnp.float64
    points = jax.tree.map(lambda x: x.astype(dtype), Points.from_task(task))
    batch = batch_size(cfg, task)
    have = available_memory() if memory is None else memory
    where = "given" if memory is not None else f"available ({jax.devices()[0].platform})"
    lines = [
        f"kind = {cfg.kind!r}, precision {cfg.precision}: {task.n_train} training and "
        f"{task.n_test} test points, batch {batch}, {cfg.optim.steps} steps",
        f"memory: {'unknown' if have is None else f'{have / GIB:.1f} GiB'} {where}, "
        f"{accelerators()} accelerator(s); one batch may use {MEMORY_FRACTION:.0%}",
    ]
    for label, dyn, members, keys in _pieces(cfg):
        lines.append(_describe(cfg, label, dyn, members, keys, points, batch, memory))
    return lines


UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str, key: str = "--memory") -> int:
    """``"80GiB"``, ``"80GB"``, ``"512MiB"``, ``"1e9"`` → bytes (`ConfigError` naming ``key``)."""
    s = text.strip().upper().replace(" ", "")
    number = s.rstrip("KMGTIB")
    unit = s[len(number) :]
    try:
        value = float(number) * UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(
            key, f"cannot read {text!r}", "a size like 80GiB, 80GB or 512MiB"
        ) from None
    if value <= 0:
        raise ConfigError(key, f"must be > 0, got {text!r}", "a size like 80GiB")
    return int(value)
