"""Config schema: frozen dataclasses, one per TOML table (STYLE.md §8).

Every key but `task.name` has a documented default. Unknown keys and wrong types are errors
(`ConfigError`, whose message is ``<key>: <what is wrong> (<what is allowed>)``). The same file can
carry both finite (`model.width`, `model.depth`) and limit (`[limit]`) keys, so one file drives both
kinds of run.
"""

import dataclasses
import math
from typing import Literal

from ._decoupling import DecouplingConfig
from ._feature_norms import FeatureNormsConfig
from ._gia import GiaConfig
from ._gia_limit import GiaLimitConfig
from ._limits import LIMITS, limit_key, limit_methods
from ._nondegeneracy import NondegeneracyConfig, check_nondegeneracy
from ._schema_base import ConfigError as ConfigError
from ._schema_base import positive as _positive
from ._transfer import TransferConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """`[task]`: the data set (see `nfd.tasks`)."""

    name: Literal["teacher_student", "digits", "mnist1d", "npz"]  # required
    n_train: int = 64  # P training inputs (npz: ignored, the file decides)
    n_test: int = 64  # Q test inputs
    in_dim: int = 16  # D (teacher_student only)
    out_dim: int = 1  # C (teacher_student only)
    teacher_width: int = 16  # hidden units of the tanh teacher (teacher_student only)
    noise: float = 0.0  # label-noise std (teacher_student only)
    path: str = ""  # the .npz file (npz only)

    def __post_init__(self):
        _positive("task.n_train", self.n_train, integer=True)
        _positive("task.n_test", self.n_test, strict=False, integer=True)
        _positive("task.in_dim", self.in_dim, integer=True)
        _positive("task.out_dim", self.out_dim, integer=True)
        _positive("task.teacher_width", self.teacher_width, integer=True)
        _positive("task.noise", self.noise, strict=False)
        if self.name == "npz" and not self.path:
            raise ConfigError("task.path", "is required when task.name = 'npz'", "a .npz file path")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """`[model]`: the finite ResNet of §1.1 and its parameterization (shared with the limit)."""

    width: int = 256  # N
    depth: int = 8  # L residual blocks
    block: Literal["one_layer", "two_layer"] = "one_layer"
    activation: Literal["linear", "relu", "erf", "tanh", "gelu"] = "relu"
    branch_scale: float = 1.0  # β
    gamma0: float = 1.0  # γ0 (richness)
    sigma_in: float = 1.0  # σ_in
    sigma_out: float = 1.0  # σ_out
    param: Literal["depth_mup", "mup", "completep"] = "depth_mup"
    backward: Literal["reused", "decoupled"] = "reused"
    center_output: bool = True  # train and report f − f(θ(0)) (§1.1)
    post_activation: bool = False  # T10 negative control: h ← φ(h + b W h/√N)
    # false: the plain network h ← c_φ b W φ(h)/√N, no skip connections (muP only; no limit)
    residual: bool = True

    def __post_init__(self):
        _positive("model.width", self.width, integer=True)
        _positive("model.depth", self.depth, integer=True)
        _positive("model.branch_scale", self.branch_scale, strict=False)
        _positive("model.gamma0", self.gamma0)
        _positive("model.sigma_in", self.sigma_in)
        _positive("model.sigma_out", self.sigma_out)
        if self.post_activation and self.block != "one_layer":
            raise ConfigError(
                "model.post_activation",
                "requires model.block = 'one_layer'",
                "true only with one_layer blocks",
            )
        if not self.residual and self.param != "mup":
            raise ConfigError(
                "model.residual",
                f"false (the plain network) requires model.param = 'mup', got {self.param!r}",
                "true, or model.param = 'mup'",
            )
        if not self.residual and self.post_activation:
            raise ConfigError(
                "model.residual", "false excludes model.post_activation = true", "true"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """`[optim]`: optimizer, learning rate η0, steps, batching, loss (§1.3)."""

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.5  # η0, the base learning rate
    steps: int = 100  # T training steps (0: observe at initialisation only)
    batch_size: int = 0  # 0 = full batch
    loss: Literal["mse", "cross_entropy"] = "mse"
    first_layer_lr_exponent: float = 0.0  # a: W1's rate × L^a (two_layer only)
    train_input: bool = True  # m_U = 1 (else U is frozen)
    train_readout: bool = True  # m_v = 1 (else v is frozen)
    # a member diverged when its training loss is non-finite or above blowup × max(loss(0), 1)
    blowup: float = 1e6

    def __post_init__(self):
        _positive("optim.lr", self.lr)
        if not self.blowup > 1 or not math.isfinite(self.blowup):
            raise ConfigError("optim.blowup", f"must be > 1, got {self.blowup!r}", "e.g. 1e6")
        _positive("optim.steps", self.steps, strict=False, integer=True)
        _positive("optim.batch_size", self.batch_size, strict=False, integer=True)
        if not math.isfinite(self.first_layer_lr_exponent):
            raise ConfigError(
                "optim.first_layer_lr_exponent",
                "must be finite",
                "a real number, e.g. 0, 0.25, 0.5, 1",
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """`[output]`: which observables are saved, and how often."""

    every: int = 10  # save every this many steps (and at 0 and the last step); 0: only 0 and last
    layer_times: tuple[float, ...] = (0.0, 0.5, 1.0)  # τ of the saved kernels; block round(τ·L)
    ntk: bool = False  # save the empirical NTK (§1.4)
    kernels: bool = False  # save h_kernel and g_kernel at layer_times

    def __post_init__(self):
        _positive("output.every", self.every, strict=False, integer=True)
        if not self.layer_times:
            raise ConfigError("output.layer_times", "must not be empty", "a list of τ in [0, 1]")
        for tau in self.layer_times:
            if not 0.0 <= tau <= 1.0:
                raise ConfigError("output.layer_times", f"contains {tau!r}", "values in [0, 1]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LimitConfig:
    """`[limit]`: the NFD limit solver (§3–§4); read by `kind = "limit"` runs."""

    particles: int = 2048  # M
    layer_steps: int = 0  # K; 0 means K = model.depth
    coupling: Literal["exact", "decoupled"] = "exact"  # mode A | mode B (NFD/GIA)
    readout: Literal["ntk", "features"] = "features"  # P1 | P2
    method: str = "particles"  # a name registered in `nfd.config._limits.LIMITS`
    noise: Literal["matrix", "cholesky"] = "matrix"
    # random-matrix particles: keep W_k (and W̃_k) in memory ("stored"), regenerate them from
    # per-layer keys ("lean": about half the memory in mode A, a quarter in mode B, one more
    # M² draw per layer step), regenerate them and keep the drift as the history of its
    # updates ("history": 2 K M r numbers per block, r = steps × batch, instead of K M²), or let
    # the memory plan choose ("auto": the first of stored, lean, history that fits in one batch)
    storage: Literal["auto", "stored", "lean", "history"] = "auto"
    # the kernel fixed point's iteration (limit.method = "kernel" only; docs/math §4.3)
    damping: float = 0.7  # λ in X ← (1 − λ) X + λ X_new, in (0, 1]
    tol: float = 1e-4  # stop when the max relative change of the kernels is below this
    max_iter: int = 50  # at most this many map evaluations
    stein_tol: float = 1e-6  # relative pivot tolerance of the whitened Stein sums
    # where the iteration starts: "causal" (one pass that builds the fixed point step by step,
    # then checked by the iteration: usually one map evaluation) or "tiled" (the t = 0 kernels
    # tiled over steps: the reference, 30-40 evaluations)
    start: Literal["causal", "tiled"] = "causal"

    def __post_init__(self):
        self._check_kernel_keys()
        if limit_key(self.method, self.noise) not in LIMITS:
            allowed = "one of " + ", ".join(repr(m) for m in limit_methods())
            raise ConfigError("limit.method", f"invalid value {self.method!r}", allowed)
        _positive("limit.particles", self.particles, integer=True)
        _positive("limit.layer_steps", self.layer_steps, strict=False, integer=True)
        if self.storage != "auto" and limit_key(self.method, self.noise) != "particles/matrix":
            raise ConfigError(
                "limit.storage",
                f"is read only by random-matrix particles, this config has {self.method!r}",
                "'auto', or limit.method = 'particles' with noise = 'matrix'",
            )
        if self.noise == "cholesky" and self.coupling == "exact":
            raise ConfigError(
                "limit.noise",
                "'cholesky' has no exact (mode A) realisation",
                "use noise = 'matrix' or coupling = 'decoupled'",
            )

    def _check_kernel_keys(self) -> None:
        if not 0 < self.damping <= 1:
            raise ConfigError(
                "limit.damping", f"must lie in (0, 1], got {self.damping!r}", "e.g. 0.7"
            )
        _positive("limit.tol", self.tol)
        _positive("limit.max_iter", self.max_iter, integer=True)
        _positive("limit.stein_tol", self.stein_tol)
        kernel_keys = {
            **{"damping": 0.7, "tol": 1e-4, "max_iter": 50, "stein_tol": 1e-6},
            "start": "causal",
        }
        changed = [k for k, v in kernel_keys.items() if getattr(self, k) != v]
        if changed and self.method != "kernel":
            raise ConfigError(
                f"limit.{changed[0]}",
                f"is read only by limit.method = 'kernel', this config has {self.method!r}",
                "leave it at its default, or set limit.method = 'kernel'",
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """`[demo]`: the widths and depths `nfd demo` trains on the same task."""

    widths: tuple[int, ...] = (64, 256)
    depths: tuple[int, ...] = (4, 16)
    limit: bool = True  # overlay the NFD limit (mode `limit.coupling`, K = L) for each depth

    def __post_init__(self):
        for key, values in (("demo.widths", self.widths), ("demo.depths", self.depths)):
            if not values:
                raise ConfigError(key, "must not be empty", "a list of positive integers")
            for v in values:
                _positive(key, v, integer=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """`[sweep]`: the grid of a `kind = "sweep"` run (empty lists: the `[model]`/`[optim]` value).

    Every (width, depth) is one compiled computation whose ensemble holds ``seeds × len(lrs)``
    members (a vmap over seeds and learning rates); every depth also runs the limit at ``K = L`` for
    each coupling mode in ``couplings`` (``limit_seeds`` or ``seeds``, × ``len(lrs)`` repetitions).
    With ``antithetic``, members come in pairs ``v(0) ↔ −v(0)`` (``seeds`` must be even). With
    ``extrapolate_layers`` every mode ``X`` also gets a ``K → ∞`` limit ``X_kinf``: the Richardson
    combination ``2 f(2K) − f(K)`` of runs at ``K`` and ``2K`` layer steps with coupled noise
    (one-layer blocks, `limit.method = "particles"`, `limit.noise = "matrix"` only).
    """

    widths: tuple[int, ...] = ()
    depths: tuple[int, ...] = ()
    lrs: tuple[float, ...] = ()
    couplings: tuple[Literal["exact", "decoupled"], ...] = ("exact", "decoupled")
    # antithetic pairs v(0) ↔ −v(0) (same U, W) in the finite ensembles and the particle limit:
    # `seeds` counts members, so it must be even; pair means cancel the noise odd in v(0)
    antithetic: bool = False
    limit_seeds: int = 0  # limit repetitions per depth and mode (0: `seeds`)
    # also the K → ∞ limit per mode, Richardson of K = L and 2L (the limit part costs ×3)
    extrapolate_layers: bool = False

    def __post_init__(self):
        for key, values in (("sweep.widths", self.widths), ("sweep.depths", self.depths)):
            for v in values:
                _positive(key, v, integer=True)
        _positive("sweep.limit_seeds", self.limit_seeds, strict=False, integer=True)
        if self.antithetic and self.limit_seeds % 2:
            raise ConfigError(
                "sweep.limit_seeds",
                f"must be even with sweep.antithetic = true, got {self.limit_seeds}",
                "0 (= seeds), 2, 4, ...",
            )
        for v in self.lrs:
            _positive("sweep.lrs", v)
        if len(set(self.couplings)) != len(self.couplings):
            raise ConfigError("sweep.couplings", "lists a mode twice", "'exact' and/or 'decoupled'")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """A whole run: top-level keys and one dataclass per table."""

    task: TaskConfig
    kind: Literal[
        "finite",
        "limit",
        "demo",
        "sweep",
        "gia",
        "gia_limit",
        "transfer",
        "decoupling",
        "nondegeneracy",
        "feature_norms",
    ] = "finite"
    seed: int = 0  # initialisation and batch-sequence seed
    seeds: int = 1  # E: ensemble members (independent initialisations, one compiled computation)
    precision: Literal["float32", "float64"] = "float32"  # dtype of the whole run
    # float32 matmuls on accelerators: "default" (the device's: TF32 on recent NVIDIA GPUs),
    # "highest" (full float32), "tensorfloat32", "bfloat16"; no effect on CPUs
    matmul_precision: Literal["default", "highest", "tensorfloat32", "bfloat16"] = "default"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    limit: LimitConfig = dataclasses.field(default_factory=LimitConfig)
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    gia: GiaConfig = dataclasses.field(default_factory=GiaConfig)
    gia_limit: GiaLimitConfig = dataclasses.field(default_factory=GiaLimitConfig)
    transfer: TransferConfig = dataclasses.field(default_factory=TransferConfig)
    decoupling: DecouplingConfig = dataclasses.field(default_factory=DecouplingConfig)
    nondegeneracy: NondegeneracyConfig = dataclasses.field(default_factory=NondegeneracyConfig)
    feature_norms: FeatureNormsConfig = dataclasses.field(default_factory=FeatureNormsConfig)

    def __post_init__(self):
        _positive("seeds", self.seeds, integer=True)
        _positive("seed", self.seed, strict=False, integer=True)
        if self.model.block == "one_layer" and self.optim.first_layer_lr_exponent != 0:
            raise ConfigError(
                "optim.first_layer_lr_exponent",
                f"must be 0 for one_layer blocks, got {self.optim.first_layer_lr_exponent}",
                "set model.block = 'two_layer' to use it",
            )
        if self.kind == "feature_norms" and self.model.block != "one_layer":
            raise ConfigError(
                "model.block",
                f"feature_norms compares one-layer blocks (T10), got {self.model.block!r}",
                "'one_layer'",
            )
        if self.kind in STORED_KINDS and self.limit.storage in ("lean", "history"):
            raise ConfigError(
                "limit.storage",
                f"{self.limit.storage!r} cannot be used by kind = {self.kind!r}: it couples the "
                "modes' and depths' particles by editing their stored matrices",
                "'auto' or 'stored'",
            )
        if self.kind == "sweep" and self.sweep.extrapolate_layers:
            self._check_extrapolate_layers()
        if self.kind == "limit" or (self.kind == "sweep" and self.sweep.couplings):
            self._check_limit()
        if self.kind == "demo" and self.demo.limit and not self.model.residual:
            raise ConfigError(
                "model.residual",
                "false (the plain network) has no limit solver",
                "true, or demo.limit = false",
            )
        if self.optim.batch_size > self.task.n_train and self.task.name != "npz":
            raise ConfigError(
                "optim.batch_size",
                f"{self.optim.batch_size} exceeds task.n_train = {self.task.n_train}",
                "0 (full batch) or at most task.n_train",
            )
        if self.kind == "nondegeneracy":
            check_nondegeneracy(self)

    def _check_limit(self) -> None:
        if self.optim.name != "sgd":
            raise ConfigError(
                "optim.name",
                f"{self.optim.name!r} has no limit solver",
                "limit runs use 'sgd' (the limit theory's optimizer)",
            )
        if self.model.block != "one_layer" and (
            self.limit.method != "particles" or self.limit.noise != "matrix"
        ):
            raise ConfigError(
                "model.block",
                "two_layer blocks are solved by limit.method = 'particles' with noise = 'matrix' "
                f"only, got method {self.limit.method!r}, noise {self.limit.noise!r}",
                "'one_layer', or set limit.method = 'particles' and limit.noise = 'matrix'",
            )
        if self.model.post_activation:
            raise ConfigError("model.post_activation", "has no limit solver", "false")
        if not self.model.residual:
            raise ConfigError(
                "model.residual", "false (the plain network) has no limit solver", "true"
            )
        if self.limit.method == "linear_exact" and self.model.activation != "linear":
            raise ConfigError(
                "limit.method",
                "'linear_exact' needs model.activation = 'linear'",
                "'particles' or 'kernel' for other activations",
            )

    def _check_extrapolate_layers(self) -> None:
        allowed = (
            "false, or model.block = 'one_layer' with limit.method = 'particles' and "
            "limit.noise = 'matrix'"
        )
        if self.model.block != "one_layer":
            raise ConfigError(
                "sweep.extrapolate_layers",
                f"needs model.block = 'one_layer' (coarsened one-layer noise), got "
                f"{self.model.block!r}",
                allowed,
            )
        if self.limit.method != "particles" or self.limit.noise != "matrix":
            raise ConfigError(
                "sweep.extrapolate_layers",
                "needs the random-matrix particle limit (coupled layer-step noise), got "
                f"limit.method = {self.limit.method!r}, limit.noise = {self.limit.noise!r}",
                allowed,
            )


# kinds that couple their limit runs by editing stored particle matrices: never the lean form
STORED_KINDS = ("sweep", "gia")

# the tables read by one kind only: a config of another kind may not carry them
KIND_TABLES: dict[str, str] = {
    "demo": "demo",
    "sweep": "sweep",
    "gia": "gia",
    "gia_limit": "gia_limit",
    "transfer": "transfer",
    "decoupling": "decoupling",
    "nondegeneracy": "nondegeneracy",
    "feature_norms": "feature_norms",
}

TABLES: dict[str, type] = {
    "task": TaskConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "output": OutputConfig,
    "limit": LimitConfig,
    "demo": DemoConfig,
    "sweep": SweepConfig,
    "gia": GiaConfig,
    "gia_limit": GiaLimitConfig,
    "transfer": TransferConfig,
    "decoupling": DecouplingConfig,
    "nondegeneracy": NondegeneracyConfig,
    "feature_norms": FeatureNormsConfig,
}
