"""arenagrad: a scalar autograd engine with micrograd's API and a C++ node arena underneath.

``Value`` objects record a graph as you compute; ``.backward()`` fills in every ``.grad``.
The graph lives in a native arena (see ``cpp/``); ``arenagrad.reference`` is the same API in
plain Python, for reading and for cross-checking.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import datasets, losses, nn, optim
from ._core import ParamGroup, Tape, Value, arena_stats, dot, sum
from .draw import draw_dot
from .gradcheck import GradcheckError, gradcheck
from .serialization import load, save

try:
    __version__ = _version("arenagrad")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "GradcheckError",
    "ParamGroup",
    "Tape",
    "Value",
    "__version__",
    "arena_stats",
    "datasets",
    "dot",
    "draw_dot",
    "gradcheck",
    "load",
    "losses",
    "nn",
    "optim",
    "save",
    "sum",
]
