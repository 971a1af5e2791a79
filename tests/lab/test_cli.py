"""The lab's commands: ``theorylr list``, ``compare`` and ``report`` parse and run (through ``theorylr.cli.main``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from theorylr.cli import main
from theorylr.commands.suggest import build_inputs
from theorylr.lab import RULES, WORKLOADS
from theorylr.lab._files import read_csv, read_json


def _entries(text: str) -> dict[str, str]:
    """``{name: rest of the line}`` for the listing's entry lines (they start with 3 spaces or ' * ')."""
    out = {}
    for line in text.splitlines():
        if line.startswith(("   ", " * ")):
            name, rest = line[3:].split(maxsplit=1)
            out[name] = rest
    return out


def test_list_prints_every_workload_and_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    entries = _entries(capsys.readouterr().out)
    for name, workload in WORKLOADS.items():
        assert entries[name].startswith(workload.description)
    for name, rule in RULES.items():
        kind, description = entries[name].split(maxsplit=1)
        assert kind == rule.kind and description.startswith(rule.description)
    assert main(["list", "rules", "--kind", "lr-free"]) == 0
    entries = _entries(capsys.readouterr().out)
    assert set(entries) == {name for name, rule in RULES.items() if rule.kind == "lr-free"}
    # a kind is a rule's: asked of the workloads it is refused, not ignored
    assert main(["list", "workloads", "--kind", "theory"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--kind theory filters rules and workloads have no kind" in captured.err


def test_compare_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    argv = ["compare", "--workload", "iris-softmax", "--rules", "adam,sgd@0.5,lipschitz-sgd"]
    argv += ["--seeds", "2", "--epochs", "2", "--trials", "2", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "iris-softmax: 8 runs (8 finished)" in text
    assert len(read_csv(out / "iris-softmax" / "adam" / "trial-01" / "seed-1" / "metrics.csv")) == 3
    assert read_json(out / "iris-softmax" / "sgd@0.5" / "trial-00" / "seed-0" / "config.json")["lr"] == 0.5
    assert main([*argv, "--quiet"]) == 0  # everything done: skipped
    assert "(already done" not in capsys.readouterr().out
    assert main(["report", str(out), "--title", "CLI test", "--no-figures"]) == 0
    text = capsys.readouterr().out
    assert "report.md" in text and (out / "report.html").exists()
    assert (out / "report.md").read_text().startswith("# CLI test")


def test_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--rules", "warp-drive", "--out", str(tmp_path)]) == 2
    assert "rule must be one of" in capsys.readouterr().err
    assert main(["compare", "--workload", "cifar10-resnet20", "--rules", "adam", "--out", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare"])  # --out is required


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The command printed exactly one line, ``theorylr COMMAND: error: ...``, on stderr; returns it."""
    captured = capsys.readouterr()
    assert "error:" not in captured.out  # a redirected stdout (suggest --json > file) gets no error text
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"theorylr {command}: error: "), lines
    return lines[0]


def test_device_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "runs")
    for command, argv in (
        ("suggest", ["suggest", "--workload", "iris-softmax", "--num-samples", "2"]),
        ("compare", ["compare", "--workload", "iris-softmax", "--rules", "sgd@0.1", "--epochs", "1", "--out", out]),
        ("reproduce", ["reproduce", "lars", "--quick", "--out", out]),
    ):
        assert main([*argv, "--device", "tpu"]) == 2
        line = _one_error_line(capsys, command)
        assert "--device: device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto' (got 'tpu')" in line
        if not torch.cuda.is_available():
            assert main([*argv, "--device", "cuda"]) == 2
            assert "--device: device 'cuda' is not available" in _one_error_line(capsys, command)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="device must be"):
        build_inputs("iris-softmax", device="tpu")


def test_output_paths_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    for command, argv in (
        ("compare", ["compare", "--workload", "iris-softmax", "--rules", "sgd@0.1", "--epochs", "1"]),
        ("demo", ["demo", "--epochs", "1"]),
        ("reproduce", ["reproduce", "lars", "--quick"]),
    ):
        assert main([*argv, "--out", str(afile)]) == 2
        assert f"--out {afile}: exists and is not a directory" in _one_error_line(capsys, command)
        assert main([*argv, "--out", str(afile / "below")]) == 2
        assert f"--out {afile / 'below'}: {afile} is not a directory" in _one_error_line(capsys, command)
    assert main(["reproduce", "lars", "--quick", "--out", str(tmp_path / "r"), "--page-out", str(afile)]) == 2
    assert f"--page-out {afile}: exists" in _one_error_line(capsys, "reproduce")
    assert main(["suggest", "--workload", "iris-softmax", "--num-samples", "2", "--plot", str(afile / "x.png")]) == 2
    assert f"--plot {afile / 'x.png'}: {afile} is not a directory" in _one_error_line(capsys, "suggest")
    assert main(["suggest", "--workload", "iris-softmax", "--num-samples", "2", "--plot", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys, "suggest")
    runs = tmp_path / "runs"
    argv = ["compare", "--workload", "iris-softmax", "--rules", "sgd@0.1", "--epochs", "1", "--out", str(runs)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["report", str(runs), "--no-figures", "--out", str(afile)]) == 2
    assert f"--out {afile}: exists and is not a directory" in _one_error_line(capsys, "report")
    assert afile.read_text() == "not a directory"


def test_os_errors_during_the_work_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What only the operating system can refuse (e.g. mkdir under /sys as root) is one line naming the path."""
    import theorylr.lab

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted", "/sys/ua")

    monkeypatch.setattr(theorylr.lab, "compare", refuse)
    monkeypatch.setattr(theorylr.lab, "report", refuse)
    for command, argv in (
        ("compare", ["compare", "--rules", "sgd@0.1", "--out", str(tmp_path)]),
        ("demo", ["demo", "--out", str(tmp_path)]),
        ("report", ["report", str(tmp_path)]),
    ):
        assert main(argv) == 2
        assert _one_error_line(capsys, command).endswith("error: /sys/ua: Operation not permitted")


def test_demo_argument_errors_and_interrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path / "demo")
    for flag, value, message in (
        ("--seeds", "abc", "seeds must be a count or a comma-separated list"),
        ("--jobs", "0", "jobs must be an integer >= 1"),
        ("--epochs", "-1", "epochs must be an integer >= 1"),
        ("--trials", "0", "trials must be an integer >= 1"),
    ):
        assert main(["demo", "--out", out, flag, value]) == 2
        assert message in _one_error_line(capsys, "demo")
    import theorylr.lab

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(theorylr.lab, "compare", interrupt)
    assert main(["demo", "--out", out]) == 130
    assert f"interrupted: run the same command again to resume (results in {out})" in capsys.readouterr().err


def test_suggest_missing_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = tmp_path / "absent"
    assert main(["suggest", "--workload", "mnist-logreg", "--data-dir", str(absent)]) == 2
    assert f"{absent}: not a directory" in _one_error_line(capsys, "suggest")
    absent.mkdir()
    assert main(["suggest", "--workload", "mnist-logreg", "--data-dir", str(absent)]) == 2
    assert "no train images file found" in _one_error_line(capsys, "suggest")


def test_a_closed_stdout_stops_compare_quietly_and_the_runs_resume(tmp_path: Path) -> None:
    """``theorylr compare ... | head -1``: the reader closes the pipe; the command stops as on SIGPIPE (141), with
    no traceback, and the same command resumes."""
    import subprocess
    import sys

    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "theorylr.cli", "compare", "--workload", "iris-softmax", "--rules", "sgd"]
    argv += ["--trials", "6", "--seeds", "3", "--epochs", "3", "--threads", "1", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does once it has its line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert "[ 1/18]" in first and "Traceback" not in err
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "18 runs (18 finished)" in done.stdout


def test_errors_name_the_flag_or_spec_the_user_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["suggest", "--workload", "iris-softmax", "--num-samples", "1"]
    assert main([*base, "--range-test", "--range-test-steps", "1"]) == 2
    assert "--range-test-steps must be an integer >= 2 (got 1)" in _one_error_line(capsys, "suggest")
    assert main([*base, "--target-accuracy", "0"]) == 2
    assert "--target-accuracy must be a finite number > 0.0" in _one_error_line(capsys, "suggest")
    assert main(["compare", "--workload", "iris-softmax", "--rules", "adam@0", "--out", str(tmp_path)]) == 2
    assert "rule spec 'adam@0': lr must be" in _one_error_line(capsys, "compare")


def test_a_data_dir_on_built_in_data_gets_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "--workload", "iris-softmax", "--rules", "sgd@0.1", "--epochs", "1", "--quiet"]
    assert main([*argv, "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert "note: --data-dir is not used: workload 'iris-softmax' has built-in data (iris)" in err


def test_reproduce_refuses_a_data_dir_that_is_no_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The MNIST/CIFAR-10 claims of the page silently vanished (exit 0) with a mistyped --data-dir."""
    absent = tmp_path / "absent"
    assert main(["reproduce", "lars", "--quick", "--out", str(tmp_path / "r"), "--data-dir", str(absent)]) == 2
    assert f"--data-dir {absent}: not a directory" in _one_error_line(capsys, "reproduce")


def test_python_dash_m_theorylr_runs_the_command_line() -> None:
    import subprocess
    import sys

    import theorylr

    done = subprocess.run(
        [sys.executable, "-m", "theorylr", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"theorylr {theorylr.__version__}"
    done = subprocess.run(
        [sys.executable, "-m", "theorylr", "no-such-command"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_ctrl_c_while_the_command_loads_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C in the first second (torch importing) printed a 30-40 line traceback and died of the signal."""
    import importlib

    from theorylr import cli

    def interrupted(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["compare", "--workload", "iris-softmax"]) == 130
    assert capsys.readouterr().err.strip() == "theorylr compare: interrupted"


def test_ctrl_c_inside_a_command_still_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the loading of a command is caught: a command's own Ctrl-C handling (or its absence) is unchanged."""
    from theorylr import cli
    from theorylr.commands import report

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["report", "somewhere"])


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_warnings_are_one_line_naming_the_program(tmp_path: Path, jobs: str) -> None:
    """A warning showed a file and line of the library (``runner.py:526`` and its source line) to a command-line
    user; in worker processes too (``--jobs 2``), which do not inherit the parent's ``warnings.formatwarning``."""
    import subprocess
    import sys
    import warnings

    out = tmp_path / "runs"
    argv = ["compare", "--workload", "iris-softmax", "--rules", "adam@0.01", "--seeds", "2", "--epochs", "1"]
    argv += ["--threads", "1", "--out", str(out), "--quiet"]
    before = warnings.formatwarning
    assert main(argv) == 0
    assert warnings.formatwarning is before  # restored after an in-process call
    for meta in out.glob("iris-softmax/*/*/seed-*/meta.json"):
        meta.write_text("[]")
    done = subprocess.run(
        [sys.executable, "-m", "theorylr", *argv, "--jobs", jobs], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "the run is redone" in line]
    assert len(lines) == 2, done.stderr
    assert all(line.startswith("theorylr: RuntimeWarning: ") and "meta.json cannot be read" in line for line in lines)
    assert "runner.py" not in done.stderr
