import re
import sys

import pytest

from arenagrad.draw import draw_dot, trace

needs_dot = pytest.mark.usefixtures("dot_program")  # Graphviz's dot (conftest.py)


def expression(engine):
    """The notebooks' L = (a*b + c) * f after backward(): 7 Values, 3 ops."""
    V = engine.Value
    a, b, c, f = V(2.0, label="a"), V(-3.0, label="b"), V(10.0, label="c"), V(-2.0, label="f")
    e = a * b
    e.label = "e"
    d = e + c
    d.label = "d"
    L = d * f
    L.label = "L"
    L.backward()
    return L


def chain(engine, length):
    """A graph of ``length`` (odd) Values: x, then successive ``+ 1`` nodes, each with its constant leaf."""
    x = engine.Value(0.5, label="x")
    for _ in range((length - 1) // 2):
        x = x + 1
    return x


def svg_of(dot):
    # dot writes minus signs as a character reference.
    return dot.pipe(format="svg").decode().replace("&#45;", "-")


def edges_of(source):
    return re.findall(r"^\s*(\S+) -> (\S+)", source, flags=re.MULTILINE)


def test_structure_has_a_record_per_value_and_an_op_node_per_result(engine):
    dot = draw_dot(expression(engine))
    records = re.findall(r'\[label="\{ (\w+) \| data (\S+) \| grad (\S+) \}" shape=record\]', dot.source)
    assert sorted(records) == sorted([
        ("a", "2.0000", "6.0000"), ("b", "-3.0000", "-4.0000"), ("c", "10.0000", "-2.0000"),
        ("f", "-2.0000", "4.0000"), ("e", "-6.0000", "-2.0000"), ("d", "4.0000", "-2.0000"),
        ("L", "-8.0000", "1.0000"),
    ])
    ops = re.findall(r'^\s*"\d+op" \[label="([^"]+)"\]', dot.source, flags=re.MULTILINE)
    assert sorted(ops) == ["*", "*", "+"]
    # Three op -> result edges and two child -> op edges for each binary op.
    edges = edges_of(dot.source)
    assert len(edges) == 9
    assert sum(head.endswith('op"') for _, head in edges) == 6


def test_square_of_a_value_draws_one_edge_from_it(engine):
    x = engine.Value(3.0, label="x")
    y = x * x
    y.backward()
    nodes, edges = trace(y)
    assert len(nodes) == 2 and len(edges) == 1
    assert "grad 6.0000" in draw_dot(y).source


@needs_dot
def test_rendered_svg_shows_labels_values_grads_and_ops(engine):
    svg = svg_of(draw_dot(expression(engine)))
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ["data 2.0000", "grad 6.0000", "data -8.0000", "grad 1.0000", "grad -4.0000"]:
        assert text in svg
    labels = set(re.findall(r">([^<>]+)</text>", svg))
    assert {"a", "b", "c", "d", "e", "f", "L", "*", "+"} <= labels


@needs_dot
def test_rendered_neuron_shows_tanh_and_its_output(engine):
    V = engine.Value
    x1, w1, b = V(2.0, label="x1"), V(-3.0, label="w1"), V(6.8813735870195432, label="b")
    o = (x1 * w1 + b).tanh()
    o.label = "o"
    o.backward()
    svg = svg_of(draw_dot(o, rankdir="TB"))
    labels = set(re.findall(r">([^<>]+)</text>", svg))
    assert {"x1", "w1", "b", "o", "tanh", "data 0.7071", "grad -1.5000"} <= labels


@needs_dot
def test_labels_with_record_syntax_are_escaped(engine):
    tricky = 'c|{x}<y> "q" \\'
    c = engine.Value(1.0, label=tricky)
    out = c * 2
    dot = draw_dot(out)
    assert r"c\|\{x\}\<y\> \"q\" \\" in dot.source
    svg = svg_of(dot)
    assert ">c|{x}&lt;y&gt; &quot;q&quot; \\<" in svg


@needs_dot
@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_format_is_the_default_output_format(engine, fmt, magic):
    dot = draw_dot(expression(engine), format=fmt)
    assert dot.format == fmt
    assert dot.pipe().startswith(magic)


@pytest.mark.parametrize("rankdir", ["LR", "TB", "RL", "BT"])
def test_rankdir_reaches_the_graph(engine, rankdir):
    assert f"rankdir={rankdir}" in draw_dot(expression(engine), rankdir=rankdir).source


def test_values_with_equal_label_and_data_stay_distinct(engine):
    a, b = engine.Value(1.0, label="same"), engine.Value(1.0, label="same")
    assert len(trace(a + b)[0]) == 3
    assert draw_dot(a + b).source.count("{ same | data 1.0000") == 2


def test_deep_graphs_need_no_recursion(engine):
    depth = sys.getrecursionlimit() * 3 + 1
    root = chain(engine, depth)
    nodes, edges = trace(root)
    assert len(nodes) == depth
    assert len(edges) == depth - 1


def test_max_nodes_guard_reports_the_count_and_the_fix(engine):
    root = chain(engine, 21)
    with pytest.raises(ValueError, match=r"has 21 Values, more than max_nodes=20.*max_nodes=21"):
        draw_dot(root, max_nodes=20)
    assert "x" in draw_dot(root, max_nodes=21).source


def test_default_limit_is_500(engine):
    with pytest.raises(ValueError, match="has 501 Values"):
        draw_dot(chain(engine, 501))
    draw_dot(chain(engine, 499))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rankdir": "XY"}, ValueError, "rankdir must be one of LR, RL, TB, BT"),
        ({"rankdir": "lr"}, ValueError, "rankdir must be one of"),
        ({"format": "docx"}, ValueError, "unknown graphviz output format 'docx'"),
        ({"format": None}, ValueError, "unknown graphviz output format None"),
        ({"max_nodes": 0}, ValueError, "max_nodes must be at least 1"),
        ({"max_nodes": "10"}, TypeError, "max_nodes must be an integer"),
        ({"max_nodes": 2.5}, TypeError, "max_nodes must be an integer"),
    ],
)
def test_bad_arguments(engine, kwargs, error, match):
    with pytest.raises(error, match=match):
        draw_dot(expression(engine), **kwargs)


@pytest.mark.parametrize("root", [2.0, None, "L", [1, 2]])
def test_root_must_be_a_value(root):
    with pytest.raises(TypeError, match="root must be a Value"):
        draw_dot(root)


def test_missing_graphviz_package_names_the_extra(engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=r"pip install 'arenagrad\[demo\]'"):
        draw_dot(expression(engine))
