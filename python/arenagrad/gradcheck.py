"""Check ``backward()`` against central finite differences, as ``torch.autograd.gradcheck`` does."""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Callable, NamedTuple

__all__ = ["GradcheckError", "Mismatch", "gradcheck"]

_ENGINE_MODULES = {"native": "arenagrad", "reference": "arenagrad.reference"}


class Mismatch(NamedTuple):
    """One input whose analytic and numeric gradients disagree."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index, as intended
    label: str
    analytic: float
    numeric: float

    @property
    def abs_err(self) -> float:
        return abs(self.analytic - self.numeric)


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when some gradients disagree.

    An AssertionError because it reports a failed check (pytest shows it as a failure), not a bad argument:
    bad arguments raise TypeError or ValueError. ``mismatches`` lists the offending inputs; the message is a
    table of them.
    """

    def __init__(self, message: str, mismatches: Sequence[Mismatch]) -> None:
        super().__init__(message)
        self.mismatches = list(mismatches)


def _resolve_engine(engine: ModuleType | str | None) -> type:
    if engine is None:
        engine = "native"
    if isinstance(engine, str):
        if engine not in _ENGINE_MODULES:
            raise ValueError(f"engine must be 'native', 'reference' or a module with a Value, got {engine!r}")
        name = _ENGINE_MODULES[engine]
        try:
            module = importlib.import_module(name)
            return module.Value
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"the {engine} engine ({name}.Value) is not available: {exc}") from exc
    value_class = getattr(engine, "Value", None)
    if not isinstance(value_class, type):
        raise TypeError(f"engine must be 'native', 'reference' or a module exporting Value, got {engine!r}")
    return value_class


def _value_class_of(inputs: Sequence[Any], engine: ModuleType | str | None) -> type:
    classes = {type(x) for x in inputs if not isinstance(x, numbers.Real)}
    if len(classes) > 1:
        names = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in classes))
        raise TypeError(f"inputs mix Values of different engines ({names})")
    if classes:
        value_class = classes.pop()
        if engine is not None and value_class is not _resolve_engine(engine):
            raise TypeError(f"engine={engine!r} is not the engine of the input Values ({value_class})")
        return value_class
    return _resolve_engine(engine)


def _check_inputs(inputs: Any) -> list[Any]:
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        raise TypeError(f"inputs must be a list or tuple of numbers or Values, got {type(inputs).__name__}")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: give at least one number or Value to differentiate against")
    for i, x in enumerate(inputs):
        if not isinstance(x, numbers.Real) and not (hasattr(x, "data") and hasattr(x, "backward")):
            raise TypeError(f"inputs[{i}] must be a real number or a Value, got {type(x).__name__} {x!r}")
    return list(inputs)


def _check_tolerance(name: str, value: Any, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _check_arity(f: Callable[..., Any], count: int) -> None:
    """A clear TypeError, before anything runs, when ``f(*inputs)`` cannot bind ``count`` arguments."""
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): the call itself will tell
    try:
        signature.bind(*range(count))
    except TypeError as exc:
        name = getattr(f, "__qualname__", type(f).__qualname__)
        raise TypeError(
            f"gradcheck calls f(*inputs), one Value argument per input, as torch.autograd.gradcheck does, "
            f"but f = {name}{signature} cannot take {count} positional argument{'s' if count != 1 else ''}: "
            f"{exc}"
        ) from None


def _evaluate(f: Callable[..., Any], leaves: list[Any], value_class: type) -> Any:
    try:
        out = f(*leaves)
    except TypeError as exc:
        # Say how f was called: an f written for one list of Values (``lambda v: v[0]``) that got a single
        # Value otherwise fails with a bare "'Value' object is not subscriptable". Notes need Python 3.11.
        if hasattr(exc, "add_note"):
            count = len(leaves)
            exc.add_note(
                f"gradcheck called f(*inputs): {count} Value argument{'s' if count != 1 else ''}, one per "
                f"input, as torch.autograd.gradcheck does (not one list of Values)"
            )
        raise
    if not isinstance(out, value_class):
        raise TypeError(f"f must return a {value_class.__qualname__}, got {type(out).__name__} {out!r}")
    return out


def _agree(analytic: float, numeric: float, atol: float, rtol: float) -> bool:
    # Equal infinities agree; NaN never does, since a check that cannot compare is a failed check.
    if analytic == numeric:
        return True
    return abs(analytic - numeric) <= atol + rtol * abs(numeric)


def _table(mismatches: Sequence[Mismatch]) -> str:
    header = ("index", "label", "analytic", "numeric", "abs err")
    rows = [
        (str(m.index), m.label or "-", f"{m.analytic:.8g}", f"{m.numeric:.8g}", f"{m.abs_err:.3g}")
        for m in mismatches
    ]
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if col != 1 else cell.ljust(w) for col, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def gradcheck(
    f: Callable[..., Any],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    *,
    engine: ModuleType | str | None = None,
) -> bool:
    """True if ``backward()`` through ``f`` matches central finite differences at ``inputs``.

    ``f`` is called as ``f(*inputs)``, with one Value argument per input, as ``torch.autograd.gradcheck``
    calls it, and returns a scalar Value: ``gradcheck(lambda a, b: a * b + b.tanh(), [2.0, -3.0])``. An ``f``
    that cannot take ``len(inputs)`` positional arguments is a TypeError. ``inputs`` are numbers or Values;
    only their ``data`` (and ``label``) are used: ``f`` runs on fresh leaves, so the inputs' own ``grad`` is
    untouched.
    The engine is that of the input Values, else ``engine`` ('native', the default, 'reference', or a module
    exporting ``Value``). Input ``i`` passes when ``|analytic - numeric| <= atol + rtol * |numeric|`` with
    ``numeric = (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``. Otherwise :class:`GradcheckError` (an
    AssertionError) is raised with a table of the failing inputs: index, label, analytic, numeric, abs err.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    inputs = _check_inputs(inputs)
    eps = _check_tolerance("eps", eps, positive=True)
    atol = _check_tolerance("atol", atol, positive=False)
    rtol = _check_tolerance("rtol", rtol, positive=False)
    value_class = _value_class_of(inputs, engine)
    _check_arity(f, len(inputs))

    points = [float(x) if isinstance(x, numbers.Real) else float(x.data) for x in inputs]
    labels = ["" if isinstance(x, numbers.Real) else str(x.label) for x in inputs]

    def leaves(shift_index: int = -1, shift: float = 0.0) -> list[Any]:
        return [
            value_class(p + shift if i == shift_index else p, label=lbl)
            for i, (p, lbl) in enumerate(zip(points, labels))
        ]

    analytic_leaves = leaves()
    _evaluate(f, analytic_leaves, value_class).backward()
    analytic = [float(x.grad) for x in analytic_leaves]

    mismatches = []
    for i in range(len(points)):
        plus = _evaluate(f, leaves(i, eps), value_class).data
        minus = _evaluate(f, leaves(i, -eps), value_class).data
        numeric = (plus - minus) / (2.0 * eps)
        if not _agree(analytic[i], numeric, atol, rtol):
            mismatches.append(Mismatch(i, labels[i], analytic[i], numeric))

    if mismatches:
        summary = (
            f"gradcheck failed: {len(mismatches)} of {len(points)} inputs have analytic gradients "
            f"that disagree with finite differences (eps={eps:g}, atol={atol:g}, rtol={rtol:g})"
        )
        raise GradcheckError(f"{summary}\n{_table(mismatches)}", mismatches)
    return True
