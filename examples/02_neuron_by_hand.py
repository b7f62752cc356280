"""A tanh neuron backpropagated node by node with _backward(), then with backward().

o = tanh(x1*w1 + x2*w2 + b) with x1=2, x2=0, w1=-3, w2=1 and the notebooks' bias b=6.8813735870195432, chosen
so that o = 1/sqrt(2) and do/dn = 1 - o**2 = 0.5. We seed o.grad = 1 and call each non-leaf's _backward()
ourselves, from o back towards the inputs (a reverse topological order), printing what each step fills in.
Then backward() does the same on a fresh graph, and every gradient must match.

Usage: python examples/02_neuron_by_hand.py
"""

from __future__ import annotations

import math
import sys

from arenagrad import Value

BIAS = 6.8813735870195432


def build() -> dict[str, Value]:
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(BIAS, label="b")
    x1w1 = x1 * w1
    x1w1.label = "x1*w1"
    x2w2 = x2 * w2
    x2w2.label = "x2*w2"
    s = x1w1 + x2w2
    s.label = "x1*w1 + x2*w2"
    n = s + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    return {v.label: v for v in (x1, w1, x2, w2, b, x1w1, x2w2, s, n, o)}


def backprop_node_by_node(v: dict[str, Value]) -> None:
    v["o"].grad = 1.0
    # Each node must have received all of its gradient before it passes it on: o first, the products last.
    for name, children in [
        ("o", ["n"]),
        ("n", ["x1*w1 + x2*w2", "b"]),
        ("x1*w1 + x2*w2", ["x1*w1", "x2*w2"]),
        ("x1*w1", ["x1", "w1"]),
        ("x2*w2", ["x2", "w2"]),
    ]:
        v[name]._backward()
        filled = ", ".join(f"{c}.grad = {v[c].grad:.4f}" for c in children)
        print(f"  {name}._backward()  ->  {filled}")


def main() -> int:
    by_hand = build()
    print(f"o = tanh(n) = {by_hand['o'].data:.4f}   (1/sqrt(2) = {1 / math.sqrt(2):.4f})")
    print(f"do/dn = 1 - o**2 = {1 - by_hand['o'].data ** 2:.4f}")
    print("node by node, from o back to the inputs:")
    backprop_node_by_node(by_hand)

    automatic = build()
    automatic["o"].backward()
    print("o.backward() on a fresh graph:")
    print(f"  {'value':<14}{'by _backward()':>15}{'backward()':>12}")
    agree = True
    for name, auto in automatic.items():
        mine = by_hand[name].grad
        agree = agree and math.isclose(mine, auto.grad, rel_tol=1e-12, abs_tol=1e-15)
        print(f"  {name:<14}{mine:>15.4f}{auto.grad:>12.4f}")
    if not agree:
        print("the node-by-node gradients differ from backward()")
        return 1
    print("same gradients: backward() is _backward() called in reverse topological order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
