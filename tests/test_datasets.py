import sys

import numpy as np
import pytest

from arenagrad import datasets

GENERATORS = {"moons": datasets.moons, "blobs": datasets.blobs, "circles": datasets.circles}


@pytest.fixture(params=["sklearn", "numpy"])
def backend(request, monkeypatch):
    """Runs a test once with scikit-learn and once with the numpy fallback."""
    if request.param == "numpy":
        # A None entry makes any import of the module fail, as on a machine without scikit-learn.
        monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    return request.param


def _rows_sorted(X):
    return X[np.lexsort(X.T[::-1])]


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("n_samples", [2, 7, 100])
def test_shapes_dtypes_and_class_sizes(backend, name, n_samples):
    X, y = GENERATORS[name](n_samples=n_samples, seed=0)
    assert X.shape == (n_samples, 2) and X.dtype == np.float64
    assert y.shape == (n_samples,) and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}
    big, small = n_samples - n_samples // 2, n_samples // 2
    # scikit-learn's split, which the fallback follows: the odd sample is class 0 in blobs, else class 1.
    expected_ones = small if name == "blobs" else big
    assert int(y.sum()) == expected_ones
    assert np.isfinite(X).all()


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_seed_reproduces_and_varies(backend, name):
    X1, y1 = GENERATORS[name](n_samples=50, seed=3)
    X2, y2 = GENERATORS[name](n_samples=50, seed=3)
    X3, _ = GENERATORS[name](n_samples=50, seed=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_forcing_the_fallback_changes_the_random_stream(monkeypatch):
    with_sklearn = datasets.moons(n_samples=40, seed=5)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    fallback = datasets.moons(n_samples=40, seed=5)
    assert not np.array_equal(with_sklearn[0], fallback[0])


def test_noiseless_moons_lie_on_their_half_circles(backend):
    X, y = datasets.moons(n_samples=61, noise=0.0, seed=1)
    top, bottom = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(top[:, 0], top[:, 1]), 1.0)
    assert (top[:, 1] >= -1e-12).all()
    np.testing.assert_allclose(np.hypot(bottom[:, 0] - 1.0, bottom[:, 1] - 0.5), 1.0)
    assert (bottom[:, 1] <= 0.5 + 1e-12).all()


@pytest.mark.parametrize("factor", [0.0, 0.3, 0.8])
def test_noiseless_circles_have_the_two_radii(backend, factor):
    X, y = datasets.circles(n_samples=40, noise=0.0, seed=2, factor=factor)
    radii = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radii[y == 0], 1.0)
    np.testing.assert_allclose(radii[y == 1], factor, atol=1e-12)


def test_blobs_are_centred_with_the_requested_spread(backend):
    X, y = datasets.blobs(n_samples=4000, noise=0.5, seed=7)
    for label, centre in [(0, [-2.0, -2.0]), (1, [2.0, 2.0])]:
        points = X[y == label]
        np.testing.assert_allclose(points.mean(axis=0), centre, atol=0.05)
        np.testing.assert_allclose(points.std(axis=0), 0.5, atol=0.03)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_fallback_draws_the_same_shapes_as_sklearn(monkeypatch, name):
    X_sk, y_sk = GENERATORS[name](n_samples=31, noise=0.0, seed=0)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    X_np, y_np = GENERATORS[name](n_samples=31, noise=0.0, seed=0)
    for label in (0, 1):
        np.testing.assert_allclose(
            _rows_sorted(X_np[y_np == label]), _rows_sorted(X_sk[y_sk == label]), atol=1e-12
        )


def test_noise_moves_points_off_the_curves(backend):
    X, y = datasets.circles(n_samples=200, noise=0.1, seed=0)
    spread = np.hypot(X[y == 0, 0], X[y == 0, 1]).std()
    assert 0.05 < spread < 0.2


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_load_dispatches_by_name(name):
    X, y = datasets.load(name, n_samples=20, noise=0.2, seed=9)
    X_direct, y_direct = GENERATORS[name](n_samples=20, noise=0.2, seed=9)
    np.testing.assert_array_equal(X, X_direct)
    np.testing.assert_array_equal(y, y_direct)


def test_load_without_noise_keeps_the_generator_default():
    X, _ = datasets.load("blobs", n_samples=20, seed=1)
    np.testing.assert_array_equal(X, datasets.blobs(n_samples=20, seed=1)[0])
    assert datasets.NAMES == ("moons", "blobs", "circles")


@pytest.mark.parametrize("name", ["spirals", "Moons", "", None, 3])
def test_load_rejects_unknown_names(name):
    with pytest.raises(ValueError, match=r"unknown data set .*moons, blobs, circles"):
        datasets.load(name)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_samples": 0}, ValueError, "n_samples must be at least 2"),
        ({"n_samples": 1}, ValueError, "n_samples must be at least 2"),
        ({"n_samples": -5}, ValueError, "n_samples must be at least 2"),
        ({"n_samples": 2.5}, ValueError, "n_samples must be a whole number"),
        ({"n_samples": "10"}, TypeError, "n_samples must be an integer"),
        ({"n_samples": True}, TypeError, "n_samples must be an integer"),
        ({"noise": -0.1}, ValueError, "noise must be a finite number >= 0"),
        ({"noise": float("nan")}, ValueError, "noise must be a finite number >= 0"),
        ({"noise": None}, TypeError, "noise must be a real number"),
        ({"seed": -1}, ValueError, "seed must be in"),
        ({"seed": 2**32}, ValueError, "seed must be in"),
        ({"seed": 1.5}, TypeError, "seed must be None or an integer"),
    ],
)
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_bad_arguments_raise_clear_errors(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        GENERATORS[name](**kwargs)


@pytest.mark.parametrize("factor", [1.0, 1.5, -0.2])
def test_circles_rejects_bad_factor(factor):
    with pytest.raises(ValueError, match="factor must be"):
        datasets.circles(factor=factor)


def test_numpy_integers_are_accepted_as_sizes_and_seeds():
    X, _ = datasets.moons(n_samples=np.int64(10), seed=np.uint32(3))
    assert X.shape == (10, 2)
