"""Every loss in arenagrad.losses is a graph of ops that re-decide their branches: recorded once, a Tape
replays it at any inputs with eager evaluation's bits (values and gradients), scalar and batched."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest

import arenagrad as ag
from arenagrad import losses

EXTREMES = [
    [0.0, 0.0],
    [800.0, -5.0],
    [-5.0, 800.0],
    [1.0, 2.0],
    [-800.0, -800.0],
    [1e-300, -1e-300],
    [30.0, -30.0],
    [-0.0, 700.0],
]

LOSSES: dict[str, Callable[[list[Any]], Any]] = {
    "cross_entropy": lambda z: losses.cross_entropy([z], [1]),
    "cross_entropy (two samples)": lambda z: losses.cross_entropy([z, [z[1], z[0]]], [0, 1]),
    "bce_with_logits (hard labels)": lambda z: losses.bce_with_logits(z, [1.0, 0.0]),
    "bce_with_logits (soft labels)": lambda z: losses.bce_with_logits(z, [0.3, 0.9]),
    "mse_loss": lambda z: losses.mse_loss(z, [0.5, -1.0]),
    "hinge_loss": lambda z: losses.hinge_loss(z, [1, -1]),
    "l2_penalty": lambda z: losses.l2_penalty(z, 0.01),
}


def same(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def eager(loss: Callable, logits: list[float]) -> tuple[float, list[float]]:
    z = [ag.Value(v) for v in logits]
    out = loss(z)
    out.backward()
    return out.data, [v.grad for v in z]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_loss_recorded_once_replays_any_logits_exactly(name: str) -> None:
    loss = LOSSES[name]
    z = [ag.Value(0.0), ag.Value(0.0)]  # recorded at the most ordinary point
    tape = ag.Tape(loss(z), z)
    for logits in EXTREMES:
        value, grads = eager(loss, logits)
        for v in z:
            v.grad = 0.0
        assert same(tape.forward(logits), value), logits
        tape.backward()
        assert all(same(v.grad, g) for v, g in zip(z, grads)), (logits, [v.grad for v in z], grads)
        assert math.isfinite(value)
    out = tape.forward_batch(np.array(EXTREMES))
    input_grads = tape.backward_batch()
    for k, logits in enumerate(EXTREMES):
        value, grads = eager(loss, logits)
        assert same(float(out[k]), value)
        assert all(same(float(a), b) for a, b in zip(input_grads[k], grads))


def test_losses_are_fewer_nodes_than_the_python_built_graphs(engine: Any) -> None:
    """One logsumexp node per sample instead of an exp per class plus a sum, a log and a shift."""
    z = [engine.Value(float(i)) for i in range(10)]
    out = losses.cross_entropy([z], [3])
    assert out._op == "/" and _count_nodes(out) <= 5
    b = losses.bce_with_logits([z[0]], [1.0])
    assert _count_nodes(b) <= 4


def _count_nodes(root: Any) -> int:
    seen, stack = {root}, [root]
    while stack:
        for child in stack.pop()._prev:
            if child._op and child not in seen:
                seen.add(child)
                stack.append(child)
    return len(seen)
