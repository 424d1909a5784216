"""Sweeps: finite networks over widths × depths × learning rates (× seeds), and the NFD limit at
K = L for each depth and coupling mode, on one task and batch sequence (`kind = "sweep"`).

Each (width, depth) is one compiled computation whose ensemble is ``seeds × len(lrs)`` (a vmap
over seeds and learning rates); diverging members are recorded, not fatal. With
``sweep.antithetic`` the members come in pairs ``v(0) ↔ −v(0)`` (same ``U``, ``W``), in the finite
ensembles and in the particle limit alike; the analysis then treats pair means as the independent
units.

With ``sweep.extrapolate_layers`` every mode ``X`` also gets a ``K → ∞`` limit, the mode
``X_kinf``: per repetition the Richardson combination ``2 f(2K) − f(K)`` of coupled particle runs
(the ``2K``-step matrices drawn, the ``K``-step ones their pair sums over ``sqrt 2``, see
`coarsen_particles`). The ``K``-step run *is* the ``K = L`` run of mode ``X`` (its law is
unchanged), so the limit part costs ×3.

The analysis of the saved arrays (distances to each mode, their n-slopes, the Richardson
extrapolation in n, the depth scaling of the loss) is `nfd.analysis.convergence_summary`.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..config import (
    Config,
    ConfigError,
    build_coupling,
    build_limit,
    build_task,
    layer_steps,
    limit_name,
    run_keys,
)
from ..dynamics import Points, Trajectory, chunk_size, map_members, save_steps
from ..limit import MatrixParticles, Particles
from ..solver import coarsen
from ..tasks import Task
from ._finite import antithetic_seeds, member_grid, run_finite
from ._limit import evolve_limit, limit_keys, run_limit
from ._plan import LIMIT_SIZE_KEYS, batch_size, plan_members


class SweepResult(eqx.Module):
    """Saved arrays of a sweep. Leading axes: W widths, Ld depths, Lr learning rates, E finite
    members, S saved steps; X coupling modes of the limit (``couplings``: the ``K = L`` modes, then
    with ``sweep.extrapolate_layers`` their ``K → ∞`` Richardson modes ``X_kinf``), El limit
    repetitions.
    With ``antithetic``, members ``2p, 2p + 1`` (and limit repetitions likewise, when
    ``limit_antithetic``) are the pair ``v(0), −v(0)``."""

    widths: Int[Array, " W"]
    depths: Int[Array, " Ld"]
    lrs: Float[Array, " Lr"]
    steps: Int[Array, " S"]
    couplings: tuple[str, ...] = eqx.field(static=True)
    antithetic: bool = eqx.field(static=True)
    limit_antithetic: bool = eqx.field(static=True)
    limit_particles: int = eqx.field(static=True)
    loss_train: Float[Array, "W Ld Lr E S"]
    loss_test: Float[Array, "W Ld Lr E S"]
    f_train: Float[Array, "W Ld Lr E S P C"]
    f_test: Float[Array, "W Ld Lr E S Q C"]
    status: Int[Array, "W Ld Lr E"]
    limit_loss_train: Float[Array, "X Ld Lr El S"] | None
    limit_loss_test: Float[Array, "X Ld Lr El S"] | None
    limit_f_train: Float[Array, "X Ld Lr El S P C"] | None
    limit_f_test: Float[Array, "X Ld Lr El S Q C"] | None
    limit_status: Int[Array, "X Ld Lr El"] | None
    # with output.ntk: per-unit mean and variance of the NTK at the saved steps, unit counts
    ntk_mean: Float[Array, "W Ld Lr S PQ PQ"] | None = None
    ntk_var: Float[Array, "W Ld Lr S PQ PQ"] | None = None
    ntk_units: Int[Array, "W Ld Lr"] | None = None
    limit_ntk_mean: Float[Array, "X Ld Lr S PQ PQ"] | None = None
    limit_ntk_var: Float[Array, "X Ld Lr S PQ PQ"] | None = None
    limit_ntk_units: Int[Array, "X Ld Lr"] | None = None


GRID = ("loss_train", "loss_test", "f_train", "f_test", "ntk")


def _grid(res: Trajectory, num_lrs: int, num_seeds: int) -> dict[str, np.ndarray]:
    """Member-major ``(E·Lr, S, ...)`` arrays → ``(Lr, E, S, ...)`` (a diverged member's saved
    values after its failure are NaN already)."""

    def split(x):
        return np.swapaxes(x.reshape(num_seeds, num_lrs, *x.shape[1:]), 0, 1)

    out = {
        k: split(np.asarray(getattr(res, k), float)) for k in GRID if getattr(res, k) is not None
    }
    out["status"] = split(np.asarray(res.status))
    return out


def _ntk_stats(grid: Mapping[str, np.ndarray], antithetic: bool) -> dict[str, np.ndarray]:
    """Per learning rate: the mean and variance over units (`pair_units`: successful members, or
    antithetic pair means) of the saved NTKs ``(Lr, S, PQ, PQ)``, and the unit counts ``(Lr,)``."""
    ntk, status = np.asarray(grid["ntk"], float), np.asarray(grid["status"])
    means, variances, units = [], [], []
    for r in range(ntk.shape[0]):
        x = np.where((status[r] == 0)[:, None, None, None], ntk[r], np.nan)
        u = pair_units(x, antithetic)
        units.append(len(u))
        means.append(u.mean(0) if len(u) else np.full(ntk.shape[2:], np.nan))
        variances.append(u.var(0, ddof=1) if len(u) > 1 else np.full(ntk.shape[2:], np.nan))
    return {"mean": np.stack(means), "var": np.stack(variances), "units": np.asarray(units)}


def _matrix_limit(cfg: Config) -> bool:
    """Whether `[limit]` is the random-matrix particle method: the one whose draws the sweep can
    share between modes, pair antithetically and coarsen (the others are deterministic or draw
    their noise internally)."""
    return isinstance(build_limit(cfg), MatrixParticles)


def _limit_is_antithetic(cfg: Config) -> bool:
    """Antithetic limit repetitions exist for the random-matrix particle method only."""
    return cfg.sweep.antithetic and _matrix_limit(cfg)


LIMIT_CHUNK_BYTES = 2 * 2**30  # estimated memory of one vmapped chunk of limit repetitions


def _equal_chunk(dynamics: MatrixParticles, points: Points, total: int) -> int:
    """The largest divisor of ``total`` repetitions whose estimated memory fits one chunk (equal
    chunks compile once)."""
    cap = chunk_size(dynamics.estimate_memory(points, 1), total, LIMIT_CHUNK_BYTES)
    return max(d for d in range(1, cap + 1) if total % d == 0)


def coarsen_particles(particles: Particles) -> Particles:
    """The ``K``-step particles of a ``2K``-step draw: ``W_c[k] = (W[2k] + W[2k+1]) / sqrt(2)`` for
    every field with a layer axis (``W``, ``W_back`` and, for two-layer blocks, ``W1``,
    ``W1_back``); ``U``, ``v`` shared. The standard Brownian-path coupling (`nfd.solver.coarsen`):
    the ``K``-step scheme's increment is ``(β/sqrt(K)) W_k φ(h_k)/sqrt(M)``, so the coarse matrices
    have exactly the law of a fresh ``K``-step draw (entries N(0, 1), independent across steps)
    and the two runs are strongly correlated. Works on batched particles (layer axis third from
    the end)."""
    if particles.num_layer_steps % 2:
        raise ValueError(
            f"coarsen_particles needs an even number of layer steps, got "
            f"{particles.num_layer_steps}."
        )

    def pair_sum(w):
        return jnp.moveaxis(coarsen(jnp.moveaxis(w, -3, 0), 2), 0, -3) / math.sqrt(2)

    fields = (particles.W, particles.W_back, particles.W1, particles.W1_back)
    return eqx.tree_at(
        lambda p: (p.W, p.W_back, p.W1, p.W1_back),
        particles,
        jax.tree.map(pair_sum, fields),
        is_leaf=lambda x: x is None,
    )


def limit_ensemble(
    cfg: Config,
    task: Task,
    *,
    depth: int,
    lrs: Sequence[float],
    couplings: Sequence[str],
    refine: bool = False,
) -> tuple[MatrixParticles, Callable[[slice], Particles], Float[Array, " R"]]:
    """The one-ensemble random-matrix limit of `run_limits`: the decoupled particle dynamics at
    ``K = layer_steps(cfg, depth)`` layer steps (``2K`` with ``refine``), ``draw(part)``: the
    particles of the repetitions in the slice ``part`` (mode-major: all repetitions of
    ``couplings[0]``, then of ``couplings[1]``, …), and every repetition's ``η0``.

    A repetition of a mode with reused weights (mode A) is a decoupled system with ``W̃ = W``
    (offset 0, so ``W̃(t) = W(t)``, §1.6); seed ``s`` draws from ``fold_in(limit_key, s)``
    as `run_limit` does, so every mode's repetitions equal the separate runs' (and share
    ``U, W, v(0)`` across modes). With ``sweep.antithetic`` repetitions ``2p, 2p + 1`` share draw
    ``p`` and have readouts ``v(0), −v(0)``."""
    K = layer_steps(cfg, depth) * (2 if refine else 1)
    dynamics = build_limit(cfg, depth=depth, coupling="decoupled", layer_steps_override=K)
    if not isinstance(dynamics, MatrixParticles):
        raise ConfigError(
            "limit.method",
            f"the sweep's one-ensemble limit needs random-matrix particles, got "
            f"{limit_name(cfg)!r}",
            "method = 'particles', noise = 'matrix'",
        )
    points = Points.from_task(task)
    seeds, member_lrs = member_grid(cfg, lrs)
    draws, signs = antithetic_seeds(seeds, cfg.sweep.antithetic)
    keys = limit_keys(cfg, draws)
    reused = [not build_coupling(cfg, c).decoupled for c in couplings for _ in seeds]
    args = (
        jnp.concatenate([keys] * len(couplings)),
        jnp.asarray(signs * len(couplings), points.x.dtype),
        jnp.asarray(reused),
    )

    def one(key, sign, reused):
        p = dynamics.draw(points, key=key)
        assert isinstance(p, Particles), "the coupled sweep edits stored matrices"
        backs = tuple(
            None if w is None or back is None else jnp.where(reused, w, back)
            for w, back in ((p.W, p.W_back), (p.W1, p.W1_back))
        )
        return eqx.tree_at(
            lambda q: (q.v, q.W_back, q.W1_back),
            p,
            (sign * p.v, *backs),
            is_leaf=lambda x: x is None,
        )

    def draw(part: slice) -> Particles:
        return map_members(one, *(a[part] for a in args))

    return dynamics, draw, jnp.asarray(member_lrs * len(couplings), points.x.dtype)


def run_limits(
    cfg: Config,
    *,
    depth: int,
    lrs: Sequence[float],
    couplings: Sequence[str],
    task: Task,
    progress: bool | None = None,
    desc: str = "limit",
    refine: bool = False,
    refine_desc: str | None = None,
) -> dict[str, Trajectory]:
    """The limit at ``K = L = depth`` for every mode in ``couplings``, as `run_limit` gives each.

    For the random-matrix particle method all modes run as *one* compiled ensemble
    (`limit_ensemble`), chunk by chunk (equal chunks sized for the memory of the draw).

    With ``refine`` (random-matrix particles only) the particles are drawn at ``2K`` layer steps
    (as `run_limits` at ``2K`` draws them), the ``K``-step run uses their `coarsen_particles`
    (the same law as a direct ``K``-step draw), and the result also holds the ``2K``-step run of
    each mode under the key ``f"{X}@2K"`` (``desc`` of its progress bar: ``refine_desc``).
    """
    if not _matrix_limit(cfg):
        if refine:
            raise ConfigError(
                "sweep.extrapolate_layers",
                f"needs the random-matrix particle limit, got {limit_name(cfg)!r}",
                "false, or limit.method = 'particles' with limit.noise = 'matrix'",
            )
        return {
            X: run_limit(
                cfg, depth=depth, lrs=lrs, coupling=X, task=task, progress=progress, desc=desc
            )
            for X in couplings
        }
    dynamics, draw, all_lrs = limit_ensemble(
        cfg, task, depth=depth, lrs=lrs, couplings=couplings, refine=refine
    )
    coarse_dynamics = build_limit(cfg, depth=depth, coupling="decoupled")
    points = Points.from_task(task)
    size = _equal_chunk(dynamics, points, len(all_lrs))
    plan_members(dynamics, points, size, batch=batch_size(cfg, task), size_keys=LIMIT_SIZE_KEYS)

    def run(particles, part, dyn, label):
        lr = all_lrs[part]
        return evolve_limit(cfg, task, particles, lr, dynamics=dyn, progress=progress, desc=label)

    coarse, fine = [], []
    for start in range(0, len(all_lrs), size):  # equal chunks: one compilation
        part = slice(start, start + size)
        particles = draw(part)
        if refine:
            fine.append(run(particles, part, dynamics, refine_desc or desc))
            particles = coarsen_particles(particles)
        coarse.append(run(particles, part, coarse_dynamics, desc))
    X = len(couplings)
    out = dict(zip(couplings, Trajectory.concat(coarse).split(X), strict=True))
    if refine:
        fines = Trajectory.concat(fine).split(X)
        out.update({f"{c}@2K": r for c, r in zip(couplings, fines, strict=True)})
    return out


def _richardson_grid(coarse: Mapping[str, np.ndarray], fine: Mapping[str, np.ndarray]) -> dict:
    """Per repetition ``2 f(2K) − f(K)`` (weak Euler order 1: bias O(1/K²)) of the `_grid` arrays
    of two coupled runs, losses alike; ``status``: the worse of the two (nonzero if either
    failed; a failed run's NaN carries over)."""
    out = {k: 2.0 * fine[k] - coarse[k] for k in GRID if k in coarse}
    out["status"] = np.maximum(coarse["status"], fine["status"])
    return out


KINF = "_kinf"  # suffix of the K → ∞ (Richardson) modes


def sweep_axes(cfg: Config) -> tuple[list[int], list[int], list[float]]:
    """The widths, depths and learning rates of the grid (an empty `[sweep]` list: the `[model]`
    or `[optim]` value)."""
    sw = cfg.sweep
    return (
        list(sw.widths) or [cfg.model.width],
        list(sw.depths) or [cfg.model.depth],
        list(sw.lrs) or [cfg.optim.lr],
    )


def limit_modes(cfg: Config) -> list[str]:
    """The limit modes: ``sweep.couplings``, then with ``sweep.extrapolate_layers`` each mode's
    ``K → ∞`` Richardson mode ``X_kinf``."""
    sw = cfg.sweep
    extrapolate = sw.extrapolate_layers and bool(sw.couplings)
    return list(sw.couplings) + ([c + KINF for c in sw.couplings] if extrapolate else [])


def check_sweep(cfg: Config) -> Config:
    """Refuse a grid that cannot run; the config of its limit runs (``sweep.limit_seeds``)."""
    sw = cfg.sweep
    if sw.antithetic and cfg.seeds % 2:
        raise ConfigError(
            "seeds", f"must be even with sweep.antithetic = true, got {cfg.seeds}", "2, 4, ..."
        )
    return dataclasses.replace(cfg, seeds=sw.limit_seeds) if sw.limit_seeds else cfg


def finite_cell(
    cfg: Config, task: Task, *, width: int, depth: int, progress: bool | None = None
) -> dict[str, np.ndarray]:
    """One cell: the finite ensemble at ``(width, depth)`` over every learning rate, as `_grid`
    arrays ``(Lr, E, S, ...)``; the same computation in `run_sweep` and in a task's `run_cell`."""
    lrs = sweep_axes(cfg)[2]
    res = run_finite(
        cfg,
        width=width,
        depth=depth,
        lrs=lrs,
        task=task,
        progress=progress,
        desc=f"finite n={width} L={depth}",
        antithetic=cfg.sweep.antithetic,
    )
    return _grid(res, len(lrs), cfg.seeds)


def limit_cell(
    cfg: Config, task: Task, *, depth: int, progress: bool | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """The limit of one depth: the `_grid` arrays of every mode of `limit_modes` (`run_limits`
    at ``K = L``, with ``sweep.extrapolate_layers`` also the Richardson modes). ``cfg``: the
    limit config of `check_sweep`."""
    sw = cfg.sweep
    lrs = sweep_axes(cfg)[2]
    names = "+".join(sw.couplings)
    extrapolate = sw.extrapolate_layers and bool(sw.couplings)
    runs = run_limits(
        cfg,
        depth=depth,
        lrs=lrs,
        couplings=sw.couplings,
        task=task,
        progress=progress,
        desc=f"limit {names} K=L={depth}",
        refine=extrapolate,
        refine_desc=f"limit {names} K=2L={2 * layer_steps(cfg, depth)}",
    )
    out = {X: _grid(res, len(lrs), cfg.seeds) for X, res in runs.items()}
    if extrapolate:
        for X in sw.couplings:
            out[X + KINF] = _richardson_grid(out[X], out.pop(f"{X}@2K"))
    return out


def _stack(table, outer, depths, key) -> Array:
    return jnp.asarray(np.stack([np.stack([table[o, L][key] for L in depths]) for o in outer]))


def _ntk_fields(finite, limit, widths, depths, modes, antithetic, limit_antithetic) -> dict:
    """The `SweepResult` NTK fields (`_ntk_stats` per width or mode, depth and learning rate)."""
    out: dict[str, Any] = {}
    for prefix, table, outer, anti in (
        ("", finite, widths, antithetic),
        ("limit_", limit, modes, limit_antithetic),
    ):
        if not outer:
            continue
        stats = {k: _ntk_stats(g, anti) for k, g in table.items()}
        for name, field in (("mean", "ntk_mean"), ("var", "ntk_var"), ("units", "ntk_units")):
            out[prefix + field] = _stack(stats, outer, depths, name)
    return out


def run_sweep(cfg: Config, *, progress: bool | None = None) -> SweepResult:
    """Run the `[sweep]` grid: finite ensembles (`finite_cell`, width-major), then the limit per
    depth and coupling mode (`limit_cell`)."""
    lcfg = check_sweep(cfg)
    widths, depths, _ = sweep_axes(cfg)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    finite = {
        (n, L): finite_cell(cfg, task, width=n, depth=L, progress=progress)
        for n in widths
        for L in depths
    }
    limit = {}
    if cfg.sweep.couplings:
        for L in depths:
            for X, grid in limit_cell(lcfg, task, depth=L, progress=progress).items():
                limit[X, L] = grid
    return assemble_sweep(cfg, finite, limit)


def assemble_sweep(
    cfg: Config,
    finite: Mapping[tuple[int, int], Mapping[str, np.ndarray]],
    limit: Mapping[tuple[str, int], Mapping[str, np.ndarray]],
) -> SweepResult:
    """The `SweepResult` of the cells' `_grid` arrays: ``finite[width, depth]`` (`finite_cell`)
    and ``limit[mode, depth]`` (`limit_cell`); the NTK statistics are computed here."""
    sw = cfg.sweep
    widths, depths, lrs = sweep_axes(cfg)
    X = limit_modes(cfg)
    lanti = _limit_is_antithetic(check_sweep(cfg))
    ntk = {}
    if cfg.output.ntk:
        ntk = _ntk_fields(finite, limit, widths, depths, X, sw.antithetic, lanti)

    def fin(key):
        return _stack(finite, widths, depths, key)

    def lim(key):
        return _stack(limit, X, depths, key) if X else None

    return SweepResult(
        widths=jnp.asarray(widths),
        depths=jnp.asarray(depths),
        lrs=jnp.asarray(lrs),
        steps=jnp.asarray(save_steps(cfg.optim.steps, cfg.output.every)),
        couplings=tuple(X),
        antithetic=sw.antithetic,
        limit_antithetic=lanti,
        limit_particles=cfg.limit.particles,
        loss_train=fin("loss_train"),
        loss_test=fin("loss_test"),
        f_train=fin("f_train"),
        f_test=fin("f_test"),
        status=fin("status"),
        limit_loss_train=lim("loss_train"),
        limit_loss_test=lim("loss_test"),
        limit_f_train=lim("f_train"),
        limit_f_test=lim("f_test"),
        limit_status=lim("status"),
        **ntk,
    )


def sweep_arrays(res: SweepResult) -> dict[str, np.ndarray | None]:
    """The arrays `save_run` writes for a sweep, as numpy (``couplings`` as a string array; the
    antithetic flags and the particle count as 0-d arrays)."""
    out = {
        k: getattr(res, k)
        for k in (
            "widths",
            "depths",
            "lrs",
            "steps",
            "loss_train",
            "loss_test",
            "f_train",
            "f_test",
            "status",
            "limit_loss_train",
            "limit_loss_test",
            "limit_f_train",
            "limit_f_test",
            "limit_status",
            "ntk_mean",
            "ntk_var",
            "ntk_units",
            "limit_ntk_mean",
            "limit_ntk_var",
            "limit_ntk_units",
        )
    }
    out = {k: None if v is None else np.asarray(v) for k, v in out.items()}
    out["couplings"] = np.array(res.couplings, dtype=str)
    out["antithetic"] = np.asarray(res.antithetic)
    out["limit_antithetic"] = np.asarray(res.limit_antithetic)
    out["limit_particles"] = np.asarray(res.limit_particles)
    return out


def pair_units(x: np.ndarray, antithetic: bool) -> np.ndarray:
    """The independent units of an ensemble ``(E, ...)``: antithetic pair means ``(E/2, ...)``, or
    the members themselves. Units with a non-finite entry (a diverged member) are dropped."""
    x = np.asarray(x, float)
    if antithetic:
        x = 0.5 * (x[0::2] + x[1::2])
    return x[np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)]
