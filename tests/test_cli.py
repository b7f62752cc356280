import errno
import os
import re
import subprocess
import sys

import pytest

import arenagrad
from arenagrad.__main__ import build_parser, main

needs_dot = pytest.mark.usefixtures("dot_program")  # Graphviz's dot (conftest.py)

NEURON_GRADS = {"x1": -1.5, "w1": 1.0, "x2": 0.5, "w2": 0.0, "b": 0.5, "n": 0.5, "o": 1.0}


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"arenagrad {arenagrad.__version__}"


def test_python_dash_m_runs_the_same_main():
    result = subprocess.run(
        [sys.executable, "-m", "arenagrad", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"arenagrad {arenagrad.__version__}"


def test_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "draw", "neuron"):
        assert command in out


@pytest.mark.parametrize("engine", [[], ["--engine", "native"], ["--engine", "reference"]])
def test_neuron_prints_forward_and_every_grad(capsys, engine):
    assert main(["neuron", *engine]) == 0
    out = capsys.readouterr().out
    assert "o = tanh(n) = 0.7071" in out
    rows = dict(
        (m.group(1), (float(m.group(2)), float(m.group(3))))
        for m in re.finditer(r"^\s+(\S+)\s+(-?\d+\.\d{4})\s+(-?\d+\.\d{4})$", out, flags=re.MULTILINE)
    )
    for name, grad in NEURON_GRADS.items():
        assert rows[name][1] == pytest.approx(grad, abs=1e-4), name
    assert rows["o"][0] == pytest.approx(0.7071, abs=1e-4)
    assert rows["x1"][0] == 2.0 and rows["w1"][0] == -3.0


@needs_dot
@pytest.mark.parametrize("engine", ["native", "reference"])
def test_draw_writes_an_svg_of_the_neuron(tmp_path, capsys, engine):
    output = tmp_path / "x.svg"
    assert main(["draw", "--output", str(output), "--engine", engine]) == 0
    svg = output.read_text().replace("&#45;", "-")
    assert "<svg" in svg
    for text in (">x1<", ">tanh<", ">data 0.7071<", ">grad -1.5000<", ">grad 1.0000<"):
        assert text in svg
    assert str(output) in capsys.readouterr().out


@needs_dot
@pytest.mark.parametrize(("name", "magic"), [("graph.png", b"\x89PNG"), ("graph.PDF", b"%PDF")])
def test_draw_takes_the_format_from_the_extension(tmp_path, name, magic):
    output = tmp_path / name
    assert main(["draw", "-o", str(output), "--example", "expression", "--rankdir", "TB"]) == 0
    assert output.read_bytes().startswith(magic)


def test_draw_rejects_unknown_extensions(tmp_path, capsys):
    assert main(["draw", "--output", str(tmp_path / "graph.jpg")]) == 2
    assert "must end in .svg, .png, .pdf" in capsys.readouterr().err
    assert not (tmp_path / "graph.jpg").exists()


def test_draw_without_the_dot_program_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["draw", "--output", str(tmp_path / "x.svg")]) == 1
    err = capsys.readouterr().err
    assert "`dot` program was not found" in err and "or write the DOT source with -o FILE.dot" in err
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize(
    ("name", "example", "label"), [("n.dot", "neuron", "x1"), ("L.GV", "expression", "L")]
)
def test_draw_writes_dot_source_without_the_dot_program(tmp_path, capsys, monkeypatch, name, example, label):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `dot` to be found
    output = tmp_path / name
    assert main(["draw", "-o", str(output), "--example", example]) == 0
    source = output.read_text()
    assert source.startswith("digraph {") and "rankdir=LR" in source
    assert f'label="{{ {label} | data ' in source
    assert f"to {output}" in capsys.readouterr().out


@needs_dot
def test_draw_into_a_missing_directory_fails_cleanly(tmp_path, capsys):
    assert main(["draw", "--output", str(tmp_path / "nowhere" / "x.svg")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_draw_requires_an_output(capsys):
    assert main(["draw"]) == 2
    assert "--output" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys):
    assert main(["neuron", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


# The pure-Python engine is slow: a smaller data set keeps its run short.
@pytest.mark.parametrize(
    "extra", [[], ["--engine", "reference", "--samples", "20"]], ids=["native", "reference"]
)
def test_train_runs_a_few_steps(capsys, extra):
    assert main(["train", "--steps", "5", *extra]) == 0
    out = capsys.readouterr().out
    assert "steps: 5" in out and "final loss" in out
    assert ("reference engine" if extra else "native engine") in out


def test_no_subcommand_runs_train_with_its_defaults(capsys, monkeypatch):
    import arenagrad.train

    seen = {}

    def fake_run(args):
        seen.update(vars(args))
        return 0

    monkeypatch.setattr(arenagrad.train, "run", fake_run)
    assert main([]) == 0
    assert seen["subcommand"] == "train"
    assert seen == vars(build_parser().parse_args(["train"]))


def test_a_broken_train_module_leaves_the_rest_usable(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "arenagrad.train", None)
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["train", "--steps", "5"]) == 1
    assert "the train command could not be loaded" in capsys.readouterr().err
    assert main(["neuron"]) == 0


def test_options_without_a_subcommand_go_to_train(capsys) -> None:  # type: ignore[no-untyped-def]
    from arenagrad.__main__ import main

    assert main(["--steps", "2", "--samples", "20"]) == 0
    assert "steps: 2" in capsys.readouterr().out


def test_a_bad_plot_name_fails_before_training(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from arenagrad.__main__ import main

    assert main(["train", "--plot", str(tmp_path / "boundary.txt")]) == 1
    captured = capsys.readouterr()
    assert "must end in one of .png" in captured.err
    assert "final loss" not in captured.out


def _run_into_a_closed_pipe(argv: list[str], cwd: str, unbuffered: bool) -> subprocess.CompletedProcess[str]:
    """Run ``python -m arenagrad argv`` with stdout a pipe whose reader has already gone.

    That is what `| head -1` does to every write after its first line. Closing the read end before the child
    starts, rather than after reading a line, makes the failure certain: it does not depend on whether the
    child wrote everything before the reader left. Both buffering modes matter: unbuffered, the first print
    fails; buffered (Python's default for pipes), only the flush at exit does.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        return subprocess.run(
            [sys.executable, "-m", "arenagrad", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_closed_pipe_ends_neuron_quietly(tmp_path, unbuffered):
    result = _run_into_a_closed_pipe(["neuron"], str(tmp_path), unbuffered)
    assert result.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert result.returncode == 141  # 128 + SIGPIPE, as a shell reports `yes | head -1`'s yes


def test_a_closed_pipe_ends_train_quietly_after_saving(tmp_path):
    # Unbuffered, the summary's first print is what fails; the model must be saved by then all the same.
    argv = ["train", "--samples", "20", "--hidden", "4", "--steps", "2", "--save", "m.json"]
    result = _run_into_a_closed_pipe(argv, str(tmp_path), unbuffered=True)
    assert result.stderr == ""
    assert result.returncode == 141
    assert (tmp_path / "m.json").stat().st_size > 0


def test_reading_one_line_then_closing_the_pipe_is_quiet(tmp_path):
    # The literal `arenagrad neuron | head -1`. Whether the child still has lines to write when the reader
    # leaves is a race, so either status is fine here; the tests above make the failure certain.
    with subprocess.Popen(
        [sys.executable, "-m", "arenagrad", "neuron"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline().startswith("tanh neuron")
        child.stdout.close()
        stderr = child.stderr.read()
        assert child.wait(timeout=60) in (0, 141)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def _fake_dot(directory, script: str) -> None:
    """A `dot` program on PATH, alone there, that runs ``script`` (sh)."""
    directory.mkdir()
    dot = directory / "dot"
    dot.write_text(f"#!/bin/sh\n{script}\n")
    dot.chmod(0o755)


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs /bin/sh for the fake dot")
def test_draw_reports_a_failing_dot_program_without_a_traceback(tmp_path, capsys, monkeypatch):
    _fake_dot(tmp_path / "bin", 'echo "Error: dot: out of coffee" >&2\nexit 3')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    output = tmp_path / "x.svg"
    output.write_text("the old drawing")
    assert main(["draw", "-o", str(output)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "arenagrad: error: Graphviz's `dot` failed to render svg (exit status 3): Error: dot: out of coffee\n"
    )
    assert output.read_text() == "the old drawing"


def test_a_failed_draw_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    output = tmp_path / "n.dot"
    output.write_text("the old drawing")

    def replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["draw", "-o", str(output)]) == 1
    assert f"cannot write {str(output)!r}: {os.strerror(errno.ENOSPC)}" in capsys.readouterr().err
    assert output.read_text() == "the old drawing"
    assert os.listdir(tmp_path) == ["n.dot"]  # no temporary file left behind


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX resource limits")
def test_a_draw_over_the_file_size_limit_keeps_the_old_file(tmp_path):
    # A real failed write (EFBIG, as a full disk would fail it), in a child so the limit binds it alone.
    # Python ignores SIGXFSZ, so the write fails instead of killing the process.
    output = tmp_path / "n.dot"
    output.write_text("the old drawing")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from arenagrad.__main__ import main\n"
        f"sys.exit(main(['draw', '-o', {str(output)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"arenagrad: error: cannot write {str(output)!r}: {os.strerror(errno.EFBIG)}\n"
    assert output.read_text() == "the old drawing"
    assert os.listdir(tmp_path) == ["n.dot"]
