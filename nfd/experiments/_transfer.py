"""Learning-rate transfer across depth, first-layer collapse and the T10 control (§6, T8–T10).

For every optimizer (SGD, Adam) and block variant (one-layer; two-layer with W1's rate × ``L^a``)
the finite depth-muP networks are trained over ``widths × depths × lrs`` (seeds × learning rates
are one vmapped ensemble per (width, depth)) for the config's budget ``optim.steps``; the loss at
the end is the transfer curve. For SGD the NFD limit at ``K = L`` gives the same curve at
``n = ∞`` on the same batch sequence. The collapse diagnostic is W1's own one-step feature update
``δz^own`` vs ``L`` (expected slope ``a − 1/2``, §6) with the n = ∞ NTK share of W1,
``K_W1`` (slope ``a``, from the two-layer recursion of §2). The T10 control compares the
pre-activation stream's ``H(τ)_μμ`` (which stays O(1): ``e^{τ/2}`` for ReLU) with the
post-activation network's feature norm (which grows with ``L``).

Everything here is a pure function of the config; `nfd.analysis.transfer_analysis` summarises
the saved arrays, `nfd.reports.transfer_report` and `nfd.plots.transfer_figures` read that.
"""

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ..config import (
    Config,
    ConfigError,
    build_activation,
    build_block,
    build_param,
    build_task,
    run_keys,
)
from ..limit import init_kernels
from ..model import empirical_ntk_parts
from ._finite import finite_ensemble, run_finite
from ._limit import run_limit
from ._norms import feature_norms, form_cfg, init_norm_ref

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def variants(cfg: Config) -> list[tuple[str, float]]:
    """``(block, a)`` of every block variant: one-layer (``a = 0``) and two-layer per exponent."""
    out = [("one_layer", 0.0)] if cfg.transfer.one_layer else []
    return out + [("two_layer", float(a)) for a in cfg.transfer.exponents]


def variant_label(block: str, a: float) -> str:
    return "one-layer" if block == "one_layer" else f"two-layer, a={a:g}"


def _two_layer(cfg: Config, vs: list[tuple[str, float]]) -> list[bool]:
    """Whether each variant's block has two layers (a W1 to collapse)."""
    return [build_block(_variant_cfg(cfg, "sgd", block, a)).two_layer for block, a in vs]


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
    diagonal at t = 0, §2) and ``k_w1_finite`` ``(V, I, J, S0)`` (the finite networks' at
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
    out["two_layer"] = np.asarray(_two_layer(cfg, vs))
    out["limit_skipped"] = np.asarray(skipped if skipped else [""])
    return out


def _w1_kernels(cfg: Config, task, vs) -> dict[str, np.ndarray]:
    """W1's share of the NTK diagonal at initialisation (mean over the training points), per
    two-layer variant and depth: from the n = ∞ recursion of §2 (``k_w1``, ``(V, J)``) and
    from ``transfer.init_seeds`` finite networks per width (``k_w1_finite``, ``(V, I, J, S0)``). W1's SGD
    multiplier carries the ``L^a``, so both are ``L^a ×`` their ``a = 0`` value."""
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
        kern = init_kernels(build_param(base), build_activation(base), kx, L, build_block(base))
        ref = float(np.mean(np.diag(np.asarray(kern.Theta_parts["W1"]))))
        fin = []
        for n in tr.widths:
            _, models, _ = finite_ensemble(base, task, width=n, depth=L)
            fin.append(np.diagonal(np.asarray(parts(models)), axis1=-2, axis2=-1).mean(axis=-1))
        for v, ((_, a), two) in enumerate(zip(vs, _two_layer(cfg, vs), strict=True)):
            if two:
                k_w1[v, j] = ref * float(L) ** a
                k_fin[v, :, j] = np.stack(fin) * float(L) ** a
    return {"k_w1": k_w1, "k_w1_finite": k_fin}


def _t10(cfg: Config, task, progress) -> dict[str, np.ndarray]:
    """T10 at initialisation (``transfer.init_seeds`` networks), ReLU one-layer blocks, largest
    width: mean squared feature at τ ∈ TAUS, pre-activation (``H(τ)_μμ``; reference: the n = ∞
    recursion at K = L, `init_norm_ref`) and post-activation (``h ← φ(h + b W h/√n)``, which
    grows with L); the runs are `nfd.experiments._norms`'s, as in ``kind = "feature_norms"``."""
    tr = cfg.transfer
    J, S = len(tr.depths), tr.init_seeds
    width = max(tr.widths)
    pre = np.full((J, S, len(TAUS)), np.nan)
    post = np.full((J, S, len(TAUS)), np.nan)
    ref = np.full((J, len(TAUS)), np.nan)
    relu = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, activation="relu"))
    for j, L in enumerate(tr.depths):
        idx = [int(round(t * L)) for t in TAUS]
        for post_act, target in ((False, pre), (True, post)):
            vcfg = form_cfg(relu, post_activation=post_act, seeds=S, steps=0)
            _, norm2 = feature_norms(vcfg, task, width=width, depth=L)
            target[j] = norm2[:, 0][:, idx]
        ref[j] = init_norm_ref(relu, task.x_train, L)[idx]
    return {"t10_pre": pre, "t10_post": post, "t10_ref": ref, "taus": np.asarray(TAUS)}
