"""Newton's method on the Rosenbrock function, with arenagrad.func's gradient and Hessian.

f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 has its minimum, 0, at (1, 1) at the bottom of a long curved valley,
which makes plain gradient descent crawl. Newton's method solves H(p) step = -grad(p) at every iterate and
moves by that step; arenagrad.func.value_and_grad and arenagrad.func.hessian (forward mode over reverse
mode) supply both derivatives, and numpy solves the 2x2 system. We start at the classic (-1.2, 1) and print
every iterate, f, |grad f| and the distance to (1, 1). Pure Newton does not promise a smaller f at every
step (the second step lands high on the valley's wall), but once near the minimum it converges
quadratically: the error roughly squares at each step, so the number of correct digits doubles. The
derivatives are checked against the hand-derived formulas at every step.

Usage: python examples/07_newton_rosenbrock.py
"""

from __future__ import annotations

import math
import sys

import numpy as np

from arenagrad import Value
from arenagrad import func as F

START = (-1.2, 1.0)
MINIMUM = np.array([1.0, 1.0])
TOLERANCE = 1e-12
MAX_STEPS = 20


def rosenbrock(p: list[Value]) -> Value:
    x, y = p
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def by_hand(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient and Hessian worked out on paper, to check arenagrad's."""
    x, y = p
    gradient = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    hessian = np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200.0]])
    return gradient, hessian


def digits(error: float) -> str:
    """How many decimal digits of (1, 1) the iterate has right."""
    if error >= 1:
        return ""
    return "  all" if error == 0 else f"{-math.log10(error):5.1f}"


def main() -> int:
    value_and_grad = F.value_and_grad(rosenbrock)
    hessian = F.hessian(rosenbrock)
    p = np.array(START)
    errors = []
    print(f"{'step':>4}  {'x':>19}  {'y':>19}  {'f':>10}  {'|grad f|':>9}  {'error':>9}  digits")
    for step in range(MAX_STEPS + 1):
        f, g = value_and_grad(p)
        H = hessian(p)
        g_hand, H_hand = by_hand(p)
        if not (np.allclose(g, g_hand, rtol=1e-12, atol=1e-9) and np.allclose(H, H_hand, rtol=1e-12)):
            print(f"at {p} arenagrad's derivatives differ from the formulas:\n{g} {g_hand}\n{H}\n{H_hand}")
            return 1
        error = float(np.linalg.norm(p - MINIMUM))
        errors.append(error)
        row = f"{step:4d}  {p[0]:19.16f}  {p[1]:19.16f}  {f:10.3e}  {np.linalg.norm(g):9.2e}  {error:9.2e}"
        print(f"{row}  {digits(error)}".rstrip())
        if error <= TOLERANCE:
            break
        p = p - np.linalg.solve(H, g)  # the Newton step: the minimum of the local quadratic model
    else:
        print(f"still {errors[-1]:.2e} away from (1, 1) after {MAX_STEPS} Newton steps")
        return 1
    print(f"reached (1, 1) to {TOLERANCE:g} in {step} Newton steps")

    # Quadratic convergence: once close (error < 0.1), each error is at most a small constant times the
    # square of the one before (for linear convergence the ratio error[k+1] / error[k]^2 would blow up).
    close = [(a, b) for a, b in zip(errors, errors[1:]) if a < 0.1 and b > 0]
    ratios = [b / (a * a) for a, b in close]
    print("near the minimum, error[k+1] / error[k]^2 =", "  ".join(f"{r:.3g}" for r in ratios))
    if len(close) < 2 or any(r > 10 for r in ratios):
        print("the convergence is not quadratic")
        return 1
    print("the error squares at every step near the minimum: quadratic convergence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
