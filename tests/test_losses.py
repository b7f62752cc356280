"""arenagrad.losses on both engines: values, gradients, stability at extreme logits, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import require_module

from arenagrad.losses import bce_with_logits, cross_entropy, hinge_loss, l2_penalty, mse_loss
from arenagrad.nn import MLP


def _values(engine, xs):
    return [engine.Value(x) for x in xs]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def test_mse(engine):
    preds = _values(engine, [0.5, -1.0, 2.0])
    targets = [1.0, -1.0, 0.0]
    loss = mse_loss(preds, np.array(targets))
    assert loss.data == pytest.approx((0.25 + 0.0 + 4.0) / 3, rel=1e-15)
    loss.backward()
    assert [p.grad for p in preds] == pytest.approx(
        [2 * (p - t) / 3 for p, t in zip([0.5, -1.0, 2.0], targets)]
    )


def test_mse_accepts_value_targets(engine):
    pred, target = engine.Value(3.0), engine.Value(1.0)
    loss = mse_loss([pred], [target])
    loss.backward()
    assert (loss.data, pred.grad, target.grad) == (4.0, 4.0, -4.0)


def test_hinge_matches_micrograds_formula(engine):
    scores = [0.3, -2.0, 1.5, -0.2]
    labels = [1, -1, -1, 1]
    preds = _values(engine, scores)
    loss = hinge_loss(preds, np.array(labels))
    terms = [max(0.0, 1.0 - y * s) for s, y in zip(scores, labels)]
    assert loss.data == pytest.approx(sum(terms) / 4, rel=1e-15)
    loss.backward()
    expected = [(-y / 4 if 1.0 - y * s > 0 else 0.0) for s, y in zip(scores, labels)]
    assert [p.grad for p in preds] == expected


def test_hinge_rejects_zero_one_labels(engine):
    with pytest.raises(
        ValueError, match=r"labels must be -1 or \+1, label 1 is 0.0 \(map 0/1 labels with 2\*y-1\)"
    ):
        hinge_loss(_values(engine, [0.1, 0.2]), [1, 0])


def test_bce_with_logits_value_and_gradient(engine):
    logits = [0.3, -2.0, 4.0, -0.5, 0.0]
    targets = [1.0, 0.0, 0.0, 1.0, 0.25]
    preds = _values(engine, logits)
    loss = bce_with_logits(preds, targets)
    expected = [
        -(t * math.log(_sigmoid(z)) + (1 - t) * math.log(1 - _sigmoid(z))) for z, t in zip(logits, targets)
    ]
    assert loss.data == pytest.approx(sum(expected) / 5, rel=1e-14)
    loss.backward()
    assert [p.grad for p in preds] == pytest.approx(
        [(_sigmoid(z) - t) / 5 for z, t in zip(logits, targets)], rel=1e-14
    )


@pytest.mark.parametrize(
    ("logit", "target", "loss", "grad"),
    [
        (1000.0, 1.0, 0.0, 0.0),
        (1000.0, 0.0, 1000.0, 1.0),
        (-1000.0, 0.0, 0.0, 0.0),
        (-1000.0, 1.0, 1000.0, -1.0),
        (1000.0, 0.5, 500.0, 0.5),
    ],
)
def test_bce_with_logits_is_stable_at_extreme_logits(engine, logit, target, loss, grad):
    z = engine.Value(logit)
    out = bce_with_logits([z], [target])
    out.backward()
    assert math.isfinite(out.data) and math.isfinite(z.grad)
    assert out.data == pytest.approx(loss, abs=1e-12)
    assert z.grad == pytest.approx(grad, abs=1e-12)


def test_bce_rejects_targets_outside_zero_one(engine):
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\], target 0 is -1.0"):
        bce_with_logits(_values(engine, [0.1]), [-1])


def _softmax(row):
    m = max(row)
    e = [math.exp(z - m) for z in row]
    return [v / sum(e) for v in e]


def test_cross_entropy_value_and_gradient(engine):
    rows = [[0.5, -1.0, 2.0], [3.0, 0.0, -3.0]]
    targets = [1, 0]
    logits = [_values(engine, row) for row in rows]
    loss = cross_entropy(logits, targets)
    expected = [-math.log(_softmax(row)[t]) for row, t in zip(rows, targets)]
    assert loss.data == pytest.approx(sum(expected) / 2, rel=1e-14)
    loss.backward()
    for row, values, t in zip(rows, logits, targets):
        probs = _softmax(row)
        assert [v.grad for v in values] == pytest.approx(
            [(p - (j == t)) / 2 for j, p in enumerate(probs)], rel=1e-13
        )


def test_cross_entropy_is_stable_at_extreme_logits(engine):
    logits = [_values(engine, [1000.0, -1000.0, 0.0]), _values(engine, [-1000.0, 1000.0, -1000.0])]
    loss = cross_entropy(logits, [2, 1])
    loss.backward()
    # Sample 0: logsumexp = 1000 exactly in floats, minus z[2] = 0; sample 1: its target is the largest logit.
    assert loss.data == pytest.approx((1000.0 + 0.0) / 2, rel=1e-15)
    assert [v.grad for v in logits[0]] == pytest.approx([0.5, 0.0, -0.5], abs=1e-15)
    assert [v.grad for v in logits[1]] == pytest.approx([0.0, 0.0, 0.0], abs=1e-15)
    assert all(math.isfinite(v.grad) for row in logits for v in row)


def test_losses_match_torch(engine):
    torch = require_module("torch")
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=6)
    z[:2] = [1000.0, -1000.0]
    t = rng.uniform(size=6)
    preds = _values(engine, z.tolist())
    ours = bce_with_logits(preds, t)
    ours.backward()
    zt = torch.tensor(z, requires_grad=True)
    theirs = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(t))
    theirs.backward()
    assert ours.data == pytest.approx(theirs.item(), rel=1e-12)
    assert [p.grad for p in preds] == pytest.approx(zt.grad.tolist(), rel=1e-12, abs=1e-15)

    rows = rng.normal(scale=5.0, size=(4, 3))
    rows[0] = [1000.0, -1000.0, 999.0]
    labels = [0, 2, 1, 2]
    logits = [_values(engine, row) for row in rows.tolist()]
    ours = cross_entropy(logits, np.array(labels))
    ours.backward()
    rt = torch.tensor(rows, requires_grad=True)
    theirs = torch.nn.functional.cross_entropy(rt, torch.tensor(labels))
    theirs.backward()
    assert ours.data == pytest.approx(theirs.item(), rel=1e-12)
    grads = [v.grad for row in logits for v in row]
    assert grads == pytest.approx(rt.grad.flatten().tolist(), rel=1e-12, abs=1e-15)


def test_l2_penalty(engine):
    model = MLP(2, [3, 1], seed=4, engine=engine)
    params = model.parameters()
    penalty = l2_penalty(model, 1e-2)
    assert penalty.data == pytest.approx(1e-2 * math.fsum(p.data**2 for p in params), rel=1e-14)
    penalty.backward()
    assert [p.grad for p in params] == pytest.approx([2e-2 * p.data for p in params], rel=1e-14)
    assert l2_penalty(params, 0.5).data == pytest.approx(50 * penalty.data, rel=1e-14)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda v: mse_loss(v, [1.0]), ValueError, "mse_loss: got 2 predictions but 1 targets"),
        (lambda v: mse_loss([], []), ValueError, "mse_loss: the batch is empty"),
        (lambda v: mse_loss([1.0, 2.0], [1.0, 2.0]), TypeError, "predictions must be arenagrad Values"),
        (lambda v: mse_loss(v[0], [1.0]), TypeError, "mse_loss: predictions must be a sequence, got Value"),
        (lambda v: hinge_loss(v, ["1", "-1"]), TypeError, "target 0 must be a real number, got str"),
        (lambda v: bce_with_logits(v, [1, 2]), ValueError, "target 1 is 2.0"),
        (lambda v: cross_entropy([v], [2]), ValueError, r"target 0 is 2, outside the 2 classes \[0, 2\)"),
        (
            lambda v: cross_entropy([v], [0.0]),
            TypeError,
            r"target 0 must be a class index \(int\), got float",
        ),
        (lambda v: cross_entropy(v, [0, 1]), TypeError, "sample 0 is a Value"),
        (lambda v: cross_entropy([[]], [0]), ValueError, "sample 0 has no logits"),
        (lambda v: l2_penalty([], 1.0), ValueError, "no parameters"),
        (lambda v: l2_penalty(v, "1e-4"), TypeError, "alpha must be a real number, got str"),
    ],
)
def test_bad_inputs(engine, call, error, message):
    with pytest.raises(error, match=message):
        call(_values(engine, [0.5, -0.5]))


@pytest.mark.parametrize(
    ("loss", "args", "message"),
    [
        ("hinge_loss", lambda V: ([V(0.3), 0.5], [1, 1]), "prediction 1 is of type float"),
        ("bce_with_logits", lambda V: ([V(0.3), 0.5], [1, 0]), "prediction 1 is of type float"),
        ("mse_loss", lambda V: ([V(0.3), 0.5], [1, 0]), "prediction 1 is of type float"),
        ("cross_entropy", lambda V: ([[V(1.0), 2.0]], [0]), "sample 0: logit 1 is of type float"),
    ],
)
def test_a_non_value_prediction_is_named_by_its_index(loss, args, message) -> None:  # type: ignore[no-untyped-def]
    import arenagrad
    from arenagrad import losses

    with pytest.raises(TypeError, match=message):
        getattr(losses, loss)(*args(arenagrad.Value))
