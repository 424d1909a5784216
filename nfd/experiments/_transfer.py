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

import jax.numpy as jnp
import numpy as np

from ..config import Config, ConfigError, build_activation, build_param, build_task, run_keys
from ._finite import run_finite
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


def run_transfer(cfg: Config, *, progress: bool | None = None) -> dict[str, np.ndarray]:
    """The transfer grid, the collapse diagnostic and the T10 control (arrays for `save_run`).

    Returns arrays with axes O = optimizers, V = variants, I = widths, J = depths, R = η0 grid,
    S = seeds: ``loss_train``/``loss_test`` ``(O, V, I, J, R, S)``, ``limit_loss_train``/``_test``
    ``(O, V, J, R, S)`` (NaN where the limit does not apply: Adam, or ``limit = false``),
    ``lrs`` ``(O, R)``, ``dz_own`` ``(V, J, S)`` and ``limit_dz_own`` ``(V, J, S)`` (block mean of
    W1's one-step update at ``optim.lr``, SGD, largest width), ``k_w1`` ``(V, J)`` (W1's share
    of the n = ∞ NTK diagonal), ``t10_pre``/``t10_post`` ``(J, S, 5)`` (mean squared feature at
    τ ∈ TAUS) and ``t10_ref`` ``(J, 5)`` (the n = ∞ recursion's ``H(τ)_μμ``).
    """
    tr = cfg.transfer
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"])
    vs = variants(cfg)
    O, V, I, J, S = len(tr.optimizers), len(vs), len(tr.widths), len(tr.depths), cfg.seeds
    R = max(len(_lrs(cfg, o)) for o in tr.optimizers)
    shape = (O, V, I, J, R, S)
    out = {
        "loss_train": np.full(shape, np.nan),
        "loss_test": np.full(shape, np.nan),
        "limit_loss_train": np.full((O, V, J, R, S), np.nan),
        "limit_loss_test": np.full((O, V, J, R, S), np.nan),
        "lrs": np.full((O, R), np.nan),
    }
    skipped: list[str] = []
    for o, opt in enumerate(tr.optimizers):
        lrs = _lrs(cfg, opt)
        out["lrs"][o, : len(lrs)] = lrs
        for v, (block, a) in enumerate(vs):
            vcfg = _variant_cfg(cfg, opt, block, a)
            for i, n in enumerate(tr.widths):
                for j, L in enumerate(tr.depths):
                    desc = f"{opt} {variant_label(block, a)} n={n} L={L}"
                    res = run_finite(
                        vcfg, width=n, depth=L, lrs=lrs, task=task, progress=progress, desc=desc
                    )
                    lt, le = _final_losses(res, S, len(lrs))
                    out["loss_train"][o, v, i, j, : len(lrs)] = lt
                    out["loss_test"][o, v, i, j, : len(lrs)] = le
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
                )
                lt, le = _final_losses(res, S, len(lrs))
                out["limit_loss_train"][o, v, j, : len(lrs)] = lt
                out["limit_loss_test"][o, v, j, : len(lrs)] = le
    if tr.collapse:
        out.update(_collapse(cfg, task, vs, progress))
    if tr.post_activation:
        out.update(_t10(cfg, task, progress))
    out["widths"] = np.asarray(tr.widths)
    out["depths"] = np.asarray(tr.depths)
    out["exponents"] = np.asarray([a for _, a in vs])
    out["two_layer"] = np.asarray([b == "two_layer" for b, _ in vs])
    out["limit_skipped"] = np.asarray(skipped if skipped else [""])
    return out


def _collapse(cfg: Config, task, vs, progress) -> dict[str, np.ndarray]:
    """One SGD step at ``optim.lr``: W1's own update ``δz^own`` (block mean of its per-block RMS)
    vs L, finite (largest width) and the limit (K = L); W1's n = ∞ NTK share from spec §2."""
    from ..limit import init_kernels

    tr = cfg.transfer
    J, S, V = len(tr.depths), cfg.seeds, len(vs)
    dz = np.full((V, J, S), np.nan)
    dz_lim = np.full((V, J, S), np.nan)
    k_w1 = np.full((V, J), np.nan)
    width = max(tr.widths)
    kx = np.asarray(task.x_train @ task.x_train.T) / task.in_dim
    for v, (block, a) in enumerate(vs):
        if block != "two_layer":
            continue
        vcfg = _variant_cfg(cfg, "sgd", block, a)
        vcfg = dataclasses.replace(vcfg, optim=dataclasses.replace(vcfg.optim, steps=1))
        for j, L in enumerate(tr.depths):
            res = run_finite(vcfg, width=width, depth=L, task=task, progress=False)
            assert res.dz_own is not None
            dz[v, j] = np.asarray(res.dz_own)[:, -1].mean(axis=-1)
            lim = run_limit(
                dataclasses.replace(vcfg, kind="limit"),
                depth=L,
                task=task,
                progress=False,
                quiet=True,
            )
            if lim.dz_own is not None:
                dz_lim[v, j] = np.asarray(lim.dz_own)[:, -1].mean(axis=-1)
            param = build_param(vcfg)
            kern = init_kernels(param, build_activation(vcfg), jnp.asarray(kx), L, "two_layer")
            k_w1[v, j] = float(np.mean(np.diag(np.asarray(kern.Theta_parts["W1"]))))
    return {"dz_own": dz, "limit_dz_own": dz_lim, "k_w1": k_w1}


def _t10(cfg: Config, task, progress) -> dict[str, np.ndarray]:
    """T10 at initialisation, ReLU one-layer blocks, largest width: mean squared feature at
    τ ∈ TAUS, pre-activation (``H(τ)_μμ``; reference: the n = ∞ recursion at K = L) and
    post-activation (``h ← φ(h + b W h/√n)``, which grows with L)."""
    from ..limit import init_kernels

    tr = cfg.transfer
    J, S = len(tr.depths), cfg.seeds
    width = max(tr.widths)
    pre = np.full((J, S, len(TAUS)), np.nan)
    post = np.full((J, S, len(TAUS)), np.nan)
    ref = np.full((J, len(TAUS)), np.nan)
    kx = jnp.asarray(task.x_train @ task.x_train.T) / task.in_dim
    for j, L in enumerate(tr.depths):
        idx = [int(round(t * L)) for t in TAUS]
        for post_act, target in ((False, pre), (True, post)):
            vcfg = _variant_cfg(cfg, "sgd", "one_layer", 0.0, activation="relu")
            vcfg = dataclasses.replace(
                vcfg,
                model=dataclasses.replace(vcfg.model, post_activation=post_act),
                optim=dataclasses.replace(vcfg.optim, steps=0),
            )
            res = run_finite(vcfg, width=width, depth=L, task=task, progress=False)
            target[j] = np.asarray(res.h_rms)[:, 0][:, idx] ** 2
        vcfg = _variant_cfg(cfg, "sgd", "one_layer", 0.0, activation="relu")
        kern = init_kernels(build_param(vcfg), build_activation(vcfg), kx, L)
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


def transfer_summary(arrays: dict, optimizers, labels) -> list[dict]:
    """Per (optimizer, variant, width): argmin η0 per depth, its log-log slope, how many grid
    steps it moves over the depths, the best loss per depth, and whether T8's criterion (argmin
    within one grid step, factor 2, at every depth, using the 2-SE tie rule) holds."""
    key = "loss_test" if np.any(np.isfinite(arrays["loss_test"])) else "loss_train"
    loss = arrays[key]
    depths = arrays["depths"]
    rows = []
    for o, opt in enumerate(optimizers):
        lrs = arrays["lrs"][o]
        R = int(np.sum(np.isfinite(lrs)))
        am = argmin_lrs(loss[o, ..., :R, :], lrs[:R])
        for v, label in enumerate(labels):
            for i, n in enumerate(arrays["widths"]):
                best, lo, hi = am["best"][v, i], am["lo"][v, i], am["hi"][v, i]
                s, se = log_slope(depths, best)
                # T8: a common η0 interval [max lo, min hi] within a factor 2 of every argmin
                steps = (
                    np.log2(np.nanmax(best) / np.nanmin(best))
                    if np.all(np.isfinite(best))
                    else np.nan
                )
                transfer = bool(np.all(np.isfinite(lo)) and np.nanmax(lo) <= 2 * np.nanmin(hi))
                rows.append(
                    {
                        "optimizer": opt,
                        "variant": label,
                        "width": int(n),
                        "argmin": best.tolist(),
                        "slope": s,
                        "slope_se": se,
                        "grid_steps": float(steps),
                        "best_loss": am["best_loss"][v, i].tolist(),
                        "transfer": transfer,
                        "loss": key,
                    }
                )
    return rows


def transfer_report(run) -> str:
    """Plain-language summary of a saved transfer run (numbers only from its arrays)."""
    a = run.arrays
    cfg = run.config
    labels = [
        variant_label("two_layer" if t else "one_layer", float(x))
        for t, x in zip(a["two_layer"], a["exponents"], strict=True)
    ]
    rows = transfer_summary(a, cfg.transfer.optimizers, labels)
    depths = ", ".join(str(int(L)) for L in a["depths"])
    lines = [
        f"Learning-rate transfer on `{cfg.task.name}` ({cfg.model.activation}, {cfg.seeds} seeds, "
        f"{cfg.optim.steps} steps, depths {depths}); loss = {rows[0]['loss'] if rows else '-'} "
        "after the budget. An argmin counts every grid point within 2 SE of the minimum (T8).\n",
        "| optimizer | variant | n | argmin η0 per L | slope d log η* / d log L | moves (grid steps) | transfer (T8) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        am = ", ".join("—" if not np.isfinite(x) else f"{x:g}" for x in r["argmin"])
        sl = "n/a" if not np.isfinite(r["slope"]) else f"{r['slope']:+.2f}"
        if np.isfinite(r["slope_se"]):
            sl += f" ± {r['slope_se']:.2f}"
        lines.append(
            f"| {r['optimizer']} | {r['variant']} | {r['width']} | {am} | {sl} | "
            f"{r['grid_steps']:.0f} | {'yes' if r['transfer'] else 'no'} |"
        )
    verdicts = []
    for opt in cfg.transfer.optimizers:
        ok = sorted({r["variant"] for r in rows if r["optimizer"] == opt and r["transfer"]})
        bad = sorted({r["variant"] for r in rows if r["optimizer"] == opt and not r["transfer"]})
        verdicts.append(
            f"- {opt}: the argmin stays within one grid step over L for "
            f"{', '.join(ok) if ok else 'no variant'}"
            + (f"; it moves further for {', '.join(bad)}." if bad else ".")
        )
    lines += ["", "Transfer verdict (measured, this run):", *verdicts]
    if "dz_own" in a:
        lines += ["", "First-layer collapse (one SGD step at η0 = optim.lr, spec §6, T9):", ""]
        lines += [
            "| variant | slope of δz^own vs L (finite) | limit | expected | K_W1 slope | expected |"
        ]
        lines += ["|---|---|---|---|---|---|"]
        for v, label in enumerate(labels):
            if not a["two_layer"][v]:
                continue
            fin, fse = log_slope(a["depths"], np.nanmean(a["dz_own"][v], axis=-1))
            lim, lse = log_slope(a["depths"], np.nanmean(a["limit_dz_own"][v], axis=-1))
            kw, _ = log_slope(a["depths"], a["k_w1"][v])
            x = float(a["exponents"][v])
            lines.append(
                f"| {label} | {fin:+.2f} ± {fse:.2f} | {lim:+.2f} ± {lse:.2f} | {x - 0.5:+.2f} | "
                f"{kw:+.2f} | {x:+.2f} |"
            )
    if "t10_pre" in a:
        pre = np.nanmean(a["t10_pre"][..., -1], axis=-1)
        post = np.nanmean(a["t10_post"][..., -1], axis=-1)
        ref = a["t10_ref"][:, -1]
        lines += [
            "",
            "Pre- vs post-activation (T10, ReLU, init): mean squared feature at τ = 1 per L: "
            + ", ".join(
                f"L={int(L)}: pre {p:.3g} (n=∞ {r:.3g}), post {q:.3g}"
                for L, p, r, q in zip(a["depths"], pre, ref, post, strict=True)
            )
            + f". Post-activation growth over the depths: ×{post[-1] / post[0]:.3g}; "
            f"pre-activation: ×{pre[-1] / pre[0]:.3g} (e^(1/2) = 1.649 is the L → ∞ value).",
        ]
    skipped = [s for s in a["limit_skipped"].tolist() if s]
    if skipped:
        lines += ["", "No limit overlay for: " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


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
