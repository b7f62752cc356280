"""The graphs the workloads build, written once as plain micrograd-style code for every scalar engine."""

from __future__ import annotations

import random
from typing import Any

from benchmarks.engines import ScalarEngine


def chain_iterations(n_ops: int) -> int:
    # three ops (mul, add, tanh) per iteration; round so that the op count is as close to n_ops as it gets
    return max(1, round(n_ops / 3))


def chain_nodes(n_iter: int) -> int:
    return 3 * n_iter + 3  # ops plus the three leaves x0, w, c


def build_chain(eng: ScalarEngine, n_iter: int) -> tuple[Any, tuple[Any, ...]]:
    """x = tanh(x * w + c), n_iter times, with leaf constants w and c shared by every step."""
    x0 = eng.leaf(0.5)
    w = eng.leaf(0.9)
    c = eng.leaf(0.1)
    x = x0
    for _ in range(n_iter):
        x = (x * w + c).tanh()
    return x, (x0, w, c)


def wide_data(n: int, seed: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    return [rng.uniform(-1, 1) for _ in range(n)], [rng.uniform(-1, 1) for _ in range(n)]


def wide_plain_nodes(n: int) -> int:
    return 2 * n + n + (n - 1)  # leaves, products, adds


def wide_plain(ws: list[Any], xs: list[Any]) -> Any:
    """s = s + w*x over every pair: the plain Python ops a user writes without a fused primitive."""
    s = ws[0] * xs[0]
    for w, x in zip(ws[1:], xs[1:]):
        s = s + w * x
    return s


def wide_leaves(eng: ScalarEngine, wd: list[float], xd: list[float]) -> tuple[list[Any], list[Any]]:
    return [eng.leaf(v) for v in wd], [eng.leaf(v) for v in xd]
