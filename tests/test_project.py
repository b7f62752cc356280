"""Project hygiene that CI must prove: the README's commands, lint, and the sanitized core."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", text, flags=re.DOTALL)[:2]


def test_readme_opens_with_the_demo_and_the_test_command_that_ci_runs() -> None:
    demo, tests = readme_commands()
    assert demo.startswith("pip install") and "\n" not in demo
    assert tests.startswith("pip install") and "\n" not in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines, "the README's test command must be the command .ci/run runs"


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the test extra)")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_core_passes_its_unit_tests_under_address_and_ub_sanitizers(tmp_path: Path) -> None:
    cmake = shutil.which("cmake")
    compiler = shutil.which("c++") or shutil.which("g++")
    if cmake is None or compiler is None:
        pytest.skip("needs cmake and a C++ compiler")
    configure = [
        cmake, "-S", str(ROOT), "-B", str(tmp_path), "-DCMAKE_BUILD_TYPE=Debug",
        "-DARENAGRAD_BUILD_PYTHON=OFF", "-DARENAGRAD_BUILD_TESTS=ON", "-DARENAGRAD_SANITIZE=ON",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for command in (configure, [cmake, "--build", str(tmp_path), "--target", "test_arena"]):
        step = subprocess.run(command, capture_output=True, text=True, check=False)
        assert step.returncode == 0, step.stdout + step.stderr
    run = subprocess.run([str(tmp_path / "test_arena")], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all passed" in run.stdout


def test_package_ships_its_type_information() -> None:
    import arenagrad

    package = Path(arenagrad.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_core.pyi").exists()
    assert sys.modules["arenagrad._core"].Value is arenagrad.Value


def test_readme_python_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.+?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "Value(data=-8.0, grad=1.0) 6.0 -4.0" in out
    assert float(out.strip().splitlines()[-1]) < 0.5  # the replay example trains


@pytest.mark.slow
def test_pip_wheel_builds_a_complete_wheel(tmp_path: Path) -> None:
    import zipfile

    pytest.importorskip("scikit_build_core", reason="the test extra installs the build backend")
    if shutil.which("cmake") is None and importlib.util.find_spec("cmake") is None:
        pytest.skip("needs cmake")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), "--config-settings=build-dir=" + str(tmp_path / "build")],
        capture_output=True, text=True, check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = tmp_path.glob("arenagrad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("arenagrad/__init__.py", "arenagrad/py.typed", "arenagrad/_core.pyi", "arenagrad/nn.py"):
        assert expected in names
    assert any(n.startswith("arenagrad/_core.") and n.endswith(".so") for n in names)
