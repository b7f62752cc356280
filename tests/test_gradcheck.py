import math
import re
import sys

import pytest

from arenagrad.gradcheck import GradcheckError, Mismatch, gradcheck


def detached(v):
    """A constant copy of ``v``: its value, but no path back to ``v`` (the classic way to lose a gradient)."""
    return type(v)(v.data)


CORRECT = {
    "neuron": (
        lambda x1, w1, x2, w2, b: (x1 * w1 + x2 * w2 + b).tanh(),
        [2.0, -3.0, 0.0, 1.0, 6.88137358701954],
    ),
    "notebook": (lambda x: (-(x**2).sin() + 5).exp(), [2.0]),
    "parabola": (lambda x: 3 * x**2 - 4 * x + 5, [3.0]),
    "division": (lambda a, b: (a + 1) / (b * b + 2), [0.7, -1.3]),
    "power": (lambda a, b: a**b + 2**b, [1.7, 0.4]),
    "mixed": (lambda a, b, c: a.sigmoid() * b.log() + c.sqrt() - abs(a) * b.cos(), [-0.8, 2.5, 4.0]),
    "relu": (lambda a, b: (a * b).relu() + (b - a).relu(), [1.5, -2.0]),
    "reuse": (lambda a, b: a * a * a + a / b, [1.2, 3.0]),
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_passes_on_correct_functions(engine, name):
    f, point = CORRECT[name]
    assert gradcheck(f, [engine.Value(x) for x in point]) is True


@pytest.mark.parametrize(
    ("f", "point"),
    [
        (lambda x: x.tanh(), [0.3]),
        (lambda a, b: a * b + b.exp(), [2.0, -0.5]),
        (lambda a, b, c: (a * b + c).tanh() / c, [0.5, -1.5, 2.0]),
    ],
    ids=["one", "two", "three"],
)
def test_f_gets_one_value_argument_per_input(engine, f, point):
    calls = []

    def spy(*args):
        calls.append(args)
        return f(*args)

    assert gradcheck(spy, [engine.Value(x) for x in point]) is True
    # One analytic evaluation and two per input for the central differences, each with one Value per input.
    assert len(calls) == 1 + 2 * len(point)
    assert all(len(args) == len(point) and all(type(a) is engine.Value for a in args) for args in calls)
    assert [a.data for a in calls[0]] == point


def test_f_may_take_varargs_or_be_an_unbound_method(engine):
    assert gradcheck(lambda *xs: engine.sum(xs) * xs[0], [0.5, 2.0, -1.0], engine=engine)
    # A method has no readable signature on the native engine; the call itself decides.
    assert gradcheck(engine.Value.tanh, [0.3], engine=engine)


ARITY_MISMATCHES = {
    "too-many-inputs": (
        lambda a, b: a * b,
        [1.0, 2.0, 3.0],
        "f = <lambda>(a, b) cannot take 3 positional arguments: too many positional arguments",
    ),
    "too-few-inputs": (
        lambda a, b, c: a * b * c,
        [1.0, 2.0],
        "f = <lambda>(a, b, c) cannot take 2 positional arguments: missing a required argument: 'c'",
    ),
    "one-input": (
        lambda a, b: a * b,
        [1.0],
        "f = <lambda>(a, b) cannot take 1 positional argument: missing a required argument: 'b'",
    ),
    # Written for one list of Values, as gradcheck used to call f.
    "list-style-f": (
        lambda v: v[0] * v[1],
        [1.0, 2.0],
        "f = <lambda>(v) cannot take 2 positional arguments: too many positional arguments",
    ),
}


@pytest.mark.parametrize("case", list(ARITY_MISMATCHES))
def test_an_arity_mismatch_is_a_clear_type_error(engine, case):
    f, point, message = ARITY_MISMATCHES[case]
    prefix = (
        "gradcheck calls f(*inputs), one Value argument per input, as torch.autograd.gradcheck does, but "
    )
    with pytest.raises(TypeError, match="^" + re.escape(prefix + message) + "$") as info:
        gradcheck(f, point, engine=engine)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_an_arity_mismatch_is_found_before_f_runs(engine):
    calls = []

    def f(a, b):
        calls.append((a, b))
        return a * b

    with pytest.raises(TypeError, match=re.escape(".<locals>.f(a, b) cannot take 3 positional arguments")):
        gradcheck(f, [1.0, 2.0, 3.0], engine=engine)
    assert calls == []


def test_a_type_error_inside_f_propagates_with_a_note(engine):
    # A list-style f with a single input binds (one parameter, one Value) and fails inside on v[0]: that
    # TypeError is f's own and propagates unchanged, with a note saying how gradcheck called f (exception
    # notes exist from Python 3.11; before, the error propagates alone).
    with pytest.raises(TypeError, match="not subscriptable") as info:
        gradcheck(lambda v: v[0].tanh(), [engine.Value(0.3)])
    if sys.version_info < (3, 11):
        assert not hasattr(info.value, "__notes__")
        return
    assert info.value.__notes__ == [
        "gradcheck called f(*inputs): 1 Value argument, one per input, as torch.autograd.gradcheck does "
        "(not one list of Values)"
    ]
    with pytest.raises(TypeError) as info:
        gradcheck(lambda a, b: a + "b", [1.0, 2.0], engine=engine)
    assert info.value.__notes__[-1].startswith("gradcheck called f(*inputs): 2 Value arguments, one per")


def test_passes_through_sum_and_dot(engine):
    def f(*v):
        return engine.sum([engine.dot(v[:2], v[2:]), v[0] * 3, 2.0]) ** 2

    assert gradcheck(f, [engine.Value(x) for x in (0.5, -1.0, 2.0, 0.25)])


def test_numbers_use_the_native_engine_by_default(native):
    seen = []

    def f(a, b):
        seen.append(type(a))
        return a * b

    assert gradcheck(f, [2.0, 3])
    assert set(seen) == {native.Value}


@pytest.mark.parametrize("engine_arg", ["reference", "module"])
def test_numbers_on_a_chosen_engine(reference, engine_arg):
    seen = []

    def f(x):
        seen.append(type(x))
        return x.exp()

    assert gradcheck(f, [0.3], engine=reference if engine_arg == "module" else "reference")
    assert set(seen) == {reference.Value}


def test_inputs_are_left_untouched(engine):
    a, b = engine.Value(2.0, label="a"), engine.Value(-1.0, label="b")
    a.grad = 7.0
    assert gradcheck(lambda a, b: a * b, [a, b])
    assert (a.data, a.grad, b.data, b.grad) == (2.0, 7.0, -1.0, 0.0)


def test_a_lost_gradient_path_is_reported_in_a_table(engine):
    # c * detached(c) is c**2 but backpropagates one of its two paths only: analytic c, numeric 2c.
    inputs = [engine.Value(2.0, label="a"), engine.Value(-3.0, label="b"), engine.Value(1.5, label="c")]
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda a, b, c: a * b + c * detached(c), inputs)
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
        gradcheck(lambda x, y, z: x * detached(x) + y * z + detached(z) * z, inputs, engine=None)
    assert [(m.index, m.label) for m in info.value.mismatches] == [(0, "x"), (2, "z")]
    rows = str(info.value).splitlines()[2:]
    assert [r.split()[:2] for r in rows] == [["0", "x"], ["2", "z"]]


def test_a_kink_is_reported(engine):
    # relu'(0) is 0 by convention while the central difference sees half of each side: 0.5.
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: x.relu(), [engine.Value(0.0, label="x")])
    assert info.value.mismatches == [Mismatch(0, "x", 0.0, pytest.approx(0.5))]


def test_unlabelled_inputs_show_a_dash(engine):
    with pytest.raises(GradcheckError, match=r"\n\s+0\s+-\s+"):
        gradcheck(lambda x: x * detached(x), [engine.Value(1.0)])


def test_tolerances_decide(engine):
    def f(x):
        return x * detached(x)

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
        gradcheck(lambda x: x * float("nan"), [engine.Value(1.0)])
    (m,) = info.value.mismatches
    assert math.isnan(m.analytic) and math.isnan(m.numeric)


def test_f_errors_propagate(engine):
    # sqrt(0 - eps) is out of the domain: the caller must see that, not a misleading mismatch.
    with pytest.raises(ValueError):
        gradcheck(lambda x: x.sqrt(), [engine.Value(0.0)])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((42, [1.0]), {}, TypeError, "f must be callable"),
        ((lambda x: x, []), {}, ValueError, "inputs is empty"),
        ((lambda x: x, "ab"), {}, TypeError, "inputs must be a list or tuple"),
        ((lambda x: x, 3.0), {}, TypeError, "inputs must be a list or tuple"),
        ((lambda x: x, [1.0, None]), {}, TypeError, r"inputs\[1\] must be a real number or a Value"),
        ((lambda x: x, [1.0]), {"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
        ((lambda x: x, [1.0]), {"eps": -1e-6}, ValueError, "eps must be"),
        ((lambda x: x, [1.0]), {"atol": -1.0}, ValueError, "atol must be a finite number >= 0"),
        ((lambda x: x, [1.0]), {"rtol": float("inf")}, ValueError, "rtol must be"),
        ((lambda x: x, [1.0]), {"atol": "1e-5"}, TypeError, "atol must be a real number"),
        ((lambda x: x, [1.0]), {"engine": "gpu"}, ValueError, "engine must be 'native', 'reference'"),
        ((lambda x: x, [1.0]), {"engine": math}, TypeError, "engine must be"),
        ((lambda x: x.data, [1.0]), {"engine": "reference"}, TypeError, "must return a Value, got float"),
        ((lambda x: [x], [1.0]), {"engine": "reference"}, TypeError, "f must return a Value, got list"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        gradcheck(*args, **kwargs)


def test_engines_cannot_be_mixed(native, reference):
    with pytest.raises(TypeError, match="inputs mix Values of different engines"):
        gradcheck(lambda a, b: a, [native.Value(1.0), reference.Value(1.0)])
    with pytest.raises(TypeError, match="is not the engine of the input Values"):
        gradcheck(lambda x: x, [native.Value(1.0)], engine="reference")
