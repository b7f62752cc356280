"""Replay and bulk-update misuse raises clear Python errors (never a silent conversion or a crash)."""

from __future__ import annotations

import numpy as np
import pytest

import arenagrad as ag


def make_tape() -> tuple[ag.Tape, ag.Value, ag.Value]:
    x, w = ag.Value(0.5), ag.Value(2.0)
    return ag.Tape((x * w).tanh(), [x]), x, w


@pytest.mark.parametrize("bad", [["1.5"], [1 + 2j], np.array([1 + 0j]), [object()], [ag.Value(1.0)]])
def test_forward_takes_real_numbers_only(bad: object) -> None:
    tape, _, _ = make_tape()
    with pytest.raises(TypeError, match="real numbers"):
        tape.forward(bad)


@pytest.mark.parametrize("bad", [[["1.5"]], np.array([[2j]]), [[None]]])
def test_forward_batch_takes_real_numbers_only(bad: object) -> None:
    tape, _, _ = make_tape()
    with pytest.raises(TypeError, match="real numbers"):
        tape.forward_batch(bad)


def test_real_inputs_of_any_real_dtype_are_accepted() -> None:
    tape, _, _ = make_tape()
    assert tape.forward([np.float32(0.5)]) == tape.forward(np.array([0.5]))
    assert tape.forward([1]) == tape.forward([True])


def test_a_batch_too_large_to_allocate_raises_memory_error() -> None:
    w = ag.Value(2.0)
    tape = ag.Tape((w * 3.0).tanh(), [])  # no inputs: the batch's array costs nothing, the rows would
    with pytest.raises(MemoryError):
        tape.forward_batch(np.zeros((2**40, 0)))
    assert tape.forward_batch(np.zeros((3, 0))).tolist() == [((w * 3.0).tanh()).data] * 3  # still usable


def test_batch_values_of_a_shared_leaf_says_it_has_no_rows() -> None:
    tape, x, w = make_tape()
    tape.forward_batch(np.array([[0.1], [0.2]]))
    with pytest.raises(ValueError, match="shared leaf"):
        tape.batch_values(w)
    assert tape.batch_values(x).tolist() == [0.1, 0.2]


def test_batch_values_before_forward_batch() -> None:
    tape, x, _ = make_tape()
    with pytest.raises(ValueError, match="forward_batch"):
        tape.batch_values(x)


def test_param_group_rejects_duplicate_parameters() -> None:
    a, b = ag.Value(1.0), ag.Value(2.0)
    with pytest.raises(ValueError, match="parameter 2 is the same Value as parameter 0"):
        ag.ParamGroup([a, b, a])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta1": 1.0}, r"betas\[0\] must lie in \[0, 1\)"),
        ({"beta2": -0.1}, r"betas\[1\] must lie in \[0, 1\)"),
        ({"beta1": float("nan")}, r"betas\[0\]"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr": -0.1}, "lr"),
    ],
)
def test_param_group_adam_validates_like_optim_adam(kwargs: dict, message: str) -> None:
    a = ag.Value(1.0)
    group = ag.ParamGroup([a])
    args = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        group.adam_step(**args)
    assert a.data == 1.0  # nothing was updated


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum": -0.5}, "momentum"),
        ({"dampening": 1.5}, "dampening"),
        ({"nesterov": True}, "Nesterov"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov"),
    ],
)
def test_param_group_sgd_validates_like_optim_sgd(kwargs: dict, message: str) -> None:
    a = ag.Value(1.0)
    a.grad = 1.0
    group = ag.ParamGroup([a])
    with pytest.raises(ValueError, match=message):
        group.sgd_step(lr=0.1, **kwargs)
    assert a.data == 1.0


def test_real_numbers_python_accepts_are_accepted_too() -> None:
    from fractions import Fraction

    tape, _, _ = make_tape()
    assert tape.forward([Fraction(1, 2)]) == tape.forward([0.5])
    assert tape.forward([2**70]) == tape.forward([float(2**70)])
