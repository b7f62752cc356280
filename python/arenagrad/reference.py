"""The pure-Python reference engine: micrograd's design, with the ops and semantics of docs/engine_api.md.

Every op computes its forward value and attaches a ``_backward`` closure that pushes ``out.grad`` into its
operands. Forward errors follow Python's float and ``math`` rules and are raised before any node is made.
Derivative code never raises: where a derivative is infinite or undefined it yields IEEE ``inf`` or ``nan``
instead, whatever values ``.data`` holds at the time.

The rules below are cpp/ops.hpp's, formula for formula and in the same operation order, and ``backward``
sums each gradient in the native engine's order (nodes in reverse creation order, children in order), so
the two engines give the same bits. Change a rule in one place and the cross-checks in tests/ fail until the
other agrees.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable
from typing import Callable, Union

from ._ieee import ieee_cos as _ieee_cos
from ._ieee import ieee_div as _ieee_div
from ._ieee import ieee_exp as _ieee_exp
from ._ieee import ieee_log as _ieee_log
from ._ieee import ieee_pow as _ieee_pow
from ._ieee import ieee_sin as _ieee_sin

__all__ = ["Value", "dot", "logsumexp", "sum"]

Operand = Union["Value", float]
# A rule's vector-Jacobian product: (g, a, b, out) -> what each differentiable input's grad gains.
Vjp = Callable[[float, float, float, float], tuple[float, ...]]

# Creation order, which fixes the order backward sums in (as the native arena's allocation runs do).
_creation = itertools.count()


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


# -- the rules: forward values and vector-Jacobian products, as in cpp/ops.hpp -----------------------------


def _scale(g: float, p: float) -> float:
    """g times a local derivative; an exactly zero derivative contributes nothing (zero) even if g is inf or
    nan, where 0 * inf would be nan (cpp/ops.hpp's AnyGrad)."""
    return 0.0 if p == 0 and not math.isfinite(g) else g * p


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


def _pow_base_partial(a: float, b: float) -> float:
    return 0.0 if b == 0 else b * _ieee_pow(a, b - 1.0)


def _pow_exponent_partial(a: float, out: float) -> float:
    return 0.0 if a == 0 else out * _ieee_log(a)


def _sigmoid(a: float) -> float:
    # Only ever exp of a non-positive number, so neither branch can overflow.
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


def _softplus(a: float) -> float:
    if a > 0:
        return a + math.log1p(math.exp(-a))
    return math.log1p(math.exp(a))  # nan falls through here and propagates


def _abs_partial(a: float) -> float:
    return 1.0 if a > 0 else (-1.0 if a < 0 else (0.0 if a == 0 else math.nan))


def _add_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return g, g


def _sub_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return g, -g


def _mul_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return _scale(g, b), _scale(g, a)


def _div_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    # g / b, not g * (1/b), which overflows for subnormal b; -a/b² as -(a/b)/b, as PyTorch does.
    return _ieee_div(g, b), _scale(g, -_ieee_div(out, b))


def _pow_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return _scale(g, _pow_base_partial(a, b)), _scale(g, _pow_exponent_partial(a, out))


def _neg_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (-g,)


def _exp_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_scale(g, out),)


def _log_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_ieee_div(g, a),)


def _sqrt_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (0.0 if out == math.inf else _ieee_div(g, 2.0 * out),)


def _tanh_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_scale(g, 1.0 - out * out),)


def _sigmoid_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_scale(g, out * (1.0 - out)),)


def _softplus_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_scale(g, _sigmoid(a)),)


def _relu_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (g if a > 0 else 0.0,)


def _sin_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_scale(g, _ieee_cos(a)),)


def _cos_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_scale(g, -_ieee_sin(a)),)


def _abs_vjp(g: float, a: float, b: float, out: float) -> tuple[float, ...]:
    return (_scale(g, _abs_partial(a)),)


def _logsumexp(xs: list[float]) -> float:
    """As cpp/ops.hpp: shifted by the largest input; any nan gives nan, an infinite maximum itself."""
    m = -math.inf
    nan = False
    for v in xs:
        nan = nan or math.isnan(v)
        if v > m:
            m = v
    if nan:
        return math.nan
    if math.isinf(m):
        return m
    s = 0.0
    for v in xs:
        s += math.exp(v - m)
    return m + math.log(s)


class Value:
    """A scalar node of a computation graph: its value, its gradient and how it was computed."""

    __slots__ = ("_backward", "_children", "_data", "_grad", "_label", "_op", "_prev", "_seq")

    # numpy scalars on the left then return NotImplemented, so Python calls our reflected op.
    __array_ufunc__ = None

    def __init__(
        self, data: float, label: str = "", *, _children: tuple[Value, ...] = (), _op: str = ""
    ) -> None:
        self.data = data
        self.grad = 0.0
        self.label = label
        self._backward: Callable[[], None] = _no_backward
        self._children = tuple(_children)  # in order: the order gradients are pushed in
        self._prev: set[Value] = set(_children)
        self._op = _op
        self._seq = next(_creation)

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

    def __reduce__(self) -> tuple[object, ...]:
        """pickle and copy: a leaf becomes a new leaf (data, grad, label); a graph node refuses, as in torch,
        since copying it would mean copying its graph. The native engine's reducer is in _copying.py."""
        if self._op:
            raise TypeError(
                f"only leaf Values can be copied or pickled; this one is the output of {self._op!r} in a "
                "graph. Use Value(v.data) to copy the number, or copy the module or the leaves"
            )
        # grad as slot state, set through its property after construction.
        return (type(self), (self._data, self._label), (None, {"grad": self._grad}))

    # -- building nodes ----------------------------------------------------------------------------------

    @staticmethod
    def _lift(other: object, op: str) -> Value:
        """An operand as a Value of this engine: plain numbers become constant leaves."""
        if isinstance(other, Value):
            return other
        if isinstance(other, numbers.Real):
            return Value(float(other))
        raise _operand_error(other, op)

    @staticmethod
    def _node(data: float, op: str, children: tuple[Value, ...], vjp: Vjp, b: Value | None = None) -> Value:
        """A node whose _backward adds vjp(out.grad, a, b, out) into its children, in order.

        ``b`` is the second operand when it is read but gets no gradient (a constant exponent).
        """
        out = Value(data, _children=children, _op=op)
        a = children[0]
        second = children[1] if len(children) > 1 else b

        def _backward() -> None:
            grads = vjp(out.grad, a.data, second.data if second is not None else 0.0, out.data)
            for child, g in zip(children, grads):
                child.grad += g

        out._backward = _backward
        return out

    def _binary(self, other: object, op: str, forward: Callable[[float, float], float], vjp: Vjp) -> Value:
        other = self._lift(other, op)
        return Value._node(forward(self.data, other.data), op, (self, other), vjp)

    def _unary(self, op: str, value: float, vjp: Vjp) -> Value:
        return Value._node(value, op, (self,), vjp)

    # -- binary arithmetic -------------------------------------------------------------------------------

    def __add__(self, other: Operand) -> Value:
        return self._binary(other, "+", lambda a, b: a + b, _add_vjp)

    def __radd__(self, other: float) -> Value:
        return self._lift(other, "+") + self

    def __sub__(self, other: Operand) -> Value:
        return self._binary(other, "-", lambda a, b: a - b, _sub_vjp)

    def __rsub__(self, other: float) -> Value:
        return self._lift(other, "-") - self

    def __mul__(self, other: Operand) -> Value:
        return self._binary(other, "*", lambda a, b: a * b, _mul_vjp)

    def __rmul__(self, other: float) -> Value:
        return self._lift(other, "*") * self

    def __truediv__(self, other: Operand) -> Value:
        return self._binary(other, "/", _checked_div, _div_vjp)

    def __rtruediv__(self, other: float) -> Value:
        return self._lift(other, "/") / self

    def __pow__(self, other: Operand) -> Value:
        if isinstance(other, Value):
            return self._binary(other, "**", _checked_pow, _pow_vjp)
        if not isinstance(other, numbers.Real):
            raise _operand_error(other, "**")
        k = float(other)
        exponent = Value(k)  # read by the rule, but no gradient flows into a constant exponent
        return Value._node(
            _checked_pow(self.data, k), f"**{_format_exponent(k)}", (self,), _pow_vjp, exponent
        )

    def __rpow__(self, other: float) -> Value:
        return self._lift(other, "**") ** self

    def __neg__(self) -> Value:
        return self._unary("neg", -self.data, _neg_vjp)

    def __abs__(self) -> Value:
        return self.abs()

    # -- functions ---------------------------------------------------------------------------------------

    def exp(self) -> Value:
        a = self.data
        try:
            result = math.exp(a)
        except OverflowError:
            raise OverflowError(f"exp({a!r}): result too large for a float") from None
        return self._unary("exp", result, _exp_vjp)

    def log(self) -> Value:
        a = self.data
        if a <= 0:
            raise ValueError(f"log({a!r}): logarithm of a non-positive number")
        return self._unary("log", math.log(a), _log_vjp)

    def sqrt(self) -> Value:
        a = self.data
        if a < 0:
            raise ValueError(f"sqrt({a!r}): square root of a negative number")
        return self._unary("sqrt", math.sqrt(a), _sqrt_vjp)

    def tanh(self) -> Value:
        return self._unary("tanh", math.tanh(self.data), _tanh_vjp)

    def sigmoid(self) -> Value:
        return self._unary("sigmoid", _sigmoid(self.data), _sigmoid_vjp)

    def softplus(self) -> Value:
        """log(1 + exp(x)), computed without overflow for any x."""
        return self._unary("softplus", _softplus(self.data), _softplus_vjp)

    def relu(self) -> Value:
        a = self.data
        # PyTorch's relu: relu(-0.0) is -0.0, and NaN propagates.
        return self._unary("ReLU", 0.0 if a < 0 else a, _relu_vjp)

    def sin(self) -> Value:
        a = self.data
        if math.isinf(a):
            raise ValueError(f"sin({a!r}): sine of an infinite number")
        return self._unary("sin", math.sin(a), _sin_vjp)

    def cos(self) -> Value:
        a = self.data
        if math.isinf(a):
            raise ValueError(f"cos({a!r}): cosine of an infinite number")
        return self._unary("cos", math.cos(a), _cos_vjp)

    def abs(self) -> Value:
        return self._unary("abs", abs(self.data), _abs_vjp)

    # -- backpropagation ---------------------------------------------------------------------------------

    def backward(self) -> None:
        """Gradients of this node: fresh for non-leaf nodes, accumulated into leaves (PyTorch semantics)."""
        if not self._op:
            self.grad += 1.0
            return
        # Every non-leaf node below, found iteratively (graphs deeper than the recursion limit work), then
        # visited in reverse creation order: each parent before its children, in the native engine's order.
        nodes = [self]
        seen = {self}
        stack = [self]
        while stack:
            for child in stack.pop()._children:
                if child._op and child not in seen:
                    seen.add(child)
                    nodes.append(child)
                    stack.append(child)
        nodes.sort(key=lambda node: node._seq, reverse=True)
        for node in nodes:
            node.grad = 0.0
        self.grad = 1.0
        for node in nodes:
            node._backward()


def _checked_div(a: float, b: float) -> float:
    # Even nan / 0 raises, as Python's float division does: a zero divisor is always a bug.
    if b == 0:
        raise ZeroDivisionError(f"{a!r} / {b!r}: division by zero")
    return a / b


# Shadows the builtin on purpose: the engine API names it so, and nothing below needs the builtin.
def sum(values: Iterable[Operand]) -> Value:
    """One node for the sum of Values and numbers (numbers become constant leaves)."""
    terms = tuple(Value._lift(v, "sum") for v in values)
    total = 0.0
    for term in terms:
        total += term.data
    out = Value(total, _children=terms, _op="sum")

    def _backward() -> None:
        g = out.grad
        for term in terms:
            term.grad += g

    out._backward = _backward
    return out


def dot(ws: Iterable[Operand], xs: Iterable[Operand]) -> Value:
    """One node for sum(w_i * x_i) (numbers on either side become constant leaves)."""
    wv = [Value._lift(w, "dot") for w in ws]
    xv = [Value._lift(x, "dot") for x in xs]
    if len(wv) != len(xv):
        raise ValueError(f"dot: ws has {len(wv)} elements but xs has {len(xv)}")
    total = 0.0
    for w, x in zip(wv, xv):
        total += w.data * x.data
    out = Value(total, _children=(*wv, *xv), _op="dot")

    def _backward() -> None:
        g = out.grad
        for w, x in zip(wv, xv):
            w.grad += _scale(g, x.data)
            x.grad += _scale(g, w.data)

    out._backward = _backward
    return out


def logsumexp(values: Iterable[Operand]) -> Value:
    """One node for log(sum(exp(v))), shifted by the largest input so it never overflows."""
    terms = tuple(Value._lift(v, "logsumexp") for v in values)
    out = Value(_logsumexp([t.data for t in terms]), _children=terms, _op="logsumexp")

    def _backward() -> None:
        g, result = out.grad, out.data
        for term in terms:
            term.grad += _scale(g, _ieee_exp(term.data - result))

    out._backward = _backward
    return out
