"""Small two-class 2-D toy data sets for the demos: moons, blobs and circles.

Each generator returns ``(X, y)``: ``X`` a float64 array of shape ``(n_samples, 2)``, ``y`` an int64 array of
labels in ``{0, 1}`` (both classes always present). The data come from scikit-learn when it is installed (the
``demo`` extra); without it a small numpy implementation of the same generators is used. Both are reproducible
for a given ``seed``, but they draw different random numbers: the same seed gives the same data only with the
same backend.
"""

from __future__ import annotations

import importlib
import math
import numbers
from typing import Any, Callable

import numpy as np

__all__ = ["NAMES", "blobs", "circles", "load", "moons"]

# Fixed rather than random centres (scikit-learn's default) so that a seed never yields two overlapping blobs.
_BLOB_CENTERS = np.array([[-2.0, -2.0], [2.0, 2.0]])
_MAX_SEED = 2**32 - 1  # scikit-learn's limit for an integer random_state


def _check_n_samples(n_samples: Any) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Real):
        raise TypeError(f"n_samples must be an integer, got {type(n_samples).__name__} {n_samples!r}")
    if not isinstance(n_samples, numbers.Integral):
        raise ValueError(f"n_samples must be a whole number of samples, got {n_samples!r}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2 so that both classes appear, got {n_samples}")
    return int(n_samples)


def _check_nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _check_factor(factor: Any) -> float:
    factor = _check_nonnegative("factor", factor)
    if factor >= 1:
        raise ValueError(f"factor must be in [0, 1) (inner radius over outer radius), got {factor}")
    return factor


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None or an integer, got {type(seed).__name__} {seed!r}")
    value = int(seed)
    if not 0 <= value <= _MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**32 - 1], got {seed}")
    return value


def _sklearn_datasets() -> Any:
    """scikit-learn's datasets module, or None when scikit-learn is not installed."""
    try:
        return importlib.import_module("sklearn.datasets")
    except ImportError:
        return None


def _finish(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64)


def _split(n_samples: int) -> tuple[int, int]:
    # scikit-learn's split: the odd sample goes to the first class for blobs, to the second for moons/circles.
    return n_samples // 2, n_samples - n_samples // 2


def _shuffle_and_jitter(
    X: np.ndarray, y: np.ndarray, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    if noise > 0:
        X = X + rng.normal(scale=noise, size=X.shape)
    return X, y


def _numpy_moons(n_samples: int, noise: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    n_out, n_in = _split(n_samples)
    t_out = np.linspace(0.0, math.pi, n_out)
    t_in = np.linspace(0.0, math.pi, n_in)
    outer = np.column_stack([np.cos(t_out), np.sin(t_out)])
    inner = np.column_stack([1.0 - np.cos(t_in), 0.5 - np.sin(t_in)])
    X = np.vstack([outer, inner])
    y = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    return _shuffle_and_jitter(X, y, noise, np.random.default_rng(seed))


def _numpy_circles(
    n_samples: int, noise: float, seed: int | None, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    n_out, n_in = _split(n_samples)
    t_out = np.linspace(0.0, 2.0 * math.pi, n_out, endpoint=False)
    t_in = np.linspace(0.0, 2.0 * math.pi, n_in, endpoint=False)
    outer = np.column_stack([np.cos(t_out), np.sin(t_out)])
    inner = factor * np.column_stack([np.cos(t_in), np.sin(t_in)])
    X = np.vstack([outer, inner])
    y = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    return _shuffle_and_jitter(X, y, noise, np.random.default_rng(seed))


def _numpy_blobs(n_samples: int, noise: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    n_second, n_first = _split(n_samples)
    y = np.concatenate([np.zeros(n_first, dtype=np.int64), np.ones(n_second, dtype=np.int64)])
    X = _BLOB_CENTERS[y]
    return _shuffle_and_jitter(X, y, noise, np.random.default_rng(seed))


def moons(n_samples: int = 100, noise: float = 0.1, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (class 0 on top, class 1 below), with Gaussian noise of std ``noise``."""
    n_samples = _check_n_samples(n_samples)
    noise = _check_nonnegative("noise", noise)
    seed = _check_seed(seed)
    sk = _sklearn_datasets()
    if sk is None:
        return _finish(*_numpy_moons(n_samples, noise, seed))
    return _finish(*sk.make_moons(n_samples=n_samples, noise=noise, random_state=seed))


def circles(
    n_samples: int = 100, noise: float = 0.1, seed: int | None = None, factor: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """A unit circle (class 0) around one of radius ``factor`` (class 1), with Gaussian noise ``noise``."""
    n_samples = _check_n_samples(n_samples)
    noise = _check_nonnegative("noise", noise)
    seed = _check_seed(seed)
    factor = _check_factor(factor)
    sk = _sklearn_datasets()
    if sk is None:
        return _finish(*_numpy_circles(n_samples, noise, seed, factor))
    return _finish(*sk.make_circles(n_samples=n_samples, noise=noise, random_state=seed, factor=factor))


def blobs(n_samples: int = 100, noise: float = 1.0, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two isotropic Gaussian blobs of std ``noise`` centred on (-2, -2) (class 0) and (2, 2) (class 1)."""
    n_samples = _check_n_samples(n_samples)
    noise = _check_nonnegative("noise", noise)
    seed = _check_seed(seed)
    sk = _sklearn_datasets()
    if sk is None:
        return _finish(*_numpy_blobs(n_samples, noise, seed))
    X, y = sk.make_blobs(n_samples=n_samples, centers=_BLOB_CENTERS, cluster_std=noise, random_state=seed)
    return _finish(X, y)


_GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "moons": moons,
    "blobs": blobs,
    "circles": circles,
}
NAMES: tuple[str, ...] = tuple(_GENERATORS)


def load(
    name: str, n_samples: int = 100, noise: float | None = None, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The data set called ``name`` (one of :data:`NAMES`); ``noise=None`` keeps that generator's default."""
    generator = _GENERATORS.get(name) if isinstance(name, str) else None
    if generator is None:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    if noise is None:
        return generator(n_samples=n_samples, seed=seed)
    return generator(n_samples=n_samples, noise=noise, seed=seed)
