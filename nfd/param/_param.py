"""Parameterizations of the residual network (spec NFD.md §1.1, §1.3).

A parameterization fixes, for a network of width ``N`` and ``L`` residual blocks,

* the branch multiplier ``beta * L**(-alpha)`` that scales every residual block,
* the per-tensor learning-rate multipliers ``m_theta`` of SGD (raw rate
  ``eta_theta = eta0 * gamma0**2 * N * m_theta``, spec §1.3) that also enter the NTK normalisation of
  spec §1.4, and
* the per-tensor raw rates of Adam (spec §1.3, second table).

The *same* object is read by the finite `nfd.model.ResNet` and by the limit solver, so the two cannot
drift apart (STYLE.md §1). Three parameterizations differ only in their depth exponents:

| class       | branch  | SGD block rate | Adam block raw rate |
|-------------|---------|----------------|---------------------|
| `DepthMuP`  | L^-1/2  | 1              | L^-1/2 / sqrt(N)    |
| `MuP`       | 1       | 1              | 1 / sqrt(N)         |
| `CompleteP` | L^-1    | L              | 1 / sqrt(N)         |

`MuP` (width-muP with no depth factor) is the "unscaled" control: its blocks move the residual stream
by Theta(1) each, so features grow with depth. `CompleteP` (arXiv 2505.01618) keeps each block's
update at Theta(1/L) with a 1/L branch; its limit has no diffusion term and is outside NFD (spec §7.3).
"""

import abc
from typing import ClassVar, Literal

import equinox as eqx

Block = Literal["one_layer", "two_layer"]

# Names of the trainable tensors of each block type, in the order of spec §1.2.
TENSORS: dict[str, tuple[str, ...]] = {
    "one_layer": ("U", "W", "v"),
    "two_layer": ("U", "W1", "W2", "v"),
}

TensorRates = dict[str, float]


class AbstractParameterization(eqx.Module):
    """Branch scale, initialisation and per-tensor learning rates of a residual network.

    Attributes:
        beta: branch scale ``β`` (`model.branch_scale`); each block carries ``β L^-alpha``.
        gamma0: richness ``γ0`` (`model.gamma0`); the readout is ``vᵀφ(h_L)/(γ0 N)``.
        sigma_in: input multiplier ``σ_in`` (`model.sigma_in`): ``h_0 = σ_in U x / sqrt(D)``.
        sigma_out: readout initialisation std ``σ_out`` (`model.sigma_out`).
        first_layer_lr_exponent: ``a`` (`optim.first_layer_lr_exponent`): W1's rate times ``L**a``.
        train_input: whether ``U`` is trained (``m_U`` = 1 or 0).
        train_readout: whether ``v`` is trained (``m_v`` = 1 or 0).
    """

    beta: float = 1.0
    gamma0: float = 1.0
    sigma_in: float = 1.0
    sigma_out: float = 1.0
    first_layer_lr_exponent: float = 0.0
    train_input: bool = True
    train_readout: bool = True

    branch_exponent: ClassVar[float]
    sgd_block_exponent: ClassVar[float]
    adam_block_exponent: ClassVar[float]

    def __check_init__(self):
        for name in ("gamma0", "sigma_in", "sigma_out"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`model.param`)."""

    def branch_multiplier(self, depth: int) -> float:
        """``β L^-alpha``: the factor in front of every residual branch."""
        return self.beta * float(depth) ** (-self.branch_exponent)

    def effective_branch_sq(self, depth: int) -> float:
        """``m_W × (branch multiplier)²``: the per-block weight of ``G ⊙ Φ`` in the NTK (spec §1.4).

        Equals ``β²/L`` for depth-muP and CompleteP, and ``β²`` for the unscaled muP control.
        """
        return self.branch_multiplier(depth) ** 2 * float(depth) ** self.sgd_block_exponent

    def sgd_multipliers(self, depth: int, block: Block = "one_layer") -> TensorRates:
        """The SGD multipliers ``m_theta`` (spec §1.3): ``eta_theta = eta0 γ0² N m_theta``."""
        self._check_block(block)
        m_block = float(depth) ** self.sgd_block_exponent
        m = {"U": float(self.train_input), "v": float(self.train_readout)}
        if block == "one_layer":
            m["W"] = m_block
        else:
            m["W1"] = m_block * float(depth) ** self.first_layer_lr_exponent
            m["W2"] = m_block
        return m

    def sgd_rates(
        self, lr: float, width: int, depth: int, block: Block = "one_layer"
    ) -> TensorRates:
        """Raw per-tensor SGD learning rates ``eta0 γ0² N m_theta``."""
        scale = lr * self.gamma0**2 * width
        return {k: scale * m for k, m in self.sgd_multipliers(depth, block).items()}

    def adam_rates(
        self, lr: float, width: int, in_dim: int, depth: int, block: Block = "one_layer"
    ) -> TensorRates:
        """Raw per-tensor Adam learning rates (spec §1.3, second table)."""
        self._check_block(block)
        w = lr * float(depth) ** self.adam_block_exponent / width**0.5
        rates = {
            "U": float(self.train_input) * lr / (self.sigma_in * in_dim**0.5),
            "v": float(self.train_readout) * lr * self.gamma0,
        }
        if block == "one_layer":
            rates["W"] = w
        else:
            rates["W1"] = w * float(depth) ** self.first_layer_lr_exponent
            rates["W2"] = w
        return rates

    def _check_block(self, block: str) -> None:
        if block not in TENSORS:
            raise ValueError(f"block must be one of {sorted(TENSORS)}, got {block!r}.")
        if block == "one_layer" and self.first_layer_lr_exponent != 0:
            raise ValueError(
                "first_layer_lr_exponent must be 0 for one_layer blocks (there is no W1), got "
                f"{self.first_layer_lr_exponent}."
            )


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


PARAMETERIZATIONS: dict[str, type[AbstractParameterization]] = {
    "depth_mup": DepthMuP,
    "mup": MuP,
    "completep": CompleteP,
}
