"""The pure-Python reference engine: micrograd's design, with the ops and semantics of docs/engine_api.md.

Every op computes its forward value and attaches a ``_backward`` closure that pushes ``out.grad`` into its
operands through the op's local derivative. Forward errors follow Python's float and ``math`` rules and are
raised before any node is made. Derivative code never raises: where a derivative is infinite or undefined it
yields IEEE ``inf`` or ``nan`` instead, whatever values ``.data`` holds at the time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Callable, Union

__all__ = ["Value", "dot", "sum"]

Operand = Union["Value", float]


def _no_backward() -> None:
    pass


def _describe(x: object) -> str:
    kind = type(x)
    return f"{x!r} of type {kind.__module__}.{kind.__qualname__}"


def _as_float(x: object, what: str) -> float:
    # Plain floats first: this runs on every grad update.
    if type(x) is float:
        return x
    # A Value (of any engine) is not a numbers.Real, so it is rejected here too.
    if isinstance(x, numbers.Real):
        return float(x)
    raise TypeError(f"{what}: expected a real number, got {_describe(x)}")


def _operand_error(other: object, op: str) -> TypeError:
    return TypeError(
        f"unsupported operand for {op}: {_describe(other)}; expected a real number or an "
        f"{__name__}.Value (Values of other engines do not mix)"
    )


def _format_exponent(k: float) -> str:
    text = repr(k)
    return text[:-2] if text.endswith(".0") else text


def _is_odd_integer(x: float) -> bool:
    return math.isfinite(x) and x.is_integer() and x % 2 == 1


def _ieee_div(a: float, b: float) -> float:
    """a / b for derivative code, IEEE style: ±inf or nan instead of ZeroDivisionError."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _ieee_pow(a: float, b: float) -> float:
    """a ** b for derivative code, with C99 pow's results where Python would raise or go complex."""
    if a < 0 and math.isfinite(a) and math.isfinite(b) and not b.is_integer():
        return math.nan
    try:
        return a**b
    except ZeroDivisionError:
        return math.copysign(math.inf, a) if _is_odd_integer(b) else math.inf
    except OverflowError:
        return -math.inf if a < 0 and _is_odd_integer(b) else math.inf


def _ieee_sin(a: float) -> float:
    return math.sin(a) if not math.isinf(a) else math.nan


def _ieee_cos(a: float) -> float:
    return math.cos(a) if not math.isinf(a) else math.nan


def _checked_pow(a: float, b: float) -> float:
    """a ** b for the forward pass: Python's float semantics, but a real result or a clear error."""
    # Python would return a complex number here; math.pow's ValueError is the real-valued answer.
    if a < 0 and math.isfinite(a) and math.isfinite(b) and not b.is_integer():
        raise ValueError(f"{a!r} ** {b!r}: a negative number cannot be raised to a non-integer power")
    try:
        return a**b
    except ZeroDivisionError:
        raise ZeroDivisionError(f"{a!r} ** {b!r}: zero cannot be raised to a negative power") from None
    except OverflowError:
        raise OverflowError(f"{a!r} ** {b!r}: result too large for a float") from None


class Value:
    """A scalar node of a computation graph: its value, its gradient and how it was computed."""

    __slots__ = ("_backward", "_data", "_grad", "_label", "_op", "_prev")

    # numpy scalars on the left then return NotImplemented, so Python calls our reflected op.
    __array_ufunc__ = None

    def __init__(
        self, data: float, label: str = "", *, _children: tuple[Value, ...] = (), _op: str = ""
    ) -> None:
        self.data = data
        self.grad = 0.0
        self.label = label
        self._backward: Callable[[], None] = _no_backward
        self._prev: set[Value] = set(_children)
        self._op = _op

    @property
    def data(self) -> float:
        return self._data

    @data.setter
    def data(self, value: float) -> None:
        self._data = _as_float(value, "Value.data")

    @property
    def grad(self) -> float:
        return self._grad

    @grad.setter
    def grad(self, value: float) -> None:
        self._grad = _as_float(value, "Value.grad")

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Value.label: expected a str, got {_describe(value)}")
        self._label = value

    def __repr__(self) -> str:
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data!r}, grad={self.grad!r}{label})"

    # -- binary arithmetic -------------------------------------------------------------------------------

    @staticmethod
    def _lift(other: object, op: str) -> Value:
        """An operand as a Value of this engine: plain numbers become constant leaves."""
        if isinstance(other, Value):
            return other
        if isinstance(other, numbers.Real):
            return Value(other)
        raise _operand_error(other, op)

    def __add__(self, other: Operand) -> Value:
        other = self._lift(other, "+")
        out = Value(self.data + other.data, _children=(self, other), _op="+")

        def _backward() -> None:
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __radd__(self, other: float) -> Value:
        return self._lift(other, "+") + self

    def __sub__(self, other: Operand) -> Value:
        other = self._lift(other, "-")
        out = Value(self.data - other.data, _children=(self, other), _op="-")

        def _backward() -> None:
            self.grad += out.grad
            other.grad -= out.grad

        out._backward = _backward
        return out

    def __rsub__(self, other: float) -> Value:
        return self._lift(other, "-") - self

    def __mul__(self, other: Operand) -> Value:
        other = self._lift(other, "*")
        out = Value(self.data * other.data, _children=(self, other), _op="*")

        def _backward() -> None:
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __rmul__(self, other: float) -> Value:
        return self._lift(other, "*") * self

    def __truediv__(self, other: Operand) -> Value:
        other = self._lift(other, "/")
        a, b = self.data, other.data
        # Even nan / 0 raises, as Python's float division does: a zero divisor is always a bug.
        if b == 0:
            raise ZeroDivisionError(f"{a!r} / {b!r}: division by zero")
        out = Value(a / b, _children=(self, other), _op="/")

        def _backward() -> None:
            # -a/b² as (a/b)/b, as PyTorch does: b*b would underflow to zero for |b| < 1e-162.
            self.grad += _ieee_div(out.grad, other.data)
            other.grad -= _ieee_div(_ieee_div(self.data, other.data), other.data) * out.grad

        out._backward = _backward
        return out

    def __rtruediv__(self, other: float) -> Value:
        return self._lift(other, "/") / self

    def __pow__(self, other: Operand) -> Value:
        if isinstance(other, Value):
            return self._pow_value(other)
        if not isinstance(other, numbers.Real):
            raise _operand_error(other, "**")
        k = float(other)
        out = Value(_checked_pow(self.data, k), _children=(self,), _op=f"**{_format_exponent(k)}")

        def _backward() -> None:
            if k != 0:
                self.grad += k * _ieee_pow(self.data, k - 1) * out.grad

        out._backward = _backward
        return out

    def __rpow__(self, other: float) -> Value:
        return self._lift(other, "**")._pow_value(self)

    def _pow_value(self, exponent: Value) -> Value:
        out = Value(_checked_pow(self.data, exponent.data), _children=(self, exponent), _op="**")

        def _backward() -> None:
            a, b = self.data, exponent.data
            if b != 0:
                self.grad += b * _ieee_pow(a, b - 1) * out.grad
            if a > 0:
                exponent.grad += out.data * math.log(a) * out.grad
            elif a != 0:  # log(a) is undefined for negative (or NaN) a
                exponent.grad += math.nan

        out._backward = _backward
        return out

    def __neg__(self) -> Value:
        out = Value(-self.data, _children=(self,), _op="neg")

        def _backward() -> None:
            self.grad -= out.grad

        out._backward = _backward
        return out

    def __abs__(self) -> Value:
        return self.abs()

    # -- functions ---------------------------------------------------------------------------------------

    def exp(self) -> Value:
        a = self.data
        try:
            result = math.exp(a)
        except OverflowError:
            raise OverflowError(f"exp({a!r}): result too large for a float") from None
        out = Value(result, _children=(self,), _op="exp")

        def _backward() -> None:
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self) -> Value:
        a = self.data
        if a <= 0:
            raise ValueError(f"log({a!r}): logarithm of a non-positive number")
        out = Value(math.log(a), _children=(self,), _op="log")

        def _backward() -> None:
            self.grad += _ieee_div(out.grad, self.data)

        out._backward = _backward
        return out

    def sqrt(self) -> Value:
        a = self.data
        if a < 0:
            raise ValueError(f"sqrt({a!r}): square root of a negative number")
        out = Value(math.sqrt(a), _children=(self,), _op="sqrt")

        def _backward() -> None:
            self.grad += _ieee_div(0.5, out.data) * out.grad

        out._backward = _backward
        return out

    def tanh(self) -> Value:
        out = Value(math.tanh(self.data), _children=(self,), _op="tanh")

        def _backward() -> None:
            self.grad += (1 - out.data * out.data) * out.grad

        out._backward = _backward
        return out

    def sigmoid(self) -> Value:
        a = self.data
        # Only ever exp of a non-positive number, so neither branch can overflow.
        if a >= 0:
            result = 1 / (1 + math.exp(-a))
        else:
            e = math.exp(a)
            result = e / (1 + e)
        out = Value(result, _children=(self,), _op="sigmoid")

        def _backward() -> None:
            self.grad += out.data * (1 - out.data) * out.grad

        out._backward = _backward
        return out

    def relu(self) -> Value:
        a = self.data
        # Written so that NaN falls through to `a` and propagates.
        out = Value(0.0 if a <= 0 else a, _children=(self,), _op="ReLU")

        def _backward() -> None:
            self.grad += (self.data > 0) * out.grad

        out._backward = _backward
        return out

    def sin(self) -> Value:
        a = self.data
        if math.isinf(a):
            raise ValueError(f"sin({a!r}): sine of an infinite number")
        out = Value(math.sin(a), _children=(self,), _op="sin")

        def _backward() -> None:
            self.grad += _ieee_cos(self.data) * out.grad

        out._backward = _backward
        return out

    def cos(self) -> Value:
        a = self.data
        if math.isinf(a):
            raise ValueError(f"cos({a!r}): cosine of an infinite number")
        out = Value(math.cos(a), _children=(self,), _op="cos")

        def _backward() -> None:
            self.grad -= _ieee_sin(self.data) * out.grad

        out._backward = _backward
        return out

    def abs(self) -> Value:
        out = Value(abs(self.data), _children=(self,), _op="abs")

        def _backward() -> None:
            a = self.data
            sign = math.nan if math.isnan(a) else (a > 0) - (a < 0)
            self.grad += sign * out.grad

        out._backward = _backward
        return out

    # -- backpropagation ---------------------------------------------------------------------------------

    def backward(self) -> None:
        """Gradients of this node: fresh for non-leaf nodes, accumulated into leaves (PyTorch semantics)."""
        # Iterative depth-first post-order, so graphs deeper than the recursion limit work.
        topo: list[Value] = []
        visited: set[Value] = set()
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                topo.append(node)
            elif node not in visited:
                visited.add(node)
                stack.append((node, True))
                stack.extend((child, False) for child in node._prev if child not in visited)

        for node in topo:
            if node._op:
                node.grad = 0.0
        self.grad += 1.0
        for node in reversed(topo):
            node._backward()


# Shadows the builtin on purpose: the engine API names it so, and nothing below needs the builtin.
def sum(values: Iterable[Operand]) -> Value:
    """One node for the sum of Values and numbers (numbers become constant leaves)."""
    terms = [Value._lift(v, "sum") for v in values]
    total = 0.0
    for term in terms:
        total += term.data
    out = Value(total, _children=tuple(terms), _op="sum")

    def _backward() -> None:
        for term in terms:
            term.grad += out.grad

    out._backward = _backward
    return out


def dot(ws: Iterable[Operand], xs: Iterable[Operand]) -> Value:
    """One node for sum(w_i * x_i) (numbers on either side become constant leaves)."""
    ws = [Value._lift(w, "dot") for w in ws]
    xs = [Value._lift(x, "dot") for x in xs]
    if len(ws) != len(xs):
        raise ValueError(f"dot: ws has {len(ws)} elements but xs has {len(xs)}")
    total = 0.0
    for w, x in zip(ws, xs):
        total += w.data * x.data
    out = Value(total, _children=(*ws, *xs), _op="dot")

    def _backward() -> None:
        for w, x in zip(ws, xs):
            w.grad += x.data * out.grad
            x.grad += w.data * out.grad

    out._backward = _backward
    return out
