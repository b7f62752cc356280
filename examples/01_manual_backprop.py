"""Backpropagation by hand through L = (a*b + c) * f, checked against backward().

The first exercise of the classic backprop notebooks: with a=2, b=-3, c=10, f=-2 we fill in every .grad with
the chain rule ourselves, from L back to the leaves, then let backward() do it on a fresh graph and compare.
Finite differences (arenagrad.gradcheck) confirm both. Finally the graph is drawn, as the notebooks do, if
graphviz and its `dot` program are installed.

Usage: python examples/01_manual_backprop.py [GRAPH_FILE]
GRAPH_FILE ends in .svg, .png or .pdf; without it the graph goes to a new temporary directory.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from arenagrad import Value
from arenagrad.gradcheck import gradcheck

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def build() -> list[Value]:
    """The expression's Values, leaves first and L last."""
    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    c, f = Value(10.0, label="c"), Value(-2.0, label="f")
    e = a * b
    e.label = "e"
    d = e + c
    d.label = "d"
    L = d * f
    L.label = "L"
    return [a, b, c, f, e, d, L]


def backprop_by_hand(values: list[Value]) -> None:
    a, b, c, f, e, d, L = values
    L.grad = 1.0
    # L = d * f: each factor's gradient is the other factor, times dL/dL.
    d.grad = f.data * L.grad
    f.grad = d.data * L.grad
    # d = e + c: a sum passes its gradient through unchanged.
    e.grad = d.grad
    c.grad = d.grad
    # e = a * b: the chain rule multiplies the local derivative by the gradient arriving at e, not at d or L.
    a.grad = b.data * e.grad
    b.grad = a.data * e.grad


def draw(root: Value, path: Path) -> None:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        print(f"not drawing: {path} does not end in {', '.join(FORMATS)}")
        return
    try:
        import graphviz

        from arenagrad.draw import draw_dot
    except ImportError:
        print("skipping the drawing: the graphviz Python package is missing (pip install 'arenagrad[demo]')")
        return
    try:
        rendered = draw_dot(root, format=fmt).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        print("skipping the drawing: Graphviz's `dot` program is not installed (apt-get install graphviz)")
        return
    path.write_bytes(rendered)
    print(f"graph drawn to {path}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    by_hand = build()
    backprop_by_hand(by_hand)
    automatic = build()
    automatic[-1].backward()

    print(f"L = (a*b + c) * f = {automatic[-1].data:.4f}")
    print(f"{'value':<6}{'data':>9}{'grad by hand':>14}{'backward()':>12}")
    agree = True
    for mine, auto in zip(by_hand, automatic):
        agree = agree and mine.grad == auto.grad
        print(f"{auto.label:<6}{auto.data:>9.4f}{mine.grad:>14.4f}{auto.grad:>12.4f}")
    if not agree:
        print("the hand-made gradients differ from backward()")
        return 1
    print("the chain rule by hand gives exactly backward()'s gradients")

    gradcheck(lambda a, b, c, f: (a * b + c) * f, [2.0, -3.0, 10.0, -2.0])
    print("finite differences agree too (gradcheck passed)")

    path = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="arenagrad-")) / "manual_backprop.svg"
    draw(automatic[-1], path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
