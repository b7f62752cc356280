"""arenagrad: a scalar autograd engine with micrograd's API and a C++ node arena underneath.

``Value`` objects record a graph as you compute; ``.backward()`` fills in every ``.grad``.
The graph lives in a native arena (see ``cpp/``); ``arenagrad.reference`` is the same API in
plain Python, for reading and for cross-checking. ``Dual`` is forward mode without a graph: dual
numbers that carry derivatives along with values, by the same op table.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import _copying as _copying  # registers pickle/copy support for the native Value and Dual
from . import datasets, func, losses, nn, optim
from ._core import Dual, ParamGroup, Tape, Value, arena_stats
from ._core import dot as dot  # re-exported, not in __all__ (see below)
from ._core import logsumexp as logsumexp
from ._core import sum as sum
from .autodiff import grad, tangent
from .custom import CustomOp, custom_op
from .draw import draw_dot
from .gradcheck import GradcheckError, gradcheck
from .serialization import load, save
from .vectorize import Vectorized, vectorize

# sum, dot and logsumexp are deliberately not in __all__: `from arenagrad import *` must not shadow the
# builtin sum, which micrograd code uses on plain numbers (its demo computes accuracy with it).
try:
    __version__ = _version("arenagrad")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CustomOp",
    "Dual",
    "GradcheckError",
    "ParamGroup",
    "Tape",
    "Value",
    "Vectorized",
    "__version__",
    "arena_stats",
    "custom_op",
    "datasets",
    "draw_dot",
    "func",
    "grad",
    "gradcheck",
    "load",
    "losses",
    "nn",
    "optim",
    "save",
    "tangent",
    "vectorize",
]
