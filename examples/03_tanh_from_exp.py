"""tanh built from exp, division and subtraction gives the same value and gradients as .tanh().

The notebooks "break up" tanh as (exp(2n) - 1) / (exp(2n) + 1) to show that backpropagation does not care how
coarse the operations are: a bigger graph of simpler nodes gives the same answer as one tanh node whose local
derivative is 1 - tanh(n)**2. We build the notebooks' neuron both ways and compare o and every input's
gradient.

Usage: python examples/03_tanh_from_exp.py
"""

from __future__ import annotations

import math
import sys

from arenagrad import Value
from arenagrad.draw import trace

BIAS = 6.8813735870195432
INPUTS = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": BIAS}


def neuron(activation: str) -> tuple[Value, dict[str, Value]]:
    v = {name: Value(data, label=name) for name, data in INPUTS.items()}
    n = v["x1"] * v["w1"] + v["x2"] * v["w2"] + v["b"]
    if activation == "tanh":
        o = n.tanh()
    else:
        e = (2 * n).exp()
        o = (e - 1) / (e + 1)
    return o, v


def main() -> int:
    o_tanh, leaves_tanh = neuron("tanh")
    o_exp, leaves_exp = neuron("exp")
    o_tanh.backward()
    o_exp.backward()

    print(f"o = n.tanh()                        = {o_tanh.data:.12f}  ({len(trace(o_tanh)[0])} Values)")
    print(f"o = (exp(2n) - 1) / (exp(2n) + 1)   = {o_exp.data:.12f}  ({len(trace(o_exp)[0])} Values)")
    agree = math.isclose(o_tanh.data, o_exp.data, rel_tol=1e-12)
    print(f"{'input':<6}{'grad via tanh':>16}{'grad via exp':>16}")
    for name in INPUTS:
        g_tanh, g_exp = leaves_tanh[name].grad, leaves_exp[name].grad
        agree = agree and math.isclose(g_tanh, g_exp, rel_tol=1e-9, abs_tol=1e-12)
        print(f"{name:<6}{g_tanh:>16.12f}{g_exp:>16.12f}")
    if not agree:
        print("the two forms disagree")
        return 1
    print("same value and same gradients: any composition of differentiable ops backpropagates correctly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
