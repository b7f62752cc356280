"""Batched replay against eager evaluation, sample by sample, on generated graphs over every op.

A program (below) describes a graph over per-sample inputs and shared parameters: every op of the op table,
shared operands of each, dots of every kind of operand, the neurons and layers batched replay runs with
its own kernels (with and without something reading the layer's rows between its dots), sums, logsumexp
and recorded derivatives (whose graphs hold the derivative-only ops). Each op's operands are kept in its
domain by guards chosen from static bounds, so the graph's structure never depends on the data and no
sample fails. The same description is built once and recorded as a Tape, and built again from plain
Values for every sample.

Batched replay promises, per sample, eager's bits (docs/vectorize.md, Tape.backward_batch): root values,
input gradients, and per-sample gradients (reduce="none") of parameters, inputs and inner nodes. The
parameters' summed gradient is summed over samples in a fixed lane order, not eager's, so it is compared
to the sum of eager's per-sample gradients within a bound on reassociating that sum, and bit for bit
across thread counts and SIMD targets, which must not change it (nor anything else). Batch sizes are 1 and
primes, so neither the tile (256 samples), nor the chunk (4 tiles), nor the thread count divides them.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import arenagrad as ag

# --- programs ----------------------------------------------------------------------------------------
# A program's pool starts with the inputs (per-sample rows) and the parameters (shared leaves); each step
# appends its result (a grad step one result per differentiated Value). An operand is a Ref:
# ("p", i) the pool's entry i, ("c", x) the Python number x (the engine makes it a constant leaf), or
# ("v", x) a fresh leaf Value(x) (a shared leaf that is not a parameter, e.g. a positive one for log).

Ref = tuple[str, Union[int, float]]


@dataclass(frozen=True)
class Step:
    kind: str  # "unary", "binary", "dot", "sum", "lse" or "grad"
    op: str = ""  # unary: the method ("neg" is -a); binary: + - * / **; grad: the squash of each result
    args: tuple[Ref, ...] = ()  # operands; dot: the weights; grad: the differentiated Value
    more: tuple[Ref, ...] = ()  # dot: what the weights multiply; grad: the Values to differentiate by


@dataclass(frozen=True)
class Program:
    n_inputs: int
    params: tuple[float, ...]
    steps: tuple[Step, ...]
    roots: tuple[int, ...]  # pool entries; roots[0] is the final sum
    as_list: bool  # Tape(list of roots) rather than Tape(root)
    seeded: bool  # backward_batch with per-sample seeds rather than 1
    per_sample: tuple[int, ...]  # inner nodes whose per-sample gradients and batch values are checked
    data_seed: int
    tags: frozenset[str] = field(default=frozenset(), compare=False, repr=False)  # what it exercises


# Value's unary methods (the op table's, step to isfinite the masks of derivative graphs) and negation.
UNARY: dict[str, Callable[[Any], Any]] = {"neg": operator.neg}
for _name in ("exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "relu", "sin", "cos", "abs"):
    UNARY[_name] = operator.methodcaller(_name)
for _name in ("step", "sign", "nonzero", "isfinite"):
    UNARY[_name] = operator.methodcaller(_name)
BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
}
SQUASHES = ("tanh", "sigmoid", "sin", "cos")
CONSTANTS = (0.5, -1.5, 2.0, 3.0, -0.25, 1.0)
LIMIT = 40.0  # operands are squashed below this first, so that no value grows without bound
INPUT_BOUND = 2.0
PARAM_BOUND = 1.5


class Chooser(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...
    def real(self, lo: float, hi: float) -> float: ...


class RandomChooser:
    """Choices from a seeded random.Random: the same program in every process."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self._rng.randint(lo, hi)

    def real(self, lo: float, hi: float) -> float:
        return self._rng.uniform(lo, hi)


class DrawChooser:
    """Choices drawn by hypothesis, so that a failing program shrinks."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))

    def real(self, lo: float, hi: float) -> float:
        return self._draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))


class _Generator:
    """Writes a program's steps, tracking a bound on every pool entry's magnitude. The *_on methods
    write one op on given operands (with the guards its domain needs); the others choose them."""

    def __init__(self, chooser: Chooser, n_inputs: int, params: tuple[float, ...]) -> None:
        self.c = chooser
        self.n_inputs = n_inputs
        self.params = params
        self.bounds = [INPUT_BOUND] * n_inputs + [PARAM_BOUND] * len(params)
        self.steps: list[Step] = []
        self.tags: set[str] = set()
        self.used: set[int] = set()
        self.local: list[int] | None = None  # while writing a graph to differentiate: its only rows

    # -- operands --
    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.c.integer(0, len(options) - 1)]

    def is_param(self, i: int) -> bool:
        return self.n_inputs <= i < self.n_inputs + len(self.params)

    def rows(self) -> list[int]:
        if self.local is not None:
            return self.local
        return [i for i in range(len(self.bounds)) if not self.is_param(i)]

    def row(self) -> Ref:
        rows = self.rows()
        recent = self.c.integer(0, 1) == 1  # half the time one of the last few: deeper graphs
        return ("p", self.pick(rows[-3:] if recent else rows))

    def param(self) -> Ref:
        return ("p", self.n_inputs + self.c.integer(0, len(self.params) - 1))

    def shared(self) -> Ref:
        """A shared leaf: mostly a parameter, else a constant (a number, or a Value of one)."""
        r = self.c.integer(0, 4)
        if r <= 2:
            return self.param()
        return ("c", self.pick(CONSTANTS)) if r == 3 else ("v", self.pick(CONSTANTS))

    def operand(self, constants: bool = True) -> Ref:
        """Any operand; while writing a graph to differentiate, no parameter."""
        r = self.c.integer(0, 5)
        if r == 0 and constants:
            return ("c", self.pick(CONSTANTS))
        if r <= 2 and self.local is None:
            return self.param() if r <= 1 else ("v", self.pick(CONSTANTS))
        return self.row()

    def kind(self, ref: Ref) -> str:
        if ref[0] == "c":
            return "const"
        if ref[0] == "v" or self.is_param(int(ref[1])):
            return "shared"
        return "row"

    def bound(self, ref: Ref) -> float:
        return abs(float(ref[1])) if ref[0] != "p" else self.bounds[int(ref[1])]

    # -- writing steps --
    def emit(self, step: Step, bound: float) -> Ref:
        for ref in (*step.args, *step.more):
            if ref[0] == "p":
                self.used.add(int(ref[1]))
        self.steps.append(step)
        self.tags.add(f"{step.kind}:{step.op}:" + ",".join(self.kind(r) for r in step.args))
        self.bounds.append(bound)
        i = len(self.bounds) - 1
        if self.local is not None:
            self.local.append(i)
        return ("p", i)

    def tame(self, ref: Ref, limit: float) -> Ref:
        """ref, squashed into [-1, 1] first if its bound exceeds limit."""
        if self.bound(ref) <= limit:
            return ref
        return self.emit(Step("unary", self.pick(SQUASHES), (ref,)), 1.0)

    def positive(self, ref: Ref, guards: Sequence[str]) -> tuple[Ref, float, float]:
        """A Value > 0 made from ref by one of the guards, and bounds (lo, hi) on it."""
        guard = self.pick(guards)
        if guard == "leaf":  # ref is not read
            x = self.pick((0.5, 2.0, 1.25))
            return ("v", x), x, x
        ref = self.tame(ref, LIMIT)
        b = self.bound(ref)
        if guard == "exp":
            e = self.emit(Step("unary", "exp", (self.tame(ref, 6.0),)), math.exp(6.0))
            return e, math.exp(-6.0), math.exp(6.0)
        if guard == "sigmoid":
            return self.emit(Step("unary", "sigmoid", (ref,)), 1.0), 1.0 / (1.0 + math.exp(b)), 1.0
        c = self.pick((0.25, 0.5, 1.0))
        if guard == "abs":
            inner, hi = self.emit(Step("unary", "abs", (ref,)), b), b + c
        else:  # square
            inner, hi = self.emit(Step("binary", "*", (ref, ref)), b * b), b * b + c
        args = (inner, ("c", c)) if self.c.integer(0, 1) else (("c", c), inner)
        return self.emit(Step("binary", "+", args), hi), c, hi

    def unary_on(
        self, op: str, a: Ref, guards: Sequence[str] = ("abs", "square", "exp", "sigmoid", "leaf")
    ) -> Ref:
        if op == "exp":
            a = self.tame(a, 6.0)
            bound = math.exp(6.0)
        elif op in ("log", "sqrt"):
            a, lo, hi = self.positive(a, guards)
            bound = max(abs(math.log(lo)), abs(math.log(hi))) if op == "log" else math.sqrt(hi)
        else:
            a = self.tame(a, LIMIT)
            b = self.bound(a)
            bound = {"neg": b, "abs": b, "relu": b, "softplus": b + 1.0}.get(op, 1.0)
        return self.emit(Step("unary", op, (a,)), bound)

    def binary_on(
        self, op: str, a: Ref, b: Ref, guards: Sequence[str] = ("abs", "square", "exp", "leaf")
    ) -> Ref:
        """a op b for + - * /; the divisor, unless a number, made positive by one of the guards."""
        a = self.tame(a, LIMIT)
        if op != "/":
            b = self.tame(b, LIMIT)
            ba, bb = self.bound(a), self.bound(b)
            return self.emit(Step("binary", op, (a, b)), ba * bb if op == "*" else ba + bb)
        if b[0] == "c":
            lo = abs(float(b[1]))
        else:
            b, lo, _ = self.positive(b, guards)
        return self.emit(Step("binary", "/", (a, b)), self.bound(a) / lo)

    def power_const_on(
        self, base: Ref, k: float, guards: Sequence[str] = ("abs", "square", "exp", "leaf")
    ) -> Ref:
        """base ** k, a number exponent (PowConst); a base made positive unless k is a whole number >= 0."""
        if isinstance(k, int) and k >= 0:
            base = self.tame(base, 8.0)
            lo, hi = 0.0, self.bound(base)
        else:
            base, lo, hi = self.positive(base, guards)
        return self.emit(Step("binary", "**", (base, ("c", k))), max(lo**k if lo > 0 else 0.0, hi**k, 1.0))

    def power_value_on(self, base: str, source: Ref, exponent: Ref) -> Ref:
        """base ** exponent, a Value exponent (Pow): base 'sigmoid' (sigmoid(source) + 0.5), 'abs'
        (0.5 + abs(source)), 'leaf' (a Value of a number) or 'number' (a number ** a Value)."""
        exponent = self.tame(exponent, 6.0)
        b: Ref
        if base == "sigmoid":
            s = self.emit(Step("unary", "sigmoid", (self.tame(source, LIMIT),)), 1.0)
            b = self.emit(Step("binary", "+", (s, ("c", 0.5))), 1.5)
        elif base == "abs":
            a = self.emit(Step("unary", "abs", (self.tame(source, 2.0),)), 2.0)
            b = self.emit(Step("binary", "+", (("c", 0.5), a)), 2.5)
        else:
            b = ("v" if base == "leaf" else "c", self.pick((0.5, 2.0, 1.5)))
        return self.emit(Step("binary", "**", (b, exponent)), 2.5**6.0)

    def dot_on(self, ws: Sequence[Ref], xs: Sequence[Ref]) -> Ref:
        ws = [self.tame(w, LIMIT) for w in ws]
        xs = [self.tame(x, LIMIT) for x in xs]
        self.tags.update(f"dot-term:{self.kind(w)}*{self.kind(x)}" for w, x in zip(ws, xs))
        bound = sum(self.bound(w) * self.bound(x) for w, x in zip(ws, xs))
        return self.emit(Step("dot", "", tuple(ws), tuple(xs)), bound)

    def nary_on(self, kind: str, refs: Sequence[Ref]) -> Ref:
        """A sum or logsumexp ("lse") of refs."""
        refs = [self.tame(r, LIMIT) for r in refs]
        self.tags.update(f"{kind}-operand:{self.kind(r)}" for r in refs)
        bounds = [self.bound(r) for r in refs]
        bound = sum(bounds) if kind == "sum" else max(bounds) + math.log(len(refs))
        return self.emit(Step(kind, "", tuple(refs)), bound)

    def layer_on(self, rows: Sequence[Ref], between: Sequence[int]) -> None:
        """Neurons: dots of shared weights times the same distinct rows, one more than `between` says what
        comes between two of them: 0 nothing, 1 an op on the last neuron's output (the layer goes on),
        2 an op reading one of the rows (the layer splits), 3 a neuron over the rows in another order
        (another layer)."""
        rows = [self.tame(r, LIMIT) for r in rows]  # distinct entries stay distinct
        for j in range(len(between) + 1):
            ws = [self.shared() for _ in rows]
            out = self.dot_on(ws, rows)
            bound = self.bound(out)
            if self.c.integer(0, 1):  # a bias: the layer's kernels run the add too
                b = self.param()
                args = (out, b) if self.c.integer(0, 1) else (b, out)
                out = self.emit(Step("binary", "+", args), bound + PARAM_BOUND)
                bound = self.bound(out)
                self.tags.add("layer:biased")
            if j == len(between):
                break
            if between[j] == 0:
                self.tags.add("layer:joined")
            elif between[j] == 1:
                op = self.pick(("tanh", "relu", "sigmoid"))
                self.emit(Step("unary", op, (self.tame(out, LIMIT),)), bound)
                self.tags.add("layer:joined-around-an-op")
            elif between[j] == 2:
                self.emit(Step("binary", "*", (self.pick(rows), ("c", 0.5))), LIMIT)
                self.tags.add("layer:split-by-a-reader")
            else:
                self.dot_on([self.shared() for _ in rows], list(reversed(rows)))
                self.tags.add("layer:split-by-another-order")

    def derivative_on(self, wrt: Sequence[Ref], write: Callable[[], object]) -> None:
        """A recorded derivative (create_graph) of what write() builds from the rows wrt (and numbers)
        with respect to them, each squashed: derivative graphs hold the ops nothing else makes (Scale,
        Select, Quot, PowIeee, MulLog and the masks). No parameter is read by them, so the parameters'
        summed gradients get terms only from the program's own steps (add_contributions)."""
        wrt = [self.tame(r, LIMIT) for r in wrt]
        self.local = [int(r[1]) for r in wrt]
        write()
        out = ("p", self.local[-1])
        self.local = None
        self.steps.append(Step("grad", self.pick(SQUASHES), (out,), tuple(wrt)))
        self.bounds.extend([1.0] * len(wrt))
        self.tags.add("grad")

    # -- random choices --
    def unary(self) -> None:
        self.unary_on(self.pick(list(UNARY)), self.operand(constants=False))

    def binary(self) -> None:
        op = self.pick(("+", "-", "*", "/"))
        a = self.operand()
        if op == "/":
            divisor = (
                ("c", self.pick((2.0, -0.5, 4.0))) if a[0] != "c" and self.c.integer(0, 3) == 0 else None
            )
            self.binary_on(op, a, divisor or self.operand(constants=False))
            return
        b = self.operand()
        self.binary_on(op, a, self.row() if a[0] == b[0] == "c" else b)

    def power(self) -> None:
        if self.c.integer(0, 2) == 0:
            k = self.pick((2, 3, 0, 1, -1, 0.5, 1.5, -0.5, 2.0))
            self.power_const_on(self.operand(constants=False), k)
        else:
            base = self.pick(("sigmoid", "abs", "leaf", "number"))
            self.power_value_on(base, self.operand(constants=False), self.operand(constants=False))

    def nary(self, kind: str) -> None:
        refs = [self.operand() for _ in range(self.c.integer(1, 5))]
        if all(r[0] == "c" for r in refs):
            refs[0] = self.row()
        self.nary_on(kind, refs)

    def dot(self) -> None:
        """A dot of any operands: shared times row (a neuron's terms), row times shared, row times row,
        shared times shared, numbers, the same row twice."""
        terms = [(self.operand(), self.operand()) for _ in range(self.c.integer(1, 4))]
        terms = [(w, self.row() if w[0] == x[0] == "c" else x) for w, x in terms]
        self.dot_on([w for w, _ in terms], [x for _, x in terms])

    def layer(self) -> None:
        candidates = list(self.rows())
        rows: list[Ref] = []
        for _ in range(min(self.c.integer(1, 4), len(candidates))):
            rows.append(("p", candidates.pop(self.c.integer(0, len(candidates) - 1))))
        self.layer_on(rows, [self.c.integer(0, 3) for _ in range(self.c.integer(1, 3))])

    def derivative(self) -> None:
        candidates = list(self.rows())
        wrt: list[Ref] = []
        for _ in range(min(self.c.integer(1, 3), len(candidates))):
            wrt.append(("p", candidates.pop(self.c.integer(0, len(candidates) - 1))))

        def write() -> None:
            for _ in range(self.c.integer(1, 3)):
                self.pick(
                    (self.unary, self.binary, self.power, self.power, lambda: self.nary("sum"), self.dot)
                )()

        self.derivative_on(wrt, write)

    def finish(self, as_list: bool, seeded: bool, data_seed: int) -> Program:
        """Sums what nothing reads (every input included) into the first root; up to two inner nodes
        as more roots."""
        first_node = self.n_inputs + len(self.params)
        sinks = [i for i in range(len(self.bounds)) if i not in self.used]
        total = int(self.emit(Step("sum", "", tuple(("p", i) for i in sinks)), 0.0)[1])
        nodes = list(range(first_node, total))
        extra = [
            nodes.pop(self.c.integer(0, len(nodes) - 1)) for _ in range(min(self.c.integer(0, 2), len(nodes)))
        ]
        per_sample = {self.c.integer(first_node, total) for _ in range(self.c.integer(0, 4))}
        return Program(
            n_inputs=self.n_inputs,
            params=self.params,
            steps=tuple(self.steps),
            roots=(total, *extra),
            as_list=as_list or bool(extra),
            seeded=seeded or as_list or bool(extra),
            per_sample=tuple(sorted(per_sample)),
            data_seed=data_seed,
            tags=frozenset(self.tags),
        )


def generate(c: Chooser, max_actions: int = 10) -> Program:
    n_inputs = c.integer(1, 4)
    params = tuple(c.real(-PARAM_BOUND, PARAM_BOUND) for _ in range(c.integer(1, 5)))
    g = _Generator(c, n_inputs, params)
    actions: list[Callable[[], None]] = [g.unary] * 3 + [g.binary] * 2 + [g.power, g.dot, g.layer, g.layer]
    actions += [g.derivative, lambda: g.nary("sum"), lambda: g.nary("lse")]
    for _ in range(c.integer(2, max_actions)):
        actions[c.integer(0, len(actions) - 1)]()
    return g.finish(c.integer(0, 1) == 1, c.integer(0, 1) == 1, c.integer(0, 2**32 - 1))


def tour_program() -> Program:
    """Every op on rows and on shared operands, every kind of dot term, sums and logsumexps of every
    kind of operand, layers joined and split every way, and a derivative over pow, division, relu,
    sqrt and a product (incidental choices, such as which squash, from a seeded chooser)."""
    g = _Generator(RandomChooser(2024), 3, (0.75, -1.25, 0.375, 1.5))
    x0: Ref = ("p", 0)
    x1: Ref = ("p", 1)
    x2: Ref = ("p", 2)
    ws: list[Ref] = [("p", 3 + j) for j in range(4)]
    h = g.binary_on("*", x0, ws[0])
    rows = [x0, x1, x2, h]
    for k, op in enumerate(UNARY):
        g.unary_on(op, rows[k % 4], guards=("abs",))
        g.unary_on(op, ws[k % 4], guards=("leaf",))
    pairs: list[tuple[Ref, Ref]] = [(x0, x1), (x1, ws[0]), (ws[1], x2), (ws[2], ws[3]), (x2, x2)]
    pairs += [(h, ("c", 0.5)), (("c", -1.5), x2), (ws[3], ("c", 2.0)), (("c", 3.0), ws[1])]
    for op in ("+", "-", "*", "/"):
        for a, b in pairs:
            g.binary_on(op, a, b, guards=("leaf",) if g.kind(b) == "shared" else ("abs",))
    for k, power in enumerate((2, 3, 0, 1, -1, 0.5, 1.5, -0.5, 2.0)):
        g.power_const_on(rows[k % 4], power, guards=("abs",))
        g.power_const_on(ws[k % 4], power, guards=("leaf",))
    for base in ("sigmoid", "abs", "leaf", "number"):
        for exponent in (x1, ws[1]):
            g.power_value_on(base, x2 if base != "abs" else ws[2], exponent)
    c = ("c", 0.5)
    terms = [
        (ws[0], x0),
        (x1, ws[1]),
        (x0, x2),
        (ws[2], ws[3]),
        (c, x1),
        (x2, c),
        (x1, x1),
        (ws[3], ("v", 2.0)),
        (ws[1], c),
        (c, ws[2]),
    ]
    g.dot_on([w for w, _ in terms], [x for _, x in terms])
    g.dot_on([ws[0], ws[1]], [x0, h])  # a neuron alone
    g.dot_on([x0, x1], [ws[0], ws[1]])  # rows times weights
    g.dot_on([ws[0], ws[1]], [x0, x0])  # shared times rows, a row twice: not a neuron
    for kind in ("sum", "lse"):
        g.nary_on(kind, [x0, ws[0], ("c", 2.0), h, x0, ("v", -1.0)])
        g.nary_on(kind, [ws[1], ws[2]])
        g.nary_on(kind, [x1])
    g.layer_on([x0, x1, h], [0, 1, 0, 2, 0, 3, 0])
    g.layer_on([x2], [0, 0])

    def write() -> None:
        a, b, d = (("p", i) for i in g.rows()[:3])
        p = g.power_value_on("sigmoid", a, b)
        q = g.binary_on("/", p, b, guards=("abs",))
        r = g.unary_on("relu", g.binary_on("-", q, a))
        s = g.unary_on("sqrt", g.binary_on("*", r, d), guards=("square",))
        g.nary_on("sum", [s, g.power_const_on(b, 1.5, guards=("abs",))])

    g.derivative_on([x0, h, x2, x1], write)  # nothing written reads x1: its derivative is a constant 0
    return g.finish(as_list=True, seeded=True, data_seed=7)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    return generate(DrawChooser(draw))


# --- building a program ------------------------------------------------------------------------------


def _resolve(ref: Ref, pool: list[ag.Value]) -> ag.Value | float:
    if ref[0] == "p":
        return pool[int(ref[1])]
    return ag.Value(ref[1]) if ref[0] == "v" else ref[1]


def build(program: Program, xs: list[ag.Value], params: list[ag.Value]) -> list[ag.Value]:
    """The pool: inputs, parameters, then every step's result(s)."""
    pool = [*xs, *params]
    for step in program.steps:
        args = [_resolve(r, pool) for r in step.args]
        if step.kind == "unary":
            pool.append(UNARY[step.op](args[0]))
        elif step.kind == "binary":
            pool.append(BINARY[step.op](args[0], args[1]))
        elif step.kind == "dot":
            pool.append(ag.dot(args, [_resolve(r, pool) for r in step.more]))
        elif step.kind == "sum":
            pool.append(ag.sum(args))
        elif step.kind == "lse":
            pool.append(ag.logsumexp(args))
        else:
            wrt = [pool[int(r[1])] for r in step.more]
            grads = ag.grad(pool[int(step.args[0][1])], wrt, create_graph=True)
            pool.extend(UNARY[step.op](g) for g in grads)
    return pool


def _value_of(ref: Ref, pool: list[ag.Value]) -> float:
    return pool[int(ref[1])].data if ref[0] == "p" else float(ref[1])


def _partial(step: Step, slot: int, vals: list[float], out: float) -> float:
    """The derivative of a step's result with respect to its operand slot (a dot's slots: the weights,
    then what they multiply), given its operands' values and its own."""
    if step.kind == "unary":
        return float(UNARY[step.op](ag.Dual(vals[0], 1.0)).dual)
    if step.kind == "binary":
        a, b = (ag.Dual(vals[0], 1.0), vals[1]) if slot == 0 else (vals[0], ag.Dual(vals[1], 1.0))
        return float(BINARY[step.op](a, b).dual)
    if step.kind == "dot":
        n = len(step.args)
        return vals[slot + n] if slot < n else vals[slot - n]
    return 1.0 if step.kind == "sum" else math.exp(vals[slot] - out)


def add_contributions(program: Program, pool: list[ag.Value], magnitude: np.ndarray) -> None:
    """Adds to magnitude[j], for every operand slot that reads parameter j, the magnitude of what that
    slot adds to its gradient in this sample: the terms the batched sum reassociates."""
    first = program.n_inputs
    n_params = len(program.params)
    i = first + n_params
    for step in program.steps:
        if step.kind == "grad":  # reads no parameter (see _Generator.derivative)
            i += len(step.more)
            continue
        node = pool[i]
        i += 1
        refs = (*step.args, *step.more)
        vals = [_value_of(r, pool) for r in refs]
        for slot, ref in enumerate(refs):
            j = int(ref[1]) - first if ref[0] == "p" else -1
            if 0 <= j < n_params:
                magnitude[j] += abs(node.grad * _partial(step, slot, vals, node.data))


# --- batched and eager runs --------------------------------------------------------------------------


@dataclass
class Recording:
    program: Program
    tape: ag.Tape
    xs: list[ag.Value]
    params: list[ag.Value]
    pool: list[ag.Value]
    unrelated: ag.Value  # a Value the graph does not read: its per-sample gradient is 0


def record(program: Program, x0: np.ndarray) -> Recording:
    xs = [ag.Value(float(v)) for v in x0]
    params = [ag.Value(p) for p in program.params]
    pool = build(program, xs, params)
    roots = [pool[i] for i in program.roots]
    tape = ag.Tape(roots if program.as_list else roots[0], xs)
    return Recording(program, tape, xs, params, pool, ag.Value(1.0))


def samples(program: Program, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs in [-2, 2], a few exactly 0 (relu, abs, sign at their kink); seeds if the program is seeded."""
    rng = np.random.default_rng([program.data_seed, batch])
    x = rng.uniform(-INPUT_BOUND, INPUT_BOUND, size=(batch, program.n_inputs))
    x[rng.random(x.shape) < 0.05] = 0.0
    if not program.seeded:
        return x, None
    shape = (batch, len(program.roots)) if program.as_list else (batch,)
    return x, rng.uniform(-2.0, 2.0, size=shape)


@dataclass
class Results:
    values: np.ndarray  # (batch, roots)
    input_grads: np.ndarray  # (batch, inputs), from backward_batch(reduce="sum")
    per_sample: np.ndarray  # (batch, params + inputs + per_sample nodes + 1): reduce="none"
    node_values: np.ndarray  # (batch, per_sample nodes)
    summed: np.ndarray  # (params,): what backward_batch added into .grad

    def arrays(self) -> list[np.ndarray]:
        return [self.values, self.input_grads, self.per_sample, self.node_values, self.summed]


def batched(rec: Recording, x: np.ndarray, seeds: np.ndarray | None) -> Results:
    p = rec.program
    values = rec.tape.forward_batch(x).reshape(len(x), -1)
    for w in rec.params:
        w.grad = 0.0
    input_grads = rec.tape.backward_batch(seeds)
    summed = np.array([w.grad for w in rec.params])
    wrt = [*rec.params, *rec.xs, *(rec.pool[i] for i in p.per_sample), rec.unrelated]
    per_sample = rec.tape.backward_batch(seeds, reduce="none", params=wrt)
    nodes = np.array([rec.tape.batch_values(rec.pool[i]) for i in p.per_sample]).reshape(-1, len(x)).T
    return Results(values, input_grads, per_sample, nodes, summed)


def eager(rec: Recording, x: np.ndarray, seeds: np.ndarray | None) -> tuple[Results, np.ndarray]:
    """Every sample built again from plain Values and backpropagated alone (the parameters are the tape's
    own Values, with their grads zeroed before each sample), and the magnitudes of the parameters'
    per-slot gradient contributions summed over the batch."""
    p = rec.program
    batch = len(x)
    values = np.empty((batch, len(p.roots)))
    input_grads = np.empty((batch, p.n_inputs))
    per_sample = np.empty((batch, len(p.params) + p.n_inputs + len(p.per_sample) + 1))
    nodes = np.empty((batch, len(p.per_sample)))
    magnitude = np.zeros(len(p.params))
    for s in range(batch):
        xs = [ag.Value(float(v)) for v in x[s]]
        for w in rec.params:
            w.grad = 0.0
        pool = build(p, xs, rec.params)
        roots = [pool[i] for i in p.roots]
        if seeds is None:
            roots[0].backward()
        elif seeds.ndim == 1:
            (roots[0] * float(seeds[s])).backward()  # the root's grad is the seed, exactly
        else:
            ag.sum([r * float(seeds[s, k]) for k, r in enumerate(roots)]).backward()
        values[s] = [r.data for r in roots]
        input_grads[s] = [v.grad for v in xs]
        grads = [w.grad for w in rec.params] + [v.grad for v in xs] + [pool[i].grad for i in p.per_sample]
        per_sample[s] = [*grads, 0.0]  # the unrelated Value's
        nodes[s] = [pool[i].data for i in p.per_sample]
        add_contributions(p, pool, magnitude)
    summed = np.array([math.fsum(per_sample[:, j]) for j in range(len(p.params))])
    return Results(values, input_grads, per_sample, nodes, summed), magnitude


def check_against_eager(rec: Recording, x: np.ndarray, seeds: np.ndarray | None, label: str) -> Results:
    got = batched(rec, x, seeds)
    want, magnitude = eager(rec, x, seeds)
    where = f"{label}, batch of {len(x)}"
    np.testing.assert_array_equal(got.values, want.values, err_msg=f"root values, {where}")
    np.testing.assert_array_equal(got.input_grads, want.input_grads, err_msg=f"input gradients, {where}")
    np.testing.assert_array_equal(got.node_values, want.node_values, err_msg=f"inner values, {where}")
    np.testing.assert_array_equal(
        got.per_sample,
        want.per_sample,
        err_msg=f"per-sample gradients (params, inputs, nodes, unrelated), {where}",
    )
    # Reassociating a sum of N terms moves it by at most about N * 2**-53 times the sum of their
    # magnitudes; N here is at most a few thousand samples times a parameter's slots.
    error = np.abs(got.summed - want.summed)
    assert np.all(error <= 1e-12 * magnitude), (
        f"summed parameter gradients, {where}: batched {got.summed.tolist()}, eager {want.summed.tolist()}, "
        f"contributions' magnitudes {magnitude.tolist()}"
    )
    return got


def digest(results: Sequence[Results]) -> str:
    h = hashlib.sha256()
    for r in results:
        for a in r.arrays():
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def run_batches(program: Program, batches: Sequence[int], against_eager: bool, label: str = "") -> str:
    """One tape, replayed for each batch size in turn (it reallocates its rows as the size changes),
    each result checked against eager evaluation if asked; the digest of every batched result's bits."""
    rec = record(program, samples(program, batches[0])[0][0])
    results = []
    for batch in batches:
        x, seeds = samples(program, batch)
        results.append(check_against_eager(rec, x, seeds, label) if against_eager else batched(rec, x, seeds))
    return digest(results)


# --- tests -------------------------------------------------------------------------------------------

# 1 and primes: below a tile, around one (256 samples), above a chunk (4 tiles) and across several chunks.
BATCHES = (2, 3, 5, 7, 13, 31, 61, 127, 251, 257, 263, 521, 1031)


@settings(max_examples=100, deadline=None)
@given(programs(), st.sampled_from(BATCHES))
def test_batched_results_are_each_samples_eager_results(program: Program, batch: int) -> None:
    run_batches(program, (1, batch), against_eager=True, label="the program above")


# Fixed programs for the runs under other thread counts and SIMD targets: each process makes them again,
# replays them and reports the digest of every bit it got.
FIXED_SEEDS = tuple(range(6))
# 3,079 samples are 4 chunks of 4 tiles (the last chunk 7 samples): 3 threads share them unevenly.
FIXED_BATCHES = (1, 2, 17, 257, 1031, 3079)

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import arenagrad as ag
import test_batched_ops as t
print(ag._core.simd_target())
for program in t.fixed_programs():
    print(t.run_batches(program, t.FIXED_BATCHES, against_eager=False))
"""


def fixed_programs() -> list[Program]:
    return [tour_program(), *(generate(RandomChooser(seed), max_actions=14) for seed in FIXED_SEEDS)]


def _op_names(roots: Sequence[ag.Value]) -> set[str]:
    seen: set[int] = set()
    names: set[str] = set()
    stack = list(roots)
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        names.add(v._op)
        stack.extend(v._prev)
    return names


def test_the_fixed_programs_hold_every_op_and_every_batched_path() -> None:
    """The fixed programs (which the thread and SIMD runs replay) exercise what batched replay runs
    differently: every op, on rows and on shared operands, neurons and layers."""
    tags: set[str] = set()
    names: set[str] = set()
    for program in fixed_programs():
        tags |= program.tags
        rec = record(program, samples(program, 1)[0][0])
        names |= _op_names([rec.pool[i] for i in program.roots])
    kinds = ("row", "shared", "const")
    want = {f"unary:{op}:{kind}" for op in UNARY for kind in kinds[:2]}
    pairs = {f"{a},{b}" for a in kinds for b in kinds if not a == b == "const"}
    want |= {f"binary:{op}:{pair}" for op in ("+", "-", "*", "/", "**") for pair in pairs - {"shared,const"}}
    want |= {"binary:**:shared,const"}  # and a ** k with a Value k: a Value of a number is shared
    want |= {f"dot-term:{w}*{x}" for w in kinds for x in kinds if not w == x == "const"}
    want |= {f"{kind}-operand:{operand}" for kind in ("sum", "lse") for operand in kinds}
    want |= {
        f"layer:{how}"
        for how in ("joined", "joined-around-an-op", "split-by-a-reader", "split-by-another-order", "biased")
    }
    assert want | {"grad"} <= tags, sorted(want - tags)
    assert any(name.startswith("**") and len(name) > 2 for name in names)  # a ** k, k a number
    table = {"+", "-", "*", "/", "**", "neg", "exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "ReLU"}
    table |= {"sin", "cos", "abs", "step", "sign", "nonzero", "isfinite", "select", "xlogy"}
    assert table | {"sum", "dot", "logsumexp"} <= names


def test_thread_counts_and_simd_targets_keep_the_eager_bits() -> None:
    """The fixed programs against eager evaluation in this process; then in processes with 1, 2 and 3
    threads and with the SIMD baseline forced, every batched result (the summed gradients too) must have
    the same bits. The thread count is read once per process, hence the processes."""
    want = [
        run_batches(program, FIXED_BATCHES, against_eager=True, label=f"fixed program {k} (0 is the tour)")
        for k, program in enumerate(fixed_programs())
    ]
    tests = str(Path(__file__).resolve().parent)
    configs = [{"ARENAGRAD_NUM_THREADS": n, "ARENAGRAD_SIMD": ""} for n in ("1", "2", "3")]
    configs.append({"ARENAGRAD_NUM_THREADS": "3", "ARENAGRAD_SIMD": "baseline"})
    for config in configs:
        env = {**os.environ, **config}
        done = subprocess.run([sys.executable, "-c", CHILD, tests], env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{config}: {done.stderr}"
        target, *digests = done.stdout.split()
        assert target == "baseline" or not config["ARENAGRAD_SIMD"], target
        assert digests == want, f"{config}: results differ from this process's (checked against eager)"
