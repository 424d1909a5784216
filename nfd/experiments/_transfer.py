"""Learning-rate transfer across depth, first-layer collapse and the T10 control (spec §6, T8–T10).

For every optimizer (SGD, Adam) and block variant (one-layer; two-layer with W1's rate × ``L^a``)
the finite depth-muP networks are trained over ``widths × depths × lrs`` (seeds × learning rates
are one vmapped ensemble per (width, depth)) for the config's budget ``optim.steps``; the loss at
the end is the transfer curve. For SGD the NFD limit at ``K = L`` gives the same curve at
``n = ∞`` on the same batch sequence. The collapse diagnostic is W1's own one-step feature update
``δz^own`` vs ``L`` (expected slope ``a − 1/2``, spec §6) with the n = ∞ NTK share of W1,
``K_W1`` (slope ``a``, from the two-layer recursion of spec §2). The T10 control compares the
pre-activation stream's ``H(τ)_μμ`` (which stays O(1): ``e^{τ/2}`` for ReLU) with the
post-activation network's feature norm (which grows with ``L``).

Everything here is a pure function of the config; the figures and the report read the saved
arrays only (`nfd.plots.transfer_figures`, `transfer_report`).
"""

import dataclasses
import time
import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.stats

from ..config import Config, ConfigError, build_activation, build_param, build_task, run_keys
from ._finite import finite_ensemble, run_finite
from ._limit import run_limit

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def variants(cfg: Config) -> list[tuple[str, float]]:
    """``(block, a)`` of every block variant: one-layer (``a = 0``) and two-layer per exponent."""
    out = [("one_layer", 0.0)] if cfg.transfer.one_layer else []
    return out + [("two_layer", float(a)) for a in cfg.transfer.exponents]


def variant_label(block: str, a: float) -> str:
    return "one-layer" if block == "one_layer" else f"two-layer, a={a:g}"


def _variant_cfg(cfg: Config, opt: str, block: str, a: float, **model) -> Config:
    return dataclasses.replace(
        cfg,
        kind="finite",
        model=dataclasses.replace(cfg.model, block=block, **model),  # type: ignore[arg-type]
        optim=dataclasses.replace(cfg.optim, name=opt, first_layer_lr_exponent=a),  # type: ignore[arg-type]
    )


def _lrs(cfg: Config, opt: str) -> tuple[float, ...]:
    return cfg.transfer.adam_lrs if opt == "adam" and cfg.transfer.adam_lrs else cfg.transfer.lrs


def _final_losses(res, num_seeds: int, num_lrs: int):
    """``(R, S)`` train and test losses at the last step; diverged members are NaN."""
    ok = np.asarray(res.status) == 0

    def last(x):
        v = np.where(ok, np.asarray(x)[:, -1], np.nan)
        return v.reshape(num_seeds, num_lrs).T  # member_grid is seed-major

    return last(res.loss_train), last(res.loss_test)


def collapse_lrs(cfg: Config) -> np.ndarray:
    """The η0 of the one-step diagnostics per optimizer ``(O,)``: the grid point nearest (in
    log) to `optim.lr` for SGD, the grid's middle point for Adam."""
    out = []
    for opt in cfg.transfer.optimizers:
        grid = np.asarray(_lrs(cfg, opt), float)
        if opt == "sgd":
            out.append(grid[np.argmin(np.abs(np.log(grid / cfg.optim.lr)))])
        else:
            out.append(grid[(len(grid) - 1) // 2])
    return np.asarray(out)


def _one_step(res, num_seeds: int, num_lrs: int, depth: int) -> dict[str, np.ndarray]:
    """Step-1 diagnostics of a run, each ``(R, S)`` (NaN where the member diverged or step 1 was
    not saved): ``dz_own`` (block mean of W1's per-block RMS own update; two-layer), ``block``
    (``L ×`` block mean of each block's own update, T8's coordinate) and ``df`` (RMS of
    ``f(1) − f(0)`` over every tracked point and output)."""
    steps = np.asarray(res.steps)
    ok = np.asarray(res.status) == 0

    def grid(x):
        return np.where(ok, x, np.nan).reshape(num_seeds, num_lrs).T

    nan = np.full((num_lrs, num_seeds), np.nan)
    if 1 not in steps:
        return {"dz_own": nan, "block": nan, "df": nan}
    s1, s0 = int(np.flatnonzero(steps == 1)[0]), int(np.flatnonzero(steps == 0)[0])
    f = np.concatenate([np.asarray(res.f_train), np.asarray(res.f_test)], axis=2)
    df = np.sqrt(np.mean((f[:, s1] - f[:, s0]) ** 2, axis=(1, 2)))
    dz = None if res.dz_own is None else np.asarray(res.dz_own)[:, s1].mean(axis=-1)
    return {
        "dz_own": nan if dz is None else grid(dz),
        "block": grid(depth * np.asarray(res.block_movement)[:, s1].mean(axis=-1)),
        "df": grid(df),
    }


def run_transfer(cfg: Config, *, progress: bool | None = None) -> dict[str, np.ndarray]:
    """The transfer grid, the one-step collapse/coordinate diagnostics and the T10 control.

    Returns arrays (for `save_run`) with axes O = optimizers, V = variants, I = widths,
    J = depths, R = η0 grid, S = seeds: ``loss_train``/``loss_test`` ``(O, V, I, J, R, S)`` at the
    end of the budget; ``limit_loss_train``/``_test`` ``(O, V, J, R, S)`` (NaN where the limit
    does not apply: Adam, or ``limit = false``); ``lrs`` ``(O, R)``. With ``collapse``, from step
    1 of the same runs: ``dz_own``, ``block_move``, ``df_step`` ``(O, V, I, J, R, S)`` (see
    `_one_step`) and ``limit_dz_own`` ``(O, V, J, R, S)``; ``collapse_lr`` ``(O,)`` (the η0 the
    report reads them at, `collapse_lrs`); ``k_w1`` ``(V, J)`` (W1's share of the n = ∞ NTK
    diagonal at t = 0, spec §2) and ``k_w1_finite`` ``(V, I, J, S0)`` (the finite networks' at
    init, ``S0 = transfer.init_seeds``). With ``post_activation``: ``t10_pre``/``t10_post``
    ``(J, S0, 5)`` (mean squared
    feature at τ ∈ TAUS) and ``t10_ref`` ``(J, 5)`` (the n = ∞ recursion's ``H(τ)_μμ``).
    """
    tr = cfg.transfer
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"])
    vs = variants(cfg)
    O, V, I, J, S = len(tr.optimizers), len(vs), len(tr.widths), len(tr.depths), cfg.seeds
    R = max(len(_lrs(cfg, o)) for o in tr.optimizers)
    shape, lshape = (O, V, I, J, R, S), (O, V, J, R, S)
    names = ["loss_train", "loss_test"] + (
        ["dz_own", "block_move", "df_step"] if tr.collapse else []
    )
    out = {k: np.full(shape, np.nan) for k in names}
    out.update({"limit_" + k: np.full(lshape, np.nan) for k in ("loss_train", "loss_test")})
    if tr.collapse:
        out["limit_dz_own"] = np.full(lshape, np.nan)
    out["lrs"] = np.full((O, R), np.nan)
    also = (1,) if tr.collapse else ()
    skipped: list[str] = []
    for o, opt in enumerate(tr.optimizers):
        lrs = _lrs(cfg, opt)
        nr = len(lrs)
        out["lrs"][o, :nr] = lrs
        for v, (block, a) in enumerate(vs):
            vcfg = _variant_cfg(cfg, opt, block, a)
            for i, n in enumerate(tr.widths):
                for j, L in enumerate(tr.depths):
                    desc = f"{opt} {variant_label(block, a)} n={n} L={L}"
                    res = run_finite(
                        vcfg,
                        width=n,
                        depth=L,
                        lrs=lrs,
                        task=task,
                        progress=progress,
                        desc=desc,
                        save_also=also,
                    )
                    lt, le = _final_losses(res, S, nr)
                    out["loss_train"][o, v, i, j, :nr] = lt
                    out["loss_test"][o, v, i, j, :nr] = le
                    if tr.collapse:
                        one = _one_step(res, S, nr, L)
                        out["dz_own"][o, v, i, j, :nr] = one["dz_own"]
                        out["block_move"][o, v, i, j, :nr] = one["block"]
                        out["df_step"][o, v, i, j, :nr] = one["df"]
            if not tr.limit:
                continue
            try:
                lcfg = dataclasses.replace(vcfg, kind="limit")  # validates: SGD only
            except ConfigError as err:
                skipped.append(f"{opt} {variant_label(block, a)}: {err}")
                continue
            for j, L in enumerate(tr.depths):
                res = run_limit(
                    lcfg,
                    depth=L,
                    lrs=lrs,
                    task=task,
                    progress=progress,
                    quiet=True,
                    desc=f"limit {variant_label(block, a)} L={L}",
                    save_also=also,
                )
                lt, le = _final_losses(res, S, nr)
                out["limit_loss_train"][o, v, j, :nr] = lt
                out["limit_loss_test"][o, v, j, :nr] = le
                if tr.collapse:
                    out["limit_dz_own"][o, v, j, :nr] = _one_step(res, S, nr, L)["dz_own"]
    if tr.collapse:
        out["collapse_lr"] = collapse_lrs(cfg)
        out.update(_w1_kernels(cfg, task, vs))
    if tr.post_activation:
        out.update(_t10(cfg, task, progress))
    out["widths"] = np.asarray(tr.widths)
    out["depths"] = np.asarray(tr.depths)
    out["exponents"] = np.asarray([a for _, a in vs])
    out["two_layer"] = np.asarray([b == "two_layer" for b, _ in vs])
    out["limit_skipped"] = np.asarray(skipped if skipped else [""])
    return out


def _w1_kernels(cfg: Config, task, vs) -> dict[str, np.ndarray]:
    """W1's share of the NTK diagonal at initialisation (mean over the training points), per
    two-layer variant and depth: from the n = ∞ recursion of spec §2 (``k_w1``, ``(V, J)``) and
    from ``transfer.init_seeds`` finite networks per width (``k_w1_finite``, ``(V, I, J, S0)``). W1's SGD
    multiplier carries the ``L^a``, so both are ``L^a ×`` their ``a = 0`` value."""
    from ..limit import init_kernels
    from ..model import empirical_ntk_parts

    tr = cfg.transfer
    V, I, J, S = len(vs), len(tr.widths), len(tr.depths), tr.init_seeds
    k_w1 = np.full((V, J), np.nan)
    k_fin = np.full((V, I, J, S), np.nan)
    kx = jnp.asarray(task.x_train @ task.x_train.T) / task.in_dim
    base = dataclasses.replace(_variant_cfg(cfg, "sgd", "two_layer", 0.0), seeds=S)
    parts = eqx.filter_jit(
        eqx.filter_vmap(
            lambda m: empirical_ntk_parts(m, task.x_train)["W1"], in_axes=eqx.if_array(0)
        )
    )
    for j, L in enumerate(tr.depths):
        kern = init_kernels(build_param(base), build_activation(base), kx, L, "two_layer")
        ref = float(np.mean(np.diag(np.asarray(kern.Theta_parts["W1"]))))
        fin = []
        for n in tr.widths:
            models, _ = finite_ensemble(base, task, width=n, depth=L)
            fin.append(np.diagonal(np.asarray(parts(models)), axis1=-2, axis2=-1).mean(axis=-1))
        for v, (block, a) in enumerate(vs):
            if block == "two_layer":
                k_w1[v, j] = ref * float(L) ** a
                k_fin[v, :, j] = np.stack(fin) * float(L) ** a
    return {"k_w1": k_w1, "k_w1_finite": k_fin}


def _t10(cfg: Config, task, progress) -> dict[str, np.ndarray]:
    """T10 at initialisation (``transfer.init_seeds`` networks), ReLU one-layer blocks, largest
    width: mean squared feature at
    τ ∈ TAUS, pre-activation (``H(τ)_μμ``; reference: the n = ∞ recursion at K = L) and
    post-activation (``h ← φ(h + b W h/√n)``, which grows with L)."""
    from ..limit import init_kernels

    tr = cfg.transfer
    J, S = len(tr.depths), tr.init_seeds
    width = max(tr.widths)
    pre = np.full((J, S, len(TAUS)), np.nan)
    post = np.full((J, S, len(TAUS)), np.nan)
    ref = np.full((J, len(TAUS)), np.nan)
    kx = jnp.asarray(task.x_train @ task.x_train.T) / task.in_dim
    relu = _variant_cfg(cfg, "sgd", "one_layer", 0.0, activation="relu")
    relu = dataclasses.replace(relu, seeds=S, optim=dataclasses.replace(relu.optim, steps=0))
    for j, L in enumerate(tr.depths):
        idx = [int(round(t * L)) for t in TAUS]
        for post_act, target in ((False, pre), (True, post)):
            vcfg = dataclasses.replace(
                relu, model=dataclasses.replace(relu.model, post_activation=post_act)
            )
            res = run_finite(vcfg, width=width, depth=L, task=task, progress=False)
            target[j] = np.asarray(res.h_rms)[:, 0][:, idx] ** 2
        kern = init_kernels(build_param(relu), build_activation(relu), kx, L)
        diag = np.asarray(jnp.diagonal(kern.H, axis1=1, axis2=2)).mean(axis=1)  # (L+1,)
        ref[j] = diag[idx]
    return {"t10_pre": pre, "t10_post": post, "t10_ref": ref, "taus": np.asarray(TAUS)}


# -- analysis (pure functions of the saved arrays) ----------------------------------------------
def _mean_se(x: np.ndarray, axis: int = -1):
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        n = np.sum(np.isfinite(x), axis=axis)
        mean = np.nanmean(x, axis=axis)
        sd = np.nanstd(x, axis=axis, ddof=1)
    se = np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), np.inf)
    return mean, se


def argmin_lrs(loss: np.ndarray, lrs: np.ndarray) -> dict[str, np.ndarray]:
    """Argmin η0 of the seed-mean loss per curve, with the T8 tie rule.

    ``loss`` has the η0 grid on axis −2 and seeds on axis −1. A grid point counts as an argmin
    when its mean is within 2 SE (combined) of the minimum; a member that diverged makes its
    grid point's mean NaN (never an argmin). Returns ``best`` (the η0 of the minimum), ``lo`` and
    ``hi`` (the range of η0 counted as argmins) and ``best_loss``, each shaped like ``loss``
    without its last two axes (NaN where every grid point diverged).
    """
    mean, se = _mean_se(loss, axis=-1)  # (..., R)
    lrs = np.asarray(lrs, float)
    finite = np.isfinite(mean)
    # a grid point where any seed diverged is not a candidate (its loss is not < ∞)
    diverged = np.any(~np.isfinite(loss), axis=-1)
    ok = finite & ~diverged
    masked = np.where(ok, mean, np.inf)
    k = np.argmin(masked, axis=-1)
    best_mean = np.take_along_axis(masked, k[..., None], -1)[..., 0]
    best_se = np.take_along_axis(np.where(ok, se, np.inf), k[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore"):  # inf − inf where a whole curve diverged: not an argmin
        gap = masked - best_mean[..., None]
        within = ok & (gap <= 2 * np.sqrt(se**2 + best_se[..., None] ** 2))
    any_ok = np.any(ok, axis=-1)
    grid = np.broadcast_to(lrs, mean.shape)
    lo = np.where(within, grid, np.inf).min(axis=-1)
    hi = np.where(within, grid, -np.inf).max(axis=-1)
    return {
        "best": np.where(any_ok, lrs[k], np.nan),
        "lo": np.where(any_ok, lo, np.nan),
        "hi": np.where(any_ok, hi, np.nan),
        "best_loss": np.where(any_ok, best_mean, np.nan),
    }


def log_slope(xs, ys) -> tuple[float, float]:
    """Least-squares slope of ``log y`` against ``log x`` and its standard error (NaN if < 2
    finite points; SE NaN with 2)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    keep = np.isfinite(ys) & (ys > 0)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    x, y = np.log(xs[keep]), np.log(ys[keep])
    A = np.stack([x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    dof = len(x) - 2
    if dof < 1:
        return float(coef[0]), float("nan")
    resid = y - A @ coef
    cov = np.linalg.inv(A.T @ A) * (resid @ resid) / dof
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def argmin_slope(depths, best, lo, hi, grid_step: float) -> tuple[float, float, float]:
    """Weighted least-squares slope of ``log2 η*`` on ``log2 L``, its SE and the χ² p-value.

    Each depth's argmin is known to its grid cell and its 2-SE tie range ``[lo, hi]``: its
    variance is ``Δ²/12 + ((log2 hi − log2 lo)/4)²`` (``Δ = log2`` grid step: a uniform
    quantisation error, plus the tie range read as ±2 SE). NaN with fewer than two depths.
    """
    x = np.log2(np.asarray(depths, float))
    y, ylo, yhi = (np.log2(np.asarray(u, float)) for u in (best, lo, hi))
    keep = np.isfinite(y) & np.isfinite(ylo) & np.isfinite(yhi)
    if keep.sum() < 2:
        return float("nan"), float("nan"), float("nan")
    var = grid_step**2 / 12 + ((yhi - ylo) / 4) ** 2
    w = 1 / var[keep]
    A = np.stack([x[keep], np.ones(int(keep.sum()))], axis=1)
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    coef = cov @ (A.T @ (w * y[keep]))
    chi2 = float(np.sum(w * (y[keep] - A @ coef) ** 2))
    dof = int(keep.sum()) - 2
    p = float(scipy.stats.chi2.sf(chi2, dof)) if dof > 0 else float("nan")
    return float(coef[0]), float(np.sqrt(cov[0, 0])), p


def transfer_summary(arrays: dict, optimizers, labels) -> list[dict]:
    """Per (optimizer, variant, width): argmin η0 per depth (T8's 2-SE tie rule), its log-log
    slope (least squares and weighted, `argmin_slope`), how many grid steps it moves, the best
    loss per depth, whether every argmin is *bracketed* (strictly inside the grid: an argmin at
    the grid's edge says only that the optimum lies at or beyond it) and T8's criterion: one
    η0 interval within a factor 2 of every depth's tie range. ``verdict`` is "transfers" (T8
    holds and every argmin is bracketed), "moves" (T8 fails) or "undetermined" (T8 holds only
    with an argmin at the grid's edge)."""
    key = "loss_test" if np.any(np.isfinite(arrays["loss_test"])) else "loss_train"
    loss = arrays[key]
    depths = arrays["depths"]
    rows = []
    for o, opt in enumerate(optimizers):
        lrs = arrays["lrs"][o]
        R = int(np.sum(np.isfinite(lrs)))
        grid = lrs[:R]
        step = float(np.median(np.diff(np.log2(grid))))
        am = argmin_lrs(loss[o, ..., :R, :], grid)
        for v, label in enumerate(labels):
            for i, n in enumerate(arrays["widths"]):
                best, lo, hi = am["best"][v, i], am["lo"][v, i], am["hi"][v, i]
                s, se = log_slope(depths, best)
                ws, wse, wp = argmin_slope(depths, best, lo, hi, step)
                found = bool(np.all(np.isfinite(best)))
                steps = np.log2(np.nanmax(best) / np.nanmin(best)) if found else np.nan
                transfer = bool(np.all(np.isfinite(lo)) and np.nanmax(lo) <= 2 * np.nanmin(hi))
                bracketed = found and bool(np.all((best > grid[0]) & (best < grid[-1])))
                verdict = "moves" if not transfer else "transfers" if bracketed else "undetermined"
                rows.append(
                    {
                        "optimizer": opt,
                        "variant": label,
                        "width": int(n),
                        "argmin": best.tolist(),
                        "slope": s,
                        "slope_se": se,
                        "weighted_slope": ws,
                        "weighted_slope_se": wse,
                        "weighted_slope_p": wp,
                        "grid_steps": float(steps),
                        "best_loss": am["best_loss"][v, i].tolist(),
                        "transfer": transfer,
                        "bracketed": bracketed,
                        "verdict": verdict,
                        "loss": key,
                    }
                )
    return rows


def _at_collapse_lr(arrays: dict, name: str, o: int) -> np.ndarray:
    """``arrays[name][o]`` at the optimizer's collapse η0 (the η0 axis removed)."""
    r = int(np.nanargmin(np.abs(arrays["lrs"][o] - arrays["collapse_lr"][o])))
    return arrays[name][o][..., r, :]


def _seed_slope(xs, x: np.ndarray) -> tuple[float, float]:
    """log-log slope of the seed means ``x (..., S)`` against ``xs`` and its SE propagated from
    the seed means' SEs (``se/mean`` in ``log mean``; the points are independent runs), NaN with
    fewer than two points."""
    mean, se = _mean_se(x, axis=-1)
    s, _ = log_slope(xs, mean)
    keep = np.isfinite(mean) & (mean > 0) & np.isfinite(se)
    if not np.isfinite(s) or keep.sum() < 2:
        return s, float("nan")
    lx = np.log(np.asarray(xs, float)[keep])
    w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)
    return s, float(np.sqrt(np.sum((w * se[keep] / mean[keep]) ** 2)))


def coordinate_check(arrays: dict, optimizers, labels, tol: float = 0.1) -> list[dict]:
    """T8's coordinate check at each optimizer's collapse η0: the slopes of ``L ×`` (per-block
    RMS own update) and of the RMS one-step change of ``f`` against ``L`` (per width) and
    against ``n`` (per depth, with ≥ 2 widths), with SEs from the seed spread; ``flat`` when
    every ``|slope| ≤ tol + 2 SE`` (a slope without an SE must be within ``tol``)."""
    rows = []
    widths, depths = arrays["widths"], arrays["depths"]
    for o, opt in enumerate(optimizers):
        for v, label in enumerate(labels):
            row: dict = {"optimizer": opt, "variant": label}
            for name in ("block_move", "df_step"):
                x = _at_collapse_lr(arrays, name, o)[v]  # (I, J, S)
                in_L = [_seed_slope(depths, x[i]) for i in range(len(widths))]
                in_n = [_seed_slope(widths, x[:, j]) for j in range(len(depths))]
                if len(widths) < 2:
                    in_n = []
                slopes = [(sl, se) for sl, se in in_L + in_n if np.isfinite(sl)]
                row[name] = {
                    "slope_L": in_L,
                    "slope_n": in_n,
                    "flat": bool(slopes)
                    and all(abs(sl) <= tol + 2 * np.nan_to_num(se) for sl, se in slopes),
                }
            rows.append(row)
    return rows


def collapse_check(arrays: dict, optimizers, labels, tol: float = 0.1) -> list[dict]:
    """T9 per two-layer variant and optimizer (collapse η0, largest width): the L-slope of rms
    ``δz^own`` (finite, and the limit at K = L for SGD) against ``a − 1/2``, and of ``K_W1``
    (n = ∞ recursion) against ``a``; the finite ``K_W1``'s largest |z| against the recursion."""
    rows = []
    depths = arrays["depths"]
    for o, opt in enumerate(optimizers):
        dz = _at_collapse_lr(arrays, "dz_own", o)  # (V, I, J, S)
        ldz = _at_collapse_lr(arrays, "limit_dz_own", o)  # (V, J, S)
        for v, label in enumerate(labels):
            if not arrays["two_layer"][v]:
                continue
            a = float(arrays["exponents"][v])
            fin, fse = _seed_slope(depths, dz[v, -1])
            lim, lse = _seed_slope(depths, ldz[v])
            kw, _ = log_slope(depths, arrays["k_w1"][v])
            kf, kse = _mean_se(arrays["k_w1_finite"][v], axis=-1)  # (I, J)
            with np.errstate(invalid="ignore", divide="ignore"):
                z = (kf - arrays["k_w1"][v][None]) / kse
            rows.append(
                {
                    "optimizer": opt,
                    "variant": label,
                    "a": a,
                    "dz_slope": fin,
                    "dz_slope_se": fse,
                    "limit_dz_slope": lim,
                    "limit_dz_slope_se": lse,
                    "dz_ok": bool(np.isfinite(fin) and abs(fin - (a - 0.5)) <= tol),
                    "k_w1_slope": kw,
                    "k_w1_ok": bool(np.isfinite(kw) and abs(kw - a) <= tol),
                    "k_w1_max_z": float(np.nanmax(np.abs(z))) if np.any(np.isfinite(z)) else np.nan,
                }
            )
    return rows


def _slope_text(s: float, se: float) -> str:
    if not np.isfinite(s):
        return "n/a"
    return f"{s:+.2f}" + (f" ± {se:.2f}" if np.isfinite(se) else "")


def transfer_report(run) -> str:
    """Plain-language summary of a saved transfer run (numbers only from its arrays)."""
    a = run.arrays
    cfg = run.config
    opts = cfg.transfer.optimizers
    labels = [
        variant_label("two_layer" if t else "one_layer", float(x))
        for t, x in zip(a["two_layer"], a["exponents"], strict=True)
    ]
    rows = transfer_summary(a, opts, labels)
    depths = ", ".join(str(int(L)) for L in a["depths"])
    lines = [
        f"Learning-rate transfer on `{cfg.task.name}` ({cfg.model.activation}, {cfg.seeds} seeds, "
        f"{cfg.optim.steps} steps, depths {depths}); loss = {rows[0]['loss'] if rows else '-'} "
        "after the budget. An argmin counts every grid point within 2 SE of the minimum (T8); "
        "the weighted slope weights each depth by its argmin's grid cell and tie range.\n",
        "| optimizer | variant | n | argmin η0 per L | slope d log η* / d log L | weighted slope "
        "| moves (grid steps) | T8 | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        am = ", ".join("—" if not np.isfinite(x) else f"{x:g}" for x in r["argmin"])
        lines.append(
            f"| {r['optimizer']} | {r['variant']} | {r['width']} | {am} | "
            f"{_slope_text(r['slope'], r['slope_se'])} | "
            f"{_slope_text(r['weighted_slope'], r['weighted_slope_se'])} | "
            f"{r['grid_steps']:.0f} | {'yes' if r['transfer'] else 'no'} | {r['verdict']} |"
        )
    lines += ["", "Transfer verdict (measured, this run):", *_verdicts(rows, opts, labels)]
    if "dz_own" in a:
        lines += _collapse_md(a, opts, labels, cfg)
    if "t10_pre" in a:
        lines += _t10_md(a)
    skipped = [s for s in a["limit_skipped"].tolist() if s]
    if skipped:
        lines += ["", "No limit overlay for: " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def _names(labels: list[str]) -> str:
    return ", ".join(f"`{x}`" for x in labels)


def _verdicts(rows: list[dict], opts, labels) -> list[str]:
    """One sentence per optimizer: which variants transfer at every width, which do not, and
    which exponents a of the two-layer correction restore transfer."""
    out = []
    for opt in opts:
        state = {}
        for label in labels:
            vs = {r["verdict"] for r in rows if r["optimizer"] == opt and r["variant"] == label}
            state[label] = (
                "moves"
                if "moves" in vs
                else "undetermined"
                if "undetermined" in vs
                else "transfers"
            )
        group = {
            k: [lb for lb in labels if state[lb] == k]
            for k in ("transfers", "moves", "undetermined")
        }
        two = [lb for lb in labels if lb.startswith("two-layer")]
        fixed = [lb.split("a=")[1] for lb in two if state[lb] == "transfers"]
        text = f"- {opt}: the argmin η0 stays within one grid step over L (bracketed) for "
        text += _names(group["transfers"]) if group["transfers"] else "no variant"
        if group["moves"]:
            text += f"; it moves further for {_names(group['moves'])}"
        if group["undetermined"]:
            text += (
                f"; undetermined (an argmin at the grid's edge) for {_names(group['undetermined'])}"
            )
        if two:
            base = [lb for lb in two if lb.split("a=")[1] == "0"]
            others = [x for x in fixed if x != "0"]
            if base and state[base[0]] == "transfers":
                text += ". Two-layer blocks transfer without the correction (a = 0)" + (
                    f", and also with L^a for a ∈ {{{', '.join(others)}}}." if others else "."
                )
            elif fixed:
                text += f". Two-layer blocks: the correction L^a restores transfer for a ∈ {{{', '.join(fixed)}}}."
            else:
                text += ". Two-layer blocks: no tested exponent a restores transfer in this run."
        out.append(text if text.endswith(".") else text + ".")
    return out


def _collapse_md(a: dict, opts, labels, cfg) -> list[str]:
    lr = ", ".join(f"{o} η0 = {x:g}" for o, x in zip(opts, a["collapse_lr"], strict=True))
    lines = [
        "",
        f"First-layer collapse after one step ({lr}; largest width; spec §6, T9; expected "
        "δz^own slope a − ½, K_W1 slope a):",
        "",
        "| optimizer | variant | δz^own slope (finite) | limit (K = L) | expected | ok | "
        "K_W1 slope (n = ∞) | finite K_W1: max abs z vs n = ∞ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in collapse_check(a, opts, labels):
        lines.append(
            f"| {r['optimizer']} | {r['variant']} | {_slope_text(r['dz_slope'], r['dz_slope_se'])} | "
            f"{_slope_text(r['limit_dz_slope'], r['limit_dz_slope_se'])} | {r['a'] - 0.5:+.2f} | "
            f"{'yes' if r['dz_ok'] else 'no'} | {r['k_w1_slope']:+.2f} | {r['k_w1_max_z']:.1f} |"
        )
    lines += [
        "",
        "Coordinate check (T8, |slope| ≤ 0.1 + 2 SE): slopes of L × per-block own update and of "
        "the one-step RMS change of f, against L (per width) and n (per depth):",
        "",
        "| optimizer | variant | L·block update vs L | vs n | Δf vs L | vs n | flat |",
        "|---|---|---|---|---|---|---|",
    ]

    def sl(items):
        return ", ".join(_slope_text(s, se) for s, se in items) or "—"

    for r in coordinate_check(a, opts, labels):
        b, f = r["block_move"], r["df_step"]
        lines.append(
            f"| {r['optimizer']} | {r['variant']} | {sl(b['slope_L'])} | {sl(b['slope_n'])} | "
            f"{sl(f['slope_L'])} | {sl(f['slope_n'])} | "
            f"{'yes' if b['flat'] and f['flat'] else 'no'} |"
        )
    return lines


def _t10_md(a: dict) -> list[str]:
    pre, pse = _mean_se(a["t10_pre"][..., -1], axis=-1)
    post, _ = _mean_se(a["t10_post"][..., -1], axis=-1)
    ref = a["t10_ref"][:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        z_ref = np.abs(pre - ref) / pse
        z_lim = np.abs(pre - np.exp(0.5)) / pse
    return [
        "",
        "Pre- vs post-activation (T10, ReLU, init): mean squared feature at τ = 1 per L: "
        + ", ".join(
            f"L={int(L)}: pre {p:.3g} ± {e:.2g} (n = ∞ at K = L: {r:.4g}, |z| {zr:.1f}; "
            f"e^(1/2): |z| {zl:.1f}), post {q:.3g}"
            for L, p, e, r, zr, zl, q in zip(
                a["depths"], pre, pse, ref, z_ref, z_lim, post, strict=True
            )
        )
        + f". Post-activation growth over the depths: ×{post[-1] / post[0]:.3g}; "
        f"pre-activation: ×{pre[-1] / pre[0]:.3g} (e^(1/2) = 1.649 is the L → ∞ value).",
    ]


def transfer_experiment():
    """The ``kind = "transfer"`` experiment for `nfd.gallery` (run, figures, report)."""
    from ..gallery import Experiment, Outcome
    from ..plots import transfer_figures

    def run(cfg: Config, *, progress: bool | None = None) -> Outcome:
        t0 = time.perf_counter()
        arrays = run_transfer(cfg, progress=progress)
        finite = np.isfinite(arrays["loss_train"])
        meta = {
            "timings": {"wall_s": time.perf_counter() - t0},
            "diverged_members": int(
                np.sum(~finite & ~np.isnan(arrays["lrs"])[:, None, None, None, :, None])
            ),
        }
        return Outcome(arrays=arrays, meta=meta, all_failed=bool(not np.any(finite)))

    return Experiment(run=run, figures=transfer_figures, report=transfer_report)
