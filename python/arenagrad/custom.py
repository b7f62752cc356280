"""Ops written in Python: the notebooks' exercise of giving an op its value and local derivatives.

``@custom_op`` turns ``fn(*floats) -> (value, partials)`` into an op on Values whose result is a
graph node like any other: ``.backward()``, ``arenagrad.grad``, forward mode, ``gradcheck``,
``draw_dot`` (its ``_op`` is the function's name) and scalar ``Tape`` replay all work. Replay calls
``fn`` again for every custom node (Python per node, so at Python speed); batched replay and
``Tape.jvp`` run natively and refuse graphs that hold custom ops.

To be differentiated twice (``create_graph``), an op also needs its partials as Values-in,
Values-out code, ``graph_partials``; without it, recording its derivative raises RuntimeError.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any, overload

from . import _core
from ._core import Value
from ._describe import describe as _describe

__all__ = ["CustomOp", "custom_op"]


def _real(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"{what} must be a real number, not {_describe(x)}")
    return float(x)


def _as_value(x: object, what: str) -> Value:
    """x itself if it is a Value, else a leaf holding the real number x."""
    return x if isinstance(x, Value) else Value(_real(x, what))


def _evaluate(
    fn: Callable[..., tuple[float, Sequence[float]]], name: str, *xs: float
) -> tuple[float, list[float]]:
    """fn at xs, checked: a real value and one real partial per input."""
    result = fn(*xs)
    if not isinstance(result, Sequence) or isinstance(result, (str, bytes)) or len(result) != 2:
        raise TypeError(
            f"custom op '{name}' must return (value, partials), a value and one partial derivative "
            f"per input; it returned {_describe(result)}"
        )
    value, partials = result
    v = _real(value, f"the value of custom op '{name}'")
    if isinstance(partials, Real) and len(xs) == 1:
        partials = [float(partials)]
    if not isinstance(partials, Sequence) or isinstance(partials, (str, bytes)):
        raise TypeError(f"the partials of custom op '{name}' must be a sequence, not {_describe(partials)}")
    if len(partials) != len(xs):
        raise ValueError(
            f"custom op '{name}' gave {len(partials)} partials for {len(xs)} inputs; one per input"
        )
    ps = [_real(p, f"partial {i} of custom op '{name}'") for i, p in enumerate(partials)]
    return v, ps


def _record(graph_partials: Callable[..., Sequence[Value]], name: str, *xs: Value) -> list[Value]:
    """graph_partials at the Values xs, checked: one Value (or number) per input."""
    partials = graph_partials(*xs)
    if isinstance(partials, Value) and len(xs) == 1:
        partials = [partials]
    if not isinstance(partials, Sequence) or len(partials) != len(xs):
        raise ValueError(f"graph_partials of custom op '{name}' must return one Value per input")
    return [_as_value(p, f"graph partial {i} of custom op '{name}'") for i, p in enumerate(partials)]


class CustomOp:
    """An op defined by a Python function; call it on Values (or numbers) to make a node."""

    def __init__(
        self,
        fn: Callable[..., tuple[float, Sequence[float]]],
        graph_partials: Callable[..., Sequence[Value]] | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"custom_op needs a function, not {_describe(fn)}")
        if graph_partials is not None and not callable(graph_partials):
            raise TypeError(f"graph_partials must be a function of Values, not {_describe(graph_partials)}")
        self._fn = fn
        self._graph_partials = graph_partials
        self.name = name if name is not None else getattr(fn, "__name__", "custom")
        # The native function holds partials over fn, not bound methods of self: such a cycle (self ->
        # native -> method -> self) would outlive every node of the op only until the next collection
        # (src/custom_op.cpp reports what the native function holds), but there is no need to make one.
        self._evaluate = functools.partial(_evaluate, fn, self.name)
        record = None if graph_partials is None else functools.partial(_record, graph_partials, self.name)
        self._native = _core._CustomFunction(self._evaluate, record, self.name)

    # Read-only: the native function holds them, so rebinding them here could not take effect.
    @property
    def fn(self) -> Callable[..., tuple[float, Sequence[float]]]:
        return self._fn

    @property
    def graph_partials(self) -> Callable[..., Sequence[Value]] | None:
        return self._graph_partials

    def __repr__(self) -> str:
        return f"custom_op({self.name})"

    def __call__(self, *inputs: Value | float) -> Value:
        if not inputs:
            raise TypeError(f"custom op '{self.name}' needs at least one input")
        values = [_as_value(x, f"input {i} of custom op '{self.name}'") for i, x in enumerate(inputs)]
        value, partials = self._evaluate(*(v.data for v in values))
        result: Value = self._native.apply(values, value, partials)
        return result


@overload
def custom_op(fn: Callable[..., tuple[float, Sequence[float]]], /) -> CustomOp: ...
@overload
def custom_op(
    *, graph_partials: Callable[..., Sequence[Value]] | None = None, name: str | None = None
) -> Callable[[Callable[..., tuple[float, Sequence[float]]]], CustomOp]: ...


def custom_op(
    fn: Callable[..., tuple[float, Sequence[float]]] | None = None,
    /,
    *,
    graph_partials: Callable[..., Sequence[Value]] | None = None,
    name: str | None = None,
) -> Any:
    """Makes an op from ``fn(*floats) -> (value, partials)``; use as ``@custom_op`` or
    ``@custom_op(graph_partials=...)``.

    >>>     >>> @custom_op
    ... def my_tanh(x):
    ...     t = math.tanh(x)
    ...     return t, [1 - t * t]
    >>> y = my_tanh(Value(0.5))
    >>> y._op
    'my_tanh'
    """
    if fn is None:
        return lambda f: CustomOp(f, graph_partials, name)
    return CustomOp(fn, graph_partials, name)
