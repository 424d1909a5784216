"""Tests of scripts/cifar_to_npz.py on a tiny archive in the layout of ``cifar-10-python.tar.gz``.

The archive holds ``cifar-10-batches-py/`` with five training batches of 7 images, a test batch of
5 and ``batches.meta``, pickled as Python 2 wrote them (protocol 2, ``str`` as byte strings, numpy
arrays via ``numpy.core.multiarray._reconstruct``). Pixel values encode (image, channel), so the
closed form below checks the row order, the channel order and the normalisation at once.
"""

import io
import os
import pathlib
import pickle
import stat
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from nfd.cli import main
from nfd.tasks import npz

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "cifar_to_npz.py"
D = 3072
PER_BATCH, N_TEST = 7, 5
N_TRAIN = 5 * PER_BATCH
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder (numpy._core in numpy 2)


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler, whose opcodes we can override
    """Protocol 2 as Python 2's cPickle wrote CIFAR-10: every ``str`` (and ``bytes``) as a
    (SHORT_)BINSTRING, which ``encoding="bytes"`` loads as bytes, and ``numpy.core`` globals."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _py2_pickle(value) -> bytes:
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(value)
    return buf.getvalue()


def _raw_train(r: int) -> np.ndarray:
    """Training image r (image r % 7 of batch r // 7 + 1): pixel p of channel c is
    6r + 2c + (p + r) % 2 (not linear in r, so that no image equals the mean)."""
    pixels = np.arange(1024)
    return np.concatenate([6 * r + 2 * c + (pixels + r) % 2 for c in range(3)]).astype(np.uint8)


def _raw_test(i: int) -> np.ndarray:
    return np.concatenate([210 + 6 * i + 2 * c + np.arange(1024) % 2 for c in range(3)]).astype(
        np.uint8
    )


def _labels_train(rows) -> np.ndarray:
    return (3 * np.asarray(rows)) % 10  # all 10 classes occur


def _labels_test(rows) -> np.ndarray:
    return (np.asarray(rows) + 5) % 10


def _members(**changes) -> dict[str, object]:
    """The archive's members as Python objects; ``changes`` replace (None removes) members."""
    members: dict[str, object] = {}
    for b in range(1, 6):
        rows = range(PER_BATCH * (b - 1), PER_BATCH * b)
        members[f"data_batch_{b}"] = {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"data": np.stack([_raw_train(r) for r in rows]),
            b"labels": [int(v) for v in _labels_train(rows)],
            b"filenames": [f"img_{r}.png".encode() for r in rows],
        }
    members["test_batch"] = {
        b"batch_label": b"testing batch 1 of 1",
        b"data": np.stack([_raw_test(i) for i in range(N_TEST)]),
        b"labels": [int(v) for v in _labels_test(range(N_TEST))],
    }
    members["batches.meta"] = {
        b"label_names": [n.encode() for n in NAMES],
        b"num_cases_per_batch": PER_BATCH,
        b"num_vis": D,
    }
    members.update(changes)
    return {name: value for name, value in members.items() if value is not None}


# members in the order of the real archive, which is not batch order
_TAR_ORDER = ("data_batch_4", "readme.html", "test_batch", "data_batch_3", "batches.meta")
_TAR_ORDER += ("data_batch_2", "data_batch_5", "data_batch_1")


def _write_archive(path: pathlib.Path, members: dict[str, object]) -> pathlib.Path:
    members = {"readme.html": b"<html></html>", **members}
    with tarfile.open(path, "w:gz") as tar:
        for name in [n for n in _TAR_ORDER if n in members]:
            value = members[name]
            blob = value if isinstance(value, bytes) else _py2_pickle(value)  # bytes: as given
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def _convert(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _closed_form(raw_train: np.ndarray, raw_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the training mean of each pixel, rescale each image to |x|² = D."""
    mean = raw_train.astype(np.float64).mean(axis=0)
    out = []
    for raw in (raw_train, raw_test):
        x = raw.astype(np.float64) - mean
        out.append(x * np.sqrt(D / np.sum(x**2, axis=1, keepdims=True)))
    return out[0], out[1]


def _load(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> pathlib.Path:
    return _write_archive(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", _members())


@pytest.fixture(scope="module")
def converted(archive, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("out") / "cifar10.npz"
    done = _convert(archive, out)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (
        done.stdout == f"{out}: x_train (35, 3072), y_train (35,), x_test (5, 3072), y_test (5,)\n"
    )
    return out


def test_the_tiny_archive_is_pickled_like_python_2(archive):
    with tarfile.open(archive) as tar:
        fh = tar.extractfile("cifar-10-batches-py/data_batch_1")
        assert fh is not None
        blob = fh.read()
    assert b"numpy.core.multiarray\n_reconstruct" in blob and b"_codecs" not in blob
    batch = pickle.loads(blob, encoding="bytes")
    np.testing.assert_array_equal(batch[b"data"][3], _raw_train(3))


def test_rows_channels_and_normalisation_match_the_closed_form(converted):
    arrays = _load(converted)
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
        "x_train": ((N_TRAIN, D), np.float32),
        "y_train": ((N_TRAIN,), np.int64),
        "x_test": ((N_TEST, D), np.float32),
        "y_test": ((N_TEST,), np.int64),
        "label_names": ((10,), np.dtype("<U10")),
    }
    # row 7(b-1) + i is image i of data_batch_b; its R, G, B planes are in CIFAR's order
    raw_train = np.stack([_raw_train(r) for r in range(N_TRAIN)])
    raw_test = np.stack([_raw_test(i) for i in range(N_TEST)])
    x_train, x_test = _closed_form(raw_train, raw_test)
    np.testing.assert_allclose(arrays["x_train"], x_train, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(arrays["x_test"], x_test, rtol=1e-6, atol=1e-6)
    for x in (arrays["x_train"], arrays["x_test"]):
        np.testing.assert_allclose(np.sum(x.astype(np.float64) ** 2, axis=1), D, rtol=1e-6)
    np.testing.assert_array_equal(arrays["y_train"], _labels_train(range(N_TRAIN)))
    np.testing.assert_array_equal(arrays["y_test"], _labels_test(range(N_TEST)))
    assert arrays["label_names"].tolist() == NAMES


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_the_task_loader_reads_it(converted, loss):
    arrays = _load(converted)
    task = npz(path=converted, loss=loss)
    assert (task.n_train, task.n_test, task.in_dim) == (N_TRAIN, N_TEST, D)
    np.testing.assert_array_equal(np.asarray(task.x_train), arrays["x_train"].astype(np.float64))
    if loss == "cross_entropy":
        assert task.num_classes == 10
        np.testing.assert_array_equal(np.asarray(task.y_test), np.eye(10)[arrays["y_test"]])
    else:
        assert task.num_classes == 0
        np.testing.assert_array_equal(np.asarray(task.y_train)[:, 0], arrays["y_train"])


def test_n_train_and_n_test_take_the_first_images(archive, tmp_path):
    out = tmp_path / "small.npz"
    done = _convert(archive, out, "--n-train", 10, "--n-test", 3)
    assert done.returncode == 0, done.stderr
    arrays = _load(out)
    raw_train = np.stack([_raw_train(r) for r in range(10)])  # batch 1 and 3 images of batch 2
    x_train, x_test = _closed_form(raw_train, np.stack([_raw_test(i) for i in range(3)]))
    np.testing.assert_allclose(arrays["x_train"], x_train, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(arrays["x_test"], x_test, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays["y_train"], _labels_train(range(10)))
    np.testing.assert_array_equal(arrays["y_test"], _labels_test(range(3)))


def test_force_overwrites_and_leaves_nothing_else(archive, tmp_path):
    out = tmp_path / "cifar10.npz"
    out.write_bytes(b"old")
    assert _convert(archive, out, "--n-test", 2, "--force").returncode == 0
    assert _load(out)["x_test"].shape == (2, D)
    assert sorted(os.listdir(tmp_path)) == ["cifar10.npz"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)  # the umask's


class _MakesADirectory:  # unpickling it with plain pickle.load would call os.mkdir
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def _bad_archive(tmp_path: pathlib.Path, case: str) -> pathlib.Path:
    path = tmp_path / "cifar-10-python.tar.gz"
    members = _members()
    batch2 = dict(members["data_batch_2"])  # type: ignore[arg-type]
    if case == "missing archive":
        return tmp_path / "nope.tar.gz"
    if case == "not a tar":
        path.write_bytes(b"this is not a gzipped tar file\n" * 10)
        return path
    if case == "truncated gzip":
        _write_archive(path, members)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path
    changes: dict[str, object] = {
        "missing a batch": {"data_batch_3": None},
        "missing meta": {"batches.meta": None},
        "meta without names": {"batches.meta": {b"num_vis": D}},
        "data of the wrong shape": {"data_batch_2": {**batch2, b"data": np.zeros((7, 3000), "u1")}},
        "data of the wrong dtype": {"data_batch_2": {**batch2, b"data": np.zeros((7, D))}},
        "labels of the wrong length": {"data_batch_2": {**batch2, b"labels": [0] * 6}},
        "labels out of range": {"data_batch_2": {**batch2, b"labels": [10] * 7}},
        "not a pickle": {"test_batch": b"\x80\x02garbage"},
        "a pickle that runs code": {"test_batch": _MakesADirectory(tmp_path / "pwned")},
        "identical training images": {
            f"data_batch_{b}": {**batch2, b"data": np.full((7, D), 3, "u1")} for b in range(1, 6)
        },
    }[case]
    return _write_archive(path, _members(**changes))  # type: ignore[arg-type]


ARCHIVE_CASES = [
    "missing archive",
    "not a tar",
    "truncated gzip",
    "missing a batch",
    "missing meta",
    "meta without names",
    "data of the wrong shape",
    "data of the wrong dtype",
    "labels of the wrong length",
    "labels out of range",
    "not a pickle",
    "a pickle that runs code",
    "identical training images",
]
ARG_CASES = {
    "n-train 0": ["--n-train", "0"],
    "n-train 1": ["--n-train", "1"],
    "n-train too large": ["--n-train", "36"],
    "n-test 0": ["--n-test", "0"],
    "n-test too large": ["--n-test", "6"],
    "n-train not an int": ["--n-train", "ten"],
}


def _assert_refused(done: subprocess.CompletedProcess, out_dir: pathlib.Path, before: list[str]):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert done.stdout == ""
    assert sorted(os.listdir(out_dir)) == before  # no output, no temporary file


@pytest.mark.parametrize("case", ARCHIVE_CASES)
def test_a_bad_archive_is_one_error_line_and_exit_2(tmp_path, case):
    archive = _bad_archive(tmp_path, case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _assert_refused(_convert(archive, out_dir / "cifar10.npz"), out_dir, [])
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", list(ARG_CASES))
def test_bad_sizes_are_one_error_line_and_exit_2(archive, tmp_path, case):
    _assert_refused(_convert(archive, tmp_path / "c.npz", *ARG_CASES[case]), tmp_path, [])


@pytest.mark.parametrize("case", ["missing directory", "exists", "not .npz", "a directory"])
def test_a_bad_out_is_one_error_line_and_exit_2(archive, tmp_path, case):
    out = {
        "missing directory": tmp_path / "no" / "such" / "c.npz",
        "exists": tmp_path / "c.npz",
        "not .npz": tmp_path / "c.npy",
        "a directory": tmp_path / "d.npz",
    }[case]
    if case == "exists":
        out.write_bytes(b"keep me")
    if case == "a directory":
        out.mkdir()
    before = sorted(os.listdir(tmp_path))
    _assert_refused(_convert(archive, out), tmp_path, before)
    if case == "exists":
        assert out.read_bytes() == b"keep me"


def test_nfd_run_trains_on_the_converted_file(converted, tmp_path, capsys):
    cfg = tmp_path / "cifar.toml"
    cfg.write_text(
        f'[task]\nname = "npz"\npath = "{converted}"\n[model]\nwidth = 8\ndepth = 2\n'
        '[optim]\nsteps = 2\nloss = "cross_entropy"\n'
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert (tmp_path / "run" / "result.npz").is_file()
