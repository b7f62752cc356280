import math

import pytest

from arenagrad.gradcheck import GradcheckError, Mismatch, gradcheck


def detached(v):
    """A constant copy of ``v``: its value, but no path back to ``v`` (the classic way to lose a gradient)."""
    return type(v)(v.data)


CORRECT = {
    "neuron": (lambda v: (v[0] * v[1] + v[2] * v[3] + v[4]).tanh(), [2.0, -3.0, 0.0, 1.0, 6.88137358701954]),
    "notebook": (lambda v: (-(v[0] ** 2).sin() + 5).exp(), [2.0]),
    "parabola": (lambda v: 3 * v[0] ** 2 - 4 * v[0] + 5, [3.0]),
    "division": (lambda v: (v[0] + 1) / (v[1] * v[1] + 2), [0.7, -1.3]),
    "power": (lambda v: v[0] ** v[1] + 2 ** v[1], [1.7, 0.4]),
    "mixed": (lambda v: v[0].sigmoid() * v[1].log() + v[2].sqrt() - abs(v[0]) * v[1].cos(), [-0.8, 2.5, 4.0]),
    "relu": (lambda v: (v[0] * v[1]).relu() + (v[1] - v[0]).relu(), [1.5, -2.0]),
    "reuse": (lambda v: v[0] * v[0] * v[0] + v[0] / v[1], [1.2, 3.0]),
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_passes_on_correct_functions(engine, name):
    f, point = CORRECT[name]
    assert gradcheck(f, [engine.Value(x) for x in point]) is True


def test_passes_through_sum_and_dot(engine):
    def f(v):
        return engine.sum([engine.dot(v[:2], v[2:]), v[0] * 3, 2.0]) ** 2

    assert gradcheck(f, [engine.Value(x) for x in (0.5, -1.0, 2.0, 0.25)])


def test_numbers_use_the_native_engine_by_default(native):
    seen = []

    def f(v):
        seen.append(type(v[0]))
        return v[0] * v[1]

    assert gradcheck(f, [2.0, 3])
    assert set(seen) == {native.Value}


@pytest.mark.parametrize("engine_arg", ["reference", "module"])
def test_numbers_on_a_chosen_engine(reference, engine_arg):
    seen = []

    def f(v):
        seen.append(type(v[0]))
        return v[0].exp()

    assert gradcheck(f, [0.3], engine=reference if engine_arg == "module" else "reference")
    assert set(seen) == {reference.Value}


def test_inputs_are_left_untouched(engine):
    a, b = engine.Value(2.0, label="a"), engine.Value(-1.0, label="b")
    a.grad = 7.0
    assert gradcheck(lambda v: v[0] * v[1], [a, b])
    assert (a.data, a.grad, b.data, b.grad) == (2.0, 7.0, -1.0, 0.0)


def test_a_lost_gradient_path_is_reported_in_a_table(engine):
    # v[2] * detached(v[2]) is c**2 but backpropagates one of its two paths only: analytic c, numeric 2c.
    inputs = [engine.Value(2.0, label="a"), engine.Value(-3.0, label="b"), engine.Value(1.5, label="c")]
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda v: v[0] * v[1] + v[2] * detached(v[2]), inputs)
    err = info.value
    assert isinstance(err, AssertionError)
    assert len(err.mismatches) == 1
    (m,) = err.mismatches
    assert (m.index, m.label) == (2, "c")
    assert m.analytic == pytest.approx(1.5) and m.numeric == pytest.approx(3.0, rel=1e-6)
    assert m.abs_err == pytest.approx(1.5, rel=1e-6)

    lines = str(err).splitlines()
    assert lines[0].startswith("gradcheck failed: 1 of 3 inputs")
    assert lines[1].split() == ["index", "label", "analytic", "numeric", "abs", "err"]
    row = lines[2].split()
    assert row[:3] == ["2", "c", "1.5"]
    assert float(row[3]) == pytest.approx(3.0, rel=1e-6)
    assert float(row[4]) == pytest.approx(1.5, rel=1e-6)
    assert len(lines) == 3


def test_every_failing_input_gets_a_row(engine):
    inputs = [engine.Value(1.0, label="x"), 2.0, engine.Value(0.5, label="z")]
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda v: v[0] * detached(v[0]) + v[1] * v[2] + detached(v[2]) * v[2], inputs, engine=None)
    assert [(m.index, m.label) for m in info.value.mismatches] == [(0, "x"), (2, "z")]
    rows = str(info.value).splitlines()[2:]
    assert [r.split()[:2] for r in rows] == [["0", "x"], ["2", "z"]]


def test_a_kink_is_reported(engine):
    # relu'(0) is 0 by convention while the central difference sees half of each side: 0.5.
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda v: v[0].relu(), [engine.Value(0.0, label="x")])
    assert info.value.mismatches == [Mismatch(0, "x", 0.0, pytest.approx(0.5))]


def test_unlabelled_inputs_show_a_dash(engine):
    with pytest.raises(GradcheckError, match=r"\n\s+0\s+-\s+"):
        gradcheck(lambda v: v[0] * detached(v[0]), [engine.Value(1.0)])


def test_tolerances_decide(engine):
    def f(v):
        return v[0] * detached(v[0])

    # At x = 1e-3 the analytic gradient is off by exactly x: within atol=2e-3, outside atol=5e-4.
    assert gradcheck(f, [engine.Value(1e-3)], atol=2e-3, rtol=0.0)
    with pytest.raises(GradcheckError):
        gradcheck(f, [engine.Value(1e-3)], atol=5e-4, rtol=0.0)
    # rtol scales with |numeric| = 2x: rtol=0.6 tolerates an error of 1.2x.
    assert gradcheck(f, [engine.Value(10.0)], atol=0.0, rtol=0.6)
    with pytest.raises(GradcheckError):
        gradcheck(f, [engine.Value(10.0)], atol=0.0, rtol=0.4)


def test_nan_gradients_never_agree(engine):
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda v: v[0] * float("nan"), [engine.Value(1.0)])
    (m,) = info.value.mismatches
    assert math.isnan(m.analytic) and math.isnan(m.numeric)


def test_f_errors_propagate(engine):
    # sqrt(0 - eps) is out of the domain: the caller must see that, not a misleading mismatch.
    with pytest.raises(ValueError):
        gradcheck(lambda v: v[0].sqrt(), [engine.Value(0.0)])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((42, [1.0]), {}, TypeError, "f must be callable"),
        ((lambda v: v[0], []), {}, ValueError, "inputs is empty"),
        ((lambda v: v[0], "ab"), {}, TypeError, "inputs must be a list or tuple"),
        ((lambda v: v[0], 3.0), {}, TypeError, "inputs must be a list or tuple"),
        ((lambda v: v[0], [1.0, None]), {}, TypeError, r"inputs\[1\] must be a real number or a Value"),
        ((lambda v: v[0], [1.0]), {"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
        ((lambda v: v[0], [1.0]), {"eps": -1e-6}, ValueError, "eps must be"),
        ((lambda v: v[0], [1.0]), {"atol": -1.0}, ValueError, "atol must be a finite number >= 0"),
        ((lambda v: v[0], [1.0]), {"rtol": float("inf")}, ValueError, "rtol must be"),
        ((lambda v: v[0], [1.0]), {"atol": "1e-5"}, TypeError, "atol must be a real number"),
        ((lambda v: v[0], [1.0]), {"engine": "gpu"}, ValueError, "engine must be 'native', 'reference'"),
        ((lambda v: v[0], [1.0]), {"engine": math}, TypeError, "engine must be"),
        ((lambda v: v[0].data, [1.0]), {"engine": "reference"}, TypeError, "must return a Value, got float"),
        ((lambda v: [v[0]], [1.0]), {"engine": "reference"}, TypeError, "f must return a Value, got list"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        gradcheck(*args, **kwargs)


def test_engines_cannot_be_mixed(native, reference):
    with pytest.raises(TypeError, match="inputs mix Values of different engines"):
        gradcheck(lambda v: v[0], [native.Value(1.0), reference.Value(1.0)])
    with pytest.raises(TypeError, match="is not the engine of the input Values"):
        gradcheck(lambda v: v[0], [native.Value(1.0)], engine="reference")
