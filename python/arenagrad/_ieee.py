"""C's math on Python floats: the IEEE results (inf, nan) where Python's operators and math module raise.

Derivative code of the reference engine and of the optimizers uses these, so that it computes what the
native engine's C++ computes, bit for bit, instead of raising.
"""

from __future__ import annotations

import math

__all__ = ["ieee_cos", "ieee_div", "ieee_exp", "ieee_log", "ieee_pow", "ieee_sin"]


def _is_odd_integer(x: float) -> bool:
    return math.isfinite(x) and x.is_integer() and x % 2 == 1


def ieee_div(a: float, b: float) -> float:
    """a / b, IEEE style: ±inf or nan instead of ZeroDivisionError."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def ieee_pow(a: float, b: float) -> float:
    """a ** b with C99 pow's results where Python would raise or go complex."""
    if a < 0 and math.isfinite(a) and math.isfinite(b) and not b.is_integer():
        return math.nan
    try:
        return a**b
    except ZeroDivisionError:
        return math.copysign(math.inf, a) if _is_odd_integer(b) else math.inf
    except OverflowError:
        return -math.inf if a < 0 and _is_odd_integer(b) else math.inf


def ieee_exp(a: float) -> float:
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


def ieee_log(a: float) -> float:
    if a < 0:
        return math.nan
    return -math.inf if a == 0 else math.log(a)


def ieee_sin(a: float) -> float:
    return math.sin(a) if not math.isinf(a) else math.nan


def ieee_cos(a: float) -> float:
    return math.cos(a) if not math.isinf(a) else math.nan
