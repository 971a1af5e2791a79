"""The user docs' Python examples run as written, and the options they name exist.

README.md's usage and `suggest` blocks (one session: the second uses the first's model and data) and
docs/suggest.md's own-model block are executed in a temporary directory (they write ``suggest.png``). The GPU
compile recipe is skipped (it needs an optimizer on a CUDA device), and so are docs/lab.md's blocks (a full
comparison, and a workload registration that can run once per process).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from theorylr import cli

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / name).read_text(), flags=re.DOTALL)


def _run(code: str, namespace: dict[str, Any]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "<doc>", "exec"), namespace)


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in _python_blocks("README.md") if "mark_static_address" not in b]
    assert len(blocks) == 2
    namespace: dict[str, Any] = {}
    for block in blocks:
        _run(block, namespace)
    assert namespace["info"].alpha > 0
    assert namespace["s"].row("lipschitz-rigorous").lr is not None
    assert (tmp_path / "suggest.png").is_file()


def test_suggest_doc_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (block,) = _python_blocks("docs/suggest.md")
    namespace: dict[str, Any] = {}
    _run(block, namespace)
    assert namespace["optimizer"].param_groups[0]["lr"] == namespace["s"].row("lipschitz-rigorous").lr
    assert (tmp_path / "suggest.png").is_file()


def _help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return out.getvalue()


def test_suggest_doc_options_exist() -> None:
    text = (ROOT / "docs/suggest.md").read_text()
    options = text.split("Options:", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(--[a-z-]+)", options))
    assert {"--workload", "--total-steps", "--range-test-steps", "--examples", "--device"} <= named
    assert named <= set(re.findall(r"--[a-z-]+", _help("suggest")))
