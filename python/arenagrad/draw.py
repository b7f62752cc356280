"""Draw a Value's computation graph with graphviz, as the classic backprop notebooks do.

Every Value becomes a record node ``label | data 2.0000 | grad 0.0000``; every non-leaf also gets an op node
(``+``, ``*``, ``tanh``...) with an edge from each child into it and one from it into the result. Works with
both engines: it only reads ``data``, ``grad``, ``label``, ``_op`` and ``_prev``.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import graphviz

__all__ = ["RANKDIRS", "draw_dot", "trace"]

RANKDIRS = ("LR", "RL", "TB", "BT")
_VALUE_ATTRIBUTES = ("data", "grad", "label", "_op", "_prev")
# Characters with a meaning inside a graphviz record label; a Value's label may contain any of them.
_RECORD_SPECIALS = str.maketrans({c: "\\" + c for c in "\\{}|<>\""})


def _import_graphviz() -> Any:
    try:
        import graphviz
    except ImportError as exc:
        raise ImportError(
            "draw_dot needs the 'graphviz' Python package: pip install 'arenagrad[demo]' "
            "(rendering also needs Graphviz's `dot` program, e.g. apt-get install graphviz)"
        ) from exc
    return graphviz


def _check_value(obj: Any, what: str) -> None:
    missing = [name for name in _VALUE_ATTRIBUTES if not hasattr(obj, name)]
    if missing:
        raise TypeError(f"{what} must be a Value, got {type(obj).__name__} (no {', '.join(missing)})")


def trace(root: Any, max_nodes: int | None = None) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """All Values reachable from ``root`` and the ``(child, parent)`` edges between them.

    Iterative, so graphs deeper than Python's recursion limit work. Values are keyed by ``id()``; holding them
    in the returned list keeps them alive, which keeps their ids unique. With ``max_nodes``, more Values raise
    ValueError.
    """
    _check_value(root, "root")
    seen: dict[int, Any] = {id(root): root}
    edges: list[tuple[Any, Any]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        for child in node._prev:
            edges.append((child, node))
            if id(child) not in seen:
                seen[id(child)] = child
                stack.append(child)
    if max_nodes is not None and len(seen) > max_nodes:
        raise ValueError(
            f"the graph has {len(seen)} Values, more than max_nodes={max_nodes}; "
            f"pass max_nodes={len(seen)} (or more) to draw it anyway"
        )
    return list(seen.values()), edges


def _record_label(value: Any) -> str:
    label = str(value.label).translate(_RECORD_SPECIALS)
    return f"{{ {label} | data {value.data:.4f} | grad {value.grad:.4f} }}"


def draw_dot(root: Any, format: str = "svg", rankdir: str = "LR", max_nodes: int = 500) -> graphviz.Digraph:
    """A ``graphviz.Digraph`` of ``root``'s graph: ``.pipe()`` or ``.render()`` it, or show it in Jupyter.

    ``format`` is the output format of ``render``/``pipe`` (any of ``graphviz.FORMATS``: svg, png, pdf...),
    ``rankdir`` the layout direction (LR, RL, TB or BT). Graphs with more than ``max_nodes`` Values raise
    ValueError rather than produce a picture nobody can read (and that takes `dot` minutes to lay out).
    """
    graphviz = _import_graphviz()
    if not isinstance(format, str) or format not in graphviz.FORMATS:
        raise ValueError(f"unknown graphviz output format {format!r}; use one such as 'svg', 'png' or 'pdf'")
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, numbers.Integral):
        raise TypeError(f"max_nodes must be an integer, got {type(max_nodes).__name__} {max_nodes!r}")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")

    nodes, edges = trace(root, max_nodes=int(max_nodes))
    dot = graphviz.Digraph(format=format, graph_attr={"rankdir": rankdir})
    for node in nodes:
        uid = str(id(node))
        dot.node(name=uid, label=_record_label(node), shape="record")
        if node._op:
            dot.node(name=uid + "op", label=str(node._op))
            dot.edge(uid + "op", uid)
    for child, parent in edges:
        dot.edge(str(id(child)), str(id(parent)) + ("op" if parent._op else ""))
    return dot
