"""Learning-rate transfer across depth, first-layer collapse and the T10 control (§6, T8–T10).

For every optimizer (SGD, Adam) and block variant (one-layer; two-layer with W1's rate × ``L^a``
under depth-μP or μP, or with CompleteP's 1/L branch: `transfer.params`, `_transfer_variants`)
the finite networks are trained over ``widths × depths × lrs`` (seeds × learning rates
are one vmapped ensemble per (width, depth)) for the config's budget ``optim.steps``; the loss at
the end is the transfer curve. For SGD the NFD limit at ``K = L`` gives the same curve at
``n = ∞`` on the same batch sequence. The collapse diagnostic is W1's own one-step feature update
``δz^own`` vs ``L`` (expected slope ``a − 1/2`` under depth-μP, §6; `dz_expected`) with the
n = ∞ NTK share of W1, ``K_W1`` (slope ``a``, from the two-layer recursion of §2; depth-μP
variants only, as the limit overlay). The T10 control compares the
pre-activation stream's ``H(τ)_μμ`` (which stays O(1): ``e^{τ/2}`` for ReLU) with the
post-activation network's feature norm (which grows with ``L``).

Everything here is a pure function of the config; `nfd.analysis.transfer_analysis` summarises
the saved arrays, `nfd.reports.transfer_report` and `nfd.plots.transfer_figures` read that.
"""

import dataclasses

import numpy as np

from ..config import (
    Config,
    ConfigError,
    build_task,
    run_keys,
)
from ._finite import run_finite
from ._limit import run_limit
from ._transfer_init import t10, w1_kernels
from ._transfer_variants import dz_expected, two_layer, variant_cfg, variant_label, variants


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
    does not apply: Adam, a parameterization other than depth-μP, or ``limit = false``);
    ``lrs`` ``(O, R)``; per variant ``exponents``, ``params``, ``two_layer`` and ``dz_expected``
    ``(V,)`` (`dz_expected`; NaN for one-layer blocks). With ``collapse``, from step
    1 of the same runs: ``dz_own``, ``block_move``, ``df_step`` ``(O, V, I, J, R, S)`` (see
    `_one_step`) and ``limit_dz_own`` ``(O, V, J, R, S)``; ``collapse_lr`` ``(O,)`` (the η0 the
    report reads them at, `collapse_lrs`); ``k_w1`` ``(V, J)`` (W1's share of the n = ∞ NTK
    diagonal at t = 0, §2) and ``k_w1_finite`` ``(V, I, J, S0)`` (both NaN but for depth-μP) (the finite networks' at
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
        for v, (block, a, param) in enumerate(vs):
            label = variant_label(block, a, param)
            vcfg = variant_cfg(cfg, opt, block, a, param)
            for i, n in enumerate(tr.widths):
                for j, L in enumerate(tr.depths):
                    desc = f"{opt} {label} n={n} L={L}"
                    res = run_finite(
                        vcfg, width=n, depth=L, lrs=lrs, task=task, progress=progress, desc=desc,
                        save_also=also,
                    )  # fmt: skip
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
            if param != "depth_mup":
                skipped.append(f"{opt} {label}: the limit overlay is for depth_mup only")
                continue
            try:
                lcfg = dataclasses.replace(vcfg, kind="limit")  # validates: SGD only
            except ConfigError as err:
                skipped.append(f"{opt} {label}: {err}")
                continue
            for j, L in enumerate(tr.depths):
                desc = f"limit {label} L={L}"
                res = run_limit(
                    lcfg, depth=L, lrs=lrs, task=task, progress=progress, quiet=True, desc=desc,
                    save_also=also,
                )  # fmt: skip
                lt, le = _final_losses(res, S, nr)
                out["limit_loss_train"][o, v, j, :nr] = lt
                out["limit_loss_test"][o, v, j, :nr] = le
                if tr.collapse:
                    out["limit_dz_own"][o, v, j, :nr] = _one_step(res, S, nr, L)["dz_own"]
    if tr.collapse:
        out["collapse_lr"] = collapse_lrs(cfg)
        out.update(w1_kernels(cfg, task, vs))
    if tr.post_activation:
        out.update(t10(cfg, task, progress))
    out["widths"] = np.asarray(tr.widths)
    out["depths"] = np.asarray(tr.depths)
    out["exponents"] = np.asarray([a for _, a, _ in vs])
    out["params"] = np.asarray([p for _, _, p in vs])
    out["dz_expected"] = dz_expected(cfg, vs)
    out["two_layer"] = np.asarray(two_layer(cfg, vs))
    out["limit_skipped"] = np.asarray(skipped if skipped else [""])
    return out
