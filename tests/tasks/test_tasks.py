"""Tests of `nfd.tasks`: shapes, normalisation, seeding and statistics against references."""

import math
import random
import socket
import sys
import urllib.request

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from sklearn.datasets import load_digits

from nfd.config._tasks import make_task as build_task
from nfd.tasks import Task, digits, mnist1d, npz, teacher_student


def _gauss_expectation(f, order: int = 101) -> float:
    """E f(z) for z ~ N(0, 1) by Gauss-Hermite (probabilists') quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    return float(np.sum(weights * f(nodes)) / math.sqrt(2 * math.pi))


def _centered_unit(raw_train: np.ndarray, raw_test: np.ndarray):
    """Reference preprocessing: subtract the train mean of each pixel, rescale rows to |x|² = D."""
    mean = raw_train.mean(axis=0)
    d = raw_train.shape[1]
    out = []
    for x in (raw_train - mean, raw_test - mean):
        out.append(x * np.sqrt(d / np.sum(x**2, axis=1, keepdims=True)))
    return out


# ----------------------------------------------------------------------------------- Task


def test_task_properties_and_empty_test_set():
    task = Task(
        name="t",
        x_train=jnp.zeros((5, 3)),
        y_train=jnp.zeros((5, 2)),
        x_test=jnp.zeros((0, 3)),
        y_test=jnp.zeros((0, 2)),
        num_classes=2,
    )
    assert (task.n_train, task.n_test, task.in_dim, task.out_dim) == (5, 0, 3, 2)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((5,), (5, 2), (0, 3), (0, 2)), "x_train must be 2-D"),
        (((5, 3), (4, 2), (0, 3), (0, 2)), "same number of rows P"),
        (((5, 3), (5, 2), (2, 3), (1, 2)), "same number of rows Q"),
        (((5, 3), (5, 2), (2, 4), (2, 2)), "input dimension D=3"),
        (((5, 3), (5, 2), (2, 3), (2, 1)), "output dimension C=2"),
    ],
)
def test_task_rejects_bad_shapes(shapes, match):
    xtr, ytr, xte, yte = (jnp.zeros(s) for s in shapes)
    # Under the jaxtyping import hook (`--jaxtyping-packages=nfd`) the field annotations catch these
    # first and raise a TypeError; without it, __check_init__ raises the ValueError below.
    with pytest.raises((ValueError, TypeError)) as info:
        Task(name="t", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, num_classes=0)
    if isinstance(info.value, ValueError):
        assert match in str(info.value)


@pytest.mark.parametrize("num_classes", [1, 3, -1])
def test_task_rejects_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        Task(
            name="t",
            x_train=jnp.zeros((5, 3)),
            y_train=jnp.zeros((5, 2)),
            x_test=jnp.zeros((0, 3)),
            y_test=jnp.zeros((0, 2)),
            num_classes=num_classes,
        )


# One teacher_student configuration for most tests: each new shape costs a compile.
_TS = dict(n_train=30, n_test=10, in_dim=6, out_dim=2, teacher_width=16, noise=0.2)


def test_arrays_use_default_float_dtype(tmp_path):
    assert teacher_student(**_TS, key=jr.key(0)).x_train.dtype == jnp.float64
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.ones((3, 2)), y_train=np.array([0, 1, 1]))
    assert npz(path=path, loss="cross_entropy").y_train.dtype == jnp.float64
    with jax.enable_x64(False):
        task = npz(path=path, loss="cross_entropy")
        assert task.x_train.dtype == task.y_train.dtype == task.x_test.dtype == jnp.float32


# ------------------------------------------------------------------------ teacher_student


def test_teacher_student_shapes_and_unit_norm():
    task = teacher_student(**_TS, key=jr.key(1))
    assert task.x_train.shape == (30, 6) and task.y_train.shape == (30, 2)
    assert task.x_test.shape == (10, 6) and task.y_test.shape == (10, 2)
    assert task.num_classes == 0 and task.name == "teacher_student"
    for x in (task.x_train, task.x_test):
        np.testing.assert_allclose(np.sum(np.asarray(x) ** 2, axis=1), 6.0, rtol=0, atol=1e-12)


def test_teacher_student_seeding():
    a = teacher_student(**_TS, key=jr.key(3))
    assert bool(eqx.tree_equal(a, teacher_student(**_TS, key=jr.key(3))))
    b = teacher_student(**_TS, key=jr.key(4))
    assert not np.allclose(a.x_train, b.x_train)
    assert not np.allclose(a.y_train, b.y_train)


def test_teacher_student_matches_numpy_teacher():
    n_train, n_test, d, c, noise = _TS["n_train"], _TS["n_test"], _TS["in_dim"], _TS["out_dim"], 0.2
    m = _TS["teacher_width"]
    key = jr.key(5)
    task = teacher_student(**_TS, key=key)
    # The documented split, then the teacher written out in numpy, one unit at a time.
    x_key, w_key, a_key, noise_key = jr.split(key, 4)
    draw = jax.jit(  # one compile for the four draws
        lambda: (
            jr.normal(x_key, (n_train + n_test, d)),
            jr.normal(w_key, (m, d)),
            jr.normal(a_key, (m, c)),
            jr.normal(noise_key, (n_train + n_test, c)),
        )
    )
    x, w, a, eps = (np.asarray(v) for v in draw())
    x = x / np.sqrt(np.sum(x**2, axis=1, keepdims=True) / d)
    y = sum(np.outer(np.tanh(x @ w[j] / np.sqrt(d)), a[j]) for j in range(m)) / np.sqrt(m)
    y = y + noise * eps
    np.testing.assert_allclose(task.x_train, x[:n_train], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(task.x_test, x[n_train:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(task.y_train, y[:n_train], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(task.y_test, y[n_train:], rtol=1e-12, atol=1e-12)


def test_teacher_student_target_moments():
    # One point from each of E independent tasks: i.i.d. targets with E y = 0 and
    # E y² = E tanh(z)² + noise² (z ~ N(0, 1), because |x|² = D makes w·x/√D exactly N(0, 1)).
    num, noise = 20_000, 0.3
    keys = jr.split(jr.key(6), num)
    tasks = jax.vmap(
        lambda k: teacher_student(
            n_train=1, n_test=0, in_dim=8, teacher_width=4, noise=noise, key=k
        )
    )(keys)
    assert tasks.x_test.shape == (num, 0, 8) and tasks.y_test.shape == (num, 0, 1)  # Q = 0
    y = np.asarray(tasks.y_train).reshape(num)
    assert abs(y.mean()) / (y.std() / np.sqrt(num)) < 4
    expected = _gauss_expectation(lambda z: np.tanh(z) ** 2) + noise**2
    y2 = y**2
    assert abs(y2.mean() - expected) / (y2.std() / np.sqrt(num)) < 4


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_train=0), "task.n_train: must be >= 1"),
        (dict(n_test=-1), "task.n_test: must be >= 0"),
        (dict(in_dim=0), "task.in_dim"),
        (dict(out_dim=0), "task.out_dim"),
        (dict(noise=-0.1), "task.noise"),
    ],
)
def test_teacher_student_rejects_bad_sizes(kw, match):
    args = dict(n_train=4, n_test=2, in_dim=3, out_dim=1, noise=0.0) | kw
    with pytest.raises(ValueError, match=match):
        teacher_student(**args, key=jr.key(0))


# --------------------------------------------------------------------------------- digits


def test_digits_split_preprocessing_and_labels():
    n_train, n_test, key = 500, 200, jr.key(7)
    task = digits(n_train=n_train, n_test=n_test, key=key)
    assert task.x_train.shape == (n_train, 64) and task.y_train.shape == (n_train, 10)
    assert task.x_test.shape == (n_test, 64) and task.y_test.shape == (n_test, 10)
    assert task.num_classes == 10 and task.name == "digits"
    for y in (task.y_train, task.y_test):
        y = np.asarray(y)
        assert set(np.unique(y)) == {0.0, 1.0}
        np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    assert set(np.argmax(task.y_train, axis=1).tolist()) == set(range(10))
    # Reference from the raw sklearn data and the documented split.
    data = load_digits()
    perm = np.asarray(jr.permutation(key, 1797))
    train, test = perm[:n_train], perm[n_train : n_train + n_test]
    assert not set(train.tolist()) & set(test.tolist())
    x_train, x_test = _centered_unit(data.data[train], data.data[test])
    np.testing.assert_allclose(task.x_train, x_train, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(task.x_test, x_test, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.argmax(task.y_train, axis=1), data.target[train])
    np.testing.assert_array_equal(np.argmax(task.y_test, axis=1), data.target[test])
    for x in (task.x_train, task.x_test):
        np.testing.assert_allclose(np.sum(np.asarray(x) ** 2, axis=1), 64.0, rtol=0, atol=1e-12)


def test_digits_seeding():
    a = digits(n_train=100, n_test=50, key=jr.key(8))
    assert bool(eqx.tree_equal(a, digits(n_train=100, n_test=50, key=jr.key(8))))
    b = digits(n_train=100, n_test=50, key=jr.key(9))
    assert not np.allclose(a.x_train, b.x_train)


def test_digits_uses_every_image():
    task = digits(n_train=1797, n_test=0, key=jr.key(10))
    assert task.n_train == 1797 and task.n_test == 0


def test_digits_too_many_images():
    with pytest.raises(ValueError, match=r"^task\.n_train: digits has 1797 images.*task\.n_test"):
        digits(n_train=1500, n_test=298, key=jr.key(0))


# -------------------------------------------------------------------------------- mnist1d


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    requests = pytest.importorskip("requests")
    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)


def test_mnist1d_offline_shapes_and_preprocessing(monkeypatch, tmp_path):
    mnist1d_data = pytest.importorskip("mnist1d.data")
    _no_network(monkeypatch)
    monkeypatch.chdir(tmp_path)
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    n_train, n_test, key = 200, 45, jr.key(11)
    task = mnist1d(n_train=n_train, n_test=n_test, key=key)
    assert list(tmp_path.iterdir()) == []  # nothing cached or written
    after = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(u, v) for u, v in zip(np_state, after, strict=True))
    assert random.getstate() == py_state
    assert task.x_train.shape == (n_train, 40) and task.y_train.shape == (n_train, 10)
    assert task.x_test.shape == (n_test, 40) and task.y_test.shape == (n_test, 10)
    assert task.num_classes == 10 and task.name == "mnist1d"
    np.testing.assert_array_equal(np.asarray(task.y_train).sum(axis=1), 1.0)
    assert set(np.argmax(task.y_train, axis=1).tolist()) == set(range(10))
    for x in (task.x_train, task.x_test):
        np.testing.assert_allclose(np.sum(np.asarray(x) ** 2, axis=1), 40.0, rtol=0, atol=1e-12)
    # Reference: the package's own generator with the documented seed and size.
    args = mnist1d_data.get_dataset_args()
    args.num_samples, args.train_split = 250, 1.0
    args.seed = int(jr.randint(key, (), 0, 2**31 - 1))
    ref = mnist1d_data.make_dataset(args)
    np.random.set_state(np_state)  # noqa: NPY002
    random.setstate(py_state)
    x_train, x_test = _centered_unit(ref["x"][:n_train], ref["x"][n_train : n_train + n_test])
    np.testing.assert_allclose(task.x_train, x_train, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(task.x_test, x_test, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(
        np.argmax(task.y_test, axis=1), ref["y"][n_train : n_train + n_test]
    )


def test_mnist1d_seeding():
    pytest.importorskip("mnist1d")
    a = mnist1d(n_train=30, n_test=10, key=jr.key(12))
    assert bool(eqx.tree_equal(a, mnist1d(n_train=30, n_test=10, key=jr.key(12))))
    assert not np.allclose(a.x_train, mnist1d(n_train=30, n_test=10, key=jr.key(13)).x_train)


def test_mnist1d_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match="pip install mnist1d"):
        mnist1d(n_train=10, n_test=10, key=jr.key(0))


# ------------------------------------------------------------------------------------ npz


def _save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_npz_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.normal(size=(12, 5)),
        y_train=rng.normal(size=(12, 3)),
        x_test=rng.normal(size=(4, 5)),
        y_test=rng.normal(size=(4, 3)),
    )
    task = npz(path=_save(tmp_path, **arrays), loss="mse")
    assert task.num_classes == 0 and task.name == "npz"
    for name, value in arrays.items():
        np.testing.assert_array_equal(np.asarray(getattr(task, name)), value)


def test_npz_mse_vector_targets_without_test_set(tmp_path):
    x, y = np.arange(6.0).reshape(3, 2), np.array([1.5, -2.0, 0.25])
    task = npz(path=_save(tmp_path, x_train=x, y_train=y), loss="mse")
    np.testing.assert_array_equal(np.asarray(task.y_train), y[:, None])
    assert task.x_test.shape == (0, 2) and task.y_test.shape == (0, 1)


def test_npz_cross_entropy_labels_one_hot(tmp_path):
    x = np.ones((4, 2))
    arrays = dict(x_train=x, y_train=np.array([0, 2, 1, 2]), x_test=x[:2], y_test=np.array([4, 0]))
    task = npz(path=_save(tmp_path, **arrays), loss="cross_entropy")
    assert task.num_classes == 5  # 1 + the largest label over train and test
    np.testing.assert_array_equal(np.asarray(task.y_train), np.eye(5)[[0, 2, 1, 2]])
    np.testing.assert_array_equal(np.asarray(task.y_test), np.eye(5)[[4, 0]])


def test_npz_cross_entropy_probabilities_as_given(tmp_path):
    probs = np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])
    task = npz(path=_save(tmp_path, x_train=np.ones((3, 1)), y_train=probs), loss="cross_entropy")
    assert task.num_classes == 2
    np.testing.assert_array_equal(np.asarray(task.y_train), probs)


_X, _Y = np.ones((4, 3)), np.ones(4)


@pytest.mark.parametrize(
    "arrays, loss, match",
    [
        (dict(y_train=_Y), "mse", r"missing array 'x_train' \(the file has: y_train\)"),
        (dict(x_train=_X), "mse", r"missing array 'y_train' \(the file has: x_train\)"),
        (dict(x_train=_Y, y_train=_Y), "mse", r"x_train must be 2-D \(P, D\), got shape \(4,\)"),
        (dict(x_train=_X, y_train=np.ones((4, 1, 1))), "mse", r"y_train must be \(P,\) or"),
        (dict(x_train=_X, y_train=np.ones(5)), "mse", "x_train has 4 rows but y_train has 5"),
        (dict(x_train=_X * np.nan, y_train=_Y), "mse", "x_train has 12 non-finite values"),
        (
            dict(x_train=_X, y_train=_Y, x_test=_X, y_test=_Y * np.inf),
            "mse",
            "y_test has 4 non-finite",
        ),
        (dict(x_train=_X, y_train=_Y, x_test=_X), "mse", "x_test is given without y_test"),
        (dict(x_train=_X, y_train=_Y, y_test=_Y), "mse", "y_test is given without x_test"),
        (
            dict(x_train=_X, y_train=_Y, x_test=np.ones((2, 4)), y_test=_Y[:2]),
            "mse",
            "x_test must be 2-D",
        ),
        (
            dict(x_train=_X, y_train=_Y, x_test=_X[:2], y_test=_Y[:3]),
            "mse",
            "x_test has 2 rows but y_test has 3",
        ),
        (
            dict(x_train=_X, y_train=_Y, x_test=_X, y_test=np.ones((4, 1))),
            "mse",
            "y_test must be shaped like y_train",
        ),
        (dict(x_train=_X, y_train=np.array(["a"] * 4)), "mse", "real number array"),
        (dict(x_train=_X, y_train=np.array([0, 1, -1, 1])), "cross_entropy", "integers >= 0"),
        (dict(x_train=_X, y_train=np.array([0, 1.5, 1, 1])), "cross_entropy", "integers >= 0"),
        (dict(x_train=_X, y_train=np.zeros(4, int)), "cross_entropy", "at least 2 classes"),
        (
            dict(x_train=_X, y_train=np.full((4, 2), 0.6)),
            "cross_entropy",
            "each row must sum to 1",
        ),
    ],
)
def test_npz_errors(tmp_path, arrays, loss, match):
    with pytest.raises(ValueError, match=r"^task\.path: .*" + match):
        npz(path=_save(tmp_path, **arrays), loss=loss)


def test_npz_file_not_found(tmp_path):
    with pytest.raises(ValueError, match=r"^task\.path: file not found: .*nope\.npz"):
        npz(path=tmp_path / "nope.npz", loss="mse")


def test_npz_unreadable_file(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"^task\.path: cannot read"):
        npz(path=path, loss="mse")


def test_npz_unknown_loss(tmp_path):
    with pytest.raises(ValueError, match=r"^optim\.loss: unknown loss 'hinge'"):
        npz(path=_save(tmp_path, x_train=_X, y_train=_Y), loss="hinge")


# ----------------------------------------------------------------------------- build_task

_BUILD = _TS | dict(path=None, loss="mse")


def test_build_task_dispatches(tmp_path):
    key = jr.key(14)
    built = build_task("teacher_student", **_BUILD, key=key)
    assert bool(eqx.tree_equal(built, teacher_student(**_TS, key=key)))
    built = build_task("digits", **_BUILD, key=key)
    assert bool(eqx.tree_equal(built, digits(n_train=30, n_test=10, key=key)))
    path = _save(tmp_path, x_train=_X, y_train=_Y)
    built = build_task("npz", **(_BUILD | dict(path=path)), key=key)
    assert bool(eqx.tree_equal(built, npz(path=path, loss="mse")))


def test_build_task_unknown_name():
    msg = "task.name: unknown task 'x' (allowed: digits, mnist1d, npz, teacher_student)"
    with pytest.raises(ValueError) as info:
        build_task("x", **_BUILD, key=jr.key(0))
    assert str(info.value).startswith(msg)


def test_build_task_npz_needs_path():
    with pytest.raises(ValueError, match=r"^task\.path: required"):
        build_task("npz", **_BUILD, key=jr.key(0))


def test_build_task_regression_with_cross_entropy():
    with pytest.raises(
        ValueError, match=r"^optim\.loss: 'cross_entropy' needs a classification task"
    ):
        build_task("teacher_student", **(_BUILD | dict(loss="cross_entropy")), key=jr.key(0))
