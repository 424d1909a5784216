"""Feature norms across layers, pre- vs post-activation (T10): the pieces the `transfer` kind's
control at initialisation and the `feature_norms` kind's training runs share.

The pre-activation depth-μP stream ``h ← h + b W φ(h)/√n`` keeps ``H(τ)_μμ`` O(1) (ReLU:
``e^{τ/2}`` as ``L → ∞``, docs/math); the post-activation control ``h ← φ(h + b W h/√n)``
(`model.post_activation`) does not. The mean squared feature per layer is the square of the
`Trajectory` field ``h_rms``; its n = ∞ value at initialisation is the init-kernel recursion's
``H`` diagonal at ``K = L`` (`nfd.limit.init_kernels`).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..config import Config, build_activation, build_block, build_param
from ..limit import init_kernels
from ..tasks import Task
from ._finite import run_finite


def form_cfg(cfg: Config, *, post_activation: bool, seeds: int, steps: int | None = None):
    """``cfg`` as a finite run of one form: one-layer blocks, ``post_activation`` as given,
    ``seeds`` members and (when given) ``steps`` training steps."""
    model = dataclasses.replace(cfg.model, block="one_layer", post_activation=post_activation)
    optim = cfg.optim if steps is None else dataclasses.replace(cfg.optim, steps=steps)
    optim = dataclasses.replace(optim, first_layer_lr_exponent=0.0)
    return dataclasses.replace(cfg, kind="finite", seeds=seeds, model=model, optim=optim)


def feature_norms(
    cfg: Config,
    task: Task,
    *,
    width: int,
    depth: int,
    progress: bool | None = False,
    desc: str = "norms",
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``cfg`` (a `form_cfg`) at ``width × depth``: the saved steps ``(S,)`` and the mean
    squared feature per layer ``h_rms² (E, S, L+1)`` (NaN after a member diverged)."""
    res = run_finite(cfg, width=width, depth=depth, task=task, progress=progress, desc=desc)
    return np.asarray(res.steps), np.asarray(res.h_rms, float) ** 2


def init_norm_ref(cfg: Config, x, depth: int) -> np.ndarray:
    """The n = ∞ mean squared feature per layer at initialisation, ``(L+1,)``: the mean over the
    inputs ``x (P, D)`` of the init-kernel recursion's ``H_ℓ`` diagonal at ``K = L``
    (pre-activation stream, one-layer blocks)."""
    kx = jnp.asarray(x @ x.T) / x.shape[1]
    one = form_cfg(cfg, post_activation=False, seeds=cfg.seeds)
    kern = init_kernels(build_param(one), build_activation(one), kx, depth, build_block(one))
    return np.asarray(jnp.diagonal(kern.H, axis1=1, axis2=2)).mean(axis=1)
