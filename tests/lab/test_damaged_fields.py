"""Hand-damaged fields of the lab's files: the report and a resume go on, naming the file, instead of crashing
(a review found ``wall_time=[1]`` in meta.json, ``epochs='ten'`` in config.json and malformed compare.json entries
each stopped the whole report with a traceback), and a results path that is not valid UTF-8 still gets its report."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import TINY
from theorylr.lab import compare, report
from theorylr.lab._files import read_json, write_json

WORKLOAD = dataclasses.replace(TINY, epochs=2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    compare(WORKLOAD, "adam,sgd", out=out, seeds=1, trials=1, verbose=False)
    return out


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "results"
    shutil.copytree(finished, root)
    run = next(p.parent for p in sorted(root.rglob("meta.json")) if "/adam/" in str(p))
    return root, run


@pytest.mark.parametrize(
    ("key", "value"),
    [("wall_time", [1]), ("wall_time", "x"), ("setup", [1]), ("diverged", "y"), ("epochs_done", "2"), ("status", 3)],
)
def test_a_damaged_meta_field_makes_the_run_unreadable_not_the_report(
    finished: Path, tmp_path: Path, key: str, value: Any
) -> None:
    root, run = _copy(finished, tmp_path)
    meta = read_json(run / "meta.json")
    write_json(run / "meta.json", {**meta, key: value})
    with pytest.warns(RuntimeWarning, match=rf"meta.json cannot be read \('{key}' holds"):
        paths = report(root, figures=False)
    assert "| sgd |" in paths.markdown.read_text()
    # the same comparison again redoes the damaged run, and the report is whole again
    with pytest.warns(RuntimeWarning, match="meta.json cannot be read"):
        result = compare(WORKLOAD, "adam,sgd", out=root, seeds=1, trials=1, verbose=False)
    assert result.counts() == {"finished": 2}
    assert isinstance(read_json(run / "meta.json")["wall_time"], float)


def test_a_damaged_config_epochs_skips_the_run(finished: Path, tmp_path: Path) -> None:
    root, run = _copy(finished, tmp_path)
    write_json(run / "config.json", {**read_json(run / "config.json"), "epochs": "ten"})
    paths = report(root, figures=False)
    text = paths.markdown.read_text()
    assert "| sgd |" in text and "| adam |" not in text


@pytest.mark.parametrize(
    "invocations", [[3], [{"skipped": [1]}], [{"skipped": [{}]}], [{"status": ["x"]}], "all of them"]
)
def test_malformed_compare_json_entries_are_left_out(finished: Path, tmp_path: Path, invocations: Any) -> None:
    root, _ = _copy(finished, tmp_path)
    record = next(root.rglob("compare.json"))
    write_json(record, {**read_json(record), "invocations": invocations})
    assert "| adam |" in report(root, figures=False).markdown.read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="a file name of raw bytes (Linux file systems take any)")
def test_a_results_path_that_is_not_utf8_gets_its_report(finished: Path, tmp_path: Path) -> None:
    root = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/r\xff\xfe"))
    shutil.copytree(finished, root)
    paths = report(root, figures=False)
    assert "\\udcff\\udcfe" in paths.markdown.read_text(encoding="utf-8")
