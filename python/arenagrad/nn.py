"""Neural network modules in micrograd's style (`Neuron`, `Layer`, `MLP`) that run on either engine.

Every module takes ``engine=None``: ``None`` or ``"native"`` is the C++ engine (``arenagrad``),
``"reference"`` the pure-Python one (``arenagrad.reference``); an engine module itself may be passed too.
Parameters are created with that engine's ``Value``, so the same code trains on both.

Initialization follows micrograd: weights uniform in [-1, 1), biases 0. The ``seed`` argument picks the random
source:

* ``None``: Python's global ``random`` module, as micrograd does (so ``random.seed(1337)`` then
  ``MLP(2, [16, 16, 1])`` gives micrograd's weights);
* an ``int``: a fresh ``random.Random(seed)`` (the same stream as ``random.seed(seed)``);
* a ``random.Random``: used and advanced in place (share one to build several models in sequence);
* a ``numpy.random.Generator``: weights drawn with ``generator.uniform(-1.0, 1.0)``.

Weights are drawn neuron by neuron, layer by layer, ``nin`` draws per neuron, exactly in micrograd's order.
"""

from __future__ import annotations

import importlib
import numbers
import random
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, Union

import numpy as np

# Type hint for a Value of either engine: the two engines' classes share an API, not a base class.
AnyValue = Any
Seed = Union[int, random.Random, np.random.Generator, None]
EngineLike = Union[str, ModuleType, None]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Layer",
    "Module",
    "Neuron",
    "engine_of",
    "resolve_engine",
]


def _is_engine(obj: object) -> bool:
    return all(callable(getattr(obj, name, None)) for name in ("Value", "sum", "dot"))


def resolve_engine(engine: EngineLike = None) -> ModuleType:
    """The engine module for ``engine``: None/"native" (arenagrad), "reference", or an engine module."""
    if engine is None or (isinstance(engine, str) and engine == "native"):
        module = importlib.import_module("arenagrad")
        if not _is_engine(module):
            raise ImportError(
                "the native arenagrad engine is not available (arenagrad.Value/sum/dot are missing: is "
                "the C++ module arenagrad._core built?); pass engine='reference' for the pure-Python engine"
            )
        return module
    if isinstance(engine, str):
        if engine == "reference":
            return importlib.import_module("arenagrad.reference")
        raise ValueError(f"unknown engine {engine!r}: expected 'native', 'reference' or an engine module")
    if not _is_engine(engine):
        raise TypeError(
            f"engine must be None, 'native', 'reference' or a module exporting Value, sum and dot; "
            f"got {engine!r}"
        )
    return engine


def engine_of(value: AnyValue) -> ModuleType:
    """The engine module a Value belongs to (the module exporting its class with ``sum`` and ``dot``)."""
    cls = type(value)
    # The native class lives in arenagrad._core but sum/dot may only be re-exported by a parent package,
    # so walk up the dotted module name until a module exports this very class alongside sum and dot.
    name = getattr(cls, "__module__", None) or ""
    while name:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "Value", None) is cls and _is_engine(module):
            return module
        name = name.rpartition(".")[0]
    raise TypeError(f"expected an arenagrad Value, got {cls.__name__}")


def _uniform_source(seed: Seed) -> Callable[[], float]:
    if seed is None:
        return lambda: random.uniform(-1.0, 1.0)
    if isinstance(seed, random.Random):
        return lambda: seed.uniform(-1.0, 1.0)
    if isinstance(seed, np.random.Generator):
        return lambda: float(seed.uniform(-1.0, 1.0))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        rng = random.Random(int(seed))
        return lambda: rng.uniform(-1.0, 1.0)
    raise TypeError(
        f"seed must be None, an int, a random.Random or a numpy.random.Generator, got {type(seed).__name__}"
    )


def _check_size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return int(value)


def _check_activation(activation: object, nonlin: bool | None = None) -> str:
    # micrograd's spelling: Neuron(nin, nonlin=True) is ReLU, nonlin=False is linear; a bool in the
    # activation slot (Neuron(2, False)) means the same.
    if nonlin is not None:
        activation = nonlin
    if isinstance(activation, bool):
        return "relu" if activation else "linear"
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    return activation


def _as_inputs(x: object, size: int, who: str) -> list:
    """Validate one input sample once per call, so the per-neuron hot path does no checking."""
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise ValueError(f"{who} expects a 1-D input of {size} values, got an array of shape {x.shape}")
        # tolist() turns float64 into Python floats and object arrays into their Values.
        xs = x.tolist()
    elif isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise TypeError(
            f"{who} expects a sequence of {size} inputs (list, tuple or 1-D numpy array), "
            f"got {type(x).__name__}"
        )
    else:
        xs = list(x)
    if len(xs) != size:
        raise ValueError(f"{who} expects {size} inputs, got {len(xs)}")
    return xs


def _activate(z: AnyValue, activation: str) -> AnyValue:
    if activation == "relu":
        return z.relu()
    if activation == "tanh":
        return z.tanh()
    if activation == "sigmoid":
        return z.sigmoid()
    return z


def _preview(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


# The engines a pickled module may name: unpickling imports the name, and importing runs a module's code.
_PICKLABLE_ENGINES = ("arenagrad", "arenagrad.reference")


class Module(ABC):
    """Base class: a callable holding named scalar parameters of one engine."""

    engine: ModuleType

    def named_parameters(self) -> list[tuple[str, AnyValue]]:
        """(name, Value) pairs in a fixed order; names are dotted paths such as ``layers.0.neurons.3.w.1``.

        A subclass written micrograd's way defines only ``parameters()``; its parameters are then named by
        position."""
        if type(self).parameters is Module.parameters:
            return []  # neither is overridden: no parameters, like micrograd's bare Module
        return [(str(i), p) for i, p in enumerate(self.parameters())]

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-compatible) that rebuild this module's architecture."""
        raise NotImplementedError(
            f"{type(self).__name__} does not describe its architecture (config()), so it cannot be saved; "
            "save its state_dict() instead"
        )

    @abstractmethod
    def __call__(self, x: Iterable[Any]) -> Any: ...

    def parameters(self) -> list[AnyValue]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0

    def state_dict(self) -> dict[str, float]:
        """The parameters' current values as plain floats keyed by name."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Set every parameter from ``state``; keys must match exactly. Nothing changes on an error."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a mapping of parameter names to floats, got {type(state).__name__}"
            )
        named = self.named_parameters()
        expected = {name for name, _ in named}
        missing = [name for name, _ in named if name not in state]
        unexpected = [key for key in state if key not in expected]
        if missing or unexpected:
            raise ValueError(
                f"state_dict does not match {self!r}: missing keys {_preview(missing)}, "
                f"unexpected keys {_preview(unexpected)}"
            )
        values: list[float] = []
        for name, _ in named:  # convert everything first, so a bad entry changes nothing
            value = state[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"state_dict[{name!r}] must be a real number, got {type(value).__name__}")
            try:
                values.append(float(value))
            except OverflowError:
                raise ValueError(f"state_dict[{name!r}] is too large for a float: {value!r}") from None
        for (_, p), value in zip(named, values):
            p.data = value

    # pickle and copy.deepcopy: a module object cannot be pickled, so the engine is stored by its import name.
    # The Values go through their engine's own pickling (leaves only), and the memo keeps shared ones shared.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        engine = state.get("engine")
        if isinstance(engine, ModuleType):
            # Refused here, not only when loaded: __setstate__ imports nothing but the two engines.
            if engine.__name__ not in _PICKLABLE_ENGINES or sys.modules.get(engine.__name__) is not engine:
                raise TypeError(
                    f"cannot pickle or copy {type(self).__name__}: its engine {engine!r} is neither "
                    "arenagrad nor arenagrad.reference"
                )
            state["engine"] = engine.__name__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        engine = state.get("engine")
        if isinstance(engine, str):
            # Only the two engines: the name comes from the pickle, and importing a module runs its code.
            if engine not in _PICKLABLE_ENGINES:
                raise TypeError(
                    f"cannot unpickle or copy {type(self).__name__}: unknown engine {engine!r} (expected "
                    "'arenagrad' or 'arenagrad.reference')"
                )
            state = {**state, "engine": importlib.import_module(engine)}
        self.__dict__.update(state)

    def _label_parameters(self) -> None:
        # Labels make graph drawings readable; a parent module relabels its children with full paths.
        for name, p in self.named_parameters():
            p.label = name


class Neuron(Module):
    """``activation(dot(w, x) + b)``: the pre-activation is one fused ``dot`` node plus the bias."""

    def __init__(
        self,
        nin: int,
        activation: str | bool = "relu",
        *,
        nonlin: bool | None = None,
        seed: Seed = None,
        engine: EngineLike = None,
    ) -> None:
        self._init(nin, _check_activation(activation, nonlin), _uniform_source(seed), resolve_engine(engine))
        self._label_parameters()

    def _init(self, nin: int, activation: str, draw: Callable[[], float], engine: ModuleType) -> None:
        self.nin = _check_size(nin, "nin")
        self.activation = _check_activation(activation)
        self.engine = engine
        self.w = [engine.Value(draw()) for _ in range(self.nin)]
        self.b = engine.Value(0.0)

    @classmethod
    def _build(cls, nin: int, activation: str, draw: Callable[[], float], engine: ModuleType) -> Neuron:
        neuron = cls.__new__(cls)
        neuron._init(nin, activation, draw, engine)
        return neuron

    def _forward(self, xs: list) -> AnyValue:
        return _activate(self.engine.dot(self.w, xs) + self.b, self.activation)

    def __call__(self, x: Iterable[Any]) -> AnyValue:
        return self._forward(_as_inputs(x, self.nin, "Neuron"))

    def named_parameters(self) -> list[tuple[str, AnyValue]]:
        return [*((f"w.{i}", w) for i, w in enumerate(self.w)), ("b", self.b)]

    def config(self) -> dict[str, Any]:
        return {"nin": self.nin, "activation": self.activation}

    @property
    def nonlin(self) -> bool:
        """micrograd's flag: True unless the neuron is linear."""
        return self.activation != "linear"

    def __repr__(self) -> str:
        return f"Neuron({self.nin}, activation={self.activation!r})"


class Layer(Module):
    """``nout`` neurons on the same input; a layer of one neuron returns a single Value, as in micrograd."""

    def __init__(
        self,
        nin: int,
        nout: int,
        activation: str | bool = "relu",
        *,
        nonlin: bool | None = None,
        seed: Seed = None,
        engine: EngineLike = None,
    ) -> None:
        activation = _check_activation(activation, nonlin)
        self._init(nin, nout, activation, _uniform_source(seed), resolve_engine(engine))
        self._label_parameters()

    def _init(
        self, nin: int, nout: int, activation: str, draw: Callable[[], float], engine: ModuleType
    ) -> None:
        self.nin = _check_size(nin, "nin")
        self.nout = _check_size(nout, "nout")
        self.activation = _check_activation(activation)
        self.engine = engine
        self.neurons = [Neuron._build(self.nin, activation, draw, engine) for _ in range(self.nout)]

    @classmethod
    def _build(
        cls, nin: int, nout: int, activation: str, draw: Callable[[], float], engine: ModuleType
    ) -> Layer:
        layer = cls.__new__(cls)
        layer._init(nin, nout, activation, draw, engine)
        return layer

    def _forward(self, xs: list) -> list[AnyValue]:
        return [n._forward(xs) for n in self.neurons]

    def __call__(self, x: Iterable[Any]) -> AnyValue | list[AnyValue]:
        out = self._forward(_as_inputs(x, self.nin, "Layer"))
        return out[0] if len(out) == 1 else out

    def named_parameters(self) -> list[tuple[str, AnyValue]]:
        return [
            (f"neurons.{j}.{name}", p) for j, n in enumerate(self.neurons) for name, p in n.named_parameters()
        ]

    def config(self) -> dict[str, Any]:
        return {"nin": self.nin, "nout": self.nout, "activation": self.activation}

    def __repr__(self) -> str:
        return f"Layer({self.nin}, {self.nout}, activation={self.activation!r})"


class MLP(Module):
    """Layers of sizes ``nouts``: ``activation`` on hidden layers, ``out_activation`` (linear) on the last."""

    def __init__(
        self,
        nin: int,
        nouts: Sequence[int],
        activation: str = "relu",
        *,
        out_activation: str = "linear",
        seed: Seed = None,
        engine: EngineLike = None,
    ) -> None:
        self.nin = _check_size(nin, "nin")
        if isinstance(nouts, (str, bytes)) or not isinstance(nouts, Iterable):
            raise TypeError(f"nouts must be a sequence of layer sizes, got {type(nouts).__name__}")
        self.nouts = [_check_size(n, "each layer size in nouts") for n in nouts]
        if not self.nouts:
            raise ValueError("nouts must list at least one layer size")
        self.activation = _check_activation(activation)
        self.out_activation = _check_activation(out_activation)
        self.engine = resolve_engine(engine)
        draw = _uniform_source(seed)
        sizes = [self.nin, *self.nouts]
        last = len(self.nouts) - 1
        self.layers = [
            Layer._build(
                sizes[i],
                sizes[i + 1],
                self.out_activation if i == last else self.activation,
                draw,
                self.engine,
            )
            for i in range(len(self.nouts))
        ]
        self._label_parameters()

    def __call__(self, x: Iterable[Any]) -> AnyValue | list[AnyValue]:
        xs = _as_inputs(x, self.nin, f"MLP({self.nin}, {self.nouts})")
        for layer in self.layers:
            xs = layer._forward(xs)
        return xs[0] if len(xs) == 1 else xs

    def named_parameters(self) -> list[tuple[str, AnyValue]]:
        return [
            (f"layers.{i}.{name}", p)
            for i, layer in enumerate(self.layers)
            for name, p in layer.named_parameters()
        ]

    def config(self) -> dict[str, Any]:
        return {
            "nin": self.nin,
            "nouts": list(self.nouts),
            "activation": self.activation,
            "out_activation": self.out_activation,
        }

    def to_torch(self) -> Any:
        """An equivalent float64 ``torch.nn.Sequential`` holding copies of this MLP's weights."""
        from .torch_interop import to_torch

        return to_torch(self)

    @classmethod
    def from_torch(cls, seq: Any, *, engine: EngineLike = None) -> MLP:
        """An MLP from a ``torch.nn.Sequential`` of ``Linear`` layers and activations (see torch_interop)."""
        from .torch_interop import from_torch

        return from_torch(seq, engine=engine)

    def __repr__(self) -> str:
        extra = "" if self.out_activation == "linear" else f", out_activation={self.out_activation!r}"
        return f"MLP({self.nin}, {self.nouts}, activation={self.activation!r}{extra})"
