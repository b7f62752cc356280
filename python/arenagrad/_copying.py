"""pickle and copy support for the native ``Value`` and ``Dual``.

Both are C types (src/value_type.cpp, src/dual_type.cpp), so their reducers are registered with ``copyreg``,
which ``pickle``, ``copy.copy`` and ``copy.deepcopy`` all consult. The reference engine's ``Value.__reduce__``
does the same.
"""

from __future__ import annotations

import copyreg
from typing import Any

from ._core import Dual, Value


def _reduce_value(value: Value) -> tuple[Any, ...]:
    # Like torch's tensors: a copy of a graph node would need a copy of the graph (or share its children and
    # accumulate into the original's leaves), so only leaves copy. A leaf becomes a new leaf: data, grad,
    # label. The grad is set as "slot state" (setattr after construction), so a pickle names only the
    # public arenagrad.Value and stays loadable across versions.
    if value._op:
        raise TypeError(
            f"only leaf Values can be copied or pickled; this one is the output of {value._op!r} in a graph. "
            "Use Value(v.data) to copy the number, or copy the module or the leaves"
        )
    return (Value, (value.data, value.label), (None, {"grad": value.grad}))


copyreg.pickle(Value, _reduce_value)


def _reduce_dual(dual: Dual) -> tuple[Any, ...]:
    # A Dual is only numbers, so it copies whole; the constructor takes .dual back, a float or the partials.
    return (Dual, (dual.real, dual.dual))


copyreg.pickle(Dual, _reduce_dual)
