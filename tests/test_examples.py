import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
needs_dot = pytest.mark.usefixtures("dot_program")  # Graphviz's dot (conftest.py)


def run(script, *args, env=None):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def env_without_dot(tmp_path):
    # An empty directory as the whole PATH: no `dot` to find, as on a machine without Graphviz.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return {**os.environ, "PATH": str(empty), "TMPDIR": str(tmp_path)}


def grads_table(out):
    """{name: [numbers...]} from the rows of an example's table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and all(re.fullmatch(r"[-+]?\d+\.\d+(e[-+]\d+)?", p) for p in parts[-2:]):
            rows[parts[0]] = [float(p) for p in parts[1:] if re.fullmatch(r"[-+]?\d+\.\d+(e[-+]\d+)?", p)]
    return rows


def test_the_nine_examples_are_there():
    assert SCRIPTS == [
        "01_manual_backprop.py",
        "02_neuron_by_hand.py",
        "03_tanh_from_exp.py",
        "04_train_mlp.py",
        "05_check_with_pytorch.py",
        "06_dual_numbers.py",
        "07_newton_rosenbrock.py",
        "08_hessian_of_moons_mlp.py",
        "09_scipy_optimize.py",
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_has_a_docstring_and_a_main(script):
    namespace = runpy.run_path(str(EXAMPLES / script), run_name="example")
    assert len((namespace["__doc__"] or "").strip().splitlines()) >= 3
    assert callable(namespace["main"])


@needs_dot
def test_01_manual_backprop_draws_to_the_given_file(tmp_path):
    graph = tmp_path / "L.svg"
    out = run("01_manual_backprop.py", str(graph))
    assert "L = (a*b + c) * f = -8.0000" in out
    rows = grads_table(out)
    expected = {"a": 6.0, "b": -4.0, "c": -2.0, "f": 4.0, "e": -2.0, "d": -2.0, "L": 1.0}
    for name, grad in expected.items():
        assert rows[name][1:] == [grad, grad], name
    assert "gradcheck passed" in out
    assert f"graph drawn to {graph}" in out
    svg = graph.read_text().replace("&#45;", "-")
    assert ">grad 6.0000<" in svg and ">data -8.0000<" in svg


@needs_dot
def test_01_manual_backprop_defaults_to_a_temporary_directory(tmp_path):
    out = run("01_manual_backprop.py", env={**os.environ, "TMPDIR": str(tmp_path)})
    drawn = Path(re.search(r"graph drawn to (\S+)", out).group(1))
    assert drawn.is_file() and tmp_path in drawn.parents


def test_01_manual_backprop_skips_only_the_drawing_without_dot(tmp_path):
    out = run("01_manual_backprop.py", str(tmp_path / "L.svg"), env=env_without_dot(tmp_path))
    assert "gradcheck passed" in out
    assert "skipping the drawing: Graphviz's `dot` program is not installed" in out
    assert not (tmp_path / "L.svg").exists()


def test_02_neuron_by_hand_matches_backward():
    out = run("02_neuron_by_hand.py")
    assert "o = tanh(n) = 0.7071" in out
    assert "x1*w1._backward()  ->  x1.grad = -1.5000, w1.grad = 1.0000" in out
    rows = grads_table(out)
    expected = {"x1": -1.5, "w1": 1.0, "x2": 0.5, "w2": 0.0, "b": 0.5, "n": 0.5, "o": 1.0}
    for name, grad in expected.items():
        assert rows[name] == [grad, grad], name
    assert "same gradients" in out


def test_03_tanh_from_exp_agrees_with_tanh():
    out = run("03_tanh_from_exp.py")
    values = re.findall(r"= (0\.\d{12})  \((\d+) Values\)", out)
    assert [v for v, _ in values] == ["0.707106781187", "0.707106781187"]
    assert int(values[1][1]) > int(values[0][1])
    rows = grads_table(out)
    for name, grad in {"x1": -1.5, "w1": 1.0, "x2": 0.5, "w2": 0.0, "b": 0.5}.items():
        assert rows[name] == [pytest.approx(grad, abs=1e-12)] * 2, name
    assert "same value and same gradients" in out


def test_04_train_mlp_reaches_the_target_loss():
    out = run("04_train_mlp.py")
    losses = [float(x) for x in re.findall(r"^step\s+\d+\s+loss (\S+)$", out, flags=re.MULTILINE)]
    assert len(losses) >= 2 and losses[0] > 0.1
    assert losses[-1] < 0.01 and all(loss >= 0.01 for loss in losses[:-1])
    assert re.search(r"loss under 0.01 after \d+ steps", out)
    predictions = [float(x) for x in re.search(r"predictions:(.*)", out).group(1).split()]
    assert [p > 0 for p in predictions] == [True, False, False, True]


def test_05_check_with_pytorch_agrees_to_1e_12():
    out = run("05_check_with_pytorch.py")
    assert "arenagrad and PyTorch agree to 1e-12" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:7]}
    assert set(rows) == {"o", "dx1", "dx2", "dw1", "dw2", "db"}
    for ours, theirs, difference in rows.values():
        assert abs(float(ours) - float(theirs)) <= 1e-12 and float(difference) <= 1e-12


def test_06_dual_numbers_agree_with_reverse_mode(tmp_path):
    out = run("06_dual_numbers.py", env=env_without_dot(tmp_path))
    assert "16.0 + 14.0ε" in out and "Dual(real=16.0, dual=14.0)" in out
    partials = re.findall(r"d o / d (\w+)\s+(\S+)\s+backward\(\)\s+(\S+)", out)
    rows = {name: (float(forward), float(reverse)) for name, forward, reverse in partials}
    expected = {"x1": -1.5, "x2": 0.5, "w1": 1.0, "w2": 0.0, "b": 0.5}
    assert rows == {name: (grad, grad) for name, grad in expected.items()}
    assert "dual numbers and reverse mode agree" in out


def test_07_newton_rosenbrock_converges_quadratically(tmp_path):
    out = run("07_newton_rosenbrock.py", env=env_without_dot(tmp_path))
    steps = int(re.search(r"reached \(1, 1\) to 1e-12 in (\d+) Newton steps", out).group(1))
    assert steps <= 10
    errors = [float(x) for x in re.findall(r"^\s*\d+(?:\s+\S+){4}\s+(\S+)", out, flags=re.MULTILINE)]
    assert len(errors) == steps + 1 and errors[0] == pytest.approx(2.2, abs=0.01) and errors[-1] <= 1e-12
    assert "quadratic convergence" in out


def test_08_hessian_of_moons_mlp_is_symmetric_and_matches_hvp(tmp_path):
    out = run("08_hessian_of_moons_mlp.py", env=env_without_dot(tmp_path))
    assert "accuracy 100%" in out and "backward() agrees bit for bit" in out
    assert "Hessian: 337 x 337 = 113,569 entries" in out
    assert "jvps in" in out and "the same bits" in out
    assert "from hvp_batch over the samples" in out and "ok: hvp_batch's Hessian is func.hessian's" in out
    assert out.count("\nok: ") == 5 and "FAILED" not in out


def test_09_scipy_optimize_converges_with_every_method(tmp_path):
    out = run("09_scipy_optimize.py", env=env_without_dot(tmp_path))
    rows = re.findall(r"^(BFGS|Newton-CG|trust-ncg)\s+(\S+)\s+(\d+)", out, flags=re.MULTILINE)
    assert [(method, given) for method, given, _ in rows] == [
        ("BFGS", "none"), ("Newton-CG", "none"), ("Newton-CG", "hess"), ("Newton-CG", "hessp"),
        ("trust-ncg", "hess"), ("trust-ncg", "hessp"),
    ]
    iterations = [int(n) for _, _, n in rows]
    assert max(iterations[2:]) <= iterations[0] / 2
    assert out.count("\nok: ") == 3 and "FAILED" not in out


# 06-09 draw nothing; their own tests above run them without `dot`.
@pytest.mark.parametrize("script", [s for s in SCRIPTS if "02_" <= s < "06_"])
def test_runs_without_the_dot_program(tmp_path, script):
    out = run(script, env=env_without_dot(tmp_path))
    assert out.strip()
