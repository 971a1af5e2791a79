"""The single-process example scripts run end to end (two epochs each) and print a finite final summary."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["lars_layerwise", "exact_step_adam", "lipschitz_lr"])
def test_example_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    _load(name).main(["--epochs", "2", "--seed", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2
    final = lines[-1]
    match = re.search(r"train loss (\S+), test accuracy (\S+)$", final)
    assert final.startswith("final: ") and match, final
    loss, accuracy = (float(v) for v in match.groups())
    assert math.isfinite(loss) and 0.0 <= accuracy <= 1.0
