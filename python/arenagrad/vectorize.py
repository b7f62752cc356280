"""``arenagrad.vectorize``: scalar code run over numpy arrays, natively.

``vectorize(f)`` records ``f`` once (per signature, like a ``Tape``) and replays the recording for
every sample of its array arguments in one batched pass, so the per-sample work is native code and
no Python runs per sample. The recording is exact for straight-line code; a Python ``if`` on a
value's ``.data`` (a number argument's included) was decided once, at the sample the recording was
made at (the first sample of the first call; with ``errors="nan"``, the first one ``f`` does not
fail on), as for any ``Tape``. Ops whose derivative depends on the data (``relu``, ``abs``) are
re-evaluated per sample. Calls from several threads take turns.

Values that ``f`` reads but does not take as arguments (a model's parameters) are shared by every
sample and read at each call, so parameter updates are seen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from numbers import Real
from typing import Any, Literal, Union

import numpy as np
import numpy.typing as npt

from ._core import Tape, Value
from ._describe import describe as _describe

__all__ = ["Vectorized", "vectorize"]

Errors = Literal["raise", "nan"]
_Arrays = list[npt.NDArray[np.float64]]
_RECORDING_TRIES = 32  # with errors="nan", samples tried in turn until f runs on one
# How one argument reaches f: a Value per sample ("row"), a list of m Values per sample (m), or one
# Value shared by every sample ("scalar", a number broadcast).
_Kind = Union[str, int]


def _is_bool(v: object) -> bool:
    return isinstance(v, (bool, np.bool_)) or (isinstance(v, np.ndarray) and v.dtype.kind == "b")


def _real_array(x: object, i: int) -> npt.NDArray[np.float64]:
    if isinstance(x, Value):
        raise TypeError(f"argument {i} is a Value; a vectorized function takes numbers and numpy arrays")
    if isinstance(x, (bool, np.bool_)) or isinstance(x, (str, bytes)):
        raise TypeError(f"argument {i} must be real numbers, not {_describe(x)}")
    # numpy would read [1, True] as the integers [1, 1]; a bool is not a number here, as for Value.
    if isinstance(x, (list, tuple)) and any(_is_bool(v) for v in np.asarray(x, dtype=object).flat):
        raise TypeError(f"argument {i} must be real numbers, not a {type(x).__name__} holding a bool")
    a = np.asarray(x)
    if a.dtype.kind == "O" and all(isinstance(v, Real) and not isinstance(v, bool) for v in a.ravel()):
        a = a.astype(np.float64)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"argument {i} must be real numbers, not an array of dtype {a.dtype}")
    if a.ndim > 2:
        raise ValueError(f"argument {i} has shape {a.shape}; give a number, (n,) or (n, m)")
    return np.asarray(a, dtype=np.float64)


class _Recording:
    """f recorded for one signature: its tape, the Values standing for scalar arguments, the shape of
    its result."""

    def __init__(self, f: Callable[..., Any], kinds: tuple[_Kind, ...], sample: list[Any]):
        inputs: list[Value] = []
        self.scalars: list[tuple[int, Value]] = []  # (argument, its shared leaf)
        args: list[Any] = []
        for i, (kind, a) in enumerate(zip(kinds, sample)):
            if kind == "scalar":
                leaf = Value(float(a))
                self.scalars.append((i, leaf))
                args.append(leaf)
            elif kind == "row":
                v = Value(float(a))
                inputs.append(v)
                args.append(v)
            else:
                vs = [Value(float(c)) for c in a]
                inputs.extend(vs)
                args.append(vs)
        out = f(*args)
        self.roots: list[Value] = []
        self.layout = self._flatten(out, top=True)
        if not self.roots:
            raise ValueError("f returned no Values")
        self.tape = Tape(self.roots, inputs)

    def _flatten(self, y: object, top: bool) -> Any:
        """Appends y's Values to roots; returns how to rebuild the result: a tuple of those for a
        tuple, else (start, shape): roots[start:] of one Value (shape ()) or of a list of Values,
        nested to any depth (a Jacobian's rows), which comes back as an (n, *shape) array."""
        if top and isinstance(y, tuple):
            return [self._flatten(item, top=False) for item in y]
        start = len(self.roots)
        shape = self._collect(y)
        if shape is None:
            del self.roots[start:]
            what = "a Value, a list of Values (nested to any depth), or a tuple of those"
            raise TypeError(f"a vectorized function must return {what}, not {_describe(y)}")
        return (start, shape)

    def _collect(self, y: object) -> tuple[int, ...] | None:
        if isinstance(y, Value):
            self.roots.append(y)
            return ()
        if not isinstance(y, (list, np.ndarray)) or len(y) == 0:
            return None
        shapes = {self._collect(item) for item in y}
        if len(shapes) != 1 or None in shapes:
            return None
        (inner,) = shapes
        assert inner is not None
        return (len(y), *inner)

    def unpack(self, out: npt.NDArray[np.float64], layout: Any, squeeze: bool) -> Any:
        if isinstance(layout, list):
            return tuple(self.unpack(out, item, squeeze) for item in layout)
        start, shape = layout
        size = int(np.prod(shape, dtype=np.int64))
        block = out[:, start : start + size].reshape((out.shape[0], *shape))
        if squeeze:
            return float(block[0]) if shape == () else block[0]
        return block


def _add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(note)


class Vectorized:
    """The result of ``vectorize(f)``: call it with numbers and numpy arrays."""

    def __init__(self, f: Callable[..., Any], errors: Errors) -> None:
        self.f = f
        self.errors: Errors = errors
        self.failed: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._recordings: dict[tuple[_Kind, ...], _Recording] = {}
        # One call at a time: a call writes its number arguments into the recording's shared leaves
        # and replays in the tape's own buffers.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"vectorize({getattr(self.f, '__name__', self.f)!r})"

    def tape(self, *args: Any) -> Tape:
        """The Tape recorded for these arguments' signature (recording it if need be)."""
        kinds, arrays, n = self._signature(args)
        with self._lock:
            return self._recording(kinds, arrays, n).tape

    def _signature(
        self, args: tuple[Any, ...]
    ) -> tuple[tuple[_Kind, ...], _Arrays, int]:
        if not args:
            raise TypeError("a vectorized function needs at least one argument")
        arrays = [_real_array(a, i) for i, a in enumerate(args)]
        lengths = {a.shape[0] for a in arrays if a.ndim >= 1}
        if len(lengths) > 1:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise ValueError(f"the arguments' first dimensions differ ({shapes}); one sample per row")
        n = lengths.pop() if lengths else 1
        if n == 0:
            raise ValueError("the arguments are empty; give at least one sample")
        kinds = tuple("scalar" if a.ndim == 0 else "row" if a.ndim == 1 else int(a.shape[1]) for a in arrays)
        return kinds, arrays, n

    def _recording(self, kinds: tuple[_Kind, ...], arrays: _Arrays, n: int) -> _Recording:
        rec = self._recordings.get(kinds)
        if rec is None:
            rec = self._recordings[kinds] = self._record(kinds, arrays, n)
        return rec

    def _record(self, kinds: tuple[_Kind, ...], arrays: _Arrays, n: int) -> _Recording:
        """f recorded at the first sample (with errors="nan": the first of the first few that f
        does not fail on, since a recording is made by running f)."""
        tries = 1 if self.errors == "raise" else min(n, _RECORDING_TRIES)
        first_error: Exception | None = None
        for s in range(tries):
            sample = [a if k == "scalar" else a[s] for k, a in zip(kinds, arrays)]
            try:
                return _Recording(self.f, kinds, sample)
            except (ArithmeticError, ValueError) as e:
                if first_error is None:
                    first_error = e
                    _add_note(e, f"(raised while recording {self!r} at sample {s})")
        assert first_error is not None
        if tries > 1:
            _add_note(first_error, f"(each of the first {tries} samples failed, so none could be recorded)")
        raise first_error

    def __call__(self, *args: Any) -> Any:
        kinds, arrays, n = self._signature(args)
        columns = [a[:, None] if k == "row" else a for k, a in zip(kinds, arrays) if k != "scalar"]
        x = np.ascontiguousarray(np.hstack(columns)) if columns else np.empty((n, 0))
        with self._lock:
            self.failed = np.empty(0, dtype=np.int64)
            rec = self._recording(kinds, arrays, n)
            for i, leaf in rec.scalars:
                leaf.data = float(arrays[i])
            out = rec.tape.forward_batch(x, errors=self.errors)
            self.failed = rec.tape.failed
        return rec.unpack(out, rec.layout, squeeze=all(k == "scalar" for k in kinds))


def vectorize(f: Callable[..., Any], *, errors: Errors = "raise") -> Vectorized:
    """Runs scalar code ``f`` over numpy arrays natively.

    ``f`` takes Values and returns a Value, a list of Values, or a tuple of those. The result takes
    one argument per parameter of ``f``: a number (shared by every sample), a 1-D array of n samples
    (``f`` gets a Value) or an (n, m) array (``f`` gets a list of m Values), and returns numpy arrays
    of n rows: (n,) for a Value, (n, m) for a list. With every argument a number it returns numbers.

    ``errors="raise"`` (the default) raises for the first sample an op fails on, naming it;
    ``errors="nan"`` makes that sample's outputs NaN (NumPy's way) and lists the failed samples in
    the result's ``.failed``.

    It composes with ``arenagrad.func``: ``vectorize(func.grad(f))(X)`` gives per-sample gradients.

    >>> import numpy as np
    >>> square_plus = vectorize(lambda x, y: x * x + y)
    >>> square_plus(np.array([1.0, 2.0, 3.0]), 0.5).tolist()
    [1.5, 4.5, 9.5]
    """
    if not callable(f):
        raise TypeError(f"vectorize needs a function, not {_describe(f)}")
    if errors not in ("raise", "nan"):
        raise ValueError(f"errors must be 'raise' or 'nan', not {errors!r}")
    return Vectorized(f, errors)
