"""arenagrad: a scalar autograd engine with micrograd's API and a C++ node arena underneath.

``Value`` objects record a graph as you compute; ``.backward()`` fills in every ``.grad``.
The graph lives in a native arena (see ``cpp/``); ``arenagrad.reference`` is the same API in
plain Python, for reading and for cross-checking.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from ._core import ParamGroup, Tape, Value, arena_stats, dot, sum

try:
    __version__ = _version("arenagrad")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["ParamGroup", "Tape", "Value", "__version__", "arena_stats", "dot", "sum"]
