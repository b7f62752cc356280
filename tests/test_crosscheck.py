"""Random expression graphs: native vs reference, each vs central finite differences, each vs PyTorch.

A graph is drawn as raw steps, then *planned* on plain floats: a step that would leave the safe region
(an op's domain with a margin, bounded values and sensitivities, no relu/abs kink nearby) becomes a
bounded smooth op.
The plan also carries first-order error bounds, so the tolerances below are derived rather than tuned:

* ``error[n]``: forward rounding error bound of node n (each op's result within ``EPS`` relative,
  propagated through the local derivatives);
* ``adjoint[n]``: sum over root-to-n paths of |product of local derivatives|, which bounds every partial
  sum the engines add up into ``n.grad``, whatever order they add in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Union

import pytest
from conftest import require_module
from hypothesis import given, settings
from hypothesis import strategies as st

EPS = 1e-15  # per-op relative error allowance: ~4 ulp, for libm's ulp-level errors and multi-step formulas
MAX_VALUE = 100.0  # |value| of every planned node
MAX_SENSITIVITY = 100.0  # sum over inputs of |d node / d input| for every planned node
MARGIN = 0.5  # distance kept from the singular points of /, log, sqrt and negative or fractional powers
KINK = 0.05  # distance kept from the kinks of relu and abs; an FD step moves a node by <= 1e-6 * 100
FD_STEP = 1e-6

SETTINGS = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Const:
    """A plain number operand, which the engines turn into a constant leaf."""

    value: float


Operand = Union[int, Const]  # int: index of an earlier node (inputs first, then steps)


@dataclass(frozen=True)
class Step:
    op: str
    operands: tuple[Operand, ...]
    exponent: float = 0.0  # for "**k" only
    fallback: str = "tanh"  # the bounded op the planner substitutes when this step is unsafe


@dataclass
class Plan:
    inputs: list[float]
    steps: list[Step]  # the last one is the root: a sum of every node nothing else uses
    error: list[float]  # per node, inputs first
    adjoint: list[float]  # per node, inputs first
    slopes: list[list[float]]  # per step: |local derivative| for each operand, constants included


# -- the ops, on engines and on PyTorch alike (Values and 0-dim tensors share these spellings) ---------------

OPS: dict[str, Callable[[Any, list[Any], float], Any]] = {
    "+": lambda lib, a, k: a[0] + a[1],
    "-": lambda lib, a, k: a[0] - a[1],
    "*": lambda lib, a, k: a[0] * a[1],
    "/": lambda lib, a, k: a[0] / a[1],
    "**": lambda lib, a, k: a[0] ** a[1],
    "**k": lambda lib, a, k: a[0] ** k,
    "neg": lambda lib, a, k: -a[0],
    "abs": lambda lib, a, k: abs(a[0]),
    "relu": lambda lib, a, k: a[0].relu(),
    "exp": lambda lib, a, k: a[0].exp(),
    "log": lambda lib, a, k: a[0].log(),
    "sqrt": lambda lib, a, k: a[0].sqrt(),
    "tanh": lambda lib, a, k: a[0].tanh(),
    "sigmoid": lambda lib, a, k: a[0].sigmoid(),
    "sin": lambda lib, a, k: a[0].sin(),
    "cos": lambda lib, a, k: a[0].cos(),
    "sum": lambda lib, a, k: lib.sum(a),
    "dot": lambda lib, a, k: lib.dot(a[: len(a) // 2], a[len(a) // 2 :]),
}
BINARY = ("+", "-", "*", "/")
UNARY = ("neg", "abs", "relu", "exp", "log", "sqrt", "tanh", "sigmoid", "sin", "cos", "**k")
SAFE = ("tanh", "sigmoid", "sin", "cos")  # bounded by 1 with derivatives bounded by 1: always admissible
EXPONENTS = (0, 1, 2, 3, -1, -2, 0.5, 1.5, -0.5, 2.5)


def local_derivatives(step: Step, x: list[float]) -> tuple[float, list[float], float] | None:
    """(value, local derivatives, rounding scale) of a step on plain floats; None outside the safe domain."""
    op, k = step.op, step.exponent
    a = x[0]
    if op in BINARY:
        b = x[1]
        if op == "+":
            return a + b, [1.0, 1.0], abs(a + b)
        if op == "-":
            return a - b, [1.0, -1.0], abs(a - b)
        if op == "*":
            return a * b, [b, a], abs(a * b)
        if abs(b) < MARGIN:
            return None
        return a / b, [1 / b, -a / b**2], abs(a / b)
    if op == "**":
        b = x[1]
        if a < MARGIN:
            return None
        out = a**b
        return out, [b * a ** (b - 1), out * math.log(a)], out
    if op == "**k":
        if (not k.is_integer() and a < MARGIN) or (k < 0 and abs(a) < MARGIN):
            return None
        return a**k, [k * a ** (k - 1) if k else 0.0], abs(a**k)
    if op in ("abs", "relu") and abs(a) < KINK:
        return None
    if op in ("log", "sqrt") and a < MARGIN:
        return None
    if op == "sum":
        return math.fsum(x), [1.0] * len(x), len(x) * math.fsum(map(abs, x))
    if op == "dot":
        n = len(x) // 2
        products = [w * v for w, v in zip(x[:n], x[n:])]
        return math.fsum(products), x[n:] + x[:n], n * math.fsum(map(abs, products))
    unary: dict[str, Callable[[], tuple[float, float]]] = {
        "neg": lambda: (-a, -1.0),
        "abs": lambda: (abs(a), math.copysign(1.0, a)),
        "relu": lambda: (max(a, 0.0), float(a > 0)),
        "exp": lambda: (math.exp(a), math.exp(a)),
        "log": lambda: (math.log(a), 1 / a),
        "sqrt": lambda: (math.sqrt(a), 0.5 / math.sqrt(a)),
        "tanh": lambda: (math.tanh(a), 1 - math.tanh(a) ** 2),
        "sigmoid": lambda: (1 / (1 + math.exp(-a)), math.exp(-a) / (1 + math.exp(-a)) ** 2),
        "sin": lambda: (math.sin(a), math.cos(a)),
        "cos": lambda: (math.cos(a), -math.sin(a)),
    }
    out, derivative = unary[op]()
    return out, [derivative], abs(out)


def plan_graph(inputs: list[float], raw_steps: list[Step]) -> Plan:
    """Resolve operands (offsets back from the newest node), repair unsafe steps, add a root, bound errors."""
    value, sensitivity, error = list(inputs), [1.0] * len(inputs), [0.0] * len(inputs)
    steps: list[Step] = []
    slopes: list[list[float]] = []

    def admit(step: Step, bounded: bool = True) -> bool:
        operand_values = [value[o] if isinstance(o, int) else o.value for o in step.operands]
        result = local_derivatives(step, operand_values)
        if result is None:
            return False
        out, derivatives, scale = result
        step_slopes = [abs(d) for d in derivatives]
        node_edges = [(o, d) for o, d in zip(step.operands, step_slopes) if isinstance(o, int)]
        node_sensitivity = math.fsum(d * sensitivity[o] for o, d in node_edges)
        if bounded and (abs(out) > MAX_VALUE or node_sensitivity > MAX_SENSITIVITY):
            return False
        value.append(out)
        sensitivity.append(node_sensitivity)
        error.append(EPS * scale + math.fsum(d * error[o] for o, d in node_edges))
        slopes.append(step_slopes)
        steps.append(step)
        return True

    for raw in raw_steps:
        newest = len(value) - 1
        operands = tuple(o if isinstance(o, Const) else newest - o % len(value) for o in raw.operands)
        step = Step(raw.op, operands, raw.exponent)
        if not admit(step):
            first_node = next(o for o in operands if isinstance(o, int))
            assert admit(Step(raw.fallback, (first_node,)))

    used = {o for step in steps for o in step.operands if isinstance(o, int)}
    admit(Step("sum", tuple(n for n in range(len(value)) if n not in used)), bounded=False)

    adjoint = [0.0] * len(value)
    adjoint[-1] = 1.0
    for s in reversed(range(len(steps))):
        node = len(inputs) + s
        for operand, slope in zip(steps[s].operands, slopes[s]):
            if isinstance(operand, int):
                adjoint[operand] += slope * adjoint[node]
    return Plan(list(inputs), steps, error, adjoint, slopes)


# -- drawing raw graphs ----------------------------------------------------------------------------------

numbers = st.floats(-3.0, 3.0, allow_nan=False)
back = st.integers(0, 63)  # how far back from the newest node an operand is; 0 makes long chains
node_or_const = st.one_of(back, numbers.map(Const))


@st.composite
def raw_steps(draw: st.DrawFn) -> Step:
    op = draw(st.sampled_from((*BINARY, "**", "sum", "dot", *UNARY)))
    fallback = draw(st.sampled_from(SAFE))
    if op in BINARY:
        shape = draw(st.sampled_from(("value-value", "value-number", "number-value")))
        node, other = draw(back), draw(back) if shape == "value-value" else Const(draw(numbers))
        operands: tuple[Operand, ...] = (other, node) if shape == "number-value" else (node, other)
    elif op == "**":
        # A Value exponent, with a Value or a positive number as the base.
        base = draw(st.one_of(back, st.floats(0.5, 3.0).map(Const)))
        operands = (base, draw(back))
    elif op == "sum":
        operands = (draw(back), *draw(st.lists(node_or_const, max_size=3)))
    elif op == "dot":
        n = draw(st.integers(1, 3))
        ws = (draw(back), *draw(st.lists(node_or_const, min_size=n - 1, max_size=n - 1)))
        operands = ws + tuple(draw(st.lists(node_or_const, min_size=n, max_size=n)))
    else:
        operands = (draw(back),)
    return Step(op, operands, float(draw(st.sampled_from(EXPONENTS))) if op == "**k" else 0.0, fallback)


plans = st.builds(
    plan_graph, st.lists(numbers, min_size=1, max_size=4), st.lists(raw_steps(), min_size=1, max_size=20)
)


# -- building a plan -------------------------------------------------------------------------------------


def build(plan: Plan, inputs: list[float], leaf: Callable[[float], Any], lib: Any,
          constant: Callable[[float], Any] = lambda c: c) -> tuple[list[Any], list[list[Any]]]:  # fmt: skip
    """Every node (inputs first, the root last) and each step's arguments."""
    nodes = [leaf(x) for x in inputs]
    arguments = []
    for step in plan.steps:
        args = [nodes[o] if isinstance(o, int) else constant(o.value) for o in step.operands]
        nodes.append(OPS[step.op](lib, args, step.exponent))
        arguments.append(args)
    return nodes, arguments


def lone_constants(plan: Plan) -> list[tuple[int, int]]:
    """(step, operand position) of the constant in binary ops that have exactly one, identifiable by _prev."""
    found = []
    for s, step in enumerate(plan.steps):
        positions = [i for i, o in enumerate(step.operands) if isinstance(o, Const)]
        if step.op in (*BINARY, "**") and len(positions) == 1:
            found.append((s, positions[0]))
    return found


def engine_constants(plan: Plan, nodes: list[Any]) -> list[Any]:
    offset = len(plan.inputs)
    constants = []
    for s, position in lone_constants(plan):
        node_operand = plan.steps[s].operands[1 - position]
        assert isinstance(node_operand, int)
        (constant,) = nodes[offset + s]._prev - {nodes[node_operand]}
        constants.append(constant)
    return constants


def build_engine(engine: ModuleType, plan: Plan, inputs: list[float] | None = None) -> list[Any]:
    nodes, _ = build(plan, plan.inputs if inputs is None else inputs, engine.Value, engine)
    return nodes


def assert_close(got: float, want: float, abs_tol: float, rel_tol: float, what: str) -> None:
    assert math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol), f"{what}: {got!r} vs {want!r}"


def grad_tolerance(plan: Plan, n: int) -> float:
    return 1e-12 * max(1.0, plan.adjoint[n])


def constant_grad_tolerance(plan: Plan, step: int, position: int) -> float:
    return 1e-12 * max(1.0, plan.slopes[step][position] * plan.adjoint[len(plan.inputs) + step])


def data_tolerance(plan: Plan, n: int) -> float:
    return max(1e-12, 2 * plan.error[n])


# -- the properties --------------------------------------------------------------------------------------


@SETTINGS
@given(plan=plans)
def test_native_matches_reference(native: ModuleType, reference: ModuleType, plan: Plan) -> None:
    ours, theirs = build_engine(native, plan), build_engine(reference, plan)
    ours[-1].backward()
    theirs[-1].backward()
    for n, (a, b) in enumerate(zip(ours, theirs)):
        assert (a._op, len(a._prev)) == (b._op, len(b._prev)), f"node {n}"
        assert_close(a.data, b.data, data_tolerance(plan, n), 1e-12, f"data of node {n}")
        assert_close(a.grad, b.grad, grad_tolerance(plan, n), 1e-12, f"grad of node {n}")
    pairs = zip(engine_constants(plan, ours), engine_constants(plan, theirs), lone_constants(plan))
    for a, b, (s, position) in pairs:
        assert a.data == b.data
        tolerance = constant_grad_tolerance(plan, s, position)
        assert_close(a.grad, b.grad, tolerance, 1e-12, f"grad of the constant of step {s}")


@SETTINGS
@given(plan=plans)
def test_gradients_match_finite_differences(engine: ModuleType, plan: Plan) -> None:
    nodes = build_engine(engine, plan)
    nodes[-1].backward()
    # Rounding in the two evaluations, divided by the step; truncation (h² f'''/6) is covered by the rest.
    abs_tol = 1e-6 + 10 * plan.error[-1] / FD_STEP
    for i, x in enumerate(plan.inputs):
        up, down = list(plan.inputs), list(plan.inputs)
        up[i], down[i] = x + FD_STEP, x - FD_STEP
        rise = build_engine(engine, plan, up)[-1].data - build_engine(engine, plan, down)[-1].data
        assert_close(nodes[i].grad, rise / (up[i] - down[i]), abs_tol, 1e-5, f"grad of input {i}")


@pytest.fixture(scope="module")
def torch() -> ModuleType:
    return require_module("torch")


@SETTINGS
@given(plan=plans)
def test_matches_pytorch(engine: ModuleType, torch: ModuleType, plan: Plan) -> None:
    def tensor(x: float) -> Any:
        return torch.tensor(x, dtype=torch.float64, requires_grad=True)

    lib = SimpleNamespace(
        sum=lambda xs: torch.stack(xs).sum(),
        dot=lambda ws, xs: torch.dot(torch.stack(ws), torch.stack(xs)),
    )
    expected, arguments = build(plan, plan.inputs, tensor, lib, constant=tensor)
    for t in expected[len(plan.inputs) :]:
        t.retain_grad()
    expected[-1].backward()
    nodes = build_engine(engine, plan)
    nodes[-1].backward()
    for n, (got, want) in enumerate(zip(nodes, expected)):
        assert_close(got.data, want.item(), data_tolerance(plan, n), 1e-12, f"data of node {n}")
        assert_close(got.grad, want.grad.item(), grad_tolerance(plan, n), 1e-12, f"grad of node {n}")
    for got, (s, position) in zip(engine_constants(plan, nodes), lone_constants(plan)):
        want = arguments[s][position].grad.item()
        tolerance = constant_grad_tolerance(plan, s, position)
        assert_close(got.grad, want, tolerance, 1e-12, f"grad of the constant of step {s}")
