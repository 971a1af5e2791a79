"""The lab at the edges: a non-finite set-up of exact-adam, report links of odd workload names, a stale checkpoint."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from pathlib import Path

import pytest

import theorylr.lab.runner as runner
from tests.lab.conftest import TINY
from theorylr.lab import Cell, Workload, report, resolve_rule, run_cell
from theorylr.lab._files import read_json


def _scaled_data(monkeypatch: pytest.MonkeyPatch, scale: float) -> None:
    """The workload's features times ``scale``: a model whose loss (or curvature) is not finite at initialisation."""
    original = runner._load_data

    def load(workload, data_dir):  # type: ignore[no-untyped-def]
        data = original(workload, data_dir)
        return dataclasses.replace(data, x_train=data.x_train * scale, x_test=data.x_test * scale)

    monkeypatch.setattr(runner, "_load_data", load)


def _fixed_cell(spec: str, epochs: int = 2) -> Cell:
    rule = resolve_rule(spec)
    return Cell(TINY, rule, 0, float(rule.defaults["lr"]), 0, epochs)


def test_a_non_finite_initial_loss_is_a_divergence_for_exact_adam_as_for_every_other_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Features of 1e38 give a NaN training loss at w0. Every rule's epoch-0 evaluation records that as
    ``diverged`` (docs/lab.md: "a non-finite full-batch evaluation"); exact-adam measures the same L(w0) in its
    set-up and must not record it as ``failed`` (which is retried on every rerun and counted as a failure)."""
    _scaled_data(monkeypatch, 1e38)
    adam = run_cell(_fixed_cell("adam@1e-3"), tmp_path)
    assert adam.status == "diverged"
    exact = run_cell(_fixed_cell("exact-adam"), tmp_path)
    meta = read_json(Path(exact.directory) / "meta.json")
    assert exact.status == "diverged", meta.get("error")


def test_a_non_finite_k_hat_is_not_reported_as_zero_curvature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """L(w0) finite but K_hat = nan: a non-finite estimate (as LipschitzLR's non-finite L, recorded ``diverged``),
    not "every sampled Hessian was zero". (Features of 1e20 gave that nan until the eigensolvers took their norms in
    float64: the float32 norm of a 1e20-sized product overflowed. The estimate is finite there now, so the nan is
    made here.)"""
    import math

    import theorylr.optim.exact_adam as exact_adam

    real = exact_adam.smoothness

    def nan_smoothness(*args: object, **kwargs: object) -> object:
        return dataclasses.replace(real(*args, **kwargs), k_hat=math.nan)  # type: ignore[arg-type]

    monkeypatch.setattr(exact_adam, "smoothness", nan_smoothness)
    exact = run_cell(_fixed_cell("exact-adam"), tmp_path)
    meta = read_json(Path(exact.directory) / "meta.json")
    text = str(meta.get("error", "")) + str(meta.get("diverged", ""))
    assert "every sampled Hessian was zero" not in text, text
    assert exact.status == "diverged", text


@pytest.mark.parametrize("name", ["wine#2", "wine%41", "wine?v2"])
def test_report_figure_links_resolve_for_every_valid_workload_name(tmp_path: Path, name: str) -> None:
    """A workload name may hold '#', '%' or '?' (Workload accepts it); the report's links to its figures must still
    point at the files: an unescaped '#' starts a fragment, '?' a query, '%41' decodes to 'A'."""
    workload = Workload(name=name, description="wine", dataset="wine", model="linear", loss="cross_entropy", epochs=1)
    rule = resolve_rule("adam@1e-2")
    run_cell(Cell(workload, rule, 0, 1e-2, 0, 1), tmp_path)
    paths = report(tmp_path)
    sources = re.findall(r'<img src="([^"]+)"', paths.html.read_text(encoding="utf-8"))
    assert sources
    for source in sources:
        parsed = urllib.parse.urlsplit(source)
        assert not parsed.fragment and not parsed.query, source
        assert (tmp_path / urllib.parse.unquote(parsed.path)).is_file(), source


def test_a_finished_runs_leftover_checkpoint_is_removed_when_the_run_is_skipped(tmp_path: Path) -> None:
    """A run killed after its final meta.json and before the checkpoint's removal left checkpoint.pt for good
    (the docs: it exists only while the run is unfinished); the next compare, which skips the run, removes it."""
    cell = _fixed_cell("sgd@0.1")
    first = run_cell(cell, tmp_path)
    directory = Path(first.directory)
    assert first.status == "finished"
    (directory / "checkpoint.pt").write_bytes(b"stale")
    again = run_cell(cell, tmp_path)
    assert again.skipped and not (directory / "checkpoint.pt").exists()


def test_numpy_and_tensor_scalars_in_options_are_recorded_as_numbers(tmp_path: Path) -> None:
    """``config.json`` was written with ``default=list``: a NumPy scalar in an option failed the run with a raw
    ``TypeError`` ("'numpy.float32' object is not iterable"). They are numbers there now."""
    import numpy as np
    import torch

    workload = dataclasses.replace(
        TINY,
        model_options={"hidden": np.array([8])},
        rule_options={"sgd": {"momentum": np.float32(0.5), "nesterov": torch.tensor(False)}},
    )
    rule = resolve_rule("sgd@0.1")
    result = run_cell(Cell(workload, rule, 0, 0.1, 0, 1), tmp_path)
    assert result.status == "finished", result.message
    config = read_json(Path(result.directory) / "config.json")["workload"]
    assert config["model_options"] == {"hidden": [8]}
    assert config["rule_options"]["sgd"] == {"momentum": 0.5, "nesterov": False}
