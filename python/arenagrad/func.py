"""Function transforms, as in ``torch.func`` and JAX, for scalar code.

Each transform takes ``f(xs)``, a function of ONE list of Values (or returning a list of them,
for ``jacobian``/``jvp``/``vjp``), and a point ``x``:

- ``x`` a 1-D array or sequence of floats: the result is numbers (floats and numpy arrays);
- ``x`` a sequence of Values: the result is Values whose graphs record the derivative
  (``create_graph``), so transforms compose: ``jacobian(grad(f))(x)`` equals ``hessian(f)(x)``,
  and ``grad(grad_of_something)`` goes to any order.

Reverse mode (``grad``, ``vjp``, ``jacrev``) costs one backward pass per output; forward mode
(``jvp``, ``jacfwd``) one tangent pass per input direction. ``jacobian`` picks the cheaper one,
``hessian`` is forward over reverse (``jacfwd(grad(f))``) and ``hvp`` is one forward pass over
the recorded gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any, Union

import numpy as np

from . import _core
from ._core import Tape, Value
from ._describe import describe as _describe
from .autodiff import grad as _grad
from .autodiff import tangent as _tangent

__all__ = ["grad", "hessian", "hvp", "jacfwd", "jacobian", "jacrev", "jvp", "value_and_grad", "vjp"]

Point = Union[Sequence[float], Sequence[Value], "np.ndarray[Any, Any]"]
Function = Callable[[list[Value]], Any]


def _inputs(x: object, what: str = "x") -> tuple[list[Value], bool]:
    """The Values f is called with, and whether x was Values (so results carry graphs)."""
    if isinstance(x, Value):
        raise TypeError(
            f"{what} must be a sequence or 1-D array (the function takes one list of Values), not a Value"
        )
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise ValueError(f"{what} must be 1-D, not of shape {x.shape}")
        items: list[object] = list(x)
    elif isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        items = list(x)
    else:
        raise TypeError(f"{what} must be a sequence or 1-D array of floats or of Values, not {_describe(x)}")
    if items and all(isinstance(v, Value) for v in items):
        return [v for v in items if isinstance(v, Value)], True
    values = []
    for i, v in enumerate(items):
        if isinstance(v, Value):
            raise TypeError(f"{what} mixes Values and numbers; give all floats or all Values")
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"{what}[{i}] must be a real number or an arenagrad.Value, not {_describe(v)}")
        values.append(Value(float(v)))
    return values, False


def _scalar_output(y: object) -> Value:
    if not isinstance(y, Value):
        raise TypeError(f"f must return an arenagrad.Value, not {_describe(y)}")
    return y


def _outputs(y: object) -> tuple[list[Value], tuple[int, ...]]:
    """f's outputs flattened, and their shape: () for a single Value, (m,) for a list, (m, k)
    for a list of lists (a Jacobian, so that Jacobians of Jacobians work), and so on."""
    if isinstance(y, Value):
        return [y], ()
    if isinstance(y, np.ndarray) or (isinstance(y, Sequence) and not isinstance(y, (str, bytes))):
        items = list(y)
        if not items:
            raise ValueError("f returned an empty sequence; it must return at least one Value")
        flat: list[Value] = []
        shapes = set()
        for item in items:
            sub, shape = _outputs(item)
            flat.extend(sub)
            shapes.add(shape)
        if len(shapes) != 1:
            raise ValueError("f returned a ragged nesting of Values; every entry must have the same shape")
        return flat, (len(items), *shapes.pop())
    raise TypeError(f"f must return an arenagrad.Value or a (nested) sequence of them, not {_describe(y)}")


def _flatten(u: object) -> object:
    """Nested sequences or an array as one flat list, row-major (anything else is returned as is)."""
    if isinstance(u, np.ndarray):
        return list(u.reshape(-1))
    if isinstance(u, Sequence) and not isinstance(u, (str, bytes)):
        flat: list[object] = []
        for item in u:
            sub = _flatten(item)
            flat.extend(sub if isinstance(sub, list) else [sub])
        return flat
    return u


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    """Nested lists of the given shape, filled from flat in row-major order."""
    if not shape:
        return flat[0]
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _direction(v: object, n: int, what: str) -> list[float] | list[Value]:
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise ValueError(f"{what} must be 1-D, not of shape {v.shape}")
        items: list[object] = list(v)
    elif isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
        items = list(v)
    else:
        raise TypeError(f"{what} must be a sequence or 1-D array, not {_describe(v)}")
    if len(items) != n:
        raise ValueError(f"{what} has {len(items)} entries for {n} inputs; give one per input")
    if all(isinstance(t, Value) for t in items) and items:
        return [t for t in items if isinstance(t, Value)]
    out = []
    for i, t in enumerate(items):
        if isinstance(t, bool) or not isinstance(t, Real):
            raise TypeError(f"{what}[{i}] must be a real number or an arenagrad.Value, not {_describe(t)}")
        out.append(float(t))
    return out


def _numbers(values: Sequence[Value]) -> np.ndarray[Any, Any]:
    return np.array([v.data for v in values], dtype=np.float64)


def grad(f: Function) -> Callable[[Point], Any]:
    """``grad(f)(x)``: the gradient of a scalar function, a 1-D array (Values for Values in)."""

    def gradient(x: Point) -> Any:
        return value_and_grad(f)(x)[1]

    return gradient


def value_and_grad(f: Function) -> Callable[[Point], tuple[Any, Any]]:
    """``value_and_grad(f)(x)``: ``(f(x), grad(f)(x))`` from one evaluation of f."""

    def both(x: Point) -> tuple[Any, Any]:
        xs, graphs = _inputs(x)
        y = _scalar_output(f(xs))
        g = _grad(y, xs, create_graph=graphs) if xs else []
        if graphs:
            return y, g
        return y.data, _numbers(g)

    return both


def jvp(f: Function, x: Point, v: Point) -> tuple[Any, Any]:
    """Forward mode: ``(f(x), J(x) @ v)``; for a scalar f, a float and the directional derivative."""
    xs, graphs = _inputs(x)
    ts = _direction(v, len(xs), "v")
    ys, shape = _outputs(f(xs))
    ds = _tangent(ys, xs, ts, create_graph=graphs) if xs else [Value(0.0) for _ in ys]
    if graphs:
        return _nest(ys, shape), _nest(ds, shape)
    if not shape:
        return ys[0].data, ds[0].data
    return _numbers(ys).reshape(shape), _numbers(ds).reshape(shape)


def vjp(f: Function, x: Point) -> tuple[Any, Callable[[Any], Any]]:
    """Reverse mode: ``(f(x), vjp_fn)`` with ``vjp_fn(u) = u @ J(x)`` (u: one number per output)."""
    xs, graphs = _inputs(x)
    ys, shape = _outputs(f(xs))

    def vjp_fn(u: Any) -> Any:
        """u @ J: u has f's output shape (a number for a scalar f), floats or Values."""
        u = [u] if not shape else _flatten(u)
        us = _direction(u, len(ys), "u")
        g = _grad(ys, xs, us, create_graph=graphs) if xs else []
        return g if graphs else _numbers(g)

    if graphs:
        return _nest(ys, shape), vjp_fn
    return (ys[0].data if not shape else _numbers(ys).reshape(shape)), vjp_fn


def _jacobian(f: Function, x: Point, forward: bool | None) -> Any:
    xs, graphs = _inputs(x)
    ys, shape = _outputs(f(xs))
    n, m = len(xs), len(ys)
    use_forward = (n <= m) if forward is None else forward
    if not graphs:
        jac = _forward_jacobian(ys, xs) if use_forward else _reverse_jacobian(ys, xs)
        return jac.reshape(*shape, n)
    rows: list[list[Value]] = [[] for _ in range(m)]
    if n and use_forward:
        for j in range(n):
            basis = [Value(1.0 if k == j else 0.0) for k in range(n)]
            for i, d in enumerate(_tangent(ys, xs, basis, create_graph=True)):
                rows[i].append(d)
    elif n:
        for i in range(m):
            rows[i] = _grad(ys, xs, [1.0 if k == i else 0.0 for k in range(m)], create_graph=True)
    return _nest([d for row in rows for d in row], (*shape, n))


def _forward_jacobian(ys: list[Value], xs: list[Value]) -> np.ndarray[Any, Any]:
    """Columns by forward mode, numbers only. The graph is recorded once as a Tape and each column is
    one native tangent sweep (the same rules and sums as arenagrad.tangent, so the same bits); a
    graph with a custom op, which Tape.jvp cannot call, is swept in the arena instead."""
    n = len(xs)
    jac = np.zeros((len(ys), n))
    try:
        tape = Tape(ys, xs)
        for j, e in enumerate(np.eye(n)):
            jac[:, j] = tape.jvp(e)
    except ValueError:  # a custom op in the graph
        for j in range(n):
            jac[:, j] = _core._tangent(xs, [1.0 if k == j else 0.0 for k in range(n)], ys, False)
    return jac


def _reverse_jacobian(ys: list[Value], xs: list[Value]) -> np.ndarray[Any, Any]:
    """Rows by reverse mode, numbers only: one backward pass per output."""
    m = len(ys)
    rows = [_core._gradient(ys, [1.0 if k == i else 0.0 for k in range(m)], xs, False) for i in range(m)]
    return np.array(rows, dtype=np.float64).reshape(m, len(xs))


def jacfwd(f: Function) -> Callable[[Point], Any]:
    """``jacfwd(f)(x)``: the Jacobian (outputs x inputs) by forward mode, one pass per input."""
    return lambda x: _jacobian(f, x, True)


def jacrev(f: Function) -> Callable[[Point], Any]:
    """``jacrev(f)(x)``: the Jacobian (outputs x inputs) by reverse mode, one pass per output."""
    return lambda x: _jacobian(f, x, False)


def jacobian(f: Function) -> Callable[[Point], Any]:
    """``jacobian(f)(x)``: the Jacobian, by forward mode if f has no more inputs than outputs,
    else by reverse mode. Its shape is f's output shape followed by the number of inputs (a
    scalar f gives its gradient); Values in give nested lists of that shape."""
    return lambda x: _jacobian(f, x, None)


def hessian(f: Function) -> Callable[[Point], Any]:
    """``hessian(f)(x)``: the matrix of second derivatives (forward over reverse)."""
    return jacfwd(grad(f))


def hvp(f: Function, x: Point, v: Point) -> Any:
    """The Hessian-vector product ``H(x) @ v``: one forward pass over the recorded gradient."""
    return jvp(grad(f), x, v)[1]
