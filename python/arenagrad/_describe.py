"""How error messages name the type of a value the user passed."""

from __future__ import annotations


def describe(x: object) -> str:
    """``float`` for a builtin, ``module.Class`` otherwise."""
    kind = type(x)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
