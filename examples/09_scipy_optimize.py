"""arenagrad supplies scipy.optimize.minimize's derivatives: gradients, Hessians, Hessian-vector products.

The problem: logistic regression with an L2 penalty on 200 moons samples, on the nine monomials of degree 1
to 3 in (x1, x2), so the classifier's boundary can bend around the moons. The loss is written once, as
arenagrad code on a list of ten weight Values, and arenagrad.func turns it into everything scipy asks for:

    jac=True    fun returns (loss, gradient): func.value_and_grad, one reverse pass
    hess=       the 10 x 10 Hessian: func.hessian, forward mode over reverse mode
    hessp=      H @ p without forming H: func.hvp, one forward pass over the recorded gradient

We minimize it with BFGS (gradients only, its curvature learned from them), Newton-CG without second
derivatives (scipy then differences gradients to get H @ p), and Newton-CG and trust-ncg with exact second
derivatives, both as a Hessian and as Hessian-vector products. The table compares iterations and evaluations;
every run must reach the same minimum (|gradient| under 1e-6, the same weights to 1e-5), and exact second
derivatives must take at most half of BFGS's iterations.

Usage: python examples/09_scipy_optimize.py   (needs SciPy: pip install scipy)
"""

from __future__ import annotations

import sys
import time

import numpy as np

import arenagrad as ag
from arenagrad import Value
from arenagrad import func as F
from arenagrad.losses import bce_with_logits

ALPHA = 1e-3  # the L2 penalty's weight (the bias is not penalized)
X, Y = ag.datasets.moons(n_samples=200, noise=0.1, seed=0)
FEATURES = [[x1**i * x2 ** (d - i) for d in (1, 2, 3) for i in range(d + 1)] for x1, x2 in X.tolist()]
TARGETS = [float(t) for t in Y]


def loss(w: list[Value]) -> Value:
    """The mean logistic loss of the linear classifier w[0] + w[1:] . features, plus ALPHA |w[1:]|^2."""
    bias, weights = w[0], w[1:]
    logits = [ag.dot(weights, f) + bias for f in FEATURES]
    return bce_with_logits(logits, TARGETS) + ALPHA * ag.dot(weights, weights)


def hvp(w: np.ndarray, p: np.ndarray) -> np.ndarray:
    result: np.ndarray = F.hvp(loss, w, p)
    return result


RUNS = [  # (method, what it is given besides the gradient)
    ("BFGS", {}),
    ("Newton-CG", {}),
    ("Newton-CG", {"hess": F.hessian(loss)}),
    ("Newton-CG", {"hessp": hvp}),
    ("trust-ncg", {"hess": F.hessian(loss)}),
    ("trust-ncg", {"hessp": hvp}),
]


def main() -> int:
    try:
        from scipy.optimize import minimize
    except ImportError:
        print("this example needs SciPy: pip install scipy")
        return 1
    w0 = np.zeros(1 + len(FEATURES[0]))
    value_and_grad = F.value_and_grad(loss)
    print(f"logistic regression on {len(FEATURES)} samples, {len(w0)} weights, starting at w = 0")
    print(f"{'method':<10} {'2nd derivatives':<16} {'iters':>5} {'f evals':>7} {'grads':>5} {'H or Hp':>7}"
          f" {'loss':>15} {'|gradient|':>10} {'time':>7}")
    converged, weights, iterations = [], [], {}
    for method, given in RUNS:
        start = time.perf_counter()
        options = {"xtol": 1e-10} if method == "Newton-CG" else {"gtol": 1e-9}
        result = minimize(value_and_grad, w0, jac=True, method=method, options=options, **given)
        seconds = time.perf_counter() - start
        gradient_norm = float(np.linalg.norm(value_and_grad(result.x)[1]))
        second = next(iter(given), "none")
        print(f"{method:<10} {second:<16} {result.nit:5d} {result.nfev:7d} {result.njev:5d}"
              f" {getattr(result, 'nhev', 0):7d} {result.fun:15.12f} {gradient_norm:10.1e} {seconds:6.2f}s")
        if not result.success:
            print(f"  {method} did not converge: {result.message}")
        converged.append(result.success and gradient_norm < 1e-6)
        weights.append(result.x)
        iterations[method, second] = result.nit

    w = weights[0]
    accuracy = np.mean([(np.dot(w[1:], f) + w[0] > 0) == (t == 1.0) for f, t in zip(FEATURES, TARGETS)])
    print(f"training accuracy at the minimum: {accuracy:.0%}")

    bfgs = iterations["BFGS", "none"]
    checks = {
        "every run converged, |gradient| < 1e-6": all(converged),
        "every run found the same weights, to 1e-5": all(np.allclose(x, w, atol=1e-5) for x in weights),
        "exact second derivatives need at most half of BFGS's iterations": all(
            nit <= bfgs / 2 for (_, second), nit in iterations.items() if second != "none"
        ),
    }
    for claim, holds in checks.items():
        print(f"{'ok' if holds else 'FAILED'}: {claim}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
