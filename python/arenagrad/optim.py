"""Optimizers with PyTorch's exact update rules, and learning-rate schedulers in PyTorch's style.

``SGD`` and ``Adam`` follow ``torch.optim.SGD`` and ``torch.optim.Adam`` (no AMSGrad, no maximize):
weight decay is added to the gradient, SGD's momentum buffer starts as a copy of the first gradient (dampening
applies from the second step), and Adam divides by the bias corrections ``1 - beta**t``. A scheduler rewrites
``optimizer.lr``; call its ``step()`` after ``optimizer.step()``, as in PyTorch. micrograd's demo schedule
(1.0 decaying linearly to 0.1 over 100 steps) is::

    opt = SGD(model.parameters(), lr=1.0)
    sched = LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=100)

On the native engine ``step()`` and ``zero_grad()`` run in C++ (``arenagrad.ParamGroup``, cpp/optimizer.cpp),
one call for all parameters; the Python rules below serve the reference engine. Both are one formula: the
Python update performs the same floating-point operations as the C++, in the same order (torch's single-tensor
CPU kernels), so the two engines' parameters agree bit for bit. Change one only together with the other.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

from ._core import ParamGroup
from ._core import Value as NativeValue
from ._ieee import ieee_div as _ieee_div
from .nn import AnyValue, Module

__all__ = [
    "SGD",
    "Adam",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "Optimizer",
    "read_parameters",
    "write_parameters",
]


def read_parameters(params: Sequence[AnyValue]) -> tuple[list[float], list[float]]:
    """The parameters' ``(data, grad)`` as two lists of floats: the only place optimizers read Values."""
    return [p.data for p in params], [p.grad for p in params]


def write_parameters(
    params: Sequence[AnyValue], *, data: Sequence[float] | None = None, grads: Sequence[float] | None = None
) -> None:
    """Store new ``data`` and/or ``grads`` into the parameters: the only place optimizers write Values."""
    if data is not None:
        for p, d in zip(params, data):
            p.data = d
    if grads is not None:
        for p, g in zip(params, grads):
            p.grad = g


def _real(
    value: object, name: str, *, low: float = 0.0, high: float = math.inf, high_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    if not (low <= x < high if high_open else low <= x <= high):
        interval = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return x


class Optimizer(ABC):
    """Holds the parameters and the current learning rate ``lr`` (an attribute schedulers rewrite)."""

    def __init__(self, params: Module | Iterable[AnyValue], lr: float) -> None:
        if isinstance(params, Module):
            params = params.parameters()
        elif isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
            raise TypeError(f"params must be a Module or an iterable of Values, got {type(params).__name__}")
        self.params: list[AnyValue] = list(params)
        if not self.params:
            raise ValueError("the optimizer got an empty parameter list")
        for i, p in enumerate(self.params):
            if not (hasattr(p, "data") and hasattr(p, "grad")):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a Value")
        # A parameter listed twice would be updated twice per step.
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("the parameter list contains the same Value more than once")
        self.lr = _real(lr, "lr")
        self.steps = 0
        # Native parameters are updated in bulk in C++; the group also holds the optimizer state.
        native = all(type(p) is NativeValue for p in self.params)
        self._group: ParamGroup | None = ParamGroup(self.params) if native else None

    def zero_grad(self) -> None:
        if self._group is not None:
            self._group.zero_grad()
        else:
            write_parameters(self.params, grads=[0.0] * len(self.params))

    def step(self) -> None:
        # Hyperparameters are plain attributes that schedulers (and users) change between steps, so
        # they are checked here, on both engines alike: the native step would refuse them too.
        self._check_hyperparameters()
        if self._group is not None:
            self._native_step(self._group)
        else:
            data, grads = read_parameters(self.params)
            write_parameters(self.params, data=self._update(data, grads))
        self.steps += 1

    def _check_hyperparameters(self) -> None:
        _real(self.lr, "lr")

    @abstractmethod
    def _native_step(self, group: ParamGroup) -> None:
        """The same update as ``_update``, applied by the native engine to every parameter at once."""

    @abstractmethod
    def _update(self, data: list[float], grads: list[float]) -> list[float]:
        """New parameter values from the current values and gradients (the whole update rule, on floats)."""


class SGD(Optimizer):
    """``torch.optim.SGD``: ``g += weight_decay * p``; with momentum, ``buf = g`` on the first step, then
    ``buf = momentum*buf + (1 - dampening)*g``, and ``g = buf`` (``g += momentum*buf`` with ``nesterov``);
    finally ``p -= lr * g``. ``dampening`` and ``nesterov`` are keyword-only; like torch, Nesterov momentum
    needs ``momentum > 0`` and ``dampening == 0``."""

    def __init__(
        self,
        params: Module | Iterable[AnyValue],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        dampening: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = _real(momentum, "momentum")
        self.weight_decay = _real(weight_decay, "weight_decay")
        self.dampening = _real(dampening, "dampening", high=1.0)
        self.nesterov = nesterov
        self._check_hyperparameters()
        self._buffers: list[float] | None = None

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        _real(self.momentum, "momentum")
        _real(self.weight_decay, "weight_decay")
        _real(self.dampening, "dampening", high=1.0)
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be a bool, got {type(self.nesterov).__name__}")
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _native_step(self, group: ParamGroup) -> None:
        group.sgd_step(
            lr=self.lr,
            momentum=self.momentum,
            dampening=self.dampening,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
        )

    def _update(self, data: list[float], grads: list[float]) -> list[float]:
        # Operation for operation ParamGroup::sgd_step in cpp/optimizer.cpp (torch's single-tensor SGD).
        lr, momentum, dampening, decay = self.lr, self.momentum, self.dampening, self.weight_decay
        first = self._buffers is None
        if momentum != 0.0 and self._buffers is None:
            self._buffers = [0.0] * len(data)
        buffers = self._buffers if self._buffers is not None else []
        new = []
        for i, (p, g) in enumerate(zip(data, grads)):
            if decay != 0.0:
                g = g + decay * p
            if momentum != 0.0:
                # torch clones g on the first step: no dampening yet.
                buf = g if first else buffers[i] * momentum + (1.0 - dampening) * g
                buffers[i] = buf
                g = g + momentum * buf if self.nesterov else buf
            new.append(p + (-lr) * g)
        return new


class Adam(Optimizer):
    """``torch.optim.Adam``: moments ``m``, ``v`` with bias corrections; ``weight_decay`` is added to the
    gradient (L2, not AdamW's decoupled decay)."""

    def __init__(
        self,
        params: Module | Iterable[AnyValue],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, Sequence) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = (
            _real(betas[0], "betas[0]", high=1.0, high_open=True),
            _real(betas[1], "betas[1]", high=1.0, high_open=True),
        )
        self.eps = _real(eps, "eps")
        self.weight_decay = _real(weight_decay, "weight_decay")
        self._check_hyperparameters()
        self._m = [0.0] * len(self.params)
        self._v = [0.0] * len(self.params)
        self._t = 0

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        if not isinstance(self.betas, Sequence) or len(self.betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {self.betas!r}")
        _real(self.betas[0], "betas[0]", high=1.0, high_open=True)
        _real(self.betas[1], "betas[1]", high=1.0, high_open=True)
        _real(self.eps, "eps")
        _real(self.weight_decay, "weight_decay")

    def _native_step(self, group: ParamGroup) -> None:
        self._t += 1
        beta1, beta2 = self.betas
        group.adam_step(lr=self.lr, beta1=beta1, beta2=beta2, eps=self.eps, weight_decay=self.weight_decay)

    def _update(self, data: list[float], grads: list[float]) -> list[float]:
        # Operation for operation ParamGroup::adam_step in cpp/optimizer.cpp, itself torch's single-tensor
        # Adam: lerp_ for m, mul_ then addcmul_ for v, addcdiv_ for p.
        beta1, beta2 = self.betas
        eps, decay = self.eps, self.weight_decay
        self._t += 1
        step = float(self._t)
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5  # torch writes ** 0.5 (pow), not sqrt
        weight = 1.0 - beta1
        m_all, v_all = self._m, self._v
        new = []
        for i, (p, g) in enumerate(zip(data, grads)):
            if decay != 0.0:
                g = g + decay * p
            m = m_all[i]
            # torch's lerp kernel: two formulas, chosen by the weight, for accuracy at both ends.
            m = m + weight * (g - m) if weight < 0.5 else g - (g - m) * (1.0 - weight)
            v = v_all[i] * beta2 + (1.0 - beta2) * g * g
            m_all[i], v_all[i] = m, v
            denom = math.sqrt(v) / bias_correction2_sqrt + eps
            new.append(p + _ieee_div((-step_size) * m, denom))
        return new


class LRScheduler(ABC):
    """Sets ``optimizer.lr = base_lr * factor(step)``; ``step()`` (after the optimizer's) advances one."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected an arenagrad Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_step = 0
        optimizer.lr = self.base_lr * self.factor(0)

    @abstractmethod
    def factor(self, step: int) -> float:
        """The multiplier of ``base_lr`` after ``step`` scheduler steps."""

    def step(self) -> None:
        self.last_step += 1
        self.optimizer.lr = self.base_lr * self.factor(self.last_step)

    def get_last_lr(self) -> float:
        return self.optimizer.lr


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(step)``, like ``torch.optim.lr_scheduler.LambdaLR``."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float]) -> None:
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be callable, got {type(lr_lambda).__name__}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        return self.lr_lambda(step)


class LinearLR(LRScheduler):
    """The factor goes linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps, then stays
    (``torch.optim.lr_scheduler.LinearLR``, same defaults)."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
    ) -> None:
        self.start_factor = _real(start_factor, "start_factor", high=1.0)
        if self.start_factor == 0.0:
            raise ValueError("start_factor must be greater than 0")
        self.end_factor = _real(end_factor, "end_factor", high=1.0)
        if isinstance(total_iters, bool) or not isinstance(total_iters, numbers.Integral) or total_iters < 1:
            raise ValueError(f"total_iters must be a positive int, got {total_iters!r}")
        self.total_iters: int = int(total_iters)
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        progress = min(step, self.total_iters)
        return self.start_factor + (self.end_factor - self.start_factor) * progress / self.total_iters
