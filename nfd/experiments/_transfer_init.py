"""The transfer experiment's measurements at initialisation (§6, T9, T10): W1's share of the
NTK diagonal (n = ∞ recursion and finite networks) and the T10 pre-/post-activation control
(`nfd.experiments._norms`, shared with ``kind = "feature_norms"``)."""

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ..config import Config, build_activation, build_block, build_param
from ..limit import init_kernels
from ..model import empirical_ntk_parts
from ._finite import finite_ensemble
from ._norms import feature_norms, form_cfg, init_norm_ref
from ._transfer_variants import two_layer, variant_cfg

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def w1_kernels(cfg: Config, task, vs) -> dict[str, np.ndarray]:
    """W1's share of the NTK diagonal at initialisation (mean over the training points), per
    two-layer variant and depth: from the n = ∞ recursion of §2 (``k_w1``, ``(V, J)``) and
    from ``transfer.init_seeds`` finite networks per width (``k_w1_finite``, ``(V, I, J, S0)``). W1's SGD
    multiplier carries the ``L^a``, so both are ``L^a ×`` their ``a = 0`` value."""
    tr = cfg.transfer
    V, I, J, S = len(vs), len(tr.widths), len(tr.depths), tr.init_seeds
    k_w1 = np.full((V, J), np.nan)
    k_fin = np.full((V, I, J, S), np.nan)
    kx = jnp.asarray(task.x_train @ task.x_train.T) / task.in_dim
    base = dataclasses.replace(variant_cfg(cfg, "sgd", "two_layer", 0.0, "depth_mup"), seeds=S)
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
        for v, ((_, a, param), two) in enumerate(zip(vs, two_layer(cfg, vs), strict=True)):
            if two and param == "depth_mup":  # the two-layer recursion is depth-μP's (§2)
                k_w1[v, j] = ref * float(L) ** a
                k_fin[v, :, j] = np.stack(fin) * float(L) ** a
    return {"k_w1": k_w1, "k_w1_finite": k_fin}


def t10(cfg: Config, task, progress) -> dict[str, np.ndarray]:
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
