"""Ops written in Python (arenagrad.custom_op): the notebooks' exercise of writing an op yourself."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest

import arenagrad as ag
from arenagrad import func as F
from arenagrad.draw import trace


@ag.custom_op
def my_tanh(x: float) -> tuple[float, list[float]]:
    t = math.tanh(x)
    return t, [1 - t * t]


def _tanh_partials(x: ag.Value) -> list[ag.Value]:
    return [1 - x.tanh() ** 2]


tanh2 = ag.custom_op(
    lambda x: (math.tanh(x), [1 - math.tanh(x) ** 2]), graph_partials=_tanh_partials, name="tanh2"
)


@ag.custom_op
def hypot(x: float, y: float) -> tuple[float, list[float]]:
    r = math.hypot(x, y)
    return r, [x / r, y / r]


BIAS = 6.8813735870195432


def _neuron(activation: str) -> tuple[ag.Value, list[ag.Value]]:
    x1, x2, w1, w2, b = (ag.Value(v) for v in (2.0, 0.0, -3.0, 1.0, BIAS))
    n = x1 * w1 + x2 * w2 + b
    if activation == "builtin":
        o = n.tanh()
    elif activation == "custom":
        o = my_tanh(n)
    else:
        e = (2 * n).exp()
        o = (e - 1) / (e + 1)
    return o, [x1, x2, w1, w2, b]


def test_the_notebooks_exercise_three_ways_agree() -> None:
    """tanh written as a custom op, tanh written from exp, and the built-in: same value and grads."""
    results = {}
    for kind in ("builtin", "custom", "exp"):
        o, leaves = _neuron(kind)
        o.backward()
        results[kind] = [o.data] + [v.grad for v in leaves]
    for kind in ("custom", "exp"):
        np.testing.assert_allclose(results[kind], results["builtin"], rtol=1e-12, atol=1e-12)
    assert results["custom"] == results["builtin"]  # the same formulas: the same bits


def test_a_custom_node_is_a_node_like_any_other() -> None:
    x, y = ag.Value(3.0, label="x"), ag.Value(4.0, label="y")
    r = hypot(x, y)
    assert r.data == 5.0 and r._op == "hypot" and r._prev == {x, y}
    (r * r).backward()
    assert (x.grad, y.grad) == (2 * 5.0 * 0.6, 2 * 5.0 * 0.8)
    assert [g.data for g in ag.grad(r, [x, y])] == [0.6, 0.8]
    assert ag.tangent(r, [x, y], [1.0, 1.0])[0].data == 0.6 + 0.8
    assert ag.gradcheck(lambda a, b: hypot(a, b) * a.tanh(), [0.3, -1.2])
    nodes, _ = trace(r)
    assert r in nodes
    source = ag.draw_dot(r).source
    assert "hypot" in source
    assert hypot(2.0, ag.Value(0.0)).data == 2.0  # numbers become constants
    np.testing.assert_allclose(F.grad(lambda xs: hypot(xs[0], xs[1]))([3.0, 4.0]), [0.6, 0.8])


def test_tape_replay_calls_the_function_per_node() -> None:
    calls = []

    @ag.custom_op
    def square(x: float) -> tuple[float, list[float]]:
        calls.append(x)
        return x * x, [2 * x]

    x = ag.Value(1.0)
    y = square(x) + x
    tape = ag.Tape(y, [x])
    assert tape.forward([3.0]) == 12.0 and calls == [1.0, 3.0]
    x.grad = 0.0
    tape.backward()
    assert x.grad == 7.0
    with pytest.raises(ValueError, match="custom op"):
        tape.forward_batch(np.ones((2, 1)))
    with pytest.raises(ValueError, match="custom op"):
        tape.jvp([1.0])


def test_errors_from_the_function_propagate_unchanged() -> None:
    @ag.custom_op
    def picky(x: float) -> tuple[float, list[float]]:
        if x > 2:
            raise ZeroDivisionError("picky")
        return x, [1.0]

    x = ag.Value(1.0)
    tape = ag.Tape(picky(x) * 2, [x])
    with pytest.raises(ZeroDivisionError, match="picky"):
        tape.forward([5.0])
    assert tape.forward([1.5]) == 3.0
    with pytest.raises(ZeroDivisionError, match="picky"):
        picky(3.0)


@pytest.mark.parametrize(
    ("fn", "error", "match"),
    [
        (lambda x: x, TypeError, "must return \\(value, partials\\)"),
        (lambda x: (x, [1.0, 2.0]), ValueError, "2 partials for 1 inputs"),
        (lambda x: ("a", [1.0]), TypeError, "value of custom op"),
        (lambda x: (x, ["a"]), TypeError, "partial 0"),
        (lambda x: (x, None), TypeError, "must be a sequence"),
    ],
)
def test_bad_returns_are_clear_errors(fn: object, error: type[Exception], match: str) -> None:
    op = ag.custom_op(fn)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        op(ag.Value(1.0))


def test_bad_use_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="needs a function"):
        ag.custom_op(3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="at least one input"):
        my_tanh()
    with pytest.raises(TypeError, match="input 0"):
        my_tanh("x")  # type: ignore[arg-type]
    assert my_tanh(0.5).data == math.tanh(0.5)  # a number input is a constant
    assert my_tanh(1.0).data == math.tanh(1.0)
    bad = ag.custom_op(lambda x: (x, [1.0]), graph_partials=lambda x: [x, x])
    v = ag.Value(1.0)
    with pytest.raises(ValueError, match="one Value per input"):
        ag.grad(bad(v), [v], create_graph=True)


def test_twice_differentiable_only_with_graph_partials() -> None:
    x = ag.Value(0.3)
    with pytest.raises(RuntimeError, match="graph_partials"):
        ag.grad(my_tanh(x), [x], create_graph=True)
    (d,) = ag.grad(tanh2(x), [x], create_graph=True)
    (d2,) = ag.grad(d, [x])
    (b,) = ag.grad(x.tanh(), [x], create_graph=True)
    (b2,) = ag.grad(b, [x])
    assert d.data == b.data and d2.data == pytest.approx(b2.data, rel=1e-15)
    np.testing.assert_allclose(
        F.hessian(lambda xs: tanh2(xs[0] * xs[1]))([0.3, 0.7]),
        F.hessian(lambda xs: (xs[0] * xs[1]).tanh())([0.3, 0.7]),
        rtol=1e-14,
    )


def test_dropping_the_op_while_its_nodes_live_is_safe() -> None:
    op = ag.custom_op(lambda x: (2 * x, [2.0]), name="double")
    x = ag.Value(1.5)
    y = op(x)
    del op
    y.backward()
    assert y._op == "double" and x.grad == 2.0
    del y


def test_graph_partials_may_take_derivatives_themselves() -> None:
    """A custom op whose recorded partials are computed with arenagrad.grad (a pass inside a pass)."""

    def partials(x: ag.Value) -> list[ag.Value]:
        t = x.tanh()
        (d,) = ag.grad(t, [x], create_graph=True)
        return [d]

    th = ag.custom_op(lambda v: (math.tanh(v), [1 - math.tanh(v) ** 2]), graph_partials=partials, name="th")
    x, y = ag.Value(0.3), ag.Value(-0.8)
    out = th(x * y) + (x * y).sin() * y
    (gx, gy) = ag.grad(out, [x, y], create_graph=True)
    h_custom = [g.data for g in ag.grad([gx, gy], [x, y], grad_outputs=[1.0, 2.0])]
    ref = (x * y).tanh() + (x * y).sin() * y
    (rx, ry) = ag.grad(ref, [x, y], create_graph=True)
    assert (gx.data, gy.data) == (rx.data, ry.data)
    h_builtin = [g.data for g in ag.grad([rx, ry], [x, y], grad_outputs=[1.0, 2.0])]
    np.testing.assert_allclose(h_custom, h_builtin, rtol=1e-14)


def test_an_op_nobody_holds_is_collected_with_its_nodes() -> None:
    gc.collect()
    baseline = ag.arena_stats()["live"]
    op = ag.custom_op(lambda x: (2 * x, [2.0]), graph_partials=lambda x: [ag.Value(2.0)], name="double")
    y = op(ag.Value(1.5))
    y.backward()
    gone = weakref.ref(op)
    del op, y
    gc.collect()
    assert gone() is None  # no cycle through the native function object keeps it
    assert ag.arena_stats()["live"] == baseline


class _Scaler:
    """An op made from a bound method of an object that holds the op: a cycle through the native function."""

    def __init__(self, k: float) -> None:
        self.k = k
        self.op = ag.custom_op(self.scale, graph_partials=self.partials, name="scale")

    def scale(self, x: float) -> tuple[float, list[float]]:
        return self.k * x, [self.k]

    def partials(self, x: ag.Value) -> list[ag.Value]:
        return [ag.Value(self.k)]


def test_a_cycle_through_a_bound_method_is_collected() -> None:
    gc.collect()
    baseline = ag.arena_stats()["live"]
    scaler = _Scaler(3.0)
    x = ag.Value(2.0)
    y = scaler.op(x)
    gone = weakref.ref(scaler)
    del scaler
    gc.collect()
    # A node still uses the op: the collector must leave its function alone, and replays still call it.
    assert gone() is not None
    tape = ag.Tape(y, [x])
    assert tape.forward([5.0]) == 15.0
    (g,) = ag.grad(y, [x], create_graph=True)
    assert g.data == 3.0
    del y, tape, g
    gc.collect()
    assert gone() is None  # now nothing outside the cycle holds it
    del x
    gc.collect()
    assert ag.arena_stats()["live"] == baseline


def test_forward_mode_asks_for_a_custom_nodes_partials_once() -> None:
    calls = 0

    def partials(x: ag.Value, y: ag.Value) -> list[ag.Value]:
        nonlocal calls
        calls += 1
        return [y, x]

    times = ag.custom_op(lambda a, b: (a * b, [b, a]), graph_partials=partials, name="times")
    x, y = ag.Value(0.5), ag.Value(3.0)
    (t,) = ag.tangent(times(x, y), [x, y], [1.0, 2.0], create_graph=True)
    assert calls == 1 and t.data == 3.0 + 2.0 * 0.5
