"""User data: a `.npz` file of train and test arrays, used exactly as given (nothing is downloaded)."""

import os

import jax.numpy as jnp
import numpy as np

from ._tasks import _PROB_ATOL, Task, _float_dtype

LOSSES = ("cross_entropy", "mse")


def _npz_array(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    value = arrays[name]
    if value.dtype == np.bool_ or not (
        np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)
    ):
        raise ValueError(f"task.path: {name} must be a real number array, got dtype {value.dtype}.")
    if not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise ValueError(f"task.path: {name} has {bad} non-finite values (NaN or inf).")
    return value


def _npz_check_targets(y: np.ndarray, name: str, rows: int, x_name: str) -> None:
    if y.ndim not in (1, 2):
        raise ValueError(f"task.path: {name} must be (P,) or (P, C), got shape {y.shape}.")
    if y.shape[0] != rows:
        raise ValueError(
            f"task.path: {x_name} has {rows} rows but {name} has {y.shape[0]}; they must match."
        )
    if y.ndim == 2 and y.shape[1] < 1:
        raise ValueError(f"task.path: {name} needs C >= 1 columns, got shape {y.shape}.")


def _npz_num_classes(ys: dict[str, np.ndarray]) -> int:
    """``C`` for ``loss="cross_entropy"``, checking labels ``(P,)`` or probabilities ``(P, C)``."""
    if ys["y_train"].ndim == 1:
        for name, y in ys.items():
            if y.size and (np.any(y < 0) or np.any(y != np.round(y))):
                raise ValueError(
                    f"task.path: {name} labels (P,) for loss='cross_entropy' must be integers "
                    f">= 0, got values in [{y.min()}, {y.max()}]."
                )
        num_classes = 1 + int(max(y.max() for y in ys.values() if y.size))
    else:
        num_classes = ys["y_train"].shape[1]
        for name, y in ys.items():
            if np.any(y < 0) or np.any(np.abs(y.sum(axis=1) - 1.0) > _PROB_ATOL):
                raise ValueError(
                    f"task.path: {name} of shape (P, C) holds class probabilities for "
                    "loss='cross_entropy': entries must be >= 0 and each row must sum to 1."
                )
    if num_classes < 2:
        raise ValueError(
            f"task.path: loss='cross_entropy' needs at least 2 classes, got C={num_classes}."
        )
    return num_classes


def npz(*, path: str | os.PathLike, loss: str) -> Task:
    """User data from an ``.npz`` file, used exactly as given (no normalisation).

    The file holds ``x_train (P, D)`` and ``y_train (P,)`` or ``(P, C)``, and optionally ``x_test
    (Q, D)`` with ``y_test`` shaped like ``y_train``. Targets:

    * ``loss="mse"``: ``(P,)`` becomes ``(P, 1)``; ``(P, C)`` is used as is. A regression task.
    * ``loss="cross_entropy"``: integer labels ``(P,)`` become one-hot rows with
      ``C = 1 + max label`` over train and test; ``(P, C)`` rows are target class probabilities
      (non-negative, summing to 1). A ``C``-class task.

    Args:
        path: the ``.npz`` file (`task.path`).
        loss: ``"mse"`` or ``"cross_entropy"``.

    Returns:
        A `Task` named ``"npz"``.

    Raises:
        ValueError: naming the config key (``task.path: ...``) for any problem with the file.
    """
    if loss not in LOSSES:
        raise ValueError(f"optim.loss: unknown loss {loss!r} (allowed: {', '.join(LOSSES)}).")
    if not os.path.isfile(path):
        raise ValueError(f"task.path: file not found: {os.fspath(path)!r}.")
    try:
        with np.load(path, allow_pickle=False) as file:
            arrays = {name: np.asarray(file[name]) for name in file.files}
    except Exception as err:  # not a zip archive, object arrays, a .npy file, ...
        raise ValueError(
            f"task.path: cannot read {os.fspath(path)!r} as an .npz archive of numeric arrays "
            f"({type(err).__name__}: {err})."
        ) from err
    has = ", ".join(sorted(arrays)) or "no arrays"
    for name in ("x_train", "y_train"):
        if name not in arrays:
            raise ValueError(f"task.path: missing array {name!r} (the file has: {has}).")
    if ("x_test" in arrays) != ("y_test" in arrays):
        given, missing = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise ValueError(
            f"task.path: {given} is given without {missing}; give both or neither "
            f"(the file has: {has})."
        )
    has_test = "x_test" in arrays
    names = ("x_train", "y_train", "x_test", "y_test") if has_test else ("x_train", "y_train")
    arr = {name: _npz_array(arrays, name) for name in names}

    x_train = arr["x_train"]
    if x_train.ndim != 2:
        raise ValueError(f"task.path: x_train must be 2-D (P, D), got shape {x_train.shape}.")
    if x_train.shape[0] < 1 or x_train.shape[1] < 1:
        raise ValueError(f"task.path: x_train needs P >= 1 and D >= 1, got shape {x_train.shape}.")
    _npz_check_targets(arr["y_train"], "y_train", x_train.shape[0], "x_train")
    if has_test:
        x_test = arr["x_test"]
        if x_test.ndim != 2 or x_test.shape[1] != x_train.shape[1]:
            raise ValueError(
                f"task.path: x_test must be 2-D (Q, D) with D={x_train.shape[1]} like x_train, "
                f"got shape {x_test.shape}."
            )
        _npz_check_targets(arr["y_test"], "y_test", x_test.shape[0], "x_test")
        if arr["y_test"].shape[1:] != arr["y_train"].shape[1:]:
            raise ValueError(
                f"task.path: y_test must be shaped like y_train ((P,) or (P, C)), got "
                f"{arr['y_test'].shape} and {arr['y_train'].shape}."
            )
    else:
        x_test = np.zeros((0, x_train.shape[1]), x_train.dtype)
    ys = {name: arr[name] for name in ("y_train", "y_test") if name in arr}

    if loss == "mse":
        num_classes = 0
        targets = {name: y.reshape(-1, 1) if y.ndim == 1 else y for name, y in ys.items()}
    else:
        num_classes = _npz_num_classes(ys)
        eye = np.eye(num_classes)
        targets = {name: eye[y.astype(np.int64)] if y.ndim == 1 else y for name, y in ys.items()}
    y_train = targets["y_train"]
    y_test = targets.get("y_test", np.zeros((0, y_train.shape[1]), y_train.dtype))
    dtype = _float_dtype()
    return Task(
        name="npz",
        x_train=jnp.asarray(x_train, dtype=dtype),
        y_train=jnp.asarray(y_train, dtype=dtype),
        x_test=jnp.asarray(x_test, dtype=dtype),
        y_test=jnp.asarray(y_test, dtype=dtype),
        num_classes=num_classes,
    )
