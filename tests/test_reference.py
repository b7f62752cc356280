"""The engine API contract (docs/engine_api.md) on hand-checked numbers, for both engines."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest
from micrograd.engine import Value as MicrogradValue

inf, nan = math.inf, math.nan
LN2, LN3, SQRT3 = math.log(2.0), math.log(3.0), math.sqrt(3.0)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def assert_engine_works(E: ModuleType) -> None:
    """A small graph with exactly representable results, to show that an earlier error left no damage."""
    x, y = E.Value(3.0), E.Value(-2.0)
    z = E.sum([x * y + x / y, x])
    z.backward()
    assert (z.data, x.grad, y.grad) == (-4.5, -1.5, 2.25)


# -- construction and attributes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [(2, 2.0), (-1.5, -1.5), (True, 1.0), (np.float64(0.5), 0.5), (np.float32(0.25), 0.25),
     (np.int64(7), 7.0), (Fraction(1, 4), 0.25), (inf, inf)],
    ids=["int", "float", "bool", "np.float64", "np.float32", "np.int64", "Fraction", "inf"],
)  # fmt: skip
def test_leaf_from_any_real_number(engine: ModuleType, data: Any, expected: float) -> None:
    v = engine.Value(data)
    assert type(v.data) is float and v.data == expected
    assert type(v.grad) is float and v.grad == 0.0
    assert (v.label, v._op, v._prev) == ("", "", set())


def test_leaf_label(engine: ModuleType) -> None:
    assert engine.Value(1.0, "w").label == "w"
    assert engine.Value(1.0, label="b").label == "b"


def test_attributes_are_settable(engine: ModuleType) -> None:
    v = engine.Value(1.0, "a")
    v.data, v.grad, v.label = 4, np.float32(0.5), "w"
    assert type(v.data) is float and type(v.grad) is float
    assert (v.data, v.grad, v.label) == (4.0, 0.5, "w")


@pytest.mark.parametrize(
    ("attribute", "bad"), [("data", "x"), ("data", None), ("grad", None), ("grad", 1j), ("label", 3)]
)
def test_attribute_rejects_wrong_type(engine: ModuleType, attribute: str, bad: Any) -> None:
    v = engine.Value(1.0, "a")
    with pytest.raises(TypeError):
        setattr(v, attribute, bad)
    assert (v.data, v.grad, v.label) == (1.0, 0.0, "a")


def test_op_results_have_no_label(engine: ModuleType) -> None:
    assert (engine.Value(1.0, "a") + engine.Value(2.0, "b")).label == ""


def test_repr(engine: ModuleType) -> None:
    assert repr(engine.Value(2.0)) == "Value(data=2.0, grad=0.0)"
    v = engine.Value(2.0, "a")
    assert repr(v) == "Value(data=2.0, grad=0.0, label='a')"
    v.backward()
    assert repr(v) == "Value(data=2.0, grad=1.0, label='a')"


def test_hash_and_equality_by_identity(engine: ModuleType) -> None:
    a, b = engine.Value(1.0), engine.Value(1.0)
    assert a == a and a != b and not (a == 1.0)
    assert hash(a) == hash(a) and len({a, b}) == 2
    assert {a: "a", b: "b"}[b] == "b"


# -- every op: value, _op, _prev and gradient ---------------------------------------------------------------

UNARY = [
    # (id, op, input, value, derivative, _op)
    ("neg", lambda a: -a, 3.0, -3.0, -1.0, "neg"),
    ("pow2", lambda a: a**2, 3.0, 9.0, 6.0, "**2"),
    ("pow2.0", lambda a: a**2.0, 3.0, 9.0, 6.0, "**2"),
    ("pow_np", lambda a: a ** np.float64(3.0), 2.0, 8.0, 12.0, "**3"),
    ("pow0.5", lambda a: a**0.5, 4.0, 2.0, 0.25, "**0.5"),
    ("pow-1", lambda a: a**-1, 2.0, 0.5, -0.25, "**-1"),
    ("pow-0.5", lambda a: a**-0.5, 4.0, 0.5, -0.0625, "**-0.5"),
    ("pow0", lambda a: a**0, 3.0, 1.0, 0.0, "**0"),
    ("pow_negative_base", lambda a: a**3, -2.0, -8.0, 12.0, "**3"),
    ("exp", lambda a: a.exp(), 1.0, math.e, math.e, "exp"),
    ("log", lambda a: a.log(), 2.0, LN2, 0.5, "log"),
    ("sqrt", lambda a: a.sqrt(), 4.0, 2.0, 0.25, "sqrt"),
    ("tanh", lambda a: a.tanh(), LN3, 0.8, 0.36, "tanh"),
    ("sigmoid0", lambda a: a.sigmoid(), 0.0, 0.5, 0.25, "sigmoid"),
    ("sigmoid_pos", lambda a: a.sigmoid(), LN3, 0.75, 0.1875, "sigmoid"),
    ("sigmoid_neg", lambda a: a.sigmoid(), -LN3, 0.25, 0.1875, "sigmoid"),
    ("sigmoid_far_neg", lambda a: a.sigmoid(), -1000.0, 0.0, 0.0, "sigmoid"),
    ("sigmoid_far_pos", lambda a: a.sigmoid(), 1000.0, 1.0, 0.0, "sigmoid"),
    ("relu_pos", lambda a: a.relu(), 3.0, 3.0, 1.0, "ReLU"),
    ("relu_neg", lambda a: a.relu(), -2.0, 0.0, 0.0, "ReLU"),
    ("relu_zero", lambda a: a.relu(), 0.0, 0.0, 0.0, "ReLU"),
    ("sin", lambda a: a.sin(), math.pi / 6, 0.5, SQRT3 / 2, "sin"),
    ("cos", lambda a: a.cos(), math.pi / 3, 0.5, -SQRT3 / 2, "cos"),
    ("abs_method", lambda a: a.abs(), -3.0, 3.0, -1.0, "abs"),
    ("abs_builtin", lambda a: abs(a), 3.0, 3.0, 1.0, "abs"),
    ("abs_zero", lambda a: abs(a), 0.0, 0.0, 0.0, "abs"),
]


@pytest.mark.parametrize(("op", "x", "value", "derivative", "name"), [c[1:] for c in UNARY],
                         ids=[c[0] for c in UNARY])  # fmt: skip
def test_unary_op(
    engine: ModuleType, op: Callable[[Any], Any], x: float, value: float, derivative: float, name: str
) -> None:
    a = engine.Value(x)
    out = op(a)
    assert close(out.data, value)
    assert (out._op, out._prev) == (name, {a})
    out.backward()
    assert out.grad == 1.0
    assert close(a.grad, derivative)


BINARY = [
    # (id, op, inputs, value, derivatives, _op)
    ("add", lambda a, b: a + b, (3.0, -2.0), 1.0, (1.0, 1.0), "+"),
    ("sub", lambda a, b: a - b, (3.0, -2.0), 5.0, (1.0, -1.0), "-"),
    ("mul", lambda a, b: a * b, (3.0, -2.0), -6.0, (-2.0, 3.0), "*"),
    ("div", lambda a, b: a / b, (3.0, -2.0), -1.5, (-0.5, -0.75), "/"),
    ("pow", lambda a, b: a**b, (2.0, 3.0), 8.0, (12.0, 8 * LN2), "**"),
    ("pow_zero_exponent", lambda a, b: a**b, (2.0, 0.0), 1.0, (0.0, LN2), "**"),
    ("pow_negative_base", lambda a, b: a**b, (-2.0, 2.0), 4.0, (-4.0, nan), "**"),
    ("pow_zero_base", lambda a, b: a**b, (0.0, 2.0), 0.0, (0.0, 0.0), "**"),
]


@pytest.mark.parametrize(("op", "xs", "value", "derivatives", "name"), [c[1:] for c in BINARY],
                         ids=[c[0] for c in BINARY])  # fmt: skip
def test_binary_op(
    engine: ModuleType,
    op: Callable[[Any, Any], Any],
    xs: tuple[float, float],
    value: float,
    derivatives: tuple[float, float],
    name: str,
) -> None:
    a, b = engine.Value(xs[0]), engine.Value(xs[1])
    out = op(a, b)
    assert close(out.data, value)
    assert (out._op, out._prev) == (name, {a, b})
    out.backward()
    for got, want in zip((a.grad, b.grad), derivatives):
        assert math.isnan(got) if math.isnan(want) else close(got, want)


def test_same_operand_twice(engine: ModuleType) -> None:
    x = engine.Value(3.0)
    out = x * x
    assert out._prev == {x}
    out.backward()
    assert x.grad == 6.0


NUMBERS = [2, 2.0, np.float64(2.0), np.float32(2.0), np.int64(2)]
NUMBER_IDS = ["int", "float", "np.float64", "np.float32", "np.int64"]
MIXED = [
    # (id, op on (number n=2, Value v=5), value, v's derivative, constant's derivative or None)
    ("n+v", lambda n, v: n + v, 7.0, 1.0, 1.0),
    ("v+n", lambda n, v: v + n, 7.0, 1.0, 1.0),
    ("n-v", lambda n, v: n - v, -3.0, -1.0, 1.0),
    ("v-n", lambda n, v: v - n, 3.0, 1.0, -1.0),
    ("n*v", lambda n, v: n * v, 10.0, 2.0, 5.0),
    ("v*n", lambda n, v: v * n, 10.0, 2.0, 5.0),
    ("n/v", lambda n, v: n / v, 0.4, -0.08, 0.2),
    ("v/n", lambda n, v: v / n, 2.5, 0.5, -1.25),
    ("n**v", lambda n, v: n**v, 32.0, 32 * LN2, 80.0),
    ("v**n", lambda n, v: v**n, 25.0, 10.0, None),
]


@pytest.mark.parametrize("number", NUMBERS, ids=NUMBER_IDS)
@pytest.mark.parametrize(("op", "value", "derivative", "constant_derivative"), [c[1:] for c in MIXED],
                         ids=[c[0] for c in MIXED])  # fmt: skip
def test_value_with_number(
    engine: ModuleType,
    number: Any,
    op: Callable[[Any, Any], Any],
    value: float,
    derivative: float,
    constant_derivative: float | None,
) -> None:
    v = engine.Value(5.0)
    out = op(number, v)
    assert isinstance(out, engine.Value)
    assert type(out.data) is float and close(out.data, value)
    out.backward()
    assert close(v.grad, derivative)
    constants = out._prev - {v}
    if constant_derivative is None:
        assert constants == set()
        return
    (constant,) = constants
    assert (constant.data, constant.label, constant._op, constant._prev) == (2.0, "", "", set())
    assert close(constant.grad, constant_derivative)


def test_numpy_scalar_defers_to_value(engine: ModuleType) -> None:
    assert engine.Value.__array_ufunc__ is None
    v = engine.Value(3.0)
    for out in (np.float64(2.0) * v, v * np.float64(2.0)):
        assert isinstance(out, engine.Value) and out.data == 6.0 and out._op == "*"


def test_numpy_array_is_not_a_number(engine: ModuleType) -> None:
    v = engine.Value(3.0)
    with pytest.raises(TypeError):
        np.array([1.0, 2.0]) * v
    with pytest.raises(TypeError):
        v * np.array([1.0, 2.0])
    assert_engine_works(engine)


# -- sum and dot -----------------------------------------------------------------------------------------


def test_sum(engine: ModuleType) -> None:
    a, b = engine.Value(2.0), engine.Value(5.0)
    out = engine.sum(v for v in [a, a, 1.5, b])
    assert (out.data, out._op, len(out._prev)) == (10.5, "sum", 3)
    assert {a, b} < out._prev
    out.backward()
    assert (a.grad, b.grad) == (2.0, 1.0)


def test_empty_sum(engine: ModuleType) -> None:
    out = engine.sum([])
    assert (out.data, out._op, out._prev) == (0.0, "sum", set())
    out.backward()
    assert out.grad == 1.0


def test_dot(engine: ModuleType) -> None:
    a, b = engine.Value(2.0), engine.Value(5.0)
    out = engine.dot([a, 2.0], [3, b])
    assert (out.data, out._op, len(out._prev)) == (16.0, "dot", 4)
    out.backward()
    assert (a.grad, b.grad) == (3.0, 2.0)
    weights = sorted(c.grad for c in out._prev - {a, b})
    assert weights == [2.0, 5.0]


def test_dot_with_repeated_values(engine: ModuleType) -> None:
    a, b = engine.Value(2.0), engine.Value(5.0)
    out = engine.dot([a, a], [a, b])
    assert out.data == 14.0
    out.backward()
    assert (a.grad, b.grad) == (9.0, 2.0)


def test_dot_length_mismatch(engine: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"(?s)(?=.*2)(?=.*3)"):
        engine.dot([engine.Value(1.0), 2.0], [1.0, 2.0, 3.0])
    assert_engine_works(engine)


# -- backward semantics ----------------------------------------------------------------------------------


def test_backward_step_by_hand(engine: ModuleType) -> None:
    a, b = engine.Value(3.0), engine.Value(-2.0)
    c = a * b
    c.grad = 2.0
    c._backward()
    assert (a.grad, b.grad) == (-4.0, 6.0)
    c._backward()
    assert (a.grad, b.grad) == (-8.0, 12.0)
    a._backward()
    assert (a.grad, b.grad, c.grad) == (-8.0, 12.0, 2.0)


def test_backward_twice_accumulates_into_leaves_only(engine: ModuleType) -> None:
    a, b = engine.Value(2.0), engine.Value(3.0)
    c = a * b
    d = c + a
    d.backward()
    assert (a.grad, b.grad, c.grad, d.grad) == (4.0, 2.0, 1.0, 1.0)
    d.backward()
    assert (a.grad, b.grad, c.grad, d.grad) == (8.0, 4.0, 1.0, 1.0)


def test_backward_recomputes_stale_intermediate_grads(engine: ModuleType) -> None:
    a = engine.Value(2.0)
    c = a * 3.0
    d = c.tanh() + c
    c.grad, d.grad = 99.0, -7.0
    d.backward()
    assert close(c.grad, 1 + (1 - math.tanh(6.0) ** 2)) and d.grad == 1.0
    assert close(a.grad, 3 * c.grad)


def test_constants_are_leaves(engine: ModuleType) -> None:
    a = engine.Value(2.0)
    out = a * 3
    (constant,) = out._prev - {a}
    out.backward()
    out.backward()
    assert (a.grad, constant.grad) == (6.0, 4.0)


def test_backward_from_a_leaf(engine: ModuleType) -> None:
    v = engine.Value(2.0)
    v.backward()
    assert v.grad == 1.0
    v.backward()
    assert v.grad == 2.0


def test_long_chain_needs_no_recursion(engine: ModuleType) -> None:
    x = engine.Value(1.0)
    y = x
    for _ in range(100_000):
        y = y + x
    y.backward()
    assert (y.data, x.grad) == (100_001.0, 100_001.0)


# -- micrograd's published tests (test_engine.py), in its own style ------------------------------------------


def micrograd_sanity_check(Value: Any) -> tuple[Any, Any]:
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return x, y


def micrograd_more_ops(Value: Any) -> tuple[Any, Any, Any]:
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return a, b, g


def test_micrograd_sanity_check(engine: ModuleType) -> None:
    x, y = micrograd_sanity_check(engine.Value)
    mx, my = micrograd_sanity_check(MicrogradValue)
    assert (y.data, x.grad) == (my.data, mx.grad) == (-20.0, 46.0)


def test_micrograd_more_ops(engine: ModuleType) -> None:
    a, b, g = micrograd_more_ops(engine.Value)
    assert abs(g.data - 24.7041) < 1e-4
    assert abs(a.grad - 138.8338) < 1e-4
    assert abs(b.grad - 645.5773) < 1e-4
    ma, mb, mg = micrograd_more_ops(MicrogradValue)
    assert close(g.data, mg.data) and close(a.grad, ma.grad) and close(b.grad, mb.grad)


# -- errors ----------------------------------------------------------------------------------------------

ERRORS = [
    # (id, input data, expression on (engine, Value of that data), exception)
    ("Value(str)", 1.0, lambda E, v: E.Value("a"), TypeError),
    ("Value(None)", 1.0, lambda E, v: E.Value(None), TypeError),
    ("Value(Value)", 1.0, lambda E, v: E.Value(v), TypeError),
    ("Value(complex)", 1.0, lambda E, v: E.Value(1 + 2j), TypeError),
    ("Value(Decimal)", 1.0, lambda E, v: E.Value(Decimal("1.5")), TypeError),
    ("Value(array)", 1.0, lambda E, v: E.Value(np.array([1.0])), TypeError),
    ("Value(0-d array)", 1.0, lambda E, v: E.Value(np.array(1.0)), TypeError),
    ("Value(label=int)", 1.0, lambda E, v: E.Value(1.0, 5), TypeError),
    ("v+str", 1.0, lambda E, v: v + "a", TypeError),
    ("str+v", 1.0, lambda E, v: "a" + v, TypeError),
    ("v-None", 1.0, lambda E, v: v - None, TypeError),
    ("None-v", 1.0, lambda E, v: None - v, TypeError),
    ("v*None", 1.0, lambda E, v: v * None, TypeError),
    ("v/str", 1.0, lambda E, v: v / "a", TypeError),
    ("list/v", 1.0, lambda E, v: [1.0] / v, TypeError),
    ("v**str", 1.0, lambda E, v: v ** "a", TypeError),
    ("str**v", 1.0, lambda E, v: "a" ** v, TypeError),
    ("sum(str)", 1.0, lambda E, v: E.sum([v, "a"]), TypeError),
    ("dot(None)", 1.0, lambda E, v: E.dot([v], [None]), TypeError),
    ("v/0", 1.0, lambda E, v: v / 0, ZeroDivisionError),
    ("v/-0.0", 1.0, lambda E, v: v / -0.0, ZeroDivisionError),
    ("0/0", 0.0, lambda E, v: v / 0.0, ZeroDivisionError),
    ("v/Value(0)", 1.0, lambda E, v: v / E.Value(0.0), ZeroDivisionError),
    ("1/Value(0)", 0.0, lambda E, v: 1 / v, ZeroDivisionError),
    ("0**-1", 0.0, lambda E, v: v**-1, ZeroDivisionError),
    ("0**-0.5", 0.0, lambda E, v: v**-0.5, ZeroDivisionError),
    ("0**Value(-2)", 0.0, lambda E, v: v ** E.Value(-2.0), ZeroDivisionError),
    ("number0**Value(-1)", -1.0, lambda E, v: 0**v, ZeroDivisionError),
    ("log(0)", 0.0, lambda E, v: v.log(), ValueError),
    ("log(-1)", -1.0, lambda E, v: v.log(), ValueError),
    ("log(-inf)", -inf, lambda E, v: v.log(), ValueError),
    ("sqrt(-1)", -1.0, lambda E, v: v.sqrt(), ValueError),
    ("sqrt(-inf)", -inf, lambda E, v: v.sqrt(), ValueError),
    ("(-8)**(1/3)", -8.0, lambda E, v: v ** (1 / 3), ValueError),
    ("(-2)**Value(0.5)", -2.0, lambda E, v: v ** E.Value(0.5), ValueError),
    ("number(-2)**Value(0.5)", 0.5, lambda E, v: (-2.0) ** v, ValueError),
    ("sin(inf)", inf, lambda E, v: v.sin(), ValueError),
    ("sin(-inf)", -inf, lambda E, v: v.sin(), ValueError),
    ("cos(inf)", inf, lambda E, v: v.cos(), ValueError),
    ("cos(-inf)", -inf, lambda E, v: v.cos(), ValueError),
    ("exp(1000)", 1000.0, lambda E, v: v.exp(), OverflowError),
    ("1e200**2", 1e200, lambda E, v: v**2, OverflowError),
    ("1e-200**-2", 1e-200, lambda E, v: v**-2, OverflowError),
    ("10**Value(400)", 10.0, lambda E, v: v ** E.Value(400.0), OverflowError),
    ("number10**Value(400)", 400.0, lambda E, v: 10**v, OverflowError),
]


@pytest.mark.parametrize(("x", "expression", "error"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_error(engine: ModuleType, x: float, expression: Callable[..., Any], error: type[Exception]) -> None:
    v = engine.Value(x)
    with pytest.raises(error):
        expression(engine, v)
    # Nothing was recorded: v is untouched and still differentiates normally.
    assert (v.grad, v._op, v._prev) == (0.0, "", set())
    out = v * 2.0
    out.backward()
    assert v.grad == 2.0
    assert_engine_works(engine)


def foreign_operand_uses(E: ModuleType, v: Any, foreign: Any) -> list[Callable[[], Any]]:
    """Every way to hand a Value of another engine to engine E, each of which must raise TypeError."""
    return [
        lambda: E.Value(foreign), lambda: v + foreign, lambda: v - foreign, lambda: v * foreign,
        lambda: v / foreign, lambda: v**foreign, lambda: E.sum([v, foreign]), lambda: E.dot([v], [foreign]),
        lambda: setattr(v, "data", foreign), lambda: setattr(v, "grad", foreign),
    ]  # fmt: skip


def test_micrograd_value_is_not_a_number(engine: ModuleType) -> None:
    v = engine.Value(2.0)
    for use in foreign_operand_uses(engine, v, MicrogradValue(1.0)):
        with pytest.raises(TypeError):
            use()
    assert (v.data, v.grad, v._prev) == (2.0, 0.0, set())
    assert_engine_works(engine)


def test_engines_do_not_mix(native: ModuleType, reference: ModuleType) -> None:
    for E, F in ((native, reference), (reference, native)):
        v, foreign = E.Value(2.0), F.Value(1.0)
        uses = [*foreign_operand_uses(E, v, foreign), lambda: foreign**v, lambda: foreign + v]  # noqa: B023
        for use in uses:
            with pytest.raises(TypeError):
                use()
        assert_engine_works(E)


def test_error_messages_name_op_and_value(reference: ModuleType) -> None:
    V = reference.Value
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: V(1.0) + "abc", TypeError, r"\+.*'abc'"),
        (lambda: V(None), TypeError, "None"),
        (lambda: V(2.5) / 0, ZeroDivisionError, r"2\.5 / 0\.0"),
        (lambda: V(0.0) ** -2, ZeroDivisionError, r"0\.0 \*\* -2"),
        (lambda: V(-1.5).log(), ValueError, r"log\(-1\.5\)"),
        (lambda: V(-1.5).sqrt(), ValueError, r"sqrt\(-1\.5\)"),
        (lambda: V(-8.0) ** 0.5, ValueError, r"-8\.0 \*\* 0\.5"),
        (lambda: V(inf).sin(), ValueError, r"sin\(inf\)"),
        (lambda: V(1000.0).exp(), OverflowError, r"exp\(1000\.0\)"),
        (lambda: reference.dot([1.0], [1.0, 2.0]), ValueError, r"(?s)(?=.*1)(?=.*2)"),
    ]
    for attempt, error, message in cases:
        with pytest.raises(error, match=message):
            attempt()


NAN_CASES = [
    ("v+1", lambda E, v: v + 1.0),
    ("1-v", lambda E, v: 1.0 - v),
    ("v*2", lambda E, v: v * 2.0),
    ("v/2", lambda E, v: v / 2.0),
    ("0/v", lambda E, v: 0.0 / v),
    ("neg", lambda E, v: -v),
    ("v**2", lambda E, v: v**2),
    ("v**-1", lambda E, v: v**-1),
    ("v**0.5", lambda E, v: v**0.5),
    ("v**Value", lambda E, v: v ** E.Value(2.0)),
    ("Value**v", lambda E, v: E.Value(2.0) ** v),
    ("0**v", lambda E, v: E.Value(0.0) ** v),
    ("negative**v", lambda E, v: E.Value(-2.0) ** v),
    ("number**v", lambda E, v: 3.0**v),
    ("negative**nan", lambda E, v: E.Value(-2.0) ** nan),
    ("exp", lambda E, v: v.exp()),
    ("log", lambda E, v: v.log()),
    ("sqrt", lambda E, v: v.sqrt()),
    ("tanh", lambda E, v: v.tanh()),
    ("sigmoid", lambda E, v: v.sigmoid()),
    ("relu", lambda E, v: v.relu()),
    ("sin", lambda E, v: v.sin()),
    ("cos", lambda E, v: v.cos()),
    ("abs", lambda E, v: abs(v)),
    ("sum", lambda E, v: E.sum([v, 1.0])),
    ("dot", lambda E, v: E.dot([v], [2.0])),
]


@pytest.mark.parametrize("expression", [c[1] for c in NAN_CASES], ids=[c[0] for c in NAN_CASES])
def test_nan_propagates_without_error(engine: ModuleType, expression: Callable[..., Any]) -> None:
    out = expression(engine, engine.Value(nan))
    assert math.isnan(out.data)
    out.backward()
    assert out.grad == 1.0


@pytest.mark.parametrize(
    ("expression", "x", "value"),
    [
        (lambda E, v: v * 10, 1e308, inf),
        (lambda E, v: v + 1e308, 1e308, inf),
        (lambda E, v: v - inf, inf, nan),
        (lambda E, v: v.exp(), inf, inf),
        (lambda E, v: v.exp(), -1000.0, 0.0),
        (lambda E, v: v.log(), inf, inf),
        (lambda E, v: v.tanh(), inf, 1.0),
        (lambda E, v: v**2, 1e-200, 0.0),
        (lambda E, v: v**2, inf, inf),
        (lambda E, v: v.sqrt(), inf, inf),
    ],
    ids=["mul", "add", "inf-inf", "exp(inf)", "exp underflow", "log(inf)", "tanh(inf)", "pow underflow",
         "inf**2", "sqrt(inf)"],
)  # fmt: skip
def test_float_arithmetic_without_error(
    engine: ModuleType, expression: Callable[..., Any], x: float, value: float
) -> None:
    out = expression(engine, engine.Value(x))
    assert math.isnan(out.data) if math.isnan(value) else out.data == value
    out.backward()


def test_nan_divided_by_zero_raises_as_python_floats_do(engine: ModuleType) -> None:
    with pytest.raises(ZeroDivisionError):
        engine.Value(nan) / 0.0
    with pytest.raises(ZeroDivisionError):
        nan / engine.Value(0.0)


DERIVATIVE_EDGES = [
    # (id, expression on (engine, leaf), leaf data, leaf gradient)
    ("sqrt at 0", lambda E, x: x.sqrt(), 0.0, inf),
    ("**0.5 at 0", lambda E, x: x**0.5, 0.0, inf),
    ("**1.5 at 0", lambda E, x: x**1.5, 0.0, 0.0),
    ("**0 at 0", lambda E, x: x**0, 0.0, 0.0),
    ("**-1 overflowing derivative", lambda E, x: x**-1, 1e-200, -inf),
    ("**Value at base 0", lambda E, x: E.Value(0.0) ** x, 2.0, 0.0),
    ("**Value at negative base", lambda E, x: E.Value(-2.0) ** x, 2.0, nan),
    # Finite: -a/b² is -1e40 although b² underflows to zero.
    ("tiny divisor", lambda E, x: E.Value(1e-300) / x, 1e-170, -1e40),
]


@pytest.mark.parametrize(("expression", "x", "gradient"), [c[1:] for c in DERIVATIVE_EDGES],
                         ids=[c[0] for c in DERIVATIVE_EDGES])  # fmt: skip
def test_backward_never_raises(
    engine: ModuleType, expression: Callable[..., Any], x: float, gradient: float
) -> None:
    leaf = engine.Value(x)
    expression(engine, leaf).backward()
    if math.isnan(gradient):
        assert math.isnan(leaf.grad)
    elif math.isinf(gradient):
        assert leaf.grad == gradient
    else:
        assert close(leaf.grad, gradient)
