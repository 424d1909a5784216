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

`convergence_summary` is a pure function of the saved arrays (plots and reports are remade
without recomputation). Per depth it gives (spec §5.3, §7.1, T7, T11):

- ``d_X(n, L) = ‖E_seeds f_finite(n, L) − E f_X(K = L)‖`` (RMS over saved steps and points),
  debiased for the sampling noise of both means, with bootstrap errors;
- the n-slope of ``d_X`` (least squares of ``log d`` on ``log n``) and the fit ``d∞ + α/n``, with
  standard errors from a joint bootstrap (one resample of the limit shared by all widths, so the
  slope's error includes the limit's noise);
- the Richardson extrapolation ``f(n) = f∞ + a/n`` of the finite predictions (weighted least
  squares per coordinate; for two widths ``2 f(2n) − f(n)``) and its distance to each mode;
- the depth slope of the plateaus ``d∞(L)`` (`fit_depth_plateau`; for ``X_kinf`` modes the
  finite nets differ from the limit by O(1/L), slope −1);
- the depth-scaling fit of the final test loss, ``L∞ + α/n + b/L`` (spec T11), with χ² and the
  mode-A and mode-B limit losses extrapolated in ``1/L``.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int

from ..config import (
    Config,
    ConfigError,
    build_param,
    build_task,
    run_keys,
)
from ..limit import Particles, estimate_memory, sample_particles
from ..model import DecoupledWeights
from ..tasks import Task
from ..train import TrainResult, save_steps
from ._finite import antithetic_seeds, draw_ensemble, member_grid, run_finite
from ._limit import check_limit_memory, layer_steps, run_limit, simulate_config


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


def _grid(res, num_lrs: int, num_seeds: int, num_saved: int) -> dict[str, np.ndarray]:
    """(E·Lr, S, ...) member-major arrays → (Lr, E, S, ...), padding early-stopped runs with NaN."""

    def split(x):
        x = np.asarray(x)
        x = x.reshape(num_seeds, num_lrs, *x.shape[1:])
        return np.swapaxes(x, 0, 1)

    def pad(x):
        x = np.asarray(x, dtype=float)
        missing = num_saved - x.shape[1]
        if missing:
            x = np.concatenate([x, np.full((x.shape[0], missing, *x.shape[2:]), np.nan)], 1)
        return split(x)

    return {
        "loss_train": pad(res.loss_train),
        "loss_test": pad(res.loss_test),
        "f_train": pad(res.f_train),
        "f_test": pad(res.f_test),
        "status": split(res.status),
        **({} if res.ntk is None else {"ntk": pad(res.ntk)}),
    }


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


def _limit_is_antithetic(cfg: Config) -> bool:
    """Antithetic limit repetitions exist for the random-matrix particle method only (the others
    are deterministic or draw their noise internally)."""
    lim = cfg.limit
    return cfg.sweep.antithetic and lim.method == "particles" and lim.noise == "matrix"


def _split_members(res: TrainResult, parts: int) -> list[TrainResult]:
    """Split a result's member axis into ``parts`` equal consecutive blocks."""
    E = res.f_train.shape[0] // parts
    shared = ("steps", "step_times")  # the only fields without the leading member axis
    out = []
    for x in range(parts):
        fields: dict[str, Any] = {
            k: v if k in shared or v is None else v[x * E : (x + 1) * E]
            for k, v in vars(res).items()
        }
        out.append(TrainResult(**fields))
    return out


LIMIT_CHUNK_BYTES = 2 * 2**30  # estimated memory of one vmapped chunk of limit repetitions


def _chunk_size(cfg: Config, task: Task, K: int, total: int) -> int:
    """The largest divisor of ``total`` repetitions whose estimated memory fits one chunk."""
    itemsize = 8 if task.x_train.dtype == jnp.float64 else 4
    per = estimate_memory(
        cfg.limit.particles,
        K,
        task.n_train + task.n_test,
        task.out_dim,
        task.in_dim,
        1,
        itemsize=itemsize,
        decoupled=True,
    )
    cap = max(1, int(LIMIT_CHUNK_BYTES // max(per, 1)))
    return max(d for d in range(1, min(cap, total) + 1) if total % d == 0)


def _concat_members(parts: Sequence[TrainResult]) -> TrainResult:
    """Concatenate results along the member axis (``steps``/``step_times`` from the first; a
    chunk that stopped early, all members diverged, is padded by `_grid` later)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    shared = ("steps", "step_times")
    num_saved = max(p.f_train.shape[1] for p in parts)

    def pad(x):
        if x.ndim < 2 or x.shape[1] == num_saved:
            return x
        fill = jnp.full((x.shape[0], num_saved - x.shape[1], *x.shape[2:]), jnp.nan, x.dtype)
        return jnp.concatenate([x, fill], 1)

    out: dict[str, Any] = {}
    for k, v in vars(first).items():
        if k in shared or v is None:
            out[k] = v
        elif k in ("status", "failed_step"):
            out[k] = jnp.concatenate([getattr(p, k) for p in parts])
        else:
            out[k] = jnp.concatenate([pad(getattr(p, k)) for p in parts])
    longest = max(parts, key=lambda p: p.f_train.shape[1])
    out["steps"] = longest.steps
    return TrainResult(**out)


def coarsen_particles(particles: Particles) -> Particles:
    """The ``K``-step particles of a ``2K``-step draw: ``W_c[k] = (W[2k] + W[2k+1]) / sqrt(2)`` for
    every field with a layer axis (``W``, ``W_back`` and, for two-layer blocks, ``W1``,
    ``W1_back``); ``U``, ``v`` shared. The standard Brownian-path coupling: the ``K``-step scheme's
    increment is ``(β/sqrt(K)) W_k φ(h_k)/sqrt(M)``, so the coarse matrices have exactly the law of
    a fresh ``K``-step draw (entries N(0, 1), independent across steps) and the two runs are
    strongly correlated. Works on batched particles (layer axis third from the end)."""
    if particles.num_layer_steps % 2:
        raise ValueError(
            f"coarsen_particles needs an even number of layer steps, got "
            f"{particles.num_layer_steps}."
        )

    def pair_sum(w):
        return None if w is None else (w[..., 0::2, :, :] + w[..., 1::2, :, :]) / math.sqrt(2)

    return eqx.tree_at(
        lambda p: (p.W, p.W_back, p.W1, p.W1_back),
        particles,
        tuple(
            pair_sum(w) for w in (particles.W, particles.W_back, particles.W1, particles.W1_back)
        ),
        is_leaf=lambda x: x is None,
    )


def limit_ensemble(
    cfg: Config, *, K: int, lrs: Sequence[float], couplings: Sequence[str], task: Task
) -> tuple[Any, tuple[Array, Array, Array], Float[Array, " R"]]:
    """The one-ensemble random-matrix limit of `run_limits` at ``K`` layer steps: the per-draw
    function ``draw(key, sign, reused) -> Particles``, its batched arguments (mode-major: all
    repetitions of ``couplings[0]``, then of ``couplings[1]``, …) and every repetition's ``η0``.
    `draw_ensemble(draw, *args)` draws the particles."""
    lim = cfg.limit
    keys = run_keys(cfg)
    seeds, member_lrs = member_grid(cfg, lrs)
    draws, signs = antithetic_seeds(seeds, _limit_is_antithetic(cfg))
    param = build_param(cfg)
    dtype = task.x_train.dtype

    def draw(key, sign, reused):
        p = sample_particles(
            lim.particles,
            K,
            task.in_dim,
            task.out_dim,
            sigma_out=param.sigma_out,
            coupling=DecoupledWeights(),
            dtype=dtype,
            key=key,
        )
        return eqx.tree_at(
            lambda q: (q.v, q.W_back), p, (sign * p.v, jnp.where(reused, p.W, p.W_back))
        )

    X = len(couplings)
    rep_keys = jax.vmap(lambda s: jr.fold_in(keys["limit"], s))(jnp.asarray(draws))
    all_keys = jnp.concatenate([rep_keys] * X)
    all_signs = jnp.asarray(signs * X, dtype)
    all_reused = jnp.asarray([c == "exact" for c in couplings for _ in seeds])
    all_lrs = jnp.asarray(member_lrs * X, dtype)
    return draw, (all_keys, all_signs, all_reused), all_lrs


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
) -> dict[str, TrainResult]:
    """The limit at ``K = L = depth`` for every mode in ``couplings``, as `run_limit` gives each.

    For the random-matrix particle method all modes run as *one* compiled ensemble: a mode-A
    repetition is a decoupled particle system with backward offset ``E = 0`` (``W̃(t) = W(t)``,
    spec §1.6), drawn from the same key as `run_limit` draws it, so every mode's repetitions equal
    the separate runs' (and share ``U, W, v(0)`` across modes). With ``sweep.antithetic``
    repetitions ``2p, 2p + 1`` share draw ``p`` and have readouts ``v(0), −v(0)``.

    With ``refine`` (random-matrix particles only) the particles are drawn at ``2K`` layer steps
    (as `run_limits` at ``2K`` draws them), the ``K``-step run uses their `coarsen_particles`
    (the same law as a direct ``K``-step draw), and the result also holds the ``2K``-step run of
    each mode under the key ``f"{X}@2K"`` (``desc`` of its progress bar: ``refine_desc``). Both
    runs go chunk by chunk, with chunks sized for the ``2K`` draw.
    """
    lim = cfg.limit
    if lim.method != "particles" or lim.noise != "matrix":
        if refine:
            raise ConfigError(
                "sweep.extrapolate_layers",
                f"needs limit.method = 'particles' with limit.noise = 'matrix', got "
                f"{lim.method!r}, {lim.noise!r}",
                "false, or the random-matrix particle limit",
            )
        return {
            X: run_limit(
                cfg, depth=depth, lrs=lrs, coupling=X, task=task, progress=progress, desc=desc
            )
            for X in couplings
        }
    K = layer_steps(cfg, depth)
    K_draw = 2 * K if refine else K
    draw, args, all_lrs = limit_ensemble(cfg, K=K_draw, lrs=lrs, couplings=couplings, task=task)
    mcfg = dataclasses.replace(cfg, limit=dataclasses.replace(lim, coupling="decoupled"))
    size = _chunk_size(cfg, task, K_draw, len(all_lrs))
    check_limit_memory(mcfg, task, K_draw, repeats=size)
    coarse, fine = [], []
    for start in range(0, len(all_lrs), size):  # equal chunks: one compilation
        part = slice(start, start + size)
        particles = draw_ensemble(draw, *(a[part] for a in args))
        if refine:
            fine.append(
                simulate_config(
                    cfg, task, particles, all_lrs[part], progress=progress, desc=refine_desc or desc
                )
            )
            particles = coarsen_particles(particles)
        coarse.append(
            simulate_config(cfg, task, particles, all_lrs[part], progress=progress, desc=desc)
        )
    X = len(couplings)
    out = dict(zip(couplings, _split_members(_concat_members(coarse), X), strict=True))
    if refine:
        fines = _split_members(_concat_members(fine), X)
        out.update({f"{c}@2K": r for c, r in zip(couplings, fines, strict=True)})
    return out


def _richardson_grid(coarse: Mapping[str, np.ndarray], fine: Mapping[str, np.ndarray]) -> dict:
    """Per repetition ``2 f(2K) − f(K)`` (weak Euler order 1: bias O(1/K²)) of the `_grid` arrays
    of two coupled runs, losses alike; ``status``: the worse of the two (nonzero if either
    failed; a failed run's NaN padding carries over)."""
    keys = ("loss_train", "loss_test", "f_train", "f_test", "ntk")
    out = {k: 2.0 * fine[k] - coarse[k] for k in keys if k in coarse}
    out["status"] = np.maximum(coarse["status"], fine["status"])
    return out


KINF = "_kinf"  # suffix of the K → ∞ (Richardson) modes


def run_sweep(cfg: Config, *, progress: bool | None = None) -> SweepResult:
    """Run the `[sweep]` grid: finite ensembles, then the limit per depth and coupling mode."""
    sw = cfg.sweep
    widths = list(sw.widths) or [cfg.model.width]
    depths = list(sw.depths) or [cfg.model.depth]
    lrs = list(sw.lrs) or [cfg.optim.lr]
    if sw.antithetic and cfg.seeds % 2:
        raise ConfigError(
            "seeds", f"must be even with sweep.antithetic = true, got {cfg.seeds}", "2, 4, ..."
        )
    lcfg = dataclasses.replace(cfg, seeds=sw.limit_seeds) if sw.limit_seeds else cfg
    task = build_task(cfg, key=run_keys(cfg)["task"])
    full_steps = save_steps(cfg.optim.steps, cfg.output.every)
    num_saved = len(full_steps)
    finite = {}
    for n in widths:
        for L in depths:
            res = run_finite(
                cfg,
                width=n,
                depth=L,
                lrs=lrs,
                task=task,
                progress=progress,
                desc=f"finite n={n} L={L}",
                antithetic=sw.antithetic,
            )
            finite[n, L] = _grid(res, len(lrs), cfg.seeds, num_saved)
    limit = {}
    extrapolate = sw.extrapolate_layers and bool(sw.couplings)
    for L in depths:
        modes = "+".join(sw.couplings)
        runs = run_limits(
            lcfg,
            depth=L,
            lrs=lrs,
            couplings=sw.couplings,
            task=task,
            progress=progress,
            desc=f"limit {modes} K=L={L}",
            refine=extrapolate,
            refine_desc=f"limit {modes} K=2L={2 * layer_steps(lcfg, L)}",
        )
        for X, res in runs.items():
            limit[X, L] = _grid(res, len(lrs), lcfg.seeds, num_saved)
        if extrapolate:
            for X in sw.couplings:
                limit[X + KINF, L] = _richardson_grid(limit[X, L], limit.pop((f"{X}@2K", L)))

    def stack(table, outer, key):
        return jnp.asarray(np.stack([np.stack([table[o, L][key] for L in depths]) for o in outer]))

    X = list(sw.couplings) + ([c + KINF for c in sw.couplings] if extrapolate else [])
    ntk: dict[str, Any] = {}
    if cfg.output.ntk:
        lanti = _limit_is_antithetic(lcfg)
        fin = {k: _ntk_stats(g, sw.antithetic) for k, g in finite.items()}
        lim = {k: _ntk_stats(g, lanti) for k, g in limit.items()} if X else {}
        for prefix, table, outer in (("", fin, widths), ("limit_", lim, X)):
            if not table:
                continue
            for name, field in (("mean", "ntk_mean"), ("var", "ntk_var"), ("units", "ntk_units")):
                ntk[prefix + field] = stack(table, outer, name)
    return SweepResult(
        widths=jnp.asarray(widths),
        depths=jnp.asarray(depths),
        lrs=jnp.asarray(lrs),
        steps=jnp.asarray(full_steps),
        couplings=tuple(X),
        antithetic=sw.antithetic,
        limit_antithetic=_limit_is_antithetic(lcfg),
        limit_particles=cfg.limit.particles,
        loss_train=stack(finite, widths, "loss_train"),
        loss_test=stack(finite, widths, "loss_test"),
        f_train=stack(finite, widths, "f_train"),
        f_test=stack(finite, widths, "f_test"),
        status=stack(finite, widths, "status"),
        limit_loss_train=stack(limit, X, "loss_train") if X else None,
        limit_loss_test=stack(limit, X, "loss_test") if X else None,
        limit_f_train=stack(limit, X, "f_train") if X else None,
        limit_f_test=stack(limit, X, "f_test") if X else None,
        limit_status=stack(limit, X, "status") if X else None,
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


# -- analysis (pure functions of saved arrays) ---------------------------------------------
def pair_units(x: np.ndarray, antithetic: bool) -> np.ndarray:
    """The independent units of an ensemble ``(E, ...)``: antithetic pair means ``(E/2, ...)``, or
    the members themselves. Units with a non-finite entry (a diverged member) are dropped."""
    x = np.asarray(x, float)
    if antithetic:
        x = 0.5 * (x[0::2] + x[1::2])
    return x[np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)]


def _debiased(diff: np.ndarray, var: np.ndarray) -> float:
    """RMS of ``diff`` with the expected noise ``mean(var)`` of ``diff²`` removed (floored at 0)."""
    return float(np.sqrt(max(float(np.mean(diff**2) - np.mean(var)), 0.0)))


def _mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over units and the variance of that mean."""
    return x.mean(0), x.var(0, ddof=1) / x.shape[0]


def _distance(fin: np.ndarray, lim: np.ndarray, *, num_boot: int, rng) -> tuple[float, float]:
    """Debiased RMS distance between the unit means of ``fin (E, ...)`` and ``lim (E', ...)``, and
    its bootstrap standard error. The squared norm of a difference of sample means is biased up by
    the variances of the means; that bias is subtracted (and the result floored at 0)."""
    fin = pair_units(fin, False)
    lim = pair_units(lim, False)
    if len(fin) < 2 or len(lim) < 2:
        return float("nan"), float("nan")

    def est(a, b):
        (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
        return _debiased(ma - mb, va + vb)

    boots = [
        est(fin[rng.integers(0, len(fin), len(fin))], lim[rng.integers(0, len(lim), len(lim))])
        for _ in range(num_boot)
    ]
    return est(fin, lim), float(np.std(boots, ddof=1))


def _wls(A: np.ndarray, y: np.ndarray, se: np.ndarray) -> dict:
    """Weighted least squares ``y ≈ A c`` with weights ``1/se²``: coefficients, their covariance
    (from the stated errors, not rescaled by χ²), χ², degrees of freedom and the χ² p-value."""
    from scipy.stats import chi2 as chi2_dist

    w = 1.0 / se
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    cov = np.linalg.pinv((A * w[:, None]).T @ (A * w[:, None]))
    chi2 = float(np.sum(((y - A @ coef) * w) ** 2))
    dof = int(len(y) - A.shape[1])
    p = float(chi2_dist.sf(chi2, dof)) if dof > 0 else float("nan")
    return {"coef": coef, "cov": cov, "chi2": chi2, "dof": dof, "p_value": p}


def _ok(*arrays) -> np.ndarray:
    """Mask of entries finite in every array, with positive error bars (the last array)."""
    ok = np.all([np.isfinite(np.asarray(a, float)) for a in arrays], axis=0)
    return ok & (np.nan_to_num(np.asarray(arrays[-1], float)) > 0)


def fit_inverse_width(widths, d, se) -> dict[str, float]:
    """Weighted least squares ``d(n) = d_inf + alpha / n``; also the pure-power slope of d vs n
    (least squares of ``log d`` on ``log n``) and the fit's χ² per degree of freedom."""
    widths, d, se = (np.asarray(a, float) for a in (widths, d, se))
    ok = _ok(widths, d, se)
    out = {
        "d_inf": np.nan,
        "d_inf_se": np.nan,
        "alpha": np.nan,
        "alpha_se": np.nan,
        "slope": np.nan,
        "chi2_dof": np.nan,
    }
    if ok.sum() >= 2:
        fit = _wls(np.stack([np.ones(ok.sum()), 1.0 / widths[ok]], 1), d[ok], se[ok])
        c, cov = fit["coef"], fit["cov"]
        out.update(
            d_inf=float(c[0]),
            d_inf_se=float(np.sqrt(cov[0, 0])),
            alpha=float(c[1]),
            alpha_se=float(np.sqrt(cov[1, 1])),
            chi2_dof=fit["chi2"] / fit["dof"] if fit["dof"] > 0 else np.nan,
        )
    out["slope"] = log_slope(widths, d)
    return {k: float(v) for k, v in out.items()}


def log_slope(x, d) -> float:
    """Least-squares slope of ``log d`` against ``log x`` over the positive, finite entries."""
    x, d = np.asarray(x, float), np.asarray(d, float)
    pos = np.isfinite(d) & (d > 0)
    if pos.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[pos]), np.log(d[pos]), 1)[0])


def log_slope_se(x, d, se) -> dict[str, float]:
    """Log-log slope of ``d`` against ``x`` (`log_slope`: unweighted least squares of ``log d`` on
    ``log x``) and its standard error propagated from independent errors ``se`` (``se/d`` in
    ``log d``); ``points_used`` counts the positive, finite entries with finite errors."""
    x, d, se = (np.asarray(a, float) for a in (x, d, se))
    slope = log_slope(x, d)
    pos = np.isfinite(d) & (d > 0) & np.isfinite(se)
    slope_se = math.nan
    if np.isfinite(slope) and pos.sum() >= 2:
        lx = np.log(x[pos])
        w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)
        slope_se = float(np.sqrt(np.sum((w * se[pos] / d[pos]) ** 2)))
    return {"slope": slope, "slope_se": slope_se, "points_used": int(pos.sum())}


def fit_depth_plateau(depths, d_inf, se) -> dict[str, float]:
    """`log_slope_se` of the fitted plateaus ``d∞(L)`` of ``d∞ + α/n`` against depth (depths are
    independent runs). Finite nets at depth ``L`` differ from the ``K → ∞`` limit by O(1/L): the
    expected slope is −1."""
    fit = log_slope_se(depths, d_inf, se)
    return {"slope": fit["slope"], "slope_se": fit["slope_se"], "depths_used": fit["points_used"]}


def kernel_distance(mean_a, var_a, n_a, mean_b, var_b, n_b) -> tuple[float, float]:
    """Relative debiased distance ``‖E Θ_a − E Θ_b‖ / ‖E Θ_b‖`` (RMS over every saved step and
    kernel entry) between two sample means of ``n_a`` and ``n_b`` independent units, with its
    standard error (delta method, entries treated as independent Gaussians).

    ``‖m_a − m_b‖²`` is biased up by ``s² = var_a/n_a + var_b/n_b`` per entry; that bias is
    subtracted (floored at 0), and ``‖m_b‖²`` is debiased by ``var_b/n_b``. Per entry
    ``Var((m_a − m_b)² − s²) ≈ 4 Δ² s² + 2 s⁴``. The square of the distance is unbiased (while
    it is well above 0); the distance itself carries Jensen's ``−SE²/(2 d)``."""
    ma, va, mb, vb = (np.asarray(a, float).ravel() for a in (mean_a, var_a, mean_b, var_b))
    ok = np.isfinite(ma) & np.isfinite(mb) & np.isfinite(va) & np.isfinite(vb)
    if n_a < 2 or n_b < 2 or not ok.any():
        return float("nan"), float("nan")
    diff, s2 = (ma - mb)[ok], (va / n_a + vb / n_b)[ok]
    norm2 = float(np.mean(mb[ok] ** 2 - (vb / n_b)[ok]))  # ‖E Θ_b‖², debiased likewise
    if norm2 <= 0:
        return float("nan"), float("nan")
    d2 = max(float(np.mean(diff**2 - s2)), 0.0)
    # E[diff²] = Δ² + s²: 4 Δ² s² + 2 s⁴ estimated by 4 diff² s² − 2 s⁴ (floored at 2 s⁴)
    var_d2 = max(float(np.sum(4 * diff**2 * s2 - 2 * s2**2)), float(np.sum(2 * s2**2)))
    var_d2 /= ok.sum() ** 2
    d = math.sqrt(d2 / norm2)
    # d = sqrt(d2/norm2): dd/dd2 = 1/(2 d norm2); at d2 ≈ 0 the SE is that of sqrt(|noise|)
    se = math.sqrt(var_d2) / (2 * math.sqrt(max(d2, math.sqrt(var_d2)) * norm2))
    return d, se


def kernel_summary(arrays: Mapping[str, np.ndarray]) -> dict:
    """Per limit mode: the relative NTK distance `kernel_distance` of the finite networks'
    seed-mean NTK (every saved step) to the mode's ``(W, Ld, Lr)``, with SEs, and per depth and
    learning rate its n-slope (`log_slope_se`; finite → mode A: expected −1)."""
    widths, depths, lrs = (np.asarray(arrays[k]) for k in ("widths", "depths", "lrs"))
    couplings = [str(c) for c in np.atleast_1d(arrays["couplings"])]
    out: dict = {}
    for x, mode in enumerate(couplings):
        d = np.full((len(widths), len(depths), len(lrs)), np.nan)
        se = d.copy()
        for i in range(len(widths)):
            for j in range(len(depths)):
                for r in range(len(lrs)):
                    d[i, j, r], se[i, j, r] = kernel_distance(
                        arrays["ntk_mean"][i, j, r],
                        arrays["ntk_var"][i, j, r],
                        int(arrays["ntk_units"][i, j, r]),
                        arrays["limit_ntk_mean"][x, j, r],
                        arrays["limit_ntk_var"][x, j, r],
                        int(arrays["limit_ntk_units"][x, j, r]),
                    )
        slopes = [
            [log_slope_se(widths, d[:, j, r], se[:, j, r]) for r in range(len(lrs))]
            for j in range(len(depths))
        ]
        out[mode] = {"d": d.tolist(), "se": se.tolist(), "slopes": slopes}
    return out


def fit_depth_scaling(widths, depths, y, se) -> dict[str, float]:
    """Weighted least squares ``y(n, L) = L_inf + alpha / n + b / L`` over a widths × depths grid
    (``y``, ``se`` of shape ``(W, Ld)``; spec T11), with χ², degrees of freedom and p-value."""
    n, L = np.meshgrid(np.asarray(widths, float), np.asarray(depths, float), indexing="ij")
    y, se = np.asarray(y, float), np.asarray(se, float)
    ok = _ok(y, se)
    keys = ("L_inf", "alpha", "b")
    out = {k: float("nan") for k in (*keys, *(k + "_se" for k in keys), "chi2", "p_value")}
    out["dof"] = 0
    cols = [np.ones(ok.sum()), 1.0 / n[ok], 1.0 / L[ok]]
    if ok.sum() < 3 or len(np.unique(n[ok])) < 2 or len(np.unique(L[ok])) < 2:
        return out
    fit = _wls(np.stack(cols, 1), y[ok], se[ok])
    for i, k in enumerate(keys):
        out[k] = float(fit["coef"][i])
        out[k + "_se"] = float(np.sqrt(fit["cov"][i, i]))
    out.update(chi2=fit["chi2"], dof=fit["dof"], p_value=fit["p_value"])
    return out


def _fit_inverse(x, y, se) -> tuple[float, float, float, float]:
    """``y = c + b / x`` by weighted least squares: ``(c, c_se, b, b_se)`` (NaN if < 2 points)."""
    x, y, se = (np.asarray(a, float) for a in (x, y, se))
    ok = _ok(x, y, se)
    if ok.sum() < 2:
        return math.nan, math.nan, math.nan, math.nan
    fit = _wls(np.stack([np.ones(ok.sum()), 1.0 / x[ok]], 1), y[ok], se[ok])
    c, cov = fit["coef"], fit["cov"]
    return float(c[0]), float(np.sqrt(cov[0, 0])), float(c[1]), float(np.sqrt(cov[1, 1]))


def _richardson_weights(widths: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Per-coordinate weights ``c_i`` of ``f∞ = Σ_i c_i f(n_i)`` from the weighted fit
    ``f(n) = f∞ + a/n`` (weights ``1/var``); for two widths ``n, 2n``: ``c = (−1, 2)``.
    ``var``: ``(W, N)`` variances of the width means; ``widths``: ``(W,)``."""
    floor = 1e-12 * float(np.mean(var)) + 1e-300
    w = 1.0 / np.maximum(var, floor)
    x = (1.0 / widths)[:, None]
    s0, s1, s2 = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    return w * (s2 - s1 * x) / (s0 * s2 - s1**2)


def _inverse_width_weights(widths: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Per-coordinate weights of the fitted 1/n coefficient ``a = Σ_i c_i f(n_i)`` of the same
    weighted fit as `_richardson_weights`."""
    floor = 1e-12 * float(np.mean(var)) + 1e-300
    w = 1.0 / np.maximum(var, floor)
    x = (1.0 / widths)[:, None]
    s0, s1, s2 = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    return w * (s0 * x - s1) / (s0 * s2 - s1**2)


def _depth_distances(
    fins: Sequence[np.ndarray], lims: Mapping[str, np.ndarray], widths: np.ndarray, c: np.ndarray
) -> dict[str, tuple[np.ndarray, float]]:
    """Debiased distances of each width's mean (``d``, shape ``(W,)``) and of the Richardson
    extrapolation (``d∞``) to each limit mode, from unit arrays ``(units, N)``."""
    mv = [_mean_var(f) for f in fins]
    means = np.stack([m for m, _ in mv])
    var = np.stack([v for _, v in mv])
    f_inf, v_inf = np.sum(c * means, 0), np.sum(c**2 * var, 0)
    out = {}
    for mode, lim in lims.items():
        lm, lv = _mean_var(lim)
        d = np.array([_debiased(m - lm, v + lv) for m, v in zip(means, var, strict=True)])
        d_inf = _debiased(f_inf - lm, v_inf + lv) if len(widths) >= 2 else math.nan
        out[mode] = (d, d_inf)
    return out


def _resample(x: np.ndarray, rng) -> np.ndarray:
    return x[rng.integers(0, len(x), len(x))]


def convergence_summary(
    arrays: Mapping[str, np.ndarray], *, num_boot: int = 200, seed: int = 0
) -> dict:
    """The finite → limit analysis of a sweep's saved arrays (see the module docstring).

    Returns a JSON-friendly dict: ``modes[mode]`` holds ``d``, ``se`` ``(W, Ld, Lr)``, ``fits``
    (per depth and lr: ``d_inf``, ``alpha``, ``slope``, ``slope_se``, …) and ``extrap``
    (``d``, ``se`` ``(Ld, Lr)``: distance of the Richardson-extrapolated predictions) and
    ``plateau`` (per lr: `fit_depth_plateau` of the ``d_inf`` over depths); ``loss``
    holds the final test losses, and ``depth_scaling`` the T11 fit per learning rate.
    """
    rng = np.random.default_rng(seed)
    widths, depths, lrs = (np.asarray(arrays[k]) for k in ("widths", "depths", "lrs"))
    couplings = [str(c) for c in np.atleast_1d(arrays.get("couplings", np.array([], str)))]
    anti = bool(arrays.get("antithetic", False))
    lanti = bool(arrays.get("limit_antithetic", False))
    M = int(arrays.get("limit_particles", 0))
    steps = np.asarray(arrays["steps"])
    W, Ld, Lr = len(widths), len(depths), len(lrs)
    f_fin = np.concatenate([arrays["f_train"], arrays["f_test"]], axis=-2)
    has_limit = bool(couplings) and arrays.get("limit_f_train") is not None
    f_lim = (
        np.concatenate([arrays["limit_f_train"], arrays["limit_f_test"]], axis=-2)
        if has_limit
        else None
    )
    out: dict = {
        "widths": widths.tolist(),
        "depths": depths.tolist(),
        "lrs": lrs.tolist(),
        "couplings": couplings,
        "antithetic": anti,
        "limit_antithetic": lanti,
        "limit_particles": M,
        "t_final": int(steps[-1]),
        "num_boot": num_boot,
        "modes": {},
    }
    nan = np.full((W, Ld, Lr), np.nan)
    units = np.zeros((W, Ld, Lr), int)
    a_rms = np.full((Ld, Lr), np.nan)  # RMS of the fitted 1/n coefficient a of f(n) = f∞ + a/n
    modes = {
        m: {
            "d": nan.copy(),
            "se": nan.copy(),
            "fits": [[{} for _ in range(Lr)] for _ in range(Ld)],
            "extrap": {"d": np.full((Ld, Lr), np.nan), "se": np.full((Ld, Lr), np.nan)},
        }
        for m in (couplings if has_limit else [])
    }
    for j in range(Ld):
        for r in range(Lr):
            fins = [
                pair_units(f_fin[i, j, r], anti).reshape(-1, f_fin[0, 0, 0, 0].size)
                for i in range(W)
            ]
            units[:, j, r] = [len(f) for f in fins]
            if not modes:
                continue
            lims = {
                m: pair_units(f_lim[x, j, r], lanti).reshape(-1, fins[0].shape[1])  # pyright: ignore[reportOptionalSubscript]
                for x, m in enumerate(couplings)
            }
            if min(len(f) for f in fins) < 2 or min(len(v) for v in lims.values()) < 2:
                continue
            var = np.stack([_mean_var(f)[1] for f in fins])
            c = _richardson_weights(widths.astype(float), var) if W >= 2 else np.ones((1, 1))
            point = _depth_distances(fins, lims, widths, c)
            if W >= 2:
                means = np.stack([f.mean(0) for f in fins])
                a = np.sum(_inverse_width_weights(widths.astype(float), var) * means, 0)
                a_rms[j, r] = float(np.sqrt(np.mean(a**2)))
            boots = []
            for _ in range(num_boot):
                bf = [_resample(f, rng) for f in fins]
                bl = {m: _resample(v, rng) for m, v in lims.items()}
                boots.append(_depth_distances(bf, bl, widths, c))
            for m, (d, d_inf) in point.items():
                bd = np.stack([b[m][0] for b in boots])  # (B, W)
                b_inf = np.array([b[m][1] for b in boots])
                se = bd.std(0, ddof=1)
                res = modes[m]
                res["d"][:, j, r], res["se"][:, j, r] = d, se
                fit = fit_inverse_width(widths, d, se)
                slopes = np.array([log_slope(widths, b) for b in bd])
                pos = np.all(d > 0)  # slopes of replicates use the same widths as the estimate
                keep = np.isfinite(slopes) & (np.all(bd > 0, 1) if pos else True)
                fit["slope_se"] = float(np.std(slopes[keep], ddof=1)) if keep.sum() > 2 else np.nan
                fit["slope_boot_kept"] = float(np.mean(keep))
                res["fits"][j][r] = fit
                res["extrap"]["d"][j, r] = d_inf
                res["extrap"]["se"][j, r] = float(np.nanstd(b_inf, ddof=1))
    for res in modes.values():  # d∞(L) against depth (for X_kinf: expected slope −1)
        res["plateau"] = []
        for r in range(Lr):
            d_inf = [_num(res["fits"][j][r].get("d_inf")) for j in range(Ld)]
            d_se = [_num(res["fits"][j][r].get("d_inf_se")) for j in range(Ld)]
            fit = fit_depth_plateau(depths, d_inf, d_se)
            res["plateau"].append({**fit, "d_inf": d_inf, "d_inf_se": d_se})
    if (
        has_limit
        and arrays.get("ntk_mean") is not None
        and arrays.get("limit_ntk_mean") is not None
    ):
        out["kernels"] = kernel_summary(arrays)
    out["units"] = units.tolist()
    out["a_rms"] = a_rms.tolist()
    # a mode-A particle system of M particles is a width-M network in law (spec T5d): its own
    # seed mean sits ≈ ‖a‖/M from f∞
    out["particle_bias"] = (a_rms / M if M else np.full_like(a_rms, np.nan)).tolist()
    out["modes"] = {
        m: {
            "d": v["d"].tolist(),
            "se": v["se"].tolist(),
            "fits": v["fits"],
            "extrap": {k: a.tolist() for k, a in v["extrap"].items()},
            "plateau": v.get("plateau", []),
        }
        for m, v in modes.items()
    }
    out["loss"], out["depth_scaling"] = _loss_summary(arrays, couplings, anti, lanti, M)
    return out


def _unit_mean_se(x: np.ndarray, antithetic: bool) -> tuple[float, float]:
    u = pair_units(x, antithetic)
    if len(u) < 2:
        return math.nan, math.nan
    return float(u.mean()), float(u.std(ddof=1) / math.sqrt(len(u)))


def _loss_summary(arrays, couplings, anti, lanti, M) -> tuple[dict, list[dict]]:
    """Final test losses (unit means ± SE) and the depth-scaling fit per learning rate (T11)."""
    widths, depths, lrs = (np.asarray(arrays[k], float) for k in ("widths", "depths", "lrs"))
    W, Ld, Lr = len(widths), len(depths), len(lrs)
    fin = np.asarray(arrays["loss_test"], float)[..., -1]  # (W, Ld, Lr, E)
    y, ys = np.full((W, Ld, Lr), np.nan), np.full((W, Ld, Lr), np.nan)
    for idx in np.ndindex(W, Ld, Lr):
        y[idx], ys[idx] = _unit_mean_se(fin[idx], anti)
    lim_y = {m: np.full((Ld, Lr), np.nan) for m in couplings}
    lim_s = {m: np.full((Ld, Lr), np.nan) for m in couplings}
    if arrays.get("limit_loss_test") is not None:
        lim = np.asarray(arrays["limit_loss_test"], float)[..., -1]  # (X, Ld, Lr, El)
        for x, m in enumerate(couplings):
            for j, r in np.ndindex(Ld, Lr):
                lim_y[m][j, r], lim_s[m][j, r] = _unit_mean_se(lim[x, j, r], lanti)
    loss = {
        "finite": y.tolist(),
        "finite_se": ys.tolist(),
        "limit": {m: v.tolist() for m, v in lim_y.items()},
        "limit_se": {m: v.tolist() for m, v in lim_s.items()},
    }
    scaling = []
    for r in range(Lr):
        fit: dict = fit_depth_scaling(widths, depths, y[:, :, r], ys[:, :, r])
        per = [_fit_inverse(widths, y[:, j, r], ys[:, j, r]) for j in range(Ld)]
        fit["per_depth"] = {"inf": [p[0] for p in per], "se": [p[1] for p in per]}
        fit["particle_bias"] = fit["alpha"] / M if M else math.nan
        limits = {}
        for m in couplings:
            c, c_se, b, b_se = _fit_inverse(depths, lim_y[m][:, r], lim_s[m][:, r])
            z = (fit["L_inf"] - c) / math.hypot(fit["L_inf_se"], c_se)
            z_depth = [
                (p[0] - lim_y[m][j, r]) / math.hypot(p[1], lim_s[m][j, r])
                for j, p in enumerate(per)
            ]
            limits[m] = {"inf": c, "inf_se": c_se, "b": b, "b_se": b_se, "z": z, "z_depth": z_depth}
        fit["limits"] = limits
        scaling.append(fit)
    return loss, scaling


# -- words -------------------------------------------------------------------------------------
MODE_NAMES = {"exact": "mode A (exact)", "decoupled": "mode B (decoupled, NFD/GIA)"}
KINF_WORDS = "K → ∞ (Richardson of K = L and 2L)"


def mode_name(mode: str) -> str:
    """A limit mode in words; ``X_kinf`` is mode ``X`` at ``K → ∞``."""
    if mode.endswith(KINF):
        base = mode.removesuffix(KINF)
        return f"{MODE_NAMES.get(base, base)} at {KINF_WORDS}"
    return MODE_NAMES.get(mode, mode)


def layer_words(mode: str) -> str:
    """The layer steps of a mode's limit: ``K = L``, or the Richardson ``K → ∞``."""
    return KINF_WORDS if mode.endswith(KINF) else "K = L"


def _pm(x: float, se: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.3g} ± {se:.2g}" if np.isfinite(se) else f"{x:.3g}"


def summary_table(summary: Mapping) -> str:
    """A plain-text table of the distances to each limit mode, the n-slopes and n → ∞ values."""
    lines = []
    for mode, res in summary["modes"].items():
        lines.append(
            f"distance of finite predictions to the {mode} limit ({layer_words(mode)}), "
            "seed means, debiased, ± bootstrap SE"
        )
        header = "  lr      L  " + "  ".join(f"n={n:<15d}" for n in summary["widths"])
        lines.append(header + "  slope in n     d(n→∞) [d∞ + α/n]   ‖f∞ − f_limit‖")
        for r, lr in enumerate(summary["lrs"]):
            for j, L in enumerate(summary["depths"]):
                cells = "  ".join(
                    f"{_f(res['d'][i][j][r])}±{_f(res['se'][i][j][r], 1)}"
                    for i in range(len(summary["widths"]))
                )
                fit = res["fits"][j][r]
                ext = res["extrap"]
                lines.append(
                    f"  {lr:<7.3g} {L:<3d} {cells}  {_f(fit.get('slope'), 2, 'f')}±"
                    f"{_f(fit.get('slope_se'), 2, 'f')}   {_f(fit.get('d_inf'))}±"
                    f"{_f(fit.get('d_inf_se'), 1)}   {_f(ext['d'][j][r])}±{_f(ext['se'][j][r], 1)}"
                )
    return "\n".join(lines)


def _f(x, digits: int = 2, kind: str = "e") -> str:
    x = math.nan if x is None else float(x)
    return f"{x:+.{digits}{kind}}" if kind == "f" else f"{x:.{digits}{kind}}"


def _num(x) -> float:
    return math.nan if x is None else float(x)


def sweep_report(summary: Mapping, *, diverged: int = 0, members: int = 0) -> str:
    """Markdown report of a sweep: tables and sentences generated from the numbers only."""
    md = ['## Finite networks → NFD limit (`kind = "sweep"`)', ""]
    anti = "antithetic pairs v(0) ↔ −v(0)" if summary.get("antithetic") else "independent seeds"
    md.append(
        f"Widths {summary['widths']}, depths {summary['depths']}, learning rates "
        f"{summary['lrs']}; finite ensembles use {anti}; the particle limit uses "
        f"M = {summary.get('limit_particles')} particles at K = L"
        + (
            f"; modes marked {KINF_WORDS} combine coupled runs at K = L and 2L layer steps, "
            "2 f(2L) − f(L) per repetition (bias O(1/L²))"
            if any(m.endswith(KINF) for m in summary["modes"])
            else ""
        )
        + ". Distances are RMS over the saved steps and the train and test points of the "
        "seed-mean centred predictions, debiased for sampling noise; errors are bootstrap SEs "
        "(limit resampled jointly)."
    )
    md.append("")
    for mode, res in summary["modes"].items():
        md.append(f"### Distance to {mode_name(mode)}")
        md.append("")
        head = "| η0 | L | " + " | ".join(f"n = {n}" for n in summary["widths"])
        md.append(head + " | n-slope | d∞ + α/n: d∞ | ‖f∞ − f_limit‖ (Richardson) |")
        md.append("|" + "---|" * (len(summary["widths"]) + 5))
        for r, lr in enumerate(summary["lrs"]):
            for j, L in enumerate(summary["depths"]):
                fit = res["fits"][j][r]
                cells = " | ".join(
                    _pm(_num(res["d"][i][j][r]), _num(res["se"][i][j][r]))
                    for i in range(len(summary["widths"]))
                )
                md.append(
                    f"| {lr:g} | {L} | {cells} | "
                    f"{_pm(_num(fit.get('slope')), _num(fit.get('slope_se')))} | "
                    f"{_pm(_num(fit.get('d_inf')), _num(fit.get('d_inf_se')))} | "
                    f"{_pm(_num(res['extrap']['d'][j][r]), _num(res['extrap']['se'][j][r]))} |"
                )
        md.append("")
    md += _sentences(summary)
    md += _kernel_md(summary)
    md += _depth_scaling_md(summary)
    if members:
        md.append(f"Diverged members: {diverged} of {members}.")
    return "\n".join(md) + "\n"


def _kernel_md(summary: Mapping) -> list[str]:
    """The NTK distance table (present when the sweep saved ``output.ntk``)."""
    kern = summary.get("kernels")
    if not kern:
        return []
    md = [
        "### NTK distance (relative, every saved step, seed means, debiased, ± SE)",
        "",
        "| limit | η0 | L | " + " | ".join(f"n = {n}" for n in summary["widths"]) + " | n-slope |",
        "|" + "---|" * (len(summary["widths"]) + 4),
    ]
    for mode, res in kern.items():
        for r, lr in enumerate(summary["lrs"]):
            for j, L in enumerate(summary["depths"]):
                cells = " | ".join(
                    _pm(_num(res["d"][i][j][r]), _num(res["se"][i][j][r]))
                    for i in range(len(summary["widths"]))
                )
                sl = res["slopes"][j][r]
                md.append(
                    f"| {mode_name(mode)} | {lr:g} | {L} | {cells} | "
                    f"{_pm(_num(sl['slope']), _num(sl['slope_se']))} |"
                )
    return md + [""]


def _slope_words(mode: str, s: float, se: float) -> str:
    """One mode's n-slope in words; for mode A with the T7 requirement (−1 ± 0.3)."""
    name = mode_name(mode)
    if s >= 0:
        return f"the distance to {name} does not fall with n (slope {s:+.2f} ± {se:.2f})"
    words = f"the distance to {name} falls like n^({s:+.2f} ± {se:.2f})"
    if mode == "exact":
        ok = abs(s + 1) <= 0.3
        sig = f", {abs(s + 1) / se:.1f} SE from −1" if np.isfinite(se) and se > 0 else ""
        words += f" (T7, required −1 ± 0.3: {'met' if ok else 'NOT met'}{sig})"
    return words


def _sentences(summary: Mapping) -> list[str]:
    md = []
    modes = summary["modes"]
    for r, lr in enumerate(summary["lrs"]):
        for j, L in enumerate(summary["depths"]):
            parts = []
            for mode, res in modes.items():
                fit = res["fits"][j][r]
                s, se = _num(fit.get("slope")), _num(fit.get("slope_se"))
                if np.isfinite(s):
                    parts.append(_slope_words(mode, s, se))
            if parts:
                md.append(f"- η0 = {lr:g}, L = {L}: " + "; ".join(parts) + ".")
            ext = {
                m: (_num(v["extrap"]["d"][j][r]), _num(v["extrap"]["se"][j][r]))
                for m, v in modes.items()
            }
            ext = {m: v for m, v in ext.items() if np.isfinite(v[0]) and np.isfinite(v[1])}
            if not ext:
                continue
            zero = [m for m, (d, se) in ext.items() if d <= 3 * se]
            words = ", ".join(f"{_pm(d, se)} from {mode_name(m)}" for m, (d, se) in ext.items())
            if len(zero) == 1:
                verdict = f"only {mode_name(zero[0])} is consistent with 0"
            elif zero:
                verdict = "every mode is consistent with 0 (not resolved at this size)"
            else:
                best = min(ext, key=lambda m: ext[m][0])
                verdict = f"none is within 3 SE of 0; the closest is {mode_name(best)}"
            md.append(
                f"  Extrapolated to n = ∞ (f∞ + a/n), the finite predictions sit {words}: "
                f"{verdict}."
            )
            bias = _num(summary["particle_bias"][j][r]) if "particle_bias" in summary else np.nan
            if "exact" in ext and np.isfinite(bias):
                d, se = ext["exact"]
                close = "within" if abs(d - bias) <= 3 * se else "beyond"
                md.append(
                    f"  The M-particle mode-A limit is itself ≈ ‖a‖/M = {bias:.2g} from f∞ "
                    f"(a width-M network in law); the mode-A distance is {close} 3 SE of that."
                )
    md += _plateau_sentences(summary)
    return md + [""] if md else md


def _plateau_sentences(summary: Mapping) -> list[str]:
    """For each ``X_kinf`` mode: the depth slope of the plateaus ``d∞(L)`` of ``d∞ + α/n`` (finite
    nets at depth L differ from the K → ∞ limit by O(1/L): expected −1)."""
    md = []
    for mode, res in summary["modes"].items():
        if not mode.endswith(KINF):
            continue
        for r, lr in enumerate(summary["lrs"]):
            plateau = res.get("plateau", [])
            if r >= len(plateau):
                continue
            p = plateau[r]
            s, se = _num(p.get("slope")), _num(p.get("slope_se"))
            cells = ", ".join(
                f"{_pm(_num(d), _num(e))} (L = {L})"
                for d, e, L in zip(p["d_inf"], p["d_inf_se"], summary["depths"], strict=True)
            )
            if not np.isfinite(s):
                words = "too few positive plateaus for a depth slope"
            else:
                sig = f", {abs(s + 1) / se:.1f} SE from −1" if np.isfinite(se) and se > 0 else ""
                words = f"they fall like L^({s:+.2f} ± {se:.2g}) (expected −1 for O(1/L){sig})"
            md.append(
                f"- η0 = {lr:g}: the plateaus d∞ of d∞ + α/n against {mode_name(mode)} are "
                f"{cells}: {words}."
            )
    return md


def _depth_scaling_md(summary: Mapping) -> list[str]:
    md = ["### Depth scaling of the test loss (spec T11)", ""]
    t = summary["t_final"]
    for r, lr in enumerate(summary["lrs"]):
        fit = summary["depth_scaling"][r]
        if not np.isfinite(_num(fit["L_inf"])):
            md.append(f"- η0 = {lr:g}: too few widths/depths for L∞ + α/n + b/L.")
            continue
        dof = fit["dof"]
        quality = (
            f"χ²/dof = {fit['chi2'] / dof:.2f} (dof {dof}, p = {_num(fit['p_value']):.2g})"
            if dof > 0
            else "no degrees of freedom left for χ²"
        )
        verdict = (
            "the form describes the data"
            if dof > 0 and _num(fit["p_value"]) > 0.01
            else "the form is rejected (p < 0.01)"
            if dof > 0
            else "fit quality untested"
        )
        md.append(
            f"- η0 = {lr:g}: the test loss at t = {t} fits L∞ + α/n + b/L with "
            f"L∞ = {_pm(fit['L_inf'], fit['L_inf_se'])}, α = {_pm(fit['alpha'], fit['alpha_se'])}, "
            f"b = {_pm(fit['b'], fit['b_se'])}; {quality}: {verdict}."
        )
        for m, lim in fit["limits"].items():
            z = _num(lim["z"])
            if not np.isfinite(z):
                continue
            agree = "agrees with L∞ (within 3 SE)" if abs(z) <= 3 else "differs from L∞"
            md.append(
                f"  {mode_name(m)} limit loss, extrapolated c + b/L in depth: "
                f"{_pm(lim['inf'], lim['inf_se'])} (b = {_pm(lim['b'], lim['b_se'])}); "
                f"L∞ − limit = {z:+.1f} SE: {agree}."
            )
        md.append("")
        md.append(
            "| L | finite n → ∞ (ℓ∞ + α/n) | "
            + " | ".join(
                f"{m.removesuffix(KINF)} limit ({'K → ∞' if m.endswith(KINF) else 'K = L'}) | z"
                for m in fit["limits"]
            )
            + " |"
        )
        md.append("|" + "---|" * (2 + 2 * len(fit["limits"])))
        loss = summary["loss"]
        for j, L in enumerate(summary["depths"]):
            cells = [
                f"{_pm(_num(loss['limit'][m][j][r]), _num(loss['limit_se'][m][j][r]))} | "
                f"{_num(lim['z_depth'][j]):+.1f}"
                for m, lim in fit["limits"].items()
            ]
            per = fit["per_depth"]
            md.append(
                f"| {L} | {_pm(_num(per['inf'][j]), _num(per['se'][j]))} | "
                + " | ".join(cells)
                + " |"
            )
        bias = _num(fit.get("particle_bias"))
        if np.isfinite(bias):
            md.append("")
            md.append(
                f"The mode-A particle limit with M particles is a width-M network in law (spec "
                f"T5d), so its own loss bias is about α/M = {bias:+.2g}."
            )
        md.append("")
    return md
