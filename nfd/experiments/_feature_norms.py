"""Feature norms across layers during training, pre- vs post-activation (arXiv 2512.21075
Fig. 1; docs/math T10).

For every depth ``L`` in `feature_norms.depths`, ``seeds`` one-layer ResNets of width
`model.width` are trained with `[optim]` on `[task]` in each form: the pre-activation depth-μP
stream ``h ← h + b W φ(h)/√n`` and the post-activation control ``h ← φ(h + b W h/√n)``
(`model.post_activation`), on one batch sequence. At every saved step the mean squared feature
per layer ``h_rms²`` (the `Trajectory` field) is kept. The n = ∞ pre-activation stream is the
init-kernel recursion's ``H`` diagonal at ``t = 0`` (``K = L``) and, with `feature_norms.limit`,
the limit of `[limit]` at ``K = L`` (its observables include ``h_rms``) at every saved step.

Pure: `nfd.analysis.feature_norms_analysis` summarises the arrays, `nfd.reports` and
`nfd.plots` read that.
"""

import dataclasses

import numpy as np

from ..config import Config, ConfigError, build_task, run_keys
from ..tasks import Task
from ._limit import run_limit
from ._norms import feature_norms, form_cfg, init_norm_ref

FORMS = ("pre", "post")  # post: `model.post_activation = true`, the T10 control


def _limit_norms(cfg: Config, task: Task, depth: int, progress) -> np.ndarray:
    """The limit's mean squared feature per layer step ``(E, S, K+1)`` at ``K = L`` (pre-form);
    raises `ConfigError` where the limit does not apply (e.g. Adam)."""
    fn = cfg.feature_norms
    one = form_cfg(cfg, post_activation=False, seeds=fn.limit_seeds or cfg.seeds)
    lim = dataclasses.replace(one.limit, layer_steps=0)  # K = L
    lcfg = dataclasses.replace(one, kind="limit", limit=lim)  # validates: SGD only
    res = run_limit(
        lcfg, depth=depth, task=task, progress=progress, quiet=True, desc=f"limit L={depth}"
    )
    ok = np.asarray(res.status) == 0
    return np.where(ok[:, None, None], np.asarray(res.h_rms, float) ** 2, np.nan)


def run_feature_norms(cfg: Config, *, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Mean squared feature per layer, both forms, every depth, at every saved step.

    Returns (axes J = depths, E = seeds, S = saved steps, ℓ = layer, padded with NaN to
    ``max(L) + 1``): ``norm2_pre``/``norm2_post`` ``(J, E, S, Lmax+1)``; ``ref_init``
    ``(J, Lmax+1)`` (the n = ∞ recursion at t = 0, mean over the tracked points);
    ``limit_norm2`` ``(J, E_lim, S, Lmax+1)`` (all NaN without the limit); ``steps`` ``(S,)``,
    ``depths``, ``width`` and ``limit_skipped`` (why the limit was not run, or "").
    """
    fn = cfg.feature_norms
    task = build_task(cfg, key=run_keys(cfg)["task"])
    J, E, width = len(fn.depths), cfg.seeds, cfg.model.width
    width_L = max(fn.depths) + 1
    x = np.concatenate([np.asarray(task.x_train), np.asarray(task.x_test)])
    out: dict[str, np.ndarray] = {"ref_init": np.full((J, width_L), np.nan)}
    steps = None
    skipped = "" if fn.limit else "feature_norms.limit = false"
    limit: list[np.ndarray | None] = []
    for j, L in enumerate(fn.depths):
        for form in FORMS:
            fcfg = form_cfg(cfg, post_activation=form == "post", seeds=E)
            desc = f"{form}-activation L={L}"
            steps, norm2 = feature_norms(
                fcfg, task, width=width, depth=L, progress=progress, desc=desc
            )
            key = f"norm2_{form}"
            if key not in out:
                out[key] = np.full((J, E, len(steps), width_L), np.nan)
            out[key][j, ..., : L + 1] = norm2
        out["ref_init"][j, : L + 1] = init_norm_ref(cfg, x, L)
        if skipped:
            limit.append(None)
            continue
        try:
            limit.append(_limit_norms(cfg, task, L, progress))
        except ConfigError as err:
            skipped = str(err)
            limit.append(None)
    assert steps is not None
    E_lim = fn.limit_seeds or E
    out["limit_norm2"] = np.full((J, E_lim, len(steps), width_L), np.nan)
    for j, lim in enumerate(limit):
        if lim is not None and not skipped:
            out["limit_norm2"][j, ..., : lim.shape[-1]] = lim
    out["steps"] = steps
    out["depths"] = np.asarray(fn.depths)
    out["width"] = np.asarray(width)
    out["limit_skipped"] = np.asarray([skipped])
    return out
