"""Convert a downloaded CIFAR-10 python archive into the project's `.npz` task (issue 14).

    .venv/bin/python scripts/cifar_to_npz.py cifar-10-python.tar.gz cifar10.npz
    .venv/bin/python scripts/cifar_to_npz.py cifar-10-python.tar.gz small.npz \
        --n-train 1000 --n-test 200

ARCHIVE is the "CIFAR-10 python version" (``cifar-10-python.tar.gz``) that you downloaded yourself:
nothing is downloaded here. It is read in place with `tarfile` (nothing is extracted to disk); its
pickles are loaded by an unpickler that builds only dicts, lists, numbers, strings and numpy
arrays.

Selection: the first ``--n-train`` training images in batch order (``data_batch_1`` … ``_5``,
default all 50000) and the first ``--n-test`` images of ``test_batch`` (default all 10000).

Preprocessing, the same as the built-in ``digits`` and ``mnist1d`` tasks (so that results are
comparable, and ``K^x_μμ = x_μ·x_μ / D = 1``, docs/math §0): subtract the training-set mean of
each of the D = 3072 raw pixel values (the mean over the selected training images, applied to
train and test alike), then rescale each image to ``|x|² = D``. Scaling the pixels to [0, 1]
first would change nothing (the rescaling removes any common factor), so it is not done. The
arithmetic is in float64, the stored inputs are float32. No per-pixel division by the standard
deviation: the built-in tasks do not do it either.

Output, for `task.name = "npz"` with either loss: ``x_train (P, 3072)`` and ``x_test (Q, 3072)``
float32, in CIFAR's own order (channel-first: the 1024 red, then green, then blue values of the
32×32 image, each row-major); ``y_train (P,)`` and ``y_test (Q,)`` int64 labels 0–9; and
``label_names (10,)`` (strings; the task loader reads only the four arrays above). The file is
written atomically and an existing OUT is kept unless ``--force``.

Bad input (a missing or unreadable archive, missing members, batches of the wrong shape, sizes out
of range, OUT in a missing directory or already there) exits with status 2 and one line
``error: <what>: <what is wrong> (<what is allowed>)`` on stderr, before anything is written.
"""

import argparse
import math
import os
import pathlib
import pickle
import sys
import tarfile
import zlib
from collections.abc import Sequence
from typing import NoReturn

import numpy as np

TOP = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
MEMBERS = (*TRAIN_BATCHES, "test_batch", "batches.meta")
D = 3072  # 3 channels × 32 × 32 pixels
CLASSES = 10
_CHUNK = 5000  # images normalised at a time: bounds the float64 working memory (~120 MB)
_ARCHIVE_HINT = "the CIFAR-10 python version, cifar-10-python.tar.gz"
# The globals a CIFAR-10 pickle needs: numpy arrays (Python 2 wrote `numpy.core`, numpy 2 reads
# it as `numpy._core`) and, in pickles Python 3 writes with protocol 2, bytes as `_codecs.encode`.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class BadInput(Exception):
    """One line ``<what>: <what is wrong> (<what is allowed>)``; exit status 2."""


def _reason(err: BaseException) -> str:
    """An exception as one line (tarfile's can span several)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line like every other error, not usage
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


class _ArrayUnpickler(pickle.Unpickler):
    """Loads Python 2 pickles (``encoding="bytes"``) but builds nothing beyond numpy arrays."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("archive", type=pathlib.Path, metavar="ARCHIVE", help=_ARCHIVE_HINT)
    parser.add_argument("out", type=pathlib.Path, metavar="OUT", help="the .npz file to write")
    parser.add_argument("--n-train", type=int, default=None, metavar="N", help="default: all")
    parser.add_argument("--n-test", type=int, default=None, metavar="N", help="default: all")
    parser.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    return parser.parse_args(argv)


def _check_out(out: pathlib.Path, force: bool) -> None:
    if out.suffix != ".npz":
        raise BadInput(f"OUT: {str(out)!r} does not end in .npz (a file name ending in .npz)")
    if not out.parent.is_dir():
        raise BadInput(f"OUT: no such directory {str(out.parent)!r} (a file in an existing one)")
    if out.is_dir():
        raise BadInput(f"OUT: {str(out)!r} is a directory (a file name)")
    if out.exists() and not force:
        raise BadInput(f"OUT: {str(out)!r} exists (another name, or --force to overwrite it)")


def _unpickle(tar: tarfile.TarFile, member: tarfile.TarInfo) -> object:
    fh = tar.extractfile(member)
    if fh is None:
        raise BadInput(f"ARCHIVE: {member.name} is not a regular file ({_ARCHIVE_HINT})")
    try:
        return _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as err:  # garbage bytes can fail in many ways; all of them are bad input
        raise BadInput(
            f"ARCHIVE: cannot unpickle {member.name}: {_reason(err)} ({_ARCHIVE_HINT})"
        ) from err


def read_archive(path: pathlib.Path) -> dict[str, object]:
    """The unpickled members ``data_batch_1`` … ``batches.meta``, by name."""
    if not path.is_file():
        raise BadInput(f"ARCHIVE: no such file {str(path)!r} (the downloaded {_ARCHIVE_HINT})")
    found: dict[str, object] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:  # one pass in the archive's order: no seeking back in the gzip
                top, _, name = member.name.removeprefix("./").partition("/")
                if top == TOP and name in MEMBERS:
                    found[name] = _unpickle(tar, member)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise BadInput(
            f"ARCHIVE: cannot read {str(path)!r} as a tar archive: {_reason(err)} ({_ARCHIVE_HINT})"
        ) from err
    missing = [f"{TOP}/{name}" for name in MEMBERS if name not in found]
    if missing:
        raise BadInput(
            f"ARCHIVE: {str(path)!r} lacks {', '.join(missing)} (a tar of {TOP}/ with "
            f"{', '.join(MEMBERS)})"
        )
    return found


def _batch(name: str, value: object) -> tuple[np.ndarray, np.ndarray]:
    """The ``b"data"`` (n, 3072) uint8 images and ``b"labels"`` (n,) int64 of one batch."""
    where = f"ARCHIVE: {TOP}/{name}"
    allowed = f'a dict with b"data" uint8 (n, {D}) and b"labels" n ints in 0..{CLASSES - 1}'
    if not isinstance(value, dict) or b"data" not in value or b"labels" not in value:
        keys = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise BadInput(f"{where}: got {keys} ({allowed})")
    data, labels = value[b"data"], value[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise BadInput(
            f"{where}: data is {type(data).__name__} {getattr(data, 'dtype', '')} ({allowed})"
        )
    if data.shape[0] < 1 or data.shape[1] != D:
        raise BadInput(f"{where}: data has shape {data.shape} ({allowed})")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError):
        labels = np.asarray(None)
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise BadInput(
            f"{where}: labels have shape {labels.shape} and dtype {labels.dtype} for data of "
            f"shape {data.shape} ({allowed})"
        )
    if np.any(labels < 0) or np.any(labels >= CLASSES):
        raise BadInput(f"{where}: labels in [{labels.min()}, {labels.max()}] ({allowed})")
    return data, labels.astype(np.int64)


def _label_names(value: object) -> np.ndarray:
    names = value.get(b"label_names") if isinstance(value, dict) else None
    if not isinstance(names, list) or len(names) != CLASSES:
        raise BadInput(
            f'ARCHIVE: {TOP}/batches.meta has no list of {CLASSES} b"label_names" '
            f"(the class names, as in {_ARCHIVE_HINT})"
        )
    return np.array([n.decode("latin-1") if isinstance(n, bytes) else str(n) for n in names])


def _size(flag: str, n: int | None, available: int, low: int, why: str) -> int:
    if n is None:
        return available
    if not low <= n <= available:
        raise BadInput(f"{flag}: {n} is out of range ({low} <= N <= {available}{why})")
    return n


def normalise(raw: np.ndarray, mean: np.ndarray, what: str) -> np.ndarray:
    """``(raw - mean)`` rescaled to ``|x|² = D`` per row, in float64 chunks, stored float32.

    ``what`` starts the error for a row equal to the mean (``"--n-train: training"``).
    """
    out = np.empty(raw.shape, np.float32)
    for start in range(0, raw.shape[0], _CHUNK):
        x = raw[start : start + _CHUNK].astype(np.float64) - mean
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if np.any(norms == 0.0):
            i = start + int(np.argmax(norms[:, 0] == 0.0))
            raise BadInput(
                f"{what}: image {i} equals the training-set mean, so it cannot be rescaled to "
                f"|x|² = D (images that differ from that mean: change --n-train)"
            )
        out[start : start + _CHUNK] = x * (math.sqrt(D) / norms)
    return out


def _write_atomic(out: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # same directory: os.replace is atomic
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask's permissions
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(  # named one by one, not **arrays, which could collide with its keywords
                fh,
                x_train=arrays["x_train"],
                y_train=arrays["y_train"],
                x_test=arrays["x_test"],
                y_test=arrays["y_test"],
                label_names=arrays["label_names"],
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def convert(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The arrays to write (checks everything first; raises `BadInput`)."""
    _check_out(args.out, args.force)
    members = read_archive(args.archive)
    train = [_batch(name, members[name]) for name in TRAIN_BATCHES]
    test_data, test_labels = _batch("test_batch", members["test_batch"])
    label_names = _label_names(members["batches.meta"])
    available = sum(len(labels) for _, labels in train)
    n_train = _size("--n-train", args.n_train, available, 2, "; one image minus its own mean is 0")
    n_test = _size("--n-test", args.n_test, len(test_labels), 1, "")
    raw_train = np.concatenate([data for data, _ in train])[:n_train]
    y_train = np.concatenate([labels for _, labels in train])[:n_train]
    mean = raw_train.mean(axis=0, dtype=np.float64)  # exact: integer sums below 2**53
    return {
        "x_train": normalise(raw_train, mean, "--n-train: training"),
        "y_train": y_train,
        "x_test": normalise(test_data[:n_test], mean, "--n-test: test"),
        "y_test": test_labels[:n_test],
        "label_names": label_names,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        arrays = convert(args)
        _write_atomic(args.out, arrays)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # writing OUT failed (permissions, disk full): nothing is left behind
        print(
            f"error: OUT: cannot write {str(args.out)!r}: {_reason(err)} (a writable place)",
            file=sys.stderr,
        )
        return 2
    p, q = len(arrays["y_train"]), len(arrays["y_test"])
    print(f"{args.out}: x_train ({p}, {D}), y_train ({p},), x_test ({q}, {D}), y_test ({q},)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
