"""Sweeps across machines: a sweep as independent units of work, split over ``N`` tasks.

The units, in the order `run_sweep` computes them: one finite ensemble per ``(width, depth)``
(width-major, `finite_cell`), then, when ``sweep.couplings`` is not empty, the limit of each depth
(all its modes, `limit_cell`). Task ``i`` of ``N`` holds units ``i, i + N, i + 2N, …``
(`cell_units`); `run_cell` computes them with the very functions `run_sweep` calls (same keys,
batch sequence and member draws), so `merge_cells` of all ``N`` tasks' arrays assembles
(`assemble_sweep`) exactly the `SweepResult` of the one-machine run. Files are the command line's
business (``nfd run --cell i/N``, ``nfd merge``).
"""

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

from ..config import Config, ConfigError, build_task, run_keys
from ._sweep import (
    SweepResult,
    assemble_sweep,
    check_sweep,
    finite_cell,
    limit_cell,
    limit_modes,
    sweep_axes,
)

CELL_FORMAT = "i/N with 0 <= i < N, e.g. --cell 0/8"


@dataclasses.dataclass(frozen=True)
class SweepUnit:
    """One unit of a sweep's work: a finite ensemble at ``(width, depth)`` or a depth's limit."""

    kind: Literal["finite", "limit"]
    depth: int
    width: int = 0  # finite units only

    def __str__(self) -> str:
        if self.kind == "finite":
            return f"finite n={self.width} L={self.depth}"
        return f"limit L={self.depth}"


def sweep_units(cfg: Config) -> list[SweepUnit]:
    """The units of ``cfg``'s sweep in `run_sweep`'s order (finite cells width-major, then the
    limit per depth when ``sweep.couplings`` is not empty)."""
    widths, depths, _ = sweep_axes(cfg)
    units = [SweepUnit("finite", depth=L, width=n) for n in widths for L in depths]
    if cfg.sweep.couplings:
        units += [SweepUnit("limit", depth=L) for L in depths]
    return units


def parse_cell(text: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)``, or a `ConfigError` for ``--cell``."""
    i, sep, n = text.partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit()):
        raise ConfigError("--cell", f"{text!r} is not of the form i/N", CELL_FORMAT)
    return int(i), int(n)


def cell_units(cfg: Config, cell: tuple[int, int]) -> list[int]:
    """The indices (into `sweep_units`) of the units of task ``i`` of ``N``: ``i, i + N, …``.
    Refuses (`ConfigError`, before computing) a config of another kind, ``N < 1``, ``i >= N`` and
    more tasks than units (a task would have nothing to do)."""
    i, n = cell
    if cfg.kind != "sweep":
        raise ConfigError(
            "--cell", f"splits a sweep, got kind = {cfg.kind!r}", "a kind = 'sweep' config"
        )
    if n < 1 or not 0 <= i < n:
        raise ConfigError("--cell", f"needs 0 <= i < N, got {i}/{n}", CELL_FORMAT)
    units = sweep_units(cfg)
    if n > len(units):
        raise ConfigError(
            "--cell",
            f"{n} tasks for the {len(units)} units of this sweep (finite cells and limit depths)",
            f"N <= {len(units)}",
        )
    return list(range(i, len(units), n))


def run_cell(
    cfg: Config, cell: tuple[int, int], *, progress: bool | None = None
) -> dict[str, np.ndarray]:
    """Compute the units of task ``cell = (i, N)`` (`cell_units`), in order.

    Returns the arrays of the task's part: ``cell`` ``[i, N]``, ``units`` (their indices) and per
    unit ``u`` its `_grid` arrays, ``u{u}.{field}`` (finite) or ``u{u}.{mode}.{field}`` (limit).
    """
    indices = cell_units(cfg, cell)
    lcfg = check_sweep(cfg)
    units = sweep_units(cfg)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    out = {"cell": np.asarray(cell), "units": np.asarray(indices)}
    for u in indices:
        unit = units[u]
        if unit.kind == "finite":
            grid = finite_cell(cfg, task, width=unit.width, depth=unit.depth, progress=progress)
            out.update({f"u{u}.{k}": v for k, v in grid.items()})
        else:
            for X, grid in limit_cell(lcfg, task, depth=unit.depth, progress=progress).items():
                out.update({f"u{u}.{X}.{k}": v for k, v in grid.items()})
    return out


def _unit_grid(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix) and "." not in k[n:]}


def merge_cells(cfg: Config, parts: Mapping[str, Mapping[str, np.ndarray]]) -> SweepResult:
    """The `SweepResult` of a sweep split into tasks: ``parts`` maps a label (``"i-of-N"``) to the
    arrays `run_cell` returned for it. Every unit must come from exactly one part, and each part
    must hold the units `cell_units` assigns it (`ConfigError` with key ``merge`` otherwise)."""
    units = sweep_units(cfg)
    owner: dict[int, str] = {}
    for label, arrays in parts.items():
        cell = (int(arrays["cell"][0]), int(arrays["cell"][1]))
        held = [int(u) for u in arrays["units"]]
        if held != cell_units(cfg, cell):
            raise ConfigError(
                "merge",
                f"part {label} holds units {held}, task {cell[0]}/{cell[1]} has "
                f"{cell_units(cfg, cell)}",
                "parts made by this version of nfd",
            )
        for u in held:
            if u in owner:
                raise ConfigError(
                    "merge", f"{units[u]} is in parts {owner[u]} and {label}", "one split i/N"
                )
            owner[u] = label
    missing = [str(units[u]) for u in range(len(units)) if u not in owner]
    if missing:
        raise ConfigError("merge", f"no part holds {', '.join(missing)}", "every task i/N")
    finite, limit = {}, {}
    for u, unit in enumerate(units):
        arrays = parts[owner[u]]
        if unit.kind == "finite":
            finite[unit.width, unit.depth] = _unit_grid(arrays, f"u{u}.")
        else:
            for X in limit_modes(cfg):
                limit[X, unit.depth] = _unit_grid(arrays, f"u{u}.{X}.")
    return assemble_sweep(cfg, finite, limit)
