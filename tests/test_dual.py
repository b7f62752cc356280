"""arenagrad.Dual: dual numbers from the op table, held to Value's forward values, errors and derivatives.

The oracles, strongest first: for one op, a Dual's real part is Value's data and its dual part is Tape.jvp's
tangent, bit for bit (both come from the same rule: forward(), and vjp() applied to the tangent); on random
programs the same holds wherever the two notions of a zero tangent agree, and the gradient matches reverse
mode (Value.backward) and torch.func to rounding.
"""

from __future__ import annotations

import copy
import math
import operator
import pickle
import re
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import pytest
from conftest import require_module
from hypothesis import given, settings
from hypothesis import strategies as st
from test_determinism import _leaves_below, numbers, same

import arenagrad as ag
from arenagrad import Dual, Value

inf, nan = math.inf, math.nan
FAILURES = (ZeroDivisionError, ValueError, OverflowError)
METHODS = ("exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "relu", "sin", "cos", "abs")
UNARY: dict[str, Callable[[Any], Any]] = {
    "neg": operator.neg,
    "abs()": abs,
    **{m: operator.methodcaller(m) for m in METHODS},
}
BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
}
# Zeros of both signs, a subnormal, numbers near the overflow of exp, infinities, NaN and plain numbers.
POINTS = (-2.5, -1.0, -0.0, 0.0, 1e-310, 0.5, 1.0, 3.0, 710.0, inf, -inf, nan)


def outcome(fn: Callable[[], Any]) -> tuple[Any, tuple[type, str] | None]:
    """fn()'s result, or the type and message of the math error it raised."""
    try:
        return fn(), None
    except FAILURES as exc:
        return None, (type(exc), str(exc))


def check_against_value(dual_fn: Callable[[], Dual], value_fn: Callable[[], tuple[Value, list[Value]]],
                        tangents: list[float]) -> None:
    """One op: the Dual has Value's error, or Value's data and Tape.jvp's tangent, bit for bit."""
    expected, expected_error = outcome(value_fn)
    got, error = outcome(dual_fn)
    assert error == expected_error
    if error is not None:
        return
    out, leaves = expected
    assert same(got.real, out.data)
    tape = ag.Tape(out, leaves)
    assert same(got.dual, tape.jvp(tangents)), (got, tangents)


# -- every op, method and operand form ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_match_value_and_tape_jvp_bit_for_bit(name: str) -> None:
    f = UNARY[name]
    for x in POINTS:
        for t in (1.0, -2.5, 0.0):
            v = Value(x)
            check_against_value(lambda: f(Dual(x, t)), lambda: (f(v), [v]), [t])  # noqa: B023


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_match_value_and_tape_jvp_bit_for_bit(name: str) -> None:
    """Dual op Dual, Dual op number and number op Dual (the reflected operators)."""
    f = BINARY[name]
    for x in POINTS:
        for y in POINTS:
            for ta, tb in ((1.0, 0.0), (0.0, 1.0), (1.5, -2.0)):
                va, vb = Value(x), Value(y)
                check_against_value(lambda: f(Dual(x, ta), Dual(y, tb)), lambda: (f(va, vb), [va, vb]),  # noqa: B023
                                    [ta, tb])
            va = Value(x)
            check_against_value(lambda: f(Dual(x, 1.5), y), lambda: (f(va, y), [va]), [1.5])  # noqa: B023
            vb = Value(y)
            check_against_value(lambda: f(x, Dual(y, 1.5)), lambda: (f(x, vb), [vb]), [1.5])  # noqa: B023


@pytest.mark.parametrize("name", sorted(BINARY))
def test_reflected_ops_take_every_kind_of_real_number(name: str) -> None:
    f = BINARY[name]
    for number in (2, 2.0, np.float64(2.0), np.float32(2.0), np.int64(2), np.bool_(True) + 1, Fraction(2)):
        assert same(f(number, Dual(3.0, 1.0)).dual, f(2.0, Dual(3.0, 1.0)).dual)
        assert same(f(Dual(3.0, 1.0), number).real, f(Dual(3.0, 1.0), 2.0).real)
        assert type(f(number, Dual(3.0, 1.0))) is Dual  # numpy scalars defer to the Dual


def test_derivatives_of_the_methods_by_hand() -> None:
    x = 0.7
    expected = {
        "exp": math.exp(x), "log": 1 / x, "sqrt": 0.5 / math.sqrt(x), "tanh": 1 - math.tanh(x) ** 2,
        "sigmoid": math.exp(-x) / (1 + math.exp(-x)) ** 2, "softplus": 1 / (1 + math.exp(-x)),
        "relu": 1.0, "sin": math.cos(x), "cos": -math.sin(x), "abs": 1.0,
    }  # fmt: skip
    for name, derivative in expected.items():
        assert getattr(Dual(x, 1.0), name)().dual == pytest.approx(derivative, rel=1e-15), name
    d = Dual(x, 1.0)
    assert (d * d + 3 * d - d / 2).dual == pytest.approx(2 * x + 2.5, rel=1e-15)
    assert (d**3).dual == pytest.approx(3 * x**2, rel=1e-15)
    assert (2**d).dual == pytest.approx(2**x * math.log(2), rel=1e-15)
    assert (d**d).dual == pytest.approx(x**x * (math.log(x) + 1), rel=1e-15)
    assert (1 / d).dual == pytest.approx(-1 / x**2, rel=1e-15)
    assert (5 - d).dual == -1.0 and (-d).dual == -1.0 and abs(-d).dual == 1.0


# -- multivariable duals: a whole gradient in one pass -------------------------------------------------


def three_variable_function(lib: Any, a: Any, b: Any, c: Any) -> Any:
    """Every op and method once, in each library's own spelling."""
    softplus = (lambda t: t.softplus()) if lib is ag else require_module("torch").nn.functional.softplus
    return (
        (a * b).tanh() * c.exp()
        + softplus(a - c) * (b**2 + 1).sqrt().log()
        + a.sigmoid() / (1 + abs(c))
        + (b.relu() + 2) ** c.sin()
        + 2 ** a.cos()
        - 1 / (a + 3)
        + (c - 0.5) ** b.abs()
        - (-a) * b
    )


XS = [0.3, 1.2, 2.0]


def test_gradient_of_a_three_variable_function_equals_reverse_mode() -> None:
    out = three_variable_function(ag, *Dual.variables(XS))
    leaves = [Value(x) for x in XS]
    root = three_variable_function(ag, *leaves)
    root.backward()
    assert out.real == root.data  # the same forward rules in the same order
    assert isinstance(out.dual, np.ndarray) and out.dual.dtype == np.float64 and out.dual.shape == (3,)
    assert out.dual == pytest.approx([leaf.grad for leaf in leaves], rel=1e-12, abs=1e-15)


# torch.func imports a module that calls torch.jit.script, deprecated in this torch: not our warning.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_gradient_of_a_three_variable_function_equals_torch_func_jvp() -> None:
    torch = require_module("torch")
    out = three_variable_function(ag, *Dual.variables(XS))
    primals = tuple(torch.tensor(x, dtype=torch.float64) for x in XS)
    for i in range(3):
        tangents = tuple(torch.tensor(float(i == j), dtype=torch.float64) for j in range(3))
        value, tangent = torch.func.jvp(lambda *t: three_variable_function(torch, *t), primals, tangents)
        assert out.real == pytest.approx(value.item(), rel=1e-14)
        assert out.dual[i] == pytest.approx(tangent.item(), rel=1e-12)
        single = three_variable_function(ag, *(Dual(x, float(i == j)) for j, x in enumerate(XS)))
        assert same(single.dual, out.dual[i])  # one pass per variable gives the same bits


def test_variables_seeds_unit_vectors() -> None:
    a, b = Dual.variables([1.5, np.float32(2.0)])
    assert (a.real, b.real) == (1.5, 2.0)
    assert a.dual.tolist() == [1.0, 0.0] and b.dual.tolist() == [0.0, 1.0]
    assert Dual.variables([]) == []
    assert [d.real for d in Dual.variables(np.array([1.0, 2.0, 3.0]))] == [1.0, 2.0, 3.0]
    assert [d.real for d in Dual.variables(x for x in (4, 5))] == [4.0, 5.0]
    with pytest.raises(TypeError, match=r"values\[1\] is str"):
        Dual.variables([1.0, "2"])
    with pytest.raises(TypeError, match="sequence of real numbers, not float"):
        Dual.variables(1.0)  # type: ignore[arg-type]


def test_constants_combine_with_any_number_of_partials() -> None:
    x, y = Dual.variables([2.0, 3.0])
    for constant in (4.0, 4, Dual(4.0), Dual(4.0, 0.0), np.float64(4.0)):
        assert (x * constant + constant / y).dual.tolist() == pytest.approx([4.0, -4.0 / 9.0])
        assert (constant - x).dual.tolist() == [-1.0, 0.0]
    assert (x + Dual(1.0, [0.0, 0.0])).dual.tolist() == [1.0, 0.0]


def test_duals_seeded_apart_do_not_combine() -> None:
    x, _ = Dual.variables([2.0, 3.0])
    (z,) = Dual.variables([1.0])
    with pytest.raises(ValueError, match="2 and 1 partials"):
        x + z
    with pytest.raises(ValueError, match=r"single-variable Dual \(dual=1.0\) with a Dual of 2 partials"):
        x * Dual(1.0, 1.0)
    with pytest.raises(ValueError, match=r"single-variable Dual \(dual=nan\)"):
        Dual(1.0, nan) - x  # NaN is not a zero tangent
    with pytest.raises(ValueError, match="single-variable"):
        z + Dual(1.0, 1.0)  # one partial is still a multivariable Dual


def test_multivariable_dual_property_is_a_read_only_copy() -> None:
    d = Dual(1.0, [1.0, 2.0, 3.0])
    partials = d.dual
    assert partials.tolist() == [1.0, 2.0, 3.0] and partials.ndim == 1
    with pytest.raises(ValueError, match="read-only"):
        partials[0] = 5.0
    assert d.dual is not partials and d.dual.tolist() == [1.0, 2.0, 3.0]
    assert Dual(1.0, np.array([1, 2])).dual.tolist() == [1.0, 2.0]
    assert Dual(1.0, (x for x in (0.5,))).dual.tolist() == [0.5]


# -- symbolic zeros --------------------------------------------------------------------------------


def test_zero_tangents_contribute_nothing_even_against_infinite_partials() -> None:
    """JAX's symbolic zeros: a zero tangent is not multiplied by an infinite partial (0 * inf = NaN)."""
    assert (Dual(2.0, 1.0) * Dual(0.0, 0.0) ** 0.5).dual == 0.0
    assert (Dual(2.0, 0.0) * Dual(inf, 1.0)).dual == 2.0  # d/da (a * b) = b = inf, but a is not seeded
    assert (Dual(0.0, 0.0) * Dual(0.0, 1.0).sqrt()).dual == 0.0  # the infinite tangent meets a zero partial
    x, y = Dual.variables([3.0, 0.0])
    f = x * y.sqrt() + x
    assert f.dual[0] == 1.0  # d/dx (x * sqrt(y) + x) at y = 0 is sqrt(0) + 1
    assert f.dual[1] == inf  # d/dy sqrt(y) at 0, seeded
    assert (Dual(3.0, 1.0) * Dual(0.0) ** 0.5 + Dual(3.0, 1.0)).dual == 1.0


def test_a_computed_zero_tangent_is_inactive_too() -> None:
    """Where Tape.jvp (structural activity, as torch.func) gives NaN, Dual gives what backward() gives."""
    x = Value(-1.0)
    root = x.relu().sqrt()
    assert math.isnan(ag.Tape(root, [x]).jvp([1.0]))
    root.backward()
    assert Dual(-1.0, 1.0).relu().sqrt().dual == x.grad == 0.0


def test_nan_propagates_without_error() -> None:
    for name, f in UNARY.items():
        out = f(Dual(nan, 1.0))
        assert math.isnan(out.real), name
        # relu's derivative at NaN is 0, as in PyTorch; neg's is -1 everywhere
        assert math.isnan(out.dual) or (name, out.dual) in (("relu", 0.0), ("neg", -1.0)), name
    for name, f in BINARY.items():
        for out in (f(Dual(nan, 1.0), Dual(2.0, 1.0)), f(Dual(2.0, 1.0), nan)):
            assert math.isnan(out.real), name
            # + and - have constant partials; the others' depend on the NaN operand
            assert math.isnan(out.dual) == (name in "*/**"), name
    assert math.isnan(Dual(1.0, nan).exp().dual) and Dual(1.0, nan).exp().real == math.e
    assert (Dual(nan, 1.0) ** 0).real == 1.0  # nan ** 0 == 1.0, as Python says


# -- errors are Value's -----------------------------------------------------------------------------

MATH_ERRORS: list[tuple[Callable[[Any], Any], type[Exception], str]] = [
    (lambda E: E(2.5) / 0, ZeroDivisionError, r"division by zero: 2\.5 / 0\.0"),
    (lambda E: 1 / E(0.0), ZeroDivisionError, r"1\.0 / 0\.0"),
    (lambda E: E(0.0) ** -1, ZeroDivisionError, r"0\.0 \*\* -1"),
    (lambda E: 0.0 ** E(-1.0), ZeroDivisionError, r"0\.0 \*\* -1"),
    (lambda E: E(0.0).log(), ValueError, r"log\(0\.0\)"),
    (lambda E: E(-1.0).log(), ValueError, r"log\(-1\.0\)"),
    (lambda E: E(-1.0).sqrt(), ValueError, r"sqrt\(-1\.0\)"),
    (lambda E: E(inf).sin(), ValueError, r"sin\(inf\)"),
    (lambda E: E(-inf).cos(), ValueError, r"cos\(-inf\)"),
    (lambda E: E(-8.0) ** 0.5, ValueError, r"-8\.0 \*\* 0\.5"),
    (lambda E: (-8.0) ** E(0.5), ValueError, r"-8\.0 \*\* 0\.5"),
    (lambda E: E(1000.0).exp(), OverflowError, r"exp\(1000\.0\)"),
    (lambda E: E(10.0) ** E(400.0), OverflowError, r"10\.0 \*\* 400\.0"),
]


@pytest.mark.parametrize("case", range(len(MATH_ERRORS)))
def test_math_errors_are_values(case: int) -> None:
    """Same exception type and message as Value, with the tangent seeded or not."""
    expression, error, message = MATH_ERRORS[case]
    with pytest.raises(error, match=message) as expected:
        expression(Value)
    for make in (lambda x: Dual(x, 1.0), Dual, lambda x: Dual(x, [1.0, 2.0])):
        with pytest.raises(error) as got:
            expression(make)
        assert str(got.value) == str(expected.value)


BAD_OPERANDS = {
    "str": "abc", "bytes": b"abc", "complex": 1j, "NoneType": None, "list": [1.0], "tuple": (1.0,),
    "numpy.ndarray": np.array([1.0]), "arenagrad.Value": Value(1.0), "object": object(),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_OPERANDS))
def test_bad_operands_raise_type_error_naming_them(name: str) -> None:
    d, bad = Dual(2.0, 1.0), BAD_OPERANDS[name]
    # On the left, a Value raises its own TypeError, naming the Dual.
    other = "arenagrad.Dual" if name == "arenagrad.Value" else name
    for symbol, f in BINARY.items():
        prefix = f"unsupported operand for {re.escape(symbol)}: "
        with pytest.raises(TypeError, match=rf"{prefix}{name}; expected"):
            f(d, bad)
        with pytest.raises(TypeError, match=rf"{prefix}{other}; expected"):
            f(bad, d)
    with pytest.raises(TypeError, match="modulus"):
        pow(d, 2, 3)


def test_constructor_takes_real_numbers_only() -> None:
    assert repr(Dual(1, True)) == "Dual(real=1.0, dual=1.0)"
    assert repr(Dual(real=np.float32(0.5), dual=Fraction(1, 4))) == "Dual(real=0.5, dual=0.25)"
    assert repr(Dual(-0.0)) == "Dual(real=-0.0, dual=0.0)"
    assert repr(Dual(1.0, [1, 2.5])) == "Dual(real=1.0, dual=[1.0, 2.5])"
    assert Dual(1.0).dual == 0.0 and isinstance(Dual(1.0).dual, float) and isinstance(Dual(1).real, float)
    for real in ("1.0", None, 1j, Dual(1.0), Value(1.0), [1.0]):
        with pytest.raises(TypeError, match="real must be a real number"):
            Dual(real)  # type: ignore[arg-type]
    for dual in ("ab", None, 1j, Dual(1.0), np.array(1.0)):
        with pytest.raises(TypeError, match="dual must be a real number or a 1-D sequence"):
            Dual(1.0, dual)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"dual\[1\] is str"):
        Dual(1.0, [1.0, "a"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"dual\[0\] is numpy.ndarray"):
        Dual(1.0, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        Dual(1.0, [])
    with pytest.raises(OverflowError):
        Dual(10**400)


def test_comparisons_and_hashing_are_values() -> None:
    """Value defines no ordering and compares by identity; so does Dual."""
    for E in (Value, Dual):
        a, b = E(1.0), E(1.0)
        assert a == a and a != b and len({a, b}) == 2
        for compare in (operator.lt, operator.le, operator.gt, operator.ge):
            with pytest.raises(TypeError):
                compare(a, b)
    with pytest.raises(TypeError):
        class Sub(Dual):  # type: ignore[misc]
            pass


def test_pickle_and_copy() -> None:
    for d in (Dual(1.5, -2.0), Dual(-0.0, [1.0, nan, 3.0])):
        for twin in (pickle.loads(pickle.dumps(d)), copy.copy(d), copy.deepcopy(d)):
            assert repr(twin) == repr(d) and twin is not d


# -- random programs ---------------------------------------------------------------------------------

FORMS = ("nodes", "node op number", "number op node")


@st.composite
def programs(draw: Any) -> tuple[list[float], list[tuple[Any, ...]]]:
    inputs = draw(st.lists(numbers, min_size=1, max_size=4))
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        n = len(inputs) + len(steps)
        index = st.one_of(st.integers(max(0, n - 3), n - 1), st.integers(0, n - 1))  # mostly recent: deep
        if draw(st.booleans()):
            steps.append((draw(st.sampled_from(tuple(UNARY))), draw(index)))
        else:
            steps.append((draw(st.sampled_from(tuple(BINARY))), draw(index), draw(index),
                          draw(st.sampled_from(FORMS)), draw(numbers)))
    return inputs, steps


def run(leaves: list[Any], steps: list[tuple[Any, ...]]) -> tuple[list[Any], tuple[type, str] | None]:
    """Every node of the program (leaves first), up to its first math error, and that error."""
    nodes = list(leaves)
    for step in steps:
        if step[0] in UNARY:
            node, error = outcome(lambda: UNARY[step[0]](nodes[step[1]]))  # noqa: B023
        else:
            f, a, b, form, number = BINARY[step[0]], nodes[step[1]], nodes[step[2]], step[3], step[4]
            operands = {"nodes": (a, b), "node op number": (a, number), "number op node": (number, a)}[form]
            node, error = outcome(lambda: f(*operands))  # noqa: B023
        if error is not None:
            return nodes, error
        nodes.append(node)
    return nodes, None


@settings(max_examples=300, deadline=None)
@given(program=programs())
def test_random_programs_match_value_tape_jvp_and_reverse_mode(
    program: tuple[list[float], list[tuple[Any, ...]]],
) -> None:
    inputs, steps = program
    n = len(inputs)
    leaves = [Value(x) for x in inputs]
    values, value_error = run(leaves, steps)
    duals, dual_error = run(Dual.variables(inputs), steps)
    assert dual_error == value_error
    assert all(same(d.real, v.data) for d, v in zip(duals, values))
    root, out = values[-1], duals[-1]
    if not root._op:
        return  # the program failed before its first op
    partials = out.dual
    # One pass per variable gives each partial's bits: a partial never sees the others.
    for i in range(n):
        single, _ = run([Dual(x, float(i == j)) for j, x in enumerate(inputs)], steps)
        assert same(single[-1].dual, partials[i]), i
    # Tape.jvp treats a computed zero tangent as active and multiplies it by the partials, which Dual
    # skips; the two agree wherever that product was not NaN, i.e. where both are finite.
    used = _leaves_below(root)
    tape_inputs = [i for i in range(n) if leaves[i] in used]
    if tape_inputs:
        tape = ag.Tape(root, [leaves[i] for i in tape_inputs])
        for k, i in enumerate(tape_inputs):
            expected = tape.jvp([float(k == m) for m in range(len(tape_inputs))])
            if math.isfinite(expected) and math.isfinite(partials[i]):
                assert partials[i] == expected, i
    for i in range(n):
        if leaves[i] not in used:
            assert partials[i] == 0.0
    # Reverse mode sums the same products in another order. With every value and derivative under 1e3 and
    # at most 12 ops, the orders differ by about 12 * 1e3 * 1e-16 ~ 1e-12; 1e-9 leaves room to spare.
    root.backward()
    grads = [leaf.grad for leaf in leaves]
    moderate = all(abs(v.data) < 1e3 for v in values) and all(abs(g) < 1e3 for g in [*grads, *partials])
    if moderate:
        assert partials.tolist() == pytest.approx(grads, rel=1e-9, abs=1e-9)
