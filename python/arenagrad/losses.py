"""Loss functions on Values of either engine (each builds its graph with the engine its inputs come from).

All losses average over the batch. Predictions are Values; targets are plain numbers (``mse_loss`` also
accepts Values). Each function returns one Value to call ``backward()`` on.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from .nn import AnyValue, Module, engine_of

__all__ = ["bce_with_logits", "cross_entropy", "hinge_loss", "l2_penalty", "mse_loss"]


def _as_list(items: object, what: str, who: str) -> list:
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"{who}: {what} must be a sequence, got {type(items).__name__}")
    return list(items.tolist() if hasattr(items, "tolist") else items)


def _batch(predictions: object, targets: object, who: str) -> tuple[list, list, ModuleType]:
    preds = _as_list(predictions, "predictions", who)
    targs = _as_list(targets, "targets", who)
    if len(preds) != len(targs):
        raise ValueError(f"{who}: got {len(preds)} predictions but {len(targs)} targets")
    if not preds:
        raise ValueError(f"{who}: the batch is empty")
    engine = _engine(preds[0], who)
    _check_same_engine(preds, type(preds[0]), who, "prediction")
    return preds, targs, engine


def _check_same_engine(values: list, value_type: type, who: str, what: str) -> None:
    """Every value must be a Value of one engine: a float among them would fail later, and unclearly."""
    for i, v in enumerate(values):
        if type(v) is not value_type:
            raise TypeError(
                f"{who}: {what} {i} is of type {_type_name(type(v))}, but the first is "
                f"{_type_name(value_type)}; pass model outputs (Values of one engine)"
            )


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _engine(value: object, who: str) -> ModuleType:
    try:
        return engine_of(value)
    except TypeError:
        raise TypeError(
            f"{who}: predictions must be arenagrad Values (model outputs), got {type(value).__name__}"
        ) from None


def _number(value: object, who: str, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: target {index} must be a real number, got {type(value).__name__}")
    return float(value)


def mse_loss(predictions: Sequence[AnyValue], targets: Sequence[Any]) -> AnyValue:
    """Mean of ``(prediction - target) ** 2``; targets are numbers or Values."""
    preds, targs, engine = _batch(predictions, targets, "mse_loss")
    diffs = [p - t for p, t in zip(preds, targs)]
    # dot(d, d) is one node for the sum of squares; its backward gives each d the 2*d it needs.
    return engine.dot(diffs, diffs) / len(diffs)


def hinge_loss(scores: Sequence[AnyValue], labels: Sequence[int]) -> AnyValue:
    """micrograd's max-margin loss: mean of ``relu(1 - label * score)`` with labels -1 or +1."""
    preds, labs, engine = _batch(scores, labels, "hinge_loss")
    terms = []
    for i, (s, y) in enumerate(zip(preds, labs)):
        y = _number(y, "hinge_loss", i)
        if y == 1.0:
            terms.append((1.0 - s).relu())
        elif y == -1.0:
            terms.append((1.0 + s).relu())
        else:
            raise ValueError(
                f"hinge_loss: labels must be -1 or +1, label {i} is {y!r} (map 0/1 labels with 2*y-1)"
            )
    return engine.sum(terms) / len(terms)


def _bce_term(z: AnyValue, t: float) -> AnyValue:
    """-t*log(sigmoid(z)) - (1-t)*log(1 - sigmoid(z)) as t*softplus(-z) + (1-t)*softplus(z).

    Both terms are non-negative, so nothing cancels, and softplus decides its own overflow-free branch inside
    the op: a recorded Tape re-decides it for every input. Hard labels keep only the term they need.
    """
    if t == 1.0:
        return (-z).softplus()
    if t == 0.0:
        return z.softplus()
    return t * (-z).softplus() + (1.0 - t) * z.softplus()


def bce_with_logits(logits: Sequence[AnyValue], targets: Sequence[float]) -> AnyValue:
    """Binary cross-entropy of ``sigmoid(logit)`` against targets in [0, 1], computed from the logits.

    Uses ``t*softplus(-z) + (1-t)*softplus(z)``, which equals ``-t*log(sigmoid(z)) - (1-t)*log(1-sigmoid(z))``
    and stays finite and accurate for any finite logit (the gradient ``sigmoid(z) - t`` too). The graph holds
    no branch taken in Python on a logit's value, so a recorded ``Tape`` replays it exactly at any logits.
    """
    preds, targs, engine = _batch(logits, targets, "bce_with_logits")
    terms = []
    for i, (z, t) in enumerate(zip(preds, targs)):
        t = _number(t, "bce_with_logits", i)
        if not 0.0 <= t <= 1.0:
            raise ValueError(
                f"bce_with_logits: targets must lie in [0, 1], target {i} is {t!r} "
                "(map -1/+1 labels with (y+1)/2)"
            )
        terms.append(_bce_term(z, t))
    return engine.sum(terms) / len(terms)


def cross_entropy(logits: Sequence[Sequence[AnyValue]], targets: Sequence[int]) -> AnyValue:
    """Multi-class cross-entropy: mean of ``logsumexp(z) - z[target]`` over samples of class logits ``z``.

    ``logsumexp`` is one native node that shifts by the sample's largest logit inside the op, so no ``exp``
    overflows however large the logits are, and a recorded ``Tape`` re-decides the shift at every replay.
    """
    samples, targs = _batch_of_rows(logits, targets)
    engine = _engine(samples[0][0], "cross_entropy")
    for i, row in enumerate(samples):
        _check_same_engine(row, type(samples[0][0]), "cross_entropy", f"sample {i}: logit")
    terms = []
    for i, (row, target) in enumerate(zip(samples, targs)):
        if isinstance(target, bool) or not isinstance(target, numbers.Integral):
            raise TypeError(
                f"cross_entropy: target {i} must be a class index (int), got {type(target).__name__}"
            )
        if not 0 <= int(target) < len(row):
            raise ValueError(
                f"cross_entropy: target {i} is {target}, outside the {len(row)} classes [0, {len(row)})"
            )
        terms.append(engine.logsumexp(row) - row[int(target)])
    return engine.sum(terms) / len(terms)


def _batch_of_rows(logits: object, targets: object) -> tuple[list[list], list]:
    rows = _as_list(logits, "logits", "cross_entropy")
    targs = _as_list(targets, "targets", "cross_entropy")
    if len(rows) != len(targs):
        raise ValueError(f"cross_entropy: got {len(rows)} samples of logits but {len(targs)} targets")
    if not rows:
        raise ValueError("cross_entropy: the batch is empty")
    samples = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, Iterable):
            raise TypeError(
                f"cross_entropy: logits must be a sequence of samples, each a sequence of class logits; "
                f"sample {i} is a {type(row).__name__}"
            )
        row = list(row)
        if not row:
            raise ValueError(f"cross_entropy: sample {i} has no logits")
        samples.append(row)
    return samples, targs


def l2_penalty(parameters: Module | Iterable[AnyValue], alpha: float) -> AnyValue:
    """``alpha * sum(p * p)`` over a module's (or an iterable's) parameters."""
    params = parameters.parameters() if isinstance(parameters, Module) else list(parameters)
    if not params:
        raise ValueError("l2_penalty: no parameters given")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"l2_penalty: alpha must be a real number, got {type(alpha).__name__}")
    engine = _engine(params[0], "l2_penalty")
    return engine.dot(params, params) * float(alpha)
