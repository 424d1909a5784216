"""Parameterizations of the residual network (docs/math §1.1, §1.3).

A parameterization fixes, for a network of width ``N`` and ``L`` residual blocks,

* the branch multiplier ``beta * L**(-alpha)`` that scales every residual block,
* the per-tensor learning-rate multipliers ``m_theta`` of SGD (raw rate
  ``eta_theta = eta0 * gamma0**2 * N * m_theta``, §1.3) that also enter the NTK normalisation of
  §1.4, and
* the per-tensor raw rates of Adam (§1.3, second table).

The *same* object is read by the finite `nfd.model.ResNet` and by the limit solver, so the two cannot
drift apart (STYLE.md §1). Three parameterizations differ only in their depth exponents:

| class       | branch  | SGD block rate | Adam block raw rate |
|-------------|---------|----------------|---------------------|
| `DepthMuP`  | L^-1/2  | 1              | L^-1/2 / sqrt(N)    |
| `MuP`       | 1       | 1              | 1 / sqrt(N)         |
| `CompleteP` | L^-1    | L              | 1 / sqrt(N)         |

`MuP` (width-muP with no depth factor) is the "unscaled" control: its blocks move the residual stream
by Theta(1) each, so features grow with depth. `CompleteP` (arXiv 2505.01618) keeps each block's
update at Theta(1/L) with a 1/L branch; its limit has no diffusion term and is outside NFD (§7.3).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._blocks import AbstractBlock, OneLayer

TensorRates = dict[str, Float[Array, ""]]


def _scalar(x) -> Float[Array, ""]:
    """A swept hyperparameter as a (weakly typed) array leaf: jit traces it, so a scan over its
    values compiles once (STYLE.md §3)."""
    return jnp.asarray(x)


class AbstractParameterization(eqx.Module):
    """Branch scale, initialisation and per-tensor learning rates of a residual network.

    The scalars users scan (``β``, ``γ0``, ``σ_in``, ``σ_out``, ``a``) are array leaves, so jitted
    code traces them and a scan over their values compiles once; the trained/frozen switches and
    the depth exponents (class constants) change code paths and are static.

    Attributes:
        beta: branch scale ``β`` (`model.branch_scale`); each block carries ``β L^-alpha``.
        gamma0: richness ``γ0`` (`model.gamma0`); the readout is ``vᵀφ(h_L)/(γ0 N)``.
        sigma_in: input multiplier ``σ_in`` (`model.sigma_in`): ``h_0 = σ_in U x / sqrt(D)``.
        sigma_out: readout initialisation std ``σ_out`` (`model.sigma_out`).
        first_layer_lr_exponent: ``a`` (`optim.first_layer_lr_exponent`): W1's rate times ``L**a``.
        train_input: whether ``U`` is trained (``m_U`` = 1 or 0).
        train_readout: whether ``v`` is trained (``m_v`` = 1 or 0).
    """

    beta: Float[Array, ""] = eqx.field(default=1.0, converter=_scalar)
    gamma0: Float[Array, ""] = eqx.field(default=1.0, converter=_scalar)
    sigma_in: Float[Array, ""] = eqx.field(default=1.0, converter=_scalar)
    sigma_out: Float[Array, ""] = eqx.field(default=1.0, converter=_scalar)
    first_layer_lr_exponent: Float[Array, ""] = eqx.field(default=0.0, converter=_scalar)
    train_input: bool = eqx.field(default=True, static=True)
    train_readout: bool = eqx.field(default=True, static=True)

    branch_exponent: ClassVar[float]
    sgd_block_exponent: ClassVar[float]
    adam_block_exponent: ClassVar[float]

    def __check_init__(self):
        for name in ("gamma0", "sigma_in", "sigma_out"):
            value = getattr(self, name)
            if _concrete(value) and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}.")

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`model.param`)."""

    def branch_multiplier(self, depth: int) -> Float[Array, ""]:
        """``β L^-alpha``: the factor in front of every residual branch."""
        return self.beta * float(depth) ** (-self.branch_exponent)

    def effective_branch_sq(self, depth: int) -> Float[Array, ""]:
        """``m_W × (branch multiplier)²``: the per-block weight of ``G ⊙ Φ`` in the NTK (§1.4).

        Equals ``β²/L`` for depth-muP and CompleteP, and ``β²`` for the unscaled muP control.
        """
        return self.branch_multiplier(depth) ** 2 * float(depth) ** self.sgd_block_exponent

    def check_block(self, block: AbstractBlock) -> None:
        """Refuse ``a ≠ 0`` for blocks without a first internal layer (there is no W1)."""
        a = self.first_layer_lr_exponent
        if block.first_layer is None and _concrete(a) and float(a) != 0:
            raise ValueError(
                "first_layer_lr_exponent must be 0 for one_layer blocks (there is no W1), got "
                f"{float(a)}."
            )

    def _depth_rates(self, depth: int, block: AbstractBlock, exponent: float) -> TensorRates:
        """The block matrices' factor ``L**exponent``, times ``L**a`` on the first layer."""
        self.check_block(block)
        base = jnp.asarray(float(depth) ** exponent)
        return {
            name: base * float(depth) ** self.first_layer_lr_exponent
            if name == block.first_layer
            else base
            for name in block.matrices
        }

    def sgd_multipliers(self, depth: int, block: AbstractBlock = OneLayer()) -> TensorRates:
        """The SGD multipliers ``m_theta`` (§1.3): ``eta_theta = eta0 γ0² N m_theta``."""
        m = {"U": jnp.asarray(float(self.train_input)), "v": jnp.asarray(float(self.train_readout))}
        return {**m, **self._depth_rates(depth, block, self.sgd_block_exponent)}

    def sgd_rates(
        self, lr, width: int, depth: int, block: AbstractBlock = OneLayer()
    ) -> TensorRates:
        """Raw per-tensor SGD learning rates ``eta0 γ0² N m_theta``."""
        scale = lr * self.gamma0**2 * width
        return {k: scale * m for k, m in self.sgd_multipliers(depth, block).items()}

    def adam_rates(
        self, lr, width: int, in_dim: int, depth: int, block: AbstractBlock = OneLayer()
    ) -> TensorRates:
        """Raw per-tensor Adam learning rates (§1.3, second table)."""
        w = lr / width**0.5
        rates = {
            "U": float(self.train_input) * lr / (self.sigma_in * in_dim**0.5),
            "v": float(self.train_readout) * lr * self.gamma0,
        }
        blocks = self._depth_rates(depth, block, self.adam_block_exponent)
        return {**rates, **{k: w * r for k, r in blocks.items()}}

    def ntk_weights(self, depth: int, block: AbstractBlock = OneLayer()) -> TensorRates:
        """The weight of each tensor's term in the NTK of §1.4.

        ``U``: ``m_U σ_in²`` (times ``K^x ⊙ G_0``); the branch matrix: ``m b²`` (times
        ``Σ_ℓ G_{ℓ+1} ⊙ Φ``, ``b`` the branch multiplier); a two-layer block's first matrix: ``m_W1``
        (its backward field ``g^z`` already carries ``b``); ``v``: ``m_v`` (times ``Φ_L``).
        """
        m = self.sgd_multipliers(depth, block)
        b2 = self.branch_multiplier(depth) ** 2
        weights = {"U": m["U"] * self.sigma_in**2, "v": m["v"]}
        for name in block.matrices:
            weights[name] = m[name] * b2 if name == block.branch else m[name]
        return weights


def _concrete(x) -> bool:
    """Whether ``x`` has a value now (not a tracer inside jit or vmap)."""
    try:
        float(x)
    except Exception:  # a tracer: checked where it was built
        return False
    return True


class DepthMuP(AbstractParameterization):
    """Depth-muP (arXiv 2309.16620, 2310.02244): branch ``β/sqrt(L)``; the NFD setting."""

    branch_exponent: ClassVar[float] = 0.5
    sgd_block_exponent: ClassVar[float] = 0.0
    adam_block_exponent: ClassVar[float] = -0.5

    @property
    def name(self) -> str:
        return "depth_mup"


class MuP(AbstractParameterization):
    """Width-muP ResNet with no depth factor on the branch: the unscaled depth control."""

    branch_exponent: ClassVar[float] = 0.0
    sgd_block_exponent: ClassVar[float] = 0.0
    adam_block_exponent: ClassVar[float] = 0.0

    @property
    def name(self) -> str:
        return "mup"


class CompleteP(AbstractParameterization):
    """CompleteP (arXiv 2505.01618): branch ``β/L``, block SGD rate ``× L``, Adam block rate flat."""

    branch_exponent: ClassVar[float] = 1.0
    sgd_block_exponent: ClassVar[float] = 1.0
    adam_block_exponent: ClassVar[float] = 0.0

    @property
    def name(self) -> str:
        return "completep"
