"""Dual numbers: derivatives carried forward alongside values, with no graph at all.

A dual number a + b·ε has an ε with ε² = 0 (as i² = -1 for complex numbers), so
(a + b·ε)(c + d·ε) = ac + (ad + bc)·ε, and for any smooth f, f(x + ε) = f(x) + f'(x)·ε: the Taylor series
stops after its first term. Evaluate f on x + 1·ε and the dual part of the result is f'(x). We first build
just enough of a dual number by hand to differentiate the classic f(x) = 3x² + 2x, then use arenagrad.Dual,
which does the same natively for every operator and method of Value: f(x) = x² sin x, then the gradient
of f(x, y, z) and of the notebooks' tanh neuron in one pass, each variable seeded with a unit vector of
partials (multivariable dual numbers). Every derivative is checked against reverse mode: .backward() and
arenagrad.func.grad.

Usage: python examples/06_dual_numbers.py
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import numpy as np

from arenagrad import Dual, Value
from arenagrad import func as F


class TinyDual:
    """a + b·ε with ε² = 0: the sum and product rules are all it takes for polynomials."""

    def __init__(self, a: float, b: float = 0.0) -> None:
        self.a, self.b = a, b

    def __add__(self, other: TinyDual | float) -> TinyDual:
        other = other if isinstance(other, TinyDual) else TinyDual(other)
        return TinyDual(self.a + other.a, self.b + other.b)

    def __mul__(self, other: TinyDual | float) -> TinyDual:
        other = other if isinstance(other, TinyDual) else TinyDual(other)
        return TinyDual(self.a * other.a, self.a * other.b + self.b * other.a)  # the ε² term is gone

    __radd__ = __add__
    __rmul__ = __mul__


def reverse_mode(f: Callable[..., Any], point: list[float]) -> tuple[list[float], np.ndarray]:
    """f's gradient twice by reverse mode: leaf grads after .backward(), and arenagrad.func.grad."""
    leaves = [Value(x) for x in point]
    f(*leaves).backward()
    return [v.grad for v in leaves], F.grad(lambda xs: f(*xs))(point)


def agree(forward: Any, backward: list[float], transform: np.ndarray) -> bool:
    """Forward mode and both reverse-mode results agree to 1e-13 (they may sum in different orders)."""
    return all(np.allclose(forward, r, rtol=1e-13, atol=1e-15) for r in (backward, transform))


def main() -> int:
    ok = True

    # 1. By hand: f(x) = 3x² + 2x at x = 2, with dual part 1. f'(x) = 6x + 2 = 14.
    y = 3 * TinyDual(2.0, 1.0) * TinyDual(2.0, 1.0) + 2 * TinyDual(2.0, 1.0)
    print(f"f(x) = 3x^2 + 2x at 2 + 1ε:  {y.a} + {y.b}ε   (f(2) = 16, f'(2) = 6*2 + 2 = 14)")
    d = 3 * Dual(2.0, 1.0) ** 2 + 2 * Dual(2.0, 1.0)
    print(f"the same with arenagrad.Dual: {d!r}")
    ok &= (y.a, y.b) == (d.real, d.dual) == (16.0, 14.0)

    # 2. One variable, any op: f(x) = x² sin x, f'(x) = 2x sin x + x² cos x.
    x = 2.0
    d = Dual(x, 1.0) ** 2 * Dual(x, 1.0).sin()
    exact = 2 * x * math.sin(x) + x * x * math.cos(x)
    backward, transform = reverse_mode(lambda v: v**2 * v.sin(), [x])
    print(f"\nf(x) = x^2 sin x at x = 2: f = {d.real:.12f}, f' = {d.dual:.12f}")
    print(f"  by hand, 2x sin x + x^2 cos x = {exact:.12f}")
    print(f"  backward() {backward[0]:.12f}, arenagrad.func.grad {transform[0]:.12f}")
    ok &= math.isclose(d.dual, exact, rel_tol=1e-14) and agree(d.dual, backward, transform)

    # 3. Several variables in one pass: each variable's dual part is a vector of partials, x = 1 + (1, 0, 0)ε,
    # y = 2 + (0, 1, 0)ε, z = 3 + (0, 0, 1)ε, and the result's dual part is the whole gradient.
    def f(x: Any, y: Any, z: Any) -> Any:
        return x * y * z + (x * y).exp() / z + z.sqrt() * x.sin()

    point = [1.0, 2.0, 3.0]
    variables = Dual.variables(point)
    print(f"\nf(x, y, z) = xyz + exp(xy)/z + sqrt(z) sin x at {tuple(point)}, seeded with unit vectors:")
    for name, v in zip("xyz", variables):
        print(f"  {name} = {v!r}")
    out = f(*variables)
    backward, transform = reverse_mode(f, point)
    print(f"  gradient in one forward pass: {out.dual}")
    print(f"  backward():                   {np.array(backward)}")
    print(f"  arenagrad.func.grad:          {transform}")
    ok &= agree(out.dual, backward, transform)

    # 4. The notebooks' neuron o = tanh(x1 w1 + x2 w2 + b): all five partials at once.
    def neuron(x1: Any, x2: Any, w1: Any, w2: Any, b: Any) -> Any:
        return (x1 * w1 + x2 * w2 + b).tanh()

    names = ["x1", "x2", "w1", "w2", "b"]
    point = [2.0, 0.0, -3.0, 1.0, 6.8813735870195432]
    o = neuron(*Dual.variables(point))
    backward, transform = reverse_mode(neuron, point)
    print(f"\nthe tanh neuron: o = {o.real:.4f}")
    for name, partial, grad in zip(names, o.dual, backward):
        print(f"  d o / d {name:<3} {partial:8.4f}   backward() {grad:8.4f}")
    ok &= agree(o.dual, backward, transform)

    if not ok:
        print("a dual-number derivative differs from reverse mode")
        return 1
    print("\ndual numbers and reverse mode agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
