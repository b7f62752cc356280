"""Converting an `MLP` to and from a float64 ``torch.nn.Sequential`` (torch is imported only when used).

The Sequential layout is ``Linear, activation, Linear, activation, ..., Linear[, activation]``: one
``Linear`` per layer (row ``j`` of its weight is neuron ``j``'s ``w``) followed by ``ReLU``/``Tanh``/
``Sigmoid``, or by nothing (or ``Identity``) for a linear layer.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .nn import MLP, EngineLike

__all__ = ["from_torch", "to_torch"]

_TORCH_NAMES = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _import_torch() -> ModuleType:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "PyTorch is required for MLP.to_torch()/MLP.from_torch(); install it with `pip install torch`"
        ) from exc
    return torch


def to_torch(mlp: MLP) -> Any:
    """An equivalent ``torch.nn.Sequential`` in float64 with copies of ``mlp``'s weights."""
    if not isinstance(mlp, MLP):
        raise TypeError(f"to_torch expects an arenagrad MLP, got {type(mlp).__name__}")
    torch = _import_torch()
    modules = []
    for layer in mlp.layers:
        # skip_init: torch's default initialisation would advance the caller's global torch RNG for nothing.
        linear = torch.nn.utils.skip_init(torch.nn.Linear, layer.nin, layer.nout, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(
                torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64)
            )
            linear.bias.copy_(torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64))
        modules.append(linear)
        if layer.activation != "linear":
            modules.append(getattr(torch.nn, _TORCH_NAMES[layer.activation])())
    return torch.nn.Sequential(*modules)


def _activation_name(module: Any, torch: ModuleType) -> str | None:
    if isinstance(module, torch.nn.Identity):
        return "linear"
    for name, cls_name in _TORCH_NAMES.items():
        if isinstance(module, getattr(torch.nn, cls_name)):
            return name
    return None


def from_torch(seq: Any, *, engine: EngineLike = None) -> MLP:
    """Build an MLP equal to ``seq``, a ``torch.nn.Sequential`` laid out as in this module's docstring.

    All hidden layers must share one activation (an MLP has one ``activation`` plus ``out_activation``).
    A ``Linear`` without bias becomes neurons with bias 0.
    """
    torch = _import_torch()
    if not isinstance(seq, torch.nn.Sequential):
        raise TypeError(f"from_torch expects a torch.nn.Sequential, got {type(seq).__name__}")
    linears: list[Any] = []
    activations: list[str] = []
    for index, module in enumerate(seq):
        if isinstance(module, torch.nn.Linear):
            if linears and len(activations) < len(linears):
                activations.append("linear")
            if linears and module.in_features != linears[-1].out_features:
                raise ValueError(
                    f"Sequential[{index}] is Linear({module.in_features}, {module.out_features}) but the "
                    f"previous Linear has {linears[-1].out_features} outputs"
                )
            linears.append(module)
            continue
        name = _activation_name(module, torch)
        if name is None:
            raise ValueError(
                f"Sequential[{index}] is {type(module).__name__}; supported modules are Linear, ReLU, Tanh, "
                "Sigmoid and Identity"
            )
        if len(activations) == len(linears):
            raise ValueError(
                f"Sequential[{index}] is {type(module).__name__}, but an activation must come right after "
                "a Linear, and only one per Linear"
            )
        activations.append(name)
    if not linears:
        raise ValueError("from_torch: the Sequential contains no Linear layer")
    if len(activations) < len(linears):
        activations.append("linear")
    hidden = set(activations[:-1])
    if len(hidden) > 1:
        raise ValueError(f"from_torch: hidden layers must share one activation, got {sorted(hidden)}")
    # seed=0: the weights are overwritten below, and a private stream leaves the global random state alone.
    mlp = MLP(
        linears[0].in_features,
        [lin.out_features for lin in linears],
        hidden.pop() if hidden else "relu",
        out_activation=activations[-1],
        seed=0,
        engine=engine,
    )
    state: dict[str, float] = {}
    for i, lin in enumerate(linears):
        weight = lin.weight.detach().to(torch.float64).tolist()
        bias = [0.0] * lin.out_features if lin.bias is None else lin.bias.detach().to(torch.float64).tolist()
        for j, (row, b) in enumerate(zip(weight, bias)):
            for k, w in enumerate(row):
                state[f"layers.{i}.neurons.{j}.w.{k}"] = w
            state[f"layers.{i}.neurons.{j}.b"] = b
    mlp.load_state_dict(state)
    return mlp
