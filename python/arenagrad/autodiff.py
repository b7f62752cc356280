"""Derivatives as values: ``grad`` (reverse mode, as ``torch.autograd.grad``) and ``tangent``
(forward mode), neither of which touches any ``.grad``.

Both run natively over the op table's rules (cpp/derivatives.cpp). With ``create_graph=True``
the results are Values with graphs of their own, built from the same rules, so they can be
differentiated again to any order; ``arenagrad.func`` builds its transforms on these two.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Union

from . import _core
from ._core import Value
from ._describe import describe as _describe

Number = Union[float, int]
Values = Union[Value, Sequence[Value]]
Seeds = Union[Value, Number, Sequence[Union[Value, Number]], None]

__all__ = ["grad", "tangent"]


def _value_list(xs: object, what: str) -> list[Value]:
    items = [xs] if isinstance(xs, Value) else xs
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"{what} must be an arenagrad.Value or a sequence of them, not {_describe(xs)}")
    out = list(items)
    if not out:
        raise ValueError(f"{what} is empty: give at least one Value")
    for i, v in enumerate(out):
        if not isinstance(v, Value):
            raise TypeError(f"{what}[{i}] must be an arenagrad.Value, not {_describe(v)}")
    return out


def _seed_list(seeds: object, count: int, what: str, single: bool) -> list[Value | float]:
    per = "output" if what == "grad_outputs" else "input"
    items = [seeds] if single and not isinstance(seeds, Sequence) else seeds
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"{what} must be a sequence of numbers or Values, not {_describe(seeds)}")
    out = list(items)
    if len(out) != count:
        raise ValueError(f"{what} has {len(out)} entries for {count} {per}s; give one per {per}")
    for i, s in enumerate(out):
        if isinstance(s, bool) or not isinstance(s, (Value, Real)):
            raise TypeError(f"{what}[{i}] must be a real number or an arenagrad.Value, not {_describe(s)}")
    return out


def grad(
    outputs: Values,
    inputs: Values,
    grad_outputs: Seeds = None,
    *,
    create_graph: bool = False,
) -> list[Value]:
    """The gradient of ``sum(grad_outputs[k] * outputs[k])`` with respect to each input.

    As ``torch.autograd.grad``, except that an input the outputs do not depend on gets 0 (not
    an error) and the result is always a list. ``.grad`` is never read or written. Without
    ``create_graph`` the results are new constant Values (their numbers equal what
    ``.backward()`` adds to zeroed grads, bit for bit); with it, they are Values whose graphs
    record the backward pass, so they can be differentiated again, replayed or drawn.
    ``grad_outputs`` defaults to 1 for each output; with ``create_graph`` it may hold Values
    (a vector-Jacobian product that is itself differentiable).
    """
    roots = _value_list(outputs, "outputs")
    xs = _value_list(inputs, "inputs")
    single = isinstance(outputs, Value)
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be a bool, not {_describe(create_graph)}")
    if create_graph:
        seeds: list[Value] = []
        if grad_outputs is not None:
            seeds = [
                s if isinstance(s, Value) else Value(float(s))
                for s in _seed_list(grad_outputs, len(roots), "grad_outputs", single)
            ]
        return _core._gradient(roots, seeds, xs, True)
    numbers = [1.0] * len(roots)
    if grad_outputs is not None:
        numbers = [
            s.data if isinstance(s, Value) else float(s)
            for s in _seed_list(grad_outputs, len(roots), "grad_outputs", single)
        ]
    return [Value(g) for g in _core._gradient(roots, numbers, xs, False)]


def tangent(
    outputs: Values,
    inputs: Values,
    tangents: Seeds,
    *,
    create_graph: bool = False,
) -> list[Value]:
    """Forward mode: the derivative of each output along ``tangents`` (one per input).

    Only what depends on an input with a nonzero tangent is differentiated (JAX's symbolic
    zeros), so an infinite or NaN partial of anything else never reaches the result. With
    ``create_graph`` the tangents may be Values and the results carry graphs.
    """
    ys = _value_list(outputs, "outputs")
    xs = _value_list(inputs, "inputs")
    single = isinstance(inputs, Value)
    if len({id(x) for x in xs}) != len(xs):
        raise ValueError("inputs holds the same Value twice; give each input once")
    ts = _seed_list(tangents, len(xs), "tangents", single) if tangents is not None else None
    if ts is None:
        raise TypeError("tangents must be given: one number or Value per input")
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be a bool, not {_describe(create_graph)}")
    if create_graph:
        return _core._tangent(xs, [t if isinstance(t, Value) else Value(float(t)) for t in ts], ys, True)
    numbers = [t.data if isinstance(t, Value) else float(t) for t in ts]
    return [Value(t) for t in _core._tangent(xs, numbers, ys, False)]
