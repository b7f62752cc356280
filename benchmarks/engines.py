"""Scalar autograd engines under one small adapter, so every workload is written once.

Each loader imports its engine and returns a ScalarEngine, or raises ImportError: the suite then reports the
engine as "not installed" and never substitutes anything for it. Add an engine with one loader and one line in
LOADERS (see benchmarks/README.md).

Two keys are not scalar engines: torch-batched (PyTorch on whole-batch tensors) and jax (JAX in float64 on the
CPU, optional, used by the moons, blobs and derivatives workloads, each as a jax.jit row); their workloads use
the module in the EngineSet (es.torch_batched, es.jax).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

# Engine keys, as accepted by --engines.
ARENAGRAD = "arenagrad"
REFERENCE = "reference"
MICROGRAD = "micrograd"
TORCH = "torch"  # PyTorch op by op on 0-dim float64 tensors
TORCH_BATCHED = "torch-batched"  # PyTorch on float64 tensors of the whole batch
JAX = "jax"  # JAX, float64 on the CPU (optional; the moons, blobs and derivatives workloads)
ALL_ENGINES = (ARENAGRAD, REFERENCE, MICROGRAD, TORCH, TORCH_BATCHED, JAX)
# Keys whose workloads do not go through LOADERS / ScalarEngine.
TENSOR_ENGINES = (TORCH_BATCHED, JAX)


@dataclass
class ScalarEngine:
    key: str
    label: str
    version: str
    module: Any
    leaf: Callable[[float], Any]  # a leaf that takes a gradient
    const: Callable[[float], Any]  # an input leaf (micrograd's demo wraps inputs in Value too)
    backward: Callable[[Any], None]
    value: Callable[[Any], float]
    zero_grad: Callable[[list[Any]], None]
    sgd: Callable[[list[Any], float], None]
    sum: Callable[[Any], Any] | None = None  # engine's one-node sum, if it has one
    dot: Callable[[Any, Any], Any] | None = None  # engine's one-node dot, if it has one
    arena_stats: Callable[[], dict[str, Any]] | None = None
    note: str = ""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _micro_zero_grad(params: list[Any]) -> None:
    # micrograd's Module.zero_grad, verbatim in effect
    for p in params:
        p.grad = 0


def _micro_sgd(params: list[Any], lr: float) -> None:
    # micrograd's demo update loop
    for p in params:
        p.data -= lr * p.grad


def _micro_backward(root: Any) -> None:
    root.backward()


def _micro_value(v: Any) -> float:
    return float(v.data)


def load_arenagrad() -> ScalarEngine:
    ag = importlib.import_module("arenagrad")
    core = importlib.import_module("arenagrad._core")
    stats = getattr(core, "arena_stats", None)
    return ScalarEngine(
        key=ARENAGRAD,
        label="arenagrad",
        version=_version("arenagrad"),
        module=ag,
        leaf=ag.Value,
        const=ag.Value,
        backward=_micro_backward,
        value=_micro_value,
        zero_grad=_micro_zero_grad,
        sgd=_micro_sgd,
        sum=ag.sum,
        dot=ag.dot,
        arena_stats=stats,
    )


def load_reference() -> ScalarEngine:
    ref = importlib.import_module("arenagrad.reference")
    return ScalarEngine(
        key=REFERENCE,
        label="reference",
        version=_version("arenagrad"),
        module=ref,
        leaf=ref.Value,
        const=ref.Value,
        backward=_micro_backward,
        value=_micro_value,
        zero_grad=_micro_zero_grad,
        sgd=_micro_sgd,
        sum=getattr(ref, "sum", None),
        dot=getattr(ref, "dot", None),
    )


def _micrograd_tanh(self: Any) -> Any:
    """tanh for micrograd 0.1.0, which ships without one: written exactly in the style of its relu().

    One node, one closure, as the lecture's version; math.tanh instead of the lecture's exp formula so the
    forward costs what a real tanh costs rather than two exps and a division.
    """
    value_cls = type(self)
    t = math.tanh(self.data)
    out = value_cls(t, (self,), "tanh")

    def _backward() -> None:
        self.grad += (1 - t**2) * out.grad

    out._backward = _backward
    return out


def load_micrograd() -> ScalarEngine:
    engine = importlib.import_module("micrograd.engine")
    value_cls = engine.Value
    note = ""
    if not hasattr(value_cls, "tanh"):
        # Only the chain workload uses tanh; see _micrograd_tanh for why this is a fair stand-in.
        value_cls.tanh = _micrograd_tanh
        note = "tanh added in micrograd's own style (0.1.0 has none)"
    return ScalarEngine(
        key=MICROGRAD,
        label="micrograd",
        version=_version("micrograd"),
        module=engine,
        leaf=value_cls,
        const=value_cls,
        backward=_micro_backward,
        value=_micro_value,
        zero_grad=_micro_zero_grad,
        sgd=_micro_sgd,
        note=note,
    )


def load_torch() -> ScalarEngine:
    torch = importlib.import_module("torch")
    f64 = torch.float64

    def leaf(x: float) -> Any:
        return torch.tensor(x, dtype=f64, requires_grad=True)

    def const(x: float) -> Any:
        return torch.tensor(x, dtype=f64)

    def zero_grad(params: list[Any]) -> None:
        # set_to_none, what torch.optim does by default: the cheapest zeroing torch has
        for p in params:
            p.grad = None

    def sgd(params: list[Any], lr: float) -> None:
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad

    def value(v: Any) -> float:
        return float(v.item())

    return ScalarEngine(
        key=TORCH,
        label="torch 0-dim",
        version=torch.__version__,
        module=torch,
        leaf=leaf,
        const=const,
        backward=_micro_backward,
        value=value,
        zero_grad=zero_grad,
        sgd=sgd,
    )


def load_jax() -> Any:
    """JAX on the CPU with float64 enabled (jax_enable_x64), or ImportError."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no probing for accelerators; the suite measures the CPU
    jax = importlib.import_module("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


# Scalar engines, in table order. torch-batched is not a scalar engine: its workloads import torch directly.
LOADERS: dict[str, Callable[[], ScalarEngine]] = {
    ARENAGRAD: load_arenagrad,
    REFERENCE: load_reference,
    MICROGRAD: load_micrograd,
    TORCH: load_torch,
}


@dataclass
class EngineSet:
    """The engines loaded for one run and why the others are missing."""

    engines: dict[str, ScalarEngine]
    missing: dict[str, str]  # key -> reason ("not installed: ...")
    selected: tuple[str, ...]
    torch_batched: Any = None  # the torch module when torch-batched is selected and importable
    jax: Any = None  # the jax module (float64 enabled) when jax is selected and importable

    def get(self, key: str) -> ScalarEngine | None:
        return self.engines.get(key)


class NotAvailable(Exception):
    """An engine (or the piece of it a workload needs) is missing: its rows are reported with this status
    ("not installed", or e.g. "n/a" when JAX's float64 is off) and the note, never timed."""

    def __init__(self, note: str, status: str = "not installed") -> None:
        super().__init__(note)
        self.status = status


def jax_cpu_float64(es: EngineSet) -> tuple[Any, Any]:
    """JAX and its CPU device, for the workloads' float64 rows; NotAvailable when JAX was not loaded or its
    float64 (jax_enable_x64) is off."""
    jax = es.jax
    if jax is None:
        raise NotAvailable(es.missing.get(JAX, "not installed"))
    if not jax.config.jax_enable_x64:
        raise NotAvailable("JAX's float64 (jax_enable_x64) is off", "n/a")
    return jax, jax.devices("cpu")[0]


def load_engines(selected: tuple[str, ...]) -> EngineSet:
    engines: dict[str, ScalarEngine] = {}
    missing: dict[str, str] = {}
    for key in selected:
        if key in TENSOR_ENGINES:
            continue
        try:
            engines[key] = LOADERS[key]()
        except ImportError as exc:  # includes ModuleNotFoundError
            missing[key] = f"not installed ({type(exc).__name__}: {exc})"
        except AttributeError as exc:  # a half-written module missing Value/sum/dot
            missing[key] = f"not installed (incomplete module: {exc})"
    torch_mod = None
    if TORCH_BATCHED in selected:
        try:
            torch_mod = importlib.import_module("torch")
        except ImportError as exc:
            missing[TORCH_BATCHED] = f"not installed ({type(exc).__name__}: {exc})"
    jax_mod = None
    if JAX in selected:
        try:
            jax_mod = load_jax()
        except ImportError as exc:
            missing[JAX] = f"not installed ({type(exc).__name__}: {exc})"
    return EngineSet(engines=engines, missing=missing, selected=selected, torch_batched=torch_mod,
                     jax=jax_mod)
