"""Sweeps: finite networks over widths × depths × learning rates (× seeds), and the NFD limit at
K = L for each depth and coupling mode, on one task and batch sequence (`kind = "sweep"`).

Each (width, depth) is one compiled computation whose ensemble is ``seeds × len(lrs)`` (a vmap
over seeds and learning rates); diverging members are recorded, not fatal. `convergence_summary`
turns the saved arrays into the distances ``d_X(n, L) = ‖E_seeds f_finite(n, L) − f_X(K = L)‖`` of
spec §5.3 with bootstrap errors and fitted rates; it is a pure function of saved arrays, so plots
and reports can be remade without recomputation.
"""

from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..config import Config, build_task, run_keys
from ..train import save_steps
from ._finite import run_finite
from ._limit import run_limit


class SweepResult(eqx.Module):
    """Saved arrays of a sweep. Leading axes: W widths, Ld depths, Lr learning rates, E seeds,
    S saved steps; X coupling modes of the limit (``couplings``)."""

    widths: Int[Array, " W"]
    depths: Int[Array, " Ld"]
    lrs: Float[Array, " Lr"]
    steps: Int[Array, " S"]
    couplings: tuple[str, ...] = eqx.field(static=True)
    loss_train: Float[Array, "W Ld Lr E S"]
    loss_test: Float[Array, "W Ld Lr E S"]
    f_train: Float[Array, "W Ld Lr E S P C"]
    f_test: Float[Array, "W Ld Lr E S Q C"]
    status: Int[Array, "W Ld Lr E"]
    limit_loss_train: Float[Array, "X Ld Lr E S"] | None
    limit_loss_test: Float[Array, "X Ld Lr E S"] | None
    limit_f_train: Float[Array, "X Ld Lr E S P C"] | None
    limit_f_test: Float[Array, "X Ld Lr E S Q C"] | None
    limit_status: Int[Array, "X Ld Lr E"] | None


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
    }


def run_sweep(cfg: Config, *, progress: bool | None = None) -> SweepResult:
    """Run the `[sweep]` grid: finite ensembles, then the limit per depth and coupling mode."""
    sw = cfg.sweep
    widths = list(sw.widths) or [cfg.model.width]
    depths = list(sw.depths) or [cfg.model.depth]
    lrs = list(sw.lrs) or [cfg.optim.lr]
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
            )
            finite[n, L] = _grid(res, len(lrs), cfg.seeds, num_saved)
    limit = {}
    for X in sw.couplings:
        for L in depths:
            res = run_limit(
                cfg,
                depth=L,
                lrs=lrs,
                coupling=X,
                task=task,
                progress=progress,
                desc=f"limit {X} K=L={L}",
            )
            limit[X, L] = _grid(res, len(lrs), cfg.seeds, num_saved)

    def stack(table, outer, key):
        return jnp.asarray(np.stack([np.stack([table[o, L][key] for L in depths]) for o in outer]))

    X = list(sw.couplings)
    return SweepResult(
        widths=jnp.asarray(widths),
        depths=jnp.asarray(depths),
        lrs=jnp.asarray(lrs),
        steps=jnp.asarray(full_steps),
        couplings=tuple(X),
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
    )


def sweep_arrays(res: SweepResult) -> dict[str, np.ndarray | None]:
    """The arrays `save_run` writes for a sweep, as numpy (``couplings`` as a string array)."""
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
        )
    }
    out = {k: None if v is None else np.asarray(v) for k, v in out.items()}
    out["couplings"] = np.array(res.couplings, dtype=str)
    return out


# -- analysis (pure functions of saved arrays) ---------------------------------------------
def _distance(fin: np.ndarray, lim: np.ndarray, *, num_boot: int, rng) -> tuple[float, float]:
    """Debiased RMS distance between seed means of ``fin (E, ...)`` and ``lim (E', ...)``, and its
    bootstrap standard error. The squared norm of a difference of sample means is biased up by
    the variances of the means; that bias is subtracted (and the result floored at 0)."""
    fin = fin[np.all(np.isfinite(fin.reshape(fin.shape[0], -1)), axis=1)]
    lim = lim[np.all(np.isfinite(lim.reshape(lim.shape[0], -1)), axis=1)]
    if len(fin) < 2 or len(lim) < 2:
        return float("nan"), float("nan")

    def est(a, b):
        diff2 = np.mean((a.mean(0) - b.mean(0)) ** 2)
        bias = np.mean(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        return np.sqrt(max(diff2 - bias, 0.0))

    boots = [
        est(fin[rng.integers(0, len(fin), len(fin))], lim[rng.integers(0, len(lim), len(lim))])
        for _ in range(num_boot)
    ]
    return float(est(fin, lim)), float(np.std(boots, ddof=1))


def fit_inverse_width(widths, d, se) -> dict[str, float]:
    """Weighted least squares ``d(n) = d_inf + alpha / n``; also the pure-power slope of d vs n."""
    widths, d, se = (np.asarray(a, float) for a in (widths, d, se))
    ok = np.isfinite(d) & np.isfinite(se)
    out = {"d_inf": np.nan, "d_inf_se": np.nan, "alpha": np.nan, "slope": np.nan}
    if ok.sum() < 2:
        return out
    w = 1.0 / np.maximum(se[ok], 1e-12 * max(np.max(d[ok]), 1e-300))
    A = np.stack([np.ones(ok.sum()), 1.0 / widths[ok]], axis=1) * w[:, None]
    coef, *_ = np.linalg.lstsq(A, d[ok] * w, rcond=None)
    cov = np.linalg.pinv(A.T @ A)
    out.update(d_inf=float(coef[0]), d_inf_se=float(np.sqrt(cov[0, 0])), alpha=float(coef[1]))
    pos = ok & (d > 0)
    if pos.sum() >= 2:
        out["slope"] = float(np.polyfit(np.log(widths[pos]), np.log(d[pos]), 1)[0])
    return out


def convergence_summary(
    arrays: Mapping[str, np.ndarray], *, num_boot: int = 200, seed: int = 0
) -> dict:
    """Distances of finite prediction trajectories (train and test points, all saved steps) to
    each limit mode at K = L, per (width, depth, lr), with bootstrap errors and 1/n fits."""
    rng = np.random.default_rng(seed)
    widths, depths, lrs = (np.asarray(arrays[k]) for k in ("widths", "depths", "lrs"))
    couplings = [str(c) for c in arrays.get("couplings", [])]
    f_fin = np.concatenate([arrays["f_train"], arrays["f_test"]], axis=-2)
    out: dict = {
        "widths": widths.tolist(),
        "depths": depths.tolist(),
        "lrs": lrs.tolist(),
        "modes": {},
    }
    if not couplings:
        return out
    f_lim = np.concatenate([arrays["limit_f_train"], arrays["limit_f_test"]], axis=-2)
    for x, mode in enumerate(couplings):
        d = np.full((len(widths), len(depths), len(lrs)), np.nan)
        se = np.full_like(d, np.nan)
        for i in range(len(widths)):
            for j in range(len(depths)):
                for r in range(len(lrs)):
                    d[i, j, r], se[i, j, r] = _distance(
                        f_fin[i, j, r], f_lim[x, j, r], num_boot=num_boot, rng=rng
                    )
        fits = [
            [fit_inverse_width(widths, d[:, j, r], se[:, j, r]) for r in range(len(lrs))]
            for j in range(len(depths))
        ]
        out["modes"][mode] = {"d": d.tolist(), "se": se.tolist(), "fits": fits}
    return out


def summary_table(summary: Mapping) -> str:
    """A plain-text table of the distances to each limit mode and the fitted n → ∞ values."""
    lines = []
    for mode, res in summary["modes"].items():
        lines.append(
            f"distance of finite predictions to the {mode} limit (K = L), "
            "seed means, debiased, ± bootstrap SE"
        )
        header = "  lr      L  " + "  ".join(f"n={n:<11d}" for n in summary["widths"])
        lines.append(header + "  d(n→∞) [fit d∞ + α/n]   slope in n")
        for r, lr in enumerate(summary["lrs"]):
            for j, L in enumerate(summary["depths"]):
                cells = "  ".join(
                    f"{res['d'][i][j][r]:.2e}±{res['se'][i][j][r]:.0e}"
                    for i in range(len(summary["widths"]))
                )
                fit = res["fits"][j][r]
                lines.append(
                    f"  {lr:<7.3g} {L:<3d} {cells}  {fit['d_inf']:+.2e}±"
                    f"{fit['d_inf_se']:.1e}        {fit['slope']:+.2f}"
                )
    return "\n".join(lines)
