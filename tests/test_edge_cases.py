"""Conventions at kinks and singular points (docs/engine_api.md), on both engines, against PyTorch."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Callable

import pytest
from conftest import require_module

torch = require_module("torch")
SUBNORMAL = 1e-310


def same(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def engine_grads(engine: ModuleType, f: Callable, xs: list[float]) -> tuple[float, list[float]]:
    leaves = [engine.Value(x) for x in xs]
    out = f(*leaves)
    out.backward()
    return out.data, [v.grad for v in leaves]


def torch_grads(f: Callable, xs: list[float]) -> tuple[float, list[float]]:
    leaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = f(*leaves)
    out.backward()
    return out.item(), [0.0 if v.grad is None else v.grad.item() for v in leaves]


CASES = {
    # An infinite upstream grad times a zero local derivative contributes nothing (not nan).
    "sqrt(x**0 - 1)": (lambda x: (x**0 - 1).sqrt(), [3.0]),
    "sqrt(x**y - 1), y = 0": (lambda x, y: (x**y - 1).sqrt(), [3.0, 0.0]),
    "relu(-x) * inf-grad": (lambda x: (x.relu() - 0.0).sqrt(), [-2.0]),
    # Division and log of subnormals: g / b, not g * (1/b), which overflows.
    "1e-20 * (a / subnormal)": (lambda a, b: (a / b) * 1e-20, [1e-300, SUBNORMAL]),
    "1e-20 * log(subnormal)": (lambda b: b.log() * 1e-20, [SUBNORMAL]),
    # The exponent's gradient at base 0 is 0 (torch), for every exponent the forward allows.
    "0 ** 0": (lambda a, b: a**b, [0.0, 0.0]),
    "0 ** 0.5": (lambda a, b: a**b, [0.0, 0.5]),
    "0 ** 1": (lambda a, b: a**b, [0.0, 1.0]),
    "0 ** 2": (lambda a, b: a**b, [0.0, 2.0]),
    "0 ** 3": (lambda a, b: a**b, [0.0, 3.0]),
    "negative base, integer exponent": (lambda a, b: a**b, [-2.0, 2.0]),
    # Kinks: relu'(0) = 0, |x|'(0) = 0, relu(-0.0) = -0.0.
    "relu(0)": (lambda x: x.relu(), [0.0]),
    "relu(-0.0)": (lambda x: x.relu(), [-0.0]),
    "abs(0)": (lambda x: x.abs(), [0.0]),
    "sqrt(0)": (lambda x: x.sqrt(), [0.0]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_conventions_match_torch_on_both_engines(engine: ModuleType, name: str) -> None:
    f, xs = CASES[name]
    value, grads = engine_grads(engine, f, xs)
    t_value, t_grads = torch_grads(f, xs)
    assert same(value, t_value)
    for got, expected in zip(grads, t_grads):
        # Finite gradients within a few ulp of torch (formulas of one shape, different operation order is
        # allowed); inf, nan and signed zeros exactly.
        if math.isfinite(expected) and expected != 0.0:
            assert got == pytest.approx(expected, rel=1e-15), (grads, t_grads)
        else:
            assert same(got, expected), (grads, t_grads)


def test_a_zero_local_derivative_contributes_nothing_to_an_infinite_upstream_grad(engine: ModuleType) -> None:
    x = engine.Value(3.0)
    (x**0 - 1).sqrt().backward()  # d sqrt/du at u = 0 is inf; d(x**0)/dx is exactly 0
    assert x.grad == 0.0
    y = engine.Value(-1.0)
    z = engine.Value(0.0)
    (y.relu() * 1.0 + z).sqrt().backward()
    assert y.grad == 0.0 and z.grad == math.inf


def test_subnormal_divisors_give_finite_gradients(engine: ModuleType) -> None:
    a, b = engine.Value(1e-300), engine.Value(SUBNORMAL)
    ((a / b) * 1e-20).backward()
    assert a.grad == pytest.approx(1e-20 / SUBNORMAL, rel=1e-15) and math.isfinite(a.grad)
    c = engine.Value(SUBNORMAL)
    (c.log() * 1e-20).backward()
    assert math.isfinite(c.grad) and c.grad == pytest.approx(1e-20 / SUBNORMAL, rel=1e-15)


def test_relu_of_negative_zero_is_negative_zero_on_both_engines(engine: ModuleType) -> None:
    out = engine.Value(-0.0).relu()
    assert same(out.data, -0.0)
    assert same(torch.relu(torch.tensor(-0.0, dtype=torch.float64)).item(), -0.0)


def test_softplus_and_logsumexp_never_overflow_and_match_torch(engine: ModuleType) -> None:
    for x in (-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0):
        v = engine.Value(x)
        out = v.softplus()
        out.backward()
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        expected = torch.logaddexp(t, torch.zeros((), dtype=torch.float64))
        expected.backward()
        assert out.data == pytest.approx(expected.item(), rel=1e-15, abs=1e-300)
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-15, abs=1e-300)
    for row in ([800.0, -5.0], [0.0, 0.0], [-800.0, 800.0, 3.0], [1.0, 2.0]):
        vs = [engine.Value(x) for x in row]
        out = engine.logsumexp(vs)
        out.backward()
        t = torch.tensor(row, dtype=torch.float64, requires_grad=True)
        expected = torch.logsumexp(t, 0)
        expected.backward()
        assert out.data == pytest.approx(expected.item(), rel=1e-15)
        assert [v.grad for v in vs] == pytest.approx(t.grad.tolist(), rel=1e-15, abs=1e-300)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ([math.inf, 1.0], math.inf),
        ([-math.inf, -math.inf], -math.inf),
        ([math.nan, 1.0], math.nan),
        ([], -math.inf),
    ],
)
def test_logsumexp_of_non_finite_inputs(engine: ModuleType, row: list[float], expected: float) -> None:
    assert same(engine.logsumexp(row).data, expected)
