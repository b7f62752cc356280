"""Project hygiene that CI must prove: the README's commands, lint, types, versions and the sanitized core."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing, require_module, require_tool

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", text, flags=re.DOTALL)[:2]


def test_readme_opens_with_the_demo_and_the_test_command_that_ci_runs() -> None:
    demo, tests = readme_commands()
    assert demo.startswith("pip install") and "\n" not in demo
    assert tests.startswith("pip install") and "\n" not in tests
    ci_script = (ROOT / ".ci" / "run").read_text()
    last = ci_script.rstrip("\n").splitlines()[-1]
    assert last == tests, "the README's test command must be the last line of .ci/run, the command CI runs"
    assert "tests/test_project.py" in ci_script  # its comment names this test as the keeper of that promise


def test_ruff_is_clean() -> None:
    ruff = require_tool("ruff")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    """The package ships py.typed, so its annotations are a promise: mypy, configured in pyproject.toml."""
    require_module("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_stub_matches_the_native_module(tmp_path: Path) -> None:
    """mypy's stubtest compares _core.pyi with the compiled module: each name, argument and kind of member."""
    require_module("mypy.stubtest")
    allowlist = tmp_path / "stubtest-allowlist.txt"
    allowlist.write_text(
        "arenagrad._core.ArenaStats\n"  # the dict arena_stats() returns, a name for typing only
        "arenagrad._core.ParamGroup\n"  # pybind11 classes: their metaclass is pybind11's, not type
        "arenagrad._core.Tape\n"
        "arenagrad._core._CustomFunction\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "arenagrad._core", "--mypy-config-file", "pyproject.toml",
         "--allowlist", str(allowlist)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


STUB_USES = """\
from decimal import Decimal
from fractions import Fraction

import numpy as np

from arenagrad import Value

v = Value(1)
v = Value(2.5, label="x")
v = Value(np.float32(1.5))
v = Value(np.int64(3))
v = Value(Fraction(1, 2))
v = Value(True)
v.data = np.float32(0.5)
v.grad = 1
w = 2 * v + Fraction(1, 3) - np.float64(1.0)
x: float = w.data + w.grad
Value(Decimal("1.5"))  # rejected
Value("1.5")  # rejected
v.data = Decimal("1")  # rejected
v + Decimal("1")  # rejected
"""


@pytest.mark.slow
def test_the_stub_accepts_exactly_the_numbers_the_engine_takes(tmp_path: Path) -> None:
    """float() takes Decimal and str, the engine does not: the stub must say so (it said SupportsFloat)."""
    require_module("mypy")
    uses = tmp_path / "uses.py"
    uses.write_text(STUB_USES)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", str(uses)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    flagged = {int(n) for n in re.findall(r"^\S*uses\.py:(\d+): error", result.stdout, flags=re.MULTILINE)}
    lines = STUB_USES.splitlines()
    rejected = {i for i, line in enumerate(lines, start=1) if line.endswith("# rejected")}
    assert flagged == rejected, result.stdout + result.stderr
    # and the engine agrees, line by line
    namespace: dict[str, object] = {}
    exec("\n".join(line for line in lines if not line.endswith("# rejected")), namespace)
    for i in sorted(rejected):
        with pytest.raises(TypeError):
            exec(lines[i - 1], namespace)


def test_cmake_and_pyproject_give_the_same_version() -> None:
    cmakelists = (ROOT / "CMakeLists.txt").read_text()
    cmake = re.search(r"^project\(arenagrad VERSION (\S+) LANGUAGES CXX\)$", cmakelists, re.MULTILINE)
    project_table = (ROOT / "pyproject.toml").read_text().split("\n[project]\n")[1].split("\n[")[0]
    pyproject = re.search(r'^version = "([^"]+)"$', project_table, re.MULTILINE)
    assert cmake is not None and pyproject is not None
    assert cmake.group(1) == pyproject.group(1)


def test_license_is_the_mit_license_pyproject_declares() -> None:
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the arenagrad developers\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text


GUARDED_SESSION = """\
import pytest
from conftest import require_module, require_tool


def test_runs():
    pass


def test_needs_a_program_nobody_has():
    require_tool("arenagrad-no-such-program")


def test_needs_a_module_nobody_has():
    require_module("arenagrad_no_such_module")


@pytest.mark.skip(reason="a plain skip that no helper knows about")
def test_skipped_plainly():
    pass


@pytest.mark.xfail(reason="an expected failure is not a skip", strict=True)
def test_expected_to_fail():
    raise AssertionError
"""


@pytest.mark.parametrize("ci", [False, True], ids=["locally", "in-ci"])
def test_a_missing_tool_skips_locally_and_fails_in_ci(tmp_path: Path, ci: bool) -> None:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_guarded.py").write_text(GUARDED_SESSION)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )
    out = result.stdout + result.stderr
    if ci:
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, out
        assert "2 failed, 1 passed, 1 skipped, 1 xfailed" in out
        assert "1 skipped under CI, where nothing may skip: test_guarded.py::test_skipped_plainly." in out
    else:
        assert result.returncode == pytest.ExitCode.OK, out
        assert "1 passed, 3 skipped, 1 xfailed" in out
        assert "skipped in CI" not in out


def test_in_ci_a_skip_alone_fails_the_run(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text("import pytest\n\n\ndef test_skips():\n    pytest.skip('why')\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "CI": "1"}, capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "skipped under CI" in result.stdout


@pytest.mark.slow
def test_core_passes_its_unit_tests_under_address_and_ub_sanitizers(tmp_path: Path) -> None:
    cmake = require_tool("cmake")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        missing("no C++ compiler (c++ or g++) is installed")
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

    require_module("scikit_build_core")  # the test extra installs the build backend, and cmake
    if shutil.which("cmake") is None and importlib.util.find_spec("cmake") is None:
        missing("cmake is not installed")
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
