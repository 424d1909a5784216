"""Optimizers with the parameterization's per-tensor learning rates (spec NFD.md §1.3).

`make_optimizer` returns an optax `GradientTransformation` whose per-tensor rates are those of base
learning rate ``η0 = 1``; the trainer multiplies the updates by each ensemble member's own ``η0`` (both
SGD and Adam updates are linear in the learning rate), so a learning-rate grid is one vmapped,
once-compiled computation.
"""

from collections.abc import Hashable
from typing import Literal

import equinox as eqx
import jax
import optax

from ..model import ResNet

OptimizerName = Literal["sgd", "adam"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def tensor_labels(model: ResNet):
    """A pytree of labels matching ``eqx.filter(model, eqx.is_array)``: "U", "W"/"W1"/"W2", "v"
    for trainable tensors and "frozen" for the decoupled backward offsets."""
    arrays = eqx.filter(model, eqx.is_array)
    labels = jax.tree.map(lambda _: "frozen", arrays)
    return eqx.tree_at(lambda m: (m.U, *m.blocks, m.v), labels, ("U", *model.tensor_names, "v"))


def make_optimizer(
    name: OptimizerName, model: ResNet, *, adam_eps: float | None = None
) -> optax.GradientTransformation:
    """The optimizer for ``model`` at base learning rate 1 (multiply updates by ``η0``).

    Args:
        name: "sgd" (the limit theory's optimizer) or "adam" (spec §1.3, second table).
        model: a `ResNet` (its parameterization, width, depth and block type set the rates).
        adam_eps: Adam's ε; default ``1e-8 / N`` (spec §1.3: ε ≤ 1e-8/n).
    """
    p = model.param
    n, L, D = model.width, model.depth, model.in_dim
    transforms: dict[Hashable, optax.GradientTransformation]
    if name == "sgd":
        rates = p.sgd_rates(1.0, n, L, model.block)
        transforms = {k: optax.sgd(r) for k, r in rates.items()}
    elif name == "adam":
        eps = 1e-8 / n if adam_eps is None else adam_eps
        rates = p.adam_rates(1.0, n, D, L, model.block)
        transforms = {k: optax.adam(r, eps=eps) for k, r in rates.items()}
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}.")
    transforms["frozen"] = optax.set_to_zero()
    labels = tensor_labels(model)  # a Module is callable: hand optax a function, not the tree
    return optax.multi_transform(transforms, lambda _: labels)
