"""The pure-Python reference engine: micrograd's design, with the ops and semantics of docs/engine_api.md.

Every op computes its forward value and attaches a ``_backward`` closure that pushes ``out.grad`` into its
operands. Forward errors follow Python's float and ``math`` rules and are raised before any node is made.
Derivative code never raises: where a derivative is infinite or undefined it yields IEEE ``inf`` or ``nan``
instead, whatever values ``.data`` holds at the time.

The rules below are cpp/ops.hpp's, formula for formula and in the same operation order, and ``backward``
sums each gradient in the native engine's order (nodes in reverse creation order, children in order), so
the two engines give the same bits. Change a rule in one place and the cross-checks in tests/ fail until the
other agrees.

``grad`` and ``tangent`` are cpp/derivatives.cpp's passes (arenagrad.grad and arenagrad.tangent): the same
vjp rules, run over floats or, with ``create_graph=True``, over Values, so that the derivative is recorded
as a graph of this engine that can be differentiated again.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Union, cast

from ._ieee import ieee_cos as _ieee_cos
from ._ieee import ieee_div as _ieee_div
from ._ieee import ieee_exp as _ieee_exp
from ._ieee import ieee_log as _ieee_log
from ._ieee import ieee_pow as _ieee_pow
from ._ieee import ieee_sin as _ieee_sin

__all__ = ["Value", "dot", "grad", "logsumexp", "sum", "tangent"]

Operand = Union["Value", float]
# What a rule computes with: floats, or Values when a derivative is recorded (create_graph).
Scalar = Union[float, "Value"]
# A rule's vector-Jacobian product: (g, a, b, out) -> what each differentiable input's grad gains. All four
# are floats or all Values (b None for a unary op).
Vjp = Callable[[Any, Any, Any, Any], tuple[Union[Scalar, None], ...]]
FloatVjp = Callable[[float, float, float, float], tuple[float, ...]]

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
#
# Each vjp is written once over a scalar type: floats (the backward sweep, forward mode) or Values of this
# engine (the pass recorded as a graph, create_graph), like ops.hpp's rules over double and Node. So a vjp
# uses only +, -, * on its operands, the table's functions and the helpers below, each of which has a float
# form and a recording form made of table ops; a recorded derivative is then made of table ops only and can
# be differentiated again. The recording forms create their nodes in the order the native build does (GCC
# evaluates a call's arguments right to left, which two helpers below spell out), since the creation order
# of a derivative graph fixes the order its own derivatives are summed in.


def _scale(g: Scalar, p: Scalar) -> Scalar:
    """g times a local derivative; an exactly zero derivative contributes nothing (zero) even if g is inf or
    nan, where 0 * inf would be nan (cpp/ops.hpp's AnyGrad). Recorded: a Scale node ("*")."""
    if isinstance(g, Value):
        return _record("*", g, cast(Value, p), _scale_forward, _scale_vjp)
    return _scale_forward(g, cast(float, p))


def _scale_forward(g: float, p: float) -> float:
    return 0.0 if p == 0 and not math.isfinite(g) else g * p


def _quot(a: Scalar, b: Scalar) -> Scalar:
    """a / b under IEEE rules (x / 0 = inf), never raising. Recorded: a Quot node ("/")."""
    if isinstance(a, Value):
        return _record("/", a, cast(Value, b), _ieee_div, _div_vjp)
    return _ieee_div(a, cast(float, b))


def _pow_ieee(a: Scalar, b: Scalar) -> Scalar:
    """a ** b under C99 pow's rules, never raising. Recorded: a PowIeee node ("**")."""
    if isinstance(a, Value):
        return _record("**", a, cast(Value, b), _ieee_pow, _pow_vjp)
    return _ieee_pow(a, cast(float, b))


def _mul_log_forward(x: float, y: float) -> float:
    return 0.0 if y == 0 else x * _ieee_log(y)


def _mul_log(x: Scalar, y: Scalar) -> Scalar:
    """x * log(y), 0 where y == 0. Recorded: a MulLog node ("xlogy")."""
    if isinstance(x, Value):
        return _record("xlogy", x, cast(Value, y), _mul_log_forward, _mul_log_vjp)
    return _mul_log_forward(x, cast(float, y))


def _step_forward(a: float) -> float:
    return 1.0 if a > 0 else 0.0


def _sign_forward(a: float) -> float:
    return 1.0 if a > 0 else (-1.0 if a < 0 else (0.0 if a == 0 else math.nan))


def _nonzero_forward(a: float) -> float:
    return 1.0 if a != 0 else 0.0


def _step(a: Scalar) -> Scalar:
    """1 where a > 0, else 0 (NaN included): relu's local derivative."""
    return a.step() if isinstance(a, Value) else _step_forward(a)


def _sign(a: Scalar) -> Scalar:
    """PyTorch's sign: 0 at 0, NaN at NaN: abs's local derivative."""
    return a.sign() if isinstance(a, Value) else _sign_forward(a)


def _nonzero(a: Scalar) -> Scalar:
    """0 at 0, else 1 (NaN included): a mask that drops a term where a guard would."""
    return a.nonzero() if isinstance(a, Value) else _nonzero_forward(a)


def _finite_forward(a: float) -> float:
    return 1.0 if math.isfinite(a) else 0.0


def _finite(a: Scalar) -> Scalar:
    """1 where a is finite, else 0."""
    return a.isfinite() if isinstance(a, Value) else _finite_forward(a)


def _select_forward(x: float, c: float) -> float:
    return x if c != 0 else 0.0


def _select(x: Scalar, c: Scalar) -> Scalar:
    """x where c != 0, else 0 (NaN counts as nonzero): PyTorch's masked_fill. Recorded: a Select node, which
    passes x through and sends nothing back where the mask is closed, so guards stay guards when
    differentiated again."""
    if isinstance(x, Value):
        c = cast(Value, c)
        return Value._node(_select_forward(x.data, c.data), "select", (x, c), _select_vjp)
    return _select_forward(x, cast(float, c))


def _where_positive(a: Scalar, g: Scalar) -> Scalar:
    """g where a > 0, else 0: relu's vjp."""
    if isinstance(a, Value):
        return _select(g, _step(a))
    return g if a > 0 else 0.0


def _pow_base_partial(a: Scalar, b: Scalar) -> Scalar:
    """d/da of a ** b; PyTorch's convention: exactly 0 when the exponent is 0 (avoids 0 * inf)."""
    if isinstance(b, Value):
        return _select(b * _pow_ieee(a, b - 1.0), b)
    return 0.0 if b == 0 else b * _ieee_pow(cast(float, a), b - 1.0)


def _pow_exponent_partial(a: Scalar, out: Scalar) -> Scalar:
    """d/db of a ** b = out * log(a); 0 at a == 0 (PyTorch's convention), NaN for a negative base."""
    return _mul_log(out, a)


def _half_quotient(g: Scalar, out: Scalar) -> Scalar:
    """g / (2 * out), sqrt's vjp; 0 at out = inf (where g / inf would be NaN for an infinite g)."""
    if isinstance(out, Value):
        # select(g / (2.0 * out), 1.0 / out): the mask is built first, as the native build does.
        mask = _quot(Value(1.0), out)
        return _select(_quot(g, 2.0 * out), mask)
    return 0.0 if out == math.inf else _ieee_div(cast(float, g), 2.0 * out)


def _constant_like(x: Scalar, c: float) -> Scalar:
    return Value(c) if isinstance(x, Value) else c


def _exp_of(a: Scalar) -> Scalar:
    return a.exp() if isinstance(a, Value) else _ieee_exp(a)


def _sin_of(a: Scalar) -> Scalar:
    return a.sin() if isinstance(a, Value) else _ieee_sin(a)


def _cos_of(a: Scalar) -> Scalar:
    return a.cos() if isinstance(a, Value) else _ieee_cos(a)


def _sigmoid_of(a: Scalar) -> Scalar:
    return a.sigmoid() if isinstance(a, Value) else _sigmoid(a)


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


# vjp(g, a, b, out): what each differentiable input's grad gains; b is None for a unary op when recorded.


def _add_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return g, g


def _sub_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return g, -g


def _mul_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return _scale(g, b), _scale(g, a)


def _div_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    # g / b, not g * (1/b), which overflows for subnormal b; -a/b² as -(a/b)/b, as PyTorch does.
    first = _quot(g, b)
    return first, _scale(g, -_quot(out, b))


def _pow_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    first = _scale(g, _pow_base_partial(a, b))
    return first, _scale(g, _pow_exponent_partial(a, out))


def _pow_const_vjp(g: Scalar, a: Scalar, k: Any, out: Scalar) -> tuple[Scalar, ...]:
    # No gradient flows into the constant exponent, so its partial is never computed.
    return (_scale(g, _pow_base_partial(a, k)),)


def _neg_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (-g,)


def _exp_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_scale(g, out),)


def _log_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_quot(g, a),)


def _sqrt_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_half_quotient(g, out),)


def _tanh_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_scale(g, 1.0 - out * out),)


def _sigmoid_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_scale(g, out * (1.0 - out)),)


def _softplus_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_scale(g, _sigmoid_of(a)),)


def _relu_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_where_positive(a, g),)


def _sin_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_scale(g, _cos_of(a)),)


def _cos_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_scale(g, -_sin_of(a)),)


def _abs_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    return (_scale(g, _sign(a)),)


def _mask_vjp(g: Scalar, a: Scalar, b: Any, out: Scalar) -> tuple[Scalar, ...]:
    """step, sign, nonzero, isfinite: piecewise constant, so their input gets zero (the sweep adds 0.0; a
    recorded pass and forward mode skip them)."""
    return (0.0,)


def _scale_vjp(h: Scalar, g: Scalar, p: Any, out: Scalar) -> tuple[Scalar, ...]:
    # Where the mask fired (p == 0, g not finite) the op is a constant 0: nothing flows back into p.
    first = _scale(h, p)
    # select(scale(h, g), nonzero(p) + finite(g)): built right to left, as the native build does.
    fin = _finite(g)
    mask = _nonzero(p) + fin
    return first, _select(_scale(h, g), mask)


def _select_vjp(g: Scalar, x: Scalar, c: Any, out: Scalar) -> tuple[Scalar | None, ...]:
    """x gets g where the mask is open; the mask c gets zero (0.0 over floats, as the sweep adds it; no
    contribution at all when recorded, None)."""
    return _select(g, c), (None if isinstance(g, Value) else 0.0)


def _mul_log_vjp(g: Scalar, x: Scalar, y: Any, out: Scalar) -> tuple[Scalar, ...]:
    # d/dx = log(y), d/dy = x / y, each 0 at y == 0 like the function.
    first = _scale(g, _mul_log(_constant_like(y, 1.0), y))
    return first, _scale(g, _select(_quot(x, y), y))


def _sum_vjp(g: Scalar) -> Scalar:
    """Each input's contribution."""
    return g


def _dot_vjp(g: Scalar, w: Scalar, x: Scalar) -> tuple[Scalar, Scalar]:
    """The contributions to w_i and x_i."""
    first = _scale(g, x)
    return first, _scale(g, w)


def _logsumexp_vjp(g: Scalar, x: Scalar, out: Scalar) -> Scalar:
    return _scale(g, _exp_of(x - out))


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

    __slots__ = ("_b", "_backward", "_children", "_data", "_grad", "_label", "_op", "_prev", "_rule", "_seq")

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
        # An elementary op's rule and the second operand it reads (None for leaves and n-ary ops).
        self._rule: Vjp | None = None
        self._b: Value | None = None

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
        out._rule = vjp
        out._b = second
        numeric = cast(FloatVjp, vjp)  # given floats, a rule gives floats

        def _backward() -> None:
            grads = numeric(out.grad, a.data, second.data if second is not None else 0.0, out.data)
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
            _checked_pow(self.data, k), f"**{_format_exponent(k)}", (self,), _pow_const_vjp, exponent
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

    # Masks: piecewise constant, so their derivative is zero (derivative graphs are built with them).

    def step(self) -> Value:
        """1.0 where the value is > 0, else 0.0 (NaN included)."""
        return self._unary("step", _step_forward(self.data), _mask_vjp)

    def sign(self) -> Value:
        """1.0, -1.0 or 0.0 by the value's sign (0.0 for either zero); NaN for NaN."""
        return self._unary("sign", _sign_forward(self.data), _mask_vjp)

    def nonzero(self) -> Value:
        """0.0 where the value is zero, else 1.0 (NaN included)."""
        return self._unary("nonzero", _nonzero_forward(self.data), _mask_vjp)

    def isfinite(self) -> Value:
        """1.0 where the value is finite, else 0.0."""
        return self._unary("isfinite", _finite_forward(self.data), _mask_vjp)

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
            w.grad += _scale_forward(g, x.data)
            x.grad += _scale_forward(g, w.data)

    out._backward = _backward
    return out


def logsumexp(values: Iterable[Operand]) -> Value:
    """One node for log(sum(exp(v))), shifted by the largest input so it never overflows."""
    terms = tuple(Value._lift(v, "logsumexp") for v in values)
    out = Value(_logsumexp([t.data for t in terms]), _children=terms, _op="logsumexp")

    def _backward() -> None:
        g, result = out.grad, out.data
        for term in terms:
            term.grad += _scale_forward(g, _ieee_exp(term.data - result))  # _logsumexp_vjp over floats

    out._backward = _backward
    return out


def _record(op: str, a: Value, b: Value, forward: Callable[[float, float], float], vjp: Vjp) -> Value:
    """A node of a recorded derivative: Scale, Quot, PowIeee or MulLog, ops that never raise."""
    return Value._node(forward(a.data, b.data), op, (a, b), vjp)


# -- derivatives that leave .grad alone: cpp/derivatives.cpp's passes ----------------------------------------
# Each runs over floats (recording=False) or Values (recording=True, create_graph), step for step as the
# native passes do, so the numbers and the recorded graphs (their nodes, in creation order) are the same.


def _collect_order(roots: list[Value]) -> list[Value]:
    """The non-leaf nodes reachable from any root, in reverse creation order."""
    seen: set[Value] = set()
    stack: list[Value] = []
    for root in roots:
        if root._op and root not in seen:
            seen.add(root)
            stack.append(root)
    nodes = list(stack)
    while stack:
        for child in stack.pop()._children:
            if child._op and child not in seen:
                seen.add(child)
                nodes.append(child)
                stack.append(child)
    nodes.sort(key=lambda node: node._seq, reverse=True)
    return nodes


def _propagate(node: Value, g: Scalar, add: Callable[[Value, Scalar], None], recording: bool) -> None:
    """Calls add(child, contribution) for each differentiable child, in child order (propagate_any): in
    recording mode masks (and select's mask operand) add nothing; over floats they add 0.0, as the backward
    sweep does."""

    def at(x: Value) -> Scalar:
        return x if recording else x.data

    rule = node._rule
    children = node._children
    if rule is None:
        if node._op == "sum":
            for c in children:
                add(c, _sum_vjp(g))
        elif node._op == "dot":
            n = len(children) // 2
            for i in range(n):
                dw, dx = _dot_vjp(g, at(children[i]), at(children[n + i]))
                add(children[i], dw)
                add(children[n + i], dx)
        elif node._op == "logsumexp":
            out = at(node)
            for c in children:
                add(c, _logsumexp_vjp(g, at(c), out))
        return
    if recording and rule is _mask_vjp:
        return
    b = node._b
    vb = (b if recording else b.data) if b is not None else (None if recording else 0.0)
    for c, v in zip(children, rule(g, at(children[0]), vb, at(node))):
        if v is not None:  # None: a recorded rule's empty contribution (select's mask), no node
            add(c, v)


def _tangent_term(node: Value, i: int, t: Scalar, recording: bool) -> Scalar | None:
    """Child i's term of the node's tangent given the child's tangent t (the rule's vjp applied to t, every
    vjp being linear in g); None for a mask, whose tangent is zero, and for select's mask operand when
    recorded (over floats its term is 0.0, as native forward mode has it)."""

    def at(x: Value) -> Scalar:
        return x if recording else x.data

    rule = node._rule
    children = node._children
    if rule is None:
        if node._op == "sum":
            return _sum_vjp(t)
        if node._op == "dot":
            n = len(children) // 2
            k = i if i < n else i - n
            return _dot_vjp(t, at(children[k]), at(children[n + k]))[0 if i < n else 1]
        return _logsumexp_vjp(t, at(children[i]), at(node))
    if rule is _mask_vjp:
        return None
    b = node._b
    vb = (b if recording else b.data) if b is not None else (None if recording else 0.0)
    return rule(t, at(children[0]), vb, at(node))[i]


def _zero(recording: bool) -> Scalar:
    return Value(0.0) if recording else 0.0


def _reverse_pass(
    roots: list[Value], seeds: list[Scalar], inputs: list[Value], recording: bool
) -> list[Scalar]:
    """Reverse mode (Arena::reverse_pass): only nodes that lead to an input get a gradient; seeds are added
    first, in root order; each gradient is a sum in the backward sweep's order (0.0 + v first over floats, v
    itself when recording); an input the roots do not reach gets zero."""
    order = _collect_order(roots)
    needs: set[Value] = set(inputs)
    for node in reversed(order):  # children before parents
        if node not in needs and any(c in needs for c in node._children):
            needs.add(node)
    grads: dict[Value, Scalar] = {}

    def accumulate(node: Value, v: Scalar) -> None:
        if node in grads:
            grads[node] = grads[node] + v
        else:
            grads[node] = v if recording else 0.0 + v

    def add(child: Value, v: Scalar) -> None:
        if child in needs:
            accumulate(child, v)

    for root, seed in zip(roots, seeds):
        accumulate(root, seed)
    for node in order:
        if node in needs and node in grads:
            _propagate(node, grads[node], add, recording)
    return [grads[x] if x in grads else _zero(recording) for x in inputs]


def _forward_pass(
    inputs: list[Value], tangents: list[Scalar], outputs: list[Value], recording: bool
) -> list[Scalar]:
    """Forward mode (Arena::forward_pass): a zero float tangent is a symbolic zero (inactive); recorded
    tangents are always active; an input keeps its seed; a node's tangent is the sum of its active children's
    terms in the order its rule sums them (child order; for dot w_0, x_0, w_1, x_1, ...), the first term
    itself, then t + term; an inactive output gets zero."""
    order = _collect_order(outputs)
    seeded: set[Value] = set()
    for x in inputs:
        if x in seeded:
            raise ValueError("an input is given twice")
        seeded.add(x)
    tangent: dict[Value, Scalar] = {}
    for x, t in zip(inputs, tangents):
        if not recording and t == 0.0:
            continue
        tangent[x] = t
    for node in reversed(order):  # creation order: every child's tangent is final before its parents read it
        if node in seeded:
            continue
        total: Scalar | None = None
        children = node._children
        n = len(children)
        # Terms in the order the rule sums them: for dot w_0, x_0, w_1, x_1, ... (as Tape.jvp).
        dot = node._op == "dot"
        for k in range(n):
            i = (k // 2 if k % 2 == 0 else n // 2 + k // 2) if dot else k
            c = children[i]
            if c not in tangent:
                continue
            piece = _tangent_term(node, i, tangent[c], recording)
            if piece is None:
                continue
            total = piece if total is None else total + piece
        if total is not None:
            tangent[node] = total
    return [tangent[y] if y in tangent else _zero(recording) for y in outputs]


# -- the public API of arenagrad.autodiff, for this engine's Values ------------------------------------------

_Values = Union[Value, Sequence[Value]]
_Seeds = Union[Value, float, int, Sequence[Union[Value, float, int]], None]


def _type_name(x: object) -> str:
    kind = type(x)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _value_list(xs: object, what: str) -> list[Value]:
    items = [xs] if isinstance(xs, Value) else xs
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"{what} must be an {__name__}.Value or a sequence of them, not {_type_name(xs)}")
    out = list(items)
    if not out:
        raise ValueError(f"{what} is empty: give at least one Value")
    for i, v in enumerate(out):
        if not isinstance(v, Value):
            raise TypeError(f"{what}[{i}] must be an {__name__}.Value, not {_type_name(v)}")
    return out


def _seed_list(seeds: object, count: int, what: str, single: bool) -> list[Value | float]:
    per = "output" if what == "grad_outputs" else "input"
    items = [seeds] if single and not isinstance(seeds, Sequence) else seeds
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"{what} must be a sequence of numbers or Values, not {_type_name(seeds)}")
    out = list(items)
    if len(out) != count:
        raise ValueError(f"{what} has {len(out)} entries for {count} {per}s; give one per {per}")
    for i, s in enumerate(out):
        if isinstance(s, bool) or not isinstance(s, (Value, numbers.Real)):
            raise TypeError(f"{what}[{i}] must be a real number or an {__name__}.Value, not {_type_name(s)}")
    return out


def grad(
    outputs: _Values,
    inputs: _Values,
    grad_outputs: _Seeds = None,
    *,
    create_graph: bool = False,
) -> list[Value]:
    """The gradient of ``sum(grad_outputs[k] * outputs[k])`` with respect to each input: arenagrad.grad
    for this engine's Values (same arguments, errors and bits). ``.grad`` is never read or written; with
    ``create_graph`` the results are Values whose graphs record the backward pass."""
    roots = _value_list(outputs, "outputs")
    xs = _value_list(inputs, "inputs")
    single = isinstance(outputs, Value)
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be a bool, not {_type_name(create_graph)}")
    if create_graph:
        seeds: list[Scalar] = [Value(1.0) for _ in roots]
        if grad_outputs is not None:
            seeds = [
                s if isinstance(s, Value) else Value(float(s))
                for s in _seed_list(grad_outputs, len(roots), "grad_outputs", single)
            ]
        return [cast(Value, g) for g in _reverse_pass(roots, seeds, xs, True)]
    numbers_: list[Scalar] = [1.0] * len(roots)
    if grad_outputs is not None:
        numbers_ = [
            s.data if isinstance(s, Value) else float(s)
            for s in _seed_list(grad_outputs, len(roots), "grad_outputs", single)
        ]
    return [Value(cast(float, g)) for g in _reverse_pass(roots, numbers_, xs, False)]


def tangent(
    outputs: _Values,
    inputs: _Values,
    tangents: _Seeds,
    *,
    create_graph: bool = False,
) -> list[Value]:
    """Forward mode: the derivative of each output along ``tangents`` (one per input), as arenagrad.tangent
    for this engine's Values. Only what depends on an input with a nonzero tangent is differentiated (JAX's
    symbolic zeros); with ``create_graph`` the tangents may be Values and the results carry graphs."""
    ys = _value_list(outputs, "outputs")
    xs = _value_list(inputs, "inputs")
    single = isinstance(inputs, Value)
    if len({id(x) for x in xs}) != len(xs):
        raise ValueError("inputs holds the same Value twice; give each input once")
    ts = _seed_list(tangents, len(xs), "tangents", single) if tangents is not None else None
    if ts is None:
        raise TypeError("tangents must be given: one number or Value per input")
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be a bool, not {_type_name(create_graph)}")
    if create_graph:
        recorded: list[Scalar] = [t if isinstance(t, Value) else Value(float(t)) for t in ts]
        return [cast(Value, t) for t in _forward_pass(xs, recorded, ys, True)]
    numbers_: list[Scalar] = [t.data if isinstance(t, Value) else float(t) for t in ts]
    return [Value(cast(float, t)) for t in _forward_pass(xs, numbers_, ys, False)]
