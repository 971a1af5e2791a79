"""The lab's commands: ``theorylr list``, ``compare`` and ``report`` parse and run (through ``theorylr.cli.main``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from theorylr.cli import main
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
    assert "rule must be one of" in capsys.readouterr().out
    assert main(["compare", "--workload", "cifar10-resnet20", "--rules", "adam", "--out", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no runs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["compare"])  # --out is required
