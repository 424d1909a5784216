"""The block variants of the transfer experiment (§6): one-layer, and two-layer blocks per
parameterization of `transfer.params` (depth-μP and μP with W1's rate × ``L^a``; CompleteP's
1/L branch), their labels, configs and the expected slope of W1's one-step own update."""

import dataclasses

import numpy as np

from ..config import Config, build_block, build_param

Variant = tuple[str, float, str]  # (block, a, parameterization)


def variants(cfg: Config) -> list[Variant]:
    """``(block, a, param)`` of every block variant: one-layer (``a = 0``, `model.param`) and
    two-layer per parameterization of `transfer.params`: per exponent ``a`` (depth-μP, μP), or
    once with ``a = 0`` (CompleteP: its 1/L branch is the remedy, `TransferConfig`)."""
    tr = cfg.transfer
    out = [("one_layer", 0.0, cfg.model.param)] if tr.one_layer else []
    for param in tr.params:
        if param == "completep":
            out.append(("two_layer", 0.0, param))
        else:
            out += [("two_layer", float(a), param) for a in tr.exponents]
    return out


def variant_label(block: str, a: float, param: str = "depth_mup") -> str:
    """``one-layer``; ``two-layer, a=0.5`` (depth-μP), ``two-layer, 1/L branch`` (CompleteP),
    ``two-layer, a=0.5, μP`` (no depth factor)."""
    if block == "one_layer":
        return "one-layer"
    if param == "completep":
        return "two-layer, 1/L branch"
    return f"two-layer, a={a:g}" + (", μP" if param == "mup" else "")


def two_layer(cfg: Config, vs: list[Variant]) -> list[bool]:
    """Whether each variant's block has two layers (a W1 to collapse)."""
    return [build_block(variant_cfg(cfg, "sgd", *v)).two_layer for v in vs]


def dz_expected(cfg: Config, vs: list[Variant]) -> np.ndarray:
    """The expected L-slope of W1's one-step own update per variant (NaN: one-layer): ``a +``
    the block-rate exponent ``−`` the branch exponent (depth-μP ``a − ½``, CompleteP ``0``, μP
    ``a``; the same for SGD and Adam, §6)."""
    out = []
    for block, a, param in vs:
        p = build_param(variant_cfg(cfg, "sgd", block, a, param))
        out.append(a + p.sgd_block_exponent - p.branch_exponent if block == "two_layer" else np.nan)
    return np.asarray(out, float)


def variant_cfg(cfg: Config, opt: str, block: str, a: float, param: str = "", **model) -> Config:
    return dataclasses.replace(
        cfg,
        kind="finite",
        model=dataclasses.replace(  # type: ignore[arg-type]
            cfg.model, block=block, param=param or cfg.model.param, **model
        ),
        optim=dataclasses.replace(cfg.optim, name=opt, first_layer_lr_exponent=a),  # type: ignore[arg-type]
    )
