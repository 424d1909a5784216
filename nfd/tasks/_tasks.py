"""Datasets ("tasks") read by the finite trainer and the limit solver.

A `Task` holds train and test inputs and targets as 2-D float arrays: inputs ``(P, D)`` and
``(Q, D)``, targets ``(P, C)`` and ``(Q, C)``. Regression tasks have ``num_classes == 0``;
classification tasks have ``num_classes == C`` and one-hot (or probability) target rows.

The built-in tasks normalise every input to ``|x|² = D``, so that ``K^x_μμ = x_μ·x_μ / D = 1``
(docs/math §0). User data loaded with `npz` is used exactly as given. Nothing is ever downloaded.
"""

import math
import random
import types
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._typing import Array, Float, PRNGKeyArray

_DIGITS_SIZE = 1797  # images in sklearn.datasets.load_digits (8 x 8 pixels, 10 classes)
_MNIST1D_CLASSES = 10
# Target rows of a cross-entropy `.npz` must sum to 1 up to this tolerance: loose enough for rows
# stored in float32 (round-off ~ C * 6e-8), tight enough to catch unnormalised scores.
_PROB_ATOL = 1e-5


def _float_dtype() -> Any:
    """The default float dtype: float64 with ``jax_enable_x64``, else float32."""
    return jnp.result_type(float)


class Task(eqx.Module):
    """A dataset: train and test inputs with their targets.

    Attributes:
        name: which task built it (`task.name`), e.g. ``"digits"``.
        x_train: training inputs, ``(P, D)``.
        y_train: training targets, ``(P, C)``.
        x_test: test inputs, ``(Q, D)``; ``Q`` may be 0.
        y_test: test targets, ``(Q, C)``.
        num_classes: 0 for regression; else ``C``, the number of classes (targets are one-hot
            rows or class probabilities).
    """

    name: str = eqx.field(static=True)
    x_train: Float[Array, "P D"] = eqx.field(converter=jnp.asarray)
    y_train: Float[Array, "P C"] = eqx.field(converter=jnp.asarray)
    x_test: Float[Array, "Q D"] = eqx.field(converter=jnp.asarray)
    y_test: Float[Array, "Q C"] = eqx.field(converter=jnp.asarray)
    num_classes: int = eqx.field(static=True)

    def __check_init__(self):
        for field, want in (
            ("x_train", "(P, D)"),
            ("y_train", "(P, C)"),
            ("x_test", "(Q, D)"),
            ("y_test", "(Q, C)"),
        ):
            value = getattr(self, field)
            if value.ndim != 2:
                raise ValueError(f"Task {field} must be 2-D {want}, got shape {value.shape}.")
            if not jnp.issubdtype(value.dtype, jnp.floating):
                raise ValueError(f"Task {field} must be a float array, got dtype {value.dtype}.")
        if self.x_train.shape[0] != self.y_train.shape[0]:
            raise ValueError(
                f"Task x_train and y_train must have the same number of rows P, got "
                f"{self.x_train.shape[0]} and {self.y_train.shape[0]}."
            )
        if self.x_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(
                f"Task x_test and y_test must have the same number of rows Q, got "
                f"{self.x_test.shape[0]} and {self.y_test.shape[0]}."
            )
        if self.x_test.shape[1] != self.x_train.shape[1]:
            raise ValueError(
                f"Task x_test must have the input dimension D={self.x_train.shape[1]} of x_train, "
                f"got shape {self.x_test.shape}."
            )
        if self.y_test.shape[1] != self.y_train.shape[1]:
            raise ValueError(
                f"Task y_test must have the output dimension C={self.y_train.shape[1]} of y_train, "
                f"got shape {self.y_test.shape}."
            )
        if self.x_train.shape[0] < 1 or self.x_train.shape[1] < 1 or self.y_train.shape[1] < 1:
            raise ValueError(
                f"Task needs P, D, C >= 1, got x_train {self.x_train.shape} and y_train "
                f"{self.y_train.shape}."
            )
        if self.num_classes < 0 or self.num_classes == 1:
            raise ValueError(
                f"Task num_classes must be 0 (regression) or >= 2, got {self.num_classes}."
            )
        if self.num_classes > 0 and self.num_classes != self.y_train.shape[1]:
            raise ValueError(
                f"Task with num_classes={self.num_classes} needs targets of shape (P, "
                f"{self.num_classes}), got y_train {self.y_train.shape}."
            )

    @property
    def n_train(self) -> int:
        """P, the number of training inputs."""
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        """Q, the number of test inputs (may be 0)."""
        return self.x_test.shape[0]

    @property
    def in_dim(self) -> int:
        """D, the input dimension."""
        return self.x_train.shape[1]

    @property
    def out_dim(self) -> int:
        """C, the output dimension (the number of classes for classification)."""
        return self.y_train.shape[1]


def _check_sizes(n_train: int, n_test: int, *, min_train: int = 1) -> None:
    if n_train < min_train:
        raise ValueError(f"task.n_train: must be >= {min_train}, got {n_train}.")
    if n_test < 0:
        raise ValueError(f"task.n_test: must be >= 0, got {n_test}.")


def _center_and_normalize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the training-set mean of each pixel, then rescale each input to ``|x|² = D``."""
    mean = x_train.mean(axis=0)
    x_train, x_test = x_train - mean, x_test - mean
    d = x_train.shape[1]
    out = []
    for x in (x_train, x_test):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if np.any(norms == 0.0):
            raise ValueError(
                "task.n_train: an input equals the training-set mean, so it cannot be rescaled to "
                "|x|² = D; use a larger task.n_train."
            )
        out.append(x * (math.sqrt(d) / norms))
    return out[0], out[1]


def _classification_task(
    name: str,
    x_train: np.ndarray,
    labels_train: np.ndarray,
    x_test: np.ndarray,
    labels_test: np.ndarray,
    num_classes: int,
) -> Task:
    x_train, x_test = _center_and_normalize(x_train, x_test)
    eye = np.eye(num_classes)
    dtype = _float_dtype()
    return Task(
        name=name,
        x_train=jnp.asarray(x_train, dtype=dtype),
        y_train=jnp.asarray(eye[labels_train], dtype=dtype),
        x_test=jnp.asarray(x_test, dtype=dtype),
        y_test=jnp.asarray(eye[labels_test], dtype=dtype),
        num_classes=num_classes,
    )


@eqx.filter_jit  # one compile per shape, instead of one per eager op (ints and floats are static)
def teacher_student(
    *,
    n_train: int,
    n_test: int,
    in_dim: int,
    out_dim: int = 1,
    teacher_width: int = 16,
    noise: float = 0.0,
    key: PRNGKeyArray,
) -> Task:
    """Regression on a random two-layer tanh teacher.

    Inputs are ``x ~ N(0, I_D)`` rescaled to ``|x|² = D`` exactly (docs/math §0: ``K^x_μμ = 1``).
    Targets are

        y = (1/√m) Σ_j a_j tanh(w_j·x / √D) + noise · ε,

    with ``m = teacher_width``, ``w_j ∈ R^D`` and ``a_j ∈ R^C`` standard normal, and
    ``ε ~ N(0, I_C)`` drawn independently for every train and test point. Because ``|x|² = D``,
    each ``w_j·x/√D`` is exactly ``N(0, 1)`` over the teacher, so ``E y = 0`` and
    ``E y² = E tanh(z)² + noise²``.

    The key is split as ``x_key, w_key, a_key, noise_key = jr.split(key, 4)``; the first ``n_train``
    of the ``n_train + n_test`` draws are the training set.

    Args:
        n_train: ``P`` (`task.n_train`), at least 1.
        n_test: ``Q`` (`task.n_test`), at least 0.
        in_dim: ``D`` (`task.in_dim`).
        out_dim: ``C`` (`task.out_dim`).
        teacher_width: ``m``, the teacher's hidden units.
        noise: the standard deviation of the label noise (`task.noise`).
        key: the random key.

    Returns:
        A regression `Task` (``num_classes == 0``) named ``"teacher_student"``.
    """
    _check_sizes(n_train, n_test)
    if in_dim < 1:
        raise ValueError(f"task.in_dim: must be >= 1, got {in_dim}.")
    if out_dim < 1:
        raise ValueError(f"task.out_dim: must be >= 1, got {out_dim}.")
    if teacher_width < 1:
        raise ValueError(f"task.teacher_width: must be >= 1, got {teacher_width}.")
    if not noise >= 0.0:
        raise ValueError(f"task.noise: must be >= 0, got {noise}.")
    dtype = _float_dtype()
    x_key, w_key, a_key, noise_key = jr.split(key, 4)
    n = n_train + n_test
    x = jr.normal(x_key, (n, in_dim), dtype)
    x = x * (math.sqrt(in_dim) / jnp.linalg.norm(x, axis=1, keepdims=True))
    w = jr.normal(w_key, (teacher_width, in_dim), dtype)
    a = jr.normal(a_key, (teacher_width, out_dim), dtype)
    highest = jax.lax.Precision.HIGHEST  # GPU matmuls would otherwise use TF32
    pre = jnp.matmul(x, w.T, precision=highest) / math.sqrt(in_dim)  # (n, m), each N(0, 1)
    y = jnp.matmul(jnp.tanh(pre), a, precision=highest) / math.sqrt(teacher_width)  # (n, C)
    y = y + noise * jr.normal(noise_key, (n, out_dim), dtype)
    return Task(
        name="teacher_student",
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_test=x[n_train:],
        y_test=y[n_train:],
        num_classes=0,
    )


def digits(*, n_train: int, n_test: int, key: PRNGKeyArray) -> Task:
    """The 8x8 handwritten digits bundled with scikit-learn (1797 images, 10 classes, D = 64).

    Split: ``perm = jr.permutation(key, 1797)``; images ``perm[:n_train]`` train and
    ``perm[n_train:n_train + n_test]`` test. Preprocessing: subtract the training-set mean of each
    raw pixel (from train and test alike), then rescale each image to ``|x|² = D = 64``. Targets are
    one-hot rows.

    Args:
        n_train: ``P`` (`task.n_train`), at least 2 (one image minus its own mean is zero).
        n_test: ``Q`` (`task.n_test`); ``n_train + n_test <= 1797``.
        key: the random key of the split.

    Returns:
        A 10-class `Task` named ``"digits"``.
    """
    from sklearn.datasets import load_digits

    _check_sizes(n_train, n_test, min_train=2)
    if n_train + n_test > _DIGITS_SIZE:
        raise ValueError(
            f"task.n_train: digits has {_DIGITS_SIZE} images, but task.n_train + task.n_test = "
            f"{n_train} + {n_test} = {n_train + n_test}; lower task.n_train or task.n_test."
        )
    raw_images, raw_labels = load_digits(return_X_y=True)
    images = np.asarray(raw_images, dtype=np.float64)  # (1797, 64), pixels 0..16
    labels = np.asarray(raw_labels)
    perm = np.asarray(jr.permutation(key, _DIGITS_SIZE))
    train, test = perm[:n_train], perm[n_train : n_train + n_test]
    return _classification_task(
        "digits", images[train], labels[train], images[test], labels[test], 10
    )


def mnist1d(*, n_train: int, n_test: int, key: PRNGKeyArray) -> Task:
    """MNIST-1D (Greydanus & Steinbach), generated locally: 10 classes, D = 40.

    The `mnist1d` package's generator `mnist1d.data.make_dataset` builds
    ``10 * ceil((n_train + n_test) / 10)`` signals (equally many per class, shuffled) with its
    default transformation arguments and ``seed = int(jr.randint(key, (), 0, 2**31 - 1))``; the
    first ``n_train`` are the training set and the next ``n_test`` the test set. Nothing is
    downloaded, no file is written, and the global `numpy`/`random` state that the generator seeds
    is restored afterwards. Preprocessing as in `digits`: subtract the training-set mean of each
    coordinate, then rescale each signal to ``|x|² = D = 40``. Targets are one-hot rows.

    Args:
        n_train: ``P`` (`task.n_train`), at least 2.
        n_test: ``Q`` (`task.n_test`), at least 0.
        key: the random key of the generator's seed.

    Returns:
        A 10-class `Task` named ``"mnist1d"``.

    Raises:
        ImportError: if the optional `mnist1d` package is missing (``pip install mnist1d``).
    """
    _check_sizes(n_train, n_test, min_train=2)
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError(
            "task.name='mnist1d' needs the optional `mnist1d` package: pip install mnist1d "
            "(or pip install 'nfd[mnist1d]')."
        ) from err
    n = n_train + n_test
    defaults = cast(dict[str, Any], get_dataset_args(as_dict=True))
    args = types.SimpleNamespace(
        **{
            **defaults,
            "num_samples": _MNIST1D_CLASSES * math.ceil(n / _MNIST1D_CLASSES),
            "train_split": 1.0,  # we split ourselves
            "seed": int(jr.randint(key, (), 0, 2**31 - 1)),
            "url": "",  # make_dataset never reads it; blank it so that nothing could fetch it
        }
    )
    # make_dataset seeds and draws from the legacy global generators; put them back afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    x = np.asarray(data["x"], dtype=np.float64)[:n]
    labels = np.asarray(data["y"])[:n]
    return _classification_task(
        "mnist1d",
        x[:n_train],
        labels[:n_train],
        x[n_train:],
        labels[n_train:],
        _MNIST1D_CLASSES,
    )
