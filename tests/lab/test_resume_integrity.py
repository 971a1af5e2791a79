"""Resuming never trusts a damaged result: a finished run's incomplete metrics.csv is redone (the file kept aside)
and flagged by load_runs and the report; reworded prose resumes; temp files of killed writes are cleaned."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import pytest

from tests.lab.conftest import TINY
from theorylr.lab import Cell, ConfigMismatchError, compare, load_runs, resolve_rule, run_cell
from theorylr.lab._files import atomic_write_bytes, read_csv, read_json, write_json
from theorylr.lab.report import report

EPOCHS = 3


def _cell(spec: str = "sgd@0.1", *, seed: int = 0) -> Cell:
    rule = resolve_rule(spec)
    return Cell(TINY, rule, 0, float(rule.defaults["lr"]), seed, EPOCHS)


def _without_time(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in read_csv(path)]


def _damage(path: Path, how: str) -> None:
    text = path.read_text()
    if how == "cut mid-row":  # the reviewer's repro: half of the file
        path.write_text(text[: len(text) // 2])
    elif how == "last row dropped":  # cut at a line boundary: every row left is whole
        path.write_text("".join(text.splitlines(keepends=True)[:-1]))
    elif how == "garbled":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.unlink()


# ----------------------------------------------------------------------------------------------------------------
# defect 1: a finished run whose metrics.csv is incomplete


@pytest.mark.parametrize("how", ["cut mid-row", "last row dropped", "garbled", "missing"])
def test_a_finished_run_with_an_incomplete_metrics_csv_is_redone_and_the_file_kept(tmp_path: Path, how: str) -> None:
    cell = _cell()
    directory = Path(run_cell(cell, tmp_path).directory)
    metrics = directory / "metrics.csv"
    complete = _without_time(metrics)
    assert [row["epoch"] for row in complete] == [0.0, 1.0, 2.0, 3.0]
    old_meta = read_json(directory / "meta.json")
    old_meta.update(cpu="an older machine", started="2020-01-01T00:00:00")  # finished under another install
    write_json(directory / "meta.json", old_meta)
    _damage(metrics, how)
    damaged = metrics.read_bytes() if metrics.exists() else None

    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(metrics))} .*: the finished run is redone"):
        again = run_cell(cell, tmp_path)
    assert again.status == "finished" and not again.skipped and again.epochs_done == EPOCHS
    assert _without_time(metrics) == complete  # redone from epoch 0: the same rows
    aside = directory / "metrics.csv.damaged"
    if damaged is None:
        assert not aside.exists()
    else:
        assert aside.read_bytes() == damaged  # kept, never deleted
    meta = read_json(directory / "meta.json")
    assert meta["status"] == "finished" and str(metrics) in meta["discarded_metrics"]
    # redone from epoch 0: this run's provenance, not the discarded attempt's (no resume is recorded)
    assert meta["cpu"] != "an older machine" and not meta["started"].startswith("2020")
    assert not any(key.startswith("resumed") for key in meta)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_cell(cell, tmp_path).skipped  # whole again: skipped, silently


def test_compare_redoes_the_truncated_run_and_an_earlier_damaged_copy_is_not_overwritten(tmp_path: Path) -> None:
    kw = dict(out=tmp_path, epochs=EPOCHS, trials=1, verbose=False, progress=False)
    compare(TINY, "lars", **kw)
    directory = tmp_path / "tiny-wine-mlp" / "lars" / "trial-00" / "seed-0"
    metrics = directory / "metrics.csv"
    (directory / "metrics.csv.damaged").write_text("an earlier one")
    text = metrics.read_text()
    metrics.write_text(text[: len(text) // 2])
    with pytest.warns(RuntimeWarning, match=r"kept as metrics\.csv\.damaged-2: the finished run is redone"):
        result = compare(TINY, "lars", **kw).results[0]
    assert not result.skipped and result.status == "finished"
    assert (directory / "metrics.csv.damaged").read_text() == "an earlier one"
    assert (directory / "metrics.csv.damaged-2").read_text() == text[: len(text) // 2]
    assert len(read_csv(metrics)) == EPOCHS + 1


def test_a_diverged_run_is_skipped_when_its_metrics_match_meta(tmp_path: Path) -> None:
    """A diverged run's rows end at its last finite epoch (epochs_done); one that diverged before its epoch-0 row
    has no metrics.csv at all: both are whole, so they are skipped (no redo on every rerun)."""
    cell = _cell()
    directory = Path(run_cell(cell, tmp_path).directory)
    meta = read_json(directory / "meta.json")
    rows = read_csv(directory / "metrics.csv")
    write_json(directory / "meta.json", {**meta, "status": "diverged", "epochs_done": 1})
    from theorylr.lab._files import write_csv

    write_csv(directory / "metrics.csv", rows[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_cell(cell, tmp_path).skipped
        write_json(directory / "meta.json", {**meta, "status": "diverged", "epochs_done": 0})
        (directory / "metrics.csv").unlink()
        assert run_cell(cell, tmp_path).skipped
    write_json(directory / "meta.json", {**meta, "status": "diverged", "epochs_done": 1})  # rows missing now
    with pytest.warns(RuntimeWarning, match=r"metrics\.csv is missing.*the diverged run is redone"):
        assert not run_cell(cell, tmp_path).skipped


@pytest.mark.parametrize("how", ["cut mid-row", "last row dropped", "garbled"])
def test_load_runs_and_the_report_flag_a_finished_run_with_an_incomplete_metrics_csv(tmp_path: Path, how: str) -> None:
    compare(TINY, "sgd@0.1,adam@0.01", out=tmp_path, epochs=EPOCHS, verbose=False, progress=False)
    metrics = tmp_path / "tiny-wine-mlp" / "sgd@0.1" / "trial-00" / "seed-0" / "metrics.csv"
    _damage(metrics, how)
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(metrics))} .*shown as incomplete"):
        runs = load_runs(tmp_path)
    by_rule = {r.rule: r for r in runs}
    damaged, whole = by_rule["sgd@0.1"], by_rule["adam@0.01"]
    assert damaged.status == "incomplete" and str(metrics) in (damaged.problem or "")
    assert damaged.meta["status"] == "finished"  # meta.json as it is
    assert whole.status == "finished" and whole.problem is None

    with pytest.warns(RuntimeWarning, match=re.escape(str(metrics))):
        paths = report(tmp_path, figures=False)
    text = paths.markdown.read_text()
    summary = next(line for line in text.splitlines() if line.startswith("| sgd@0.1 | baseline |"))
    assert "partial" in summary  # not a clean final loss
    assert "sgd@0.1 trial 0 seed 0: finished, but" in text and "rerun the same compare command" in text
    assert "1 incomplete" in text


# ----------------------------------------------------------------------------------------------------------------
# defect 2: reworded prose resumes


def test_a_reworded_description_or_reference_resumes(tmp_path: Path) -> None:
    kw = dict(out=tmp_path, epochs=EPOCHS, trials=1, verbose=False, progress=False)
    compare(TINY, "lars", **kw)
    lars = resolve_rule("lars")
    for changes in ({"description": "new words"}, {"reference": "another paper, §9"}):
        result = compare(TINY, [dataclasses.replace(lars, **changes)], **kw)
        assert [r.skipped for r in result.results] == [True]
    reworded_workload = dataclasses.replace(TINY, description="wine, reworded")
    assert compare(reworded_workload, "lars", **kw).results[0].skipped
    # a new seed written by the reworded rule is a seed of the same configuration in the report
    compare(TINY, [dataclasses.replace(lars, description="new words", reference="x")], **{**kw, "seeds": 2})
    report(tmp_path, figures=False)


def test_a_changed_computation_is_still_a_mismatch(tmp_path: Path) -> None:
    kw = dict(out=tmp_path, epochs=EPOCHS, trials=1, verbose=False, progress=False)
    compare(TINY, "lars", **kw)
    lars = resolve_rule("lars")
    changed = dataclasses.replace(lars, description="new words", defaults={**lars.defaults, "momentum": 0.5})
    with pytest.raises(ConfigMismatchError, match=r"rule differ"):
        compare(TINY, [changed], **kw)


# ----------------------------------------------------------------------------------------------------------------
# defect 3: temp files of writes killed mid-way


class _Kill(BaseException):
    pass


def _killed_write(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An atomic write of ``path`` killed between its temp file and the rename (what ``kill -9`` leaves)."""

    def killed(*args: object) -> None:
        raise _Kill

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed)
        m.setattr(os, "unlink", lambda *args: None)  # a killed process cleans nothing up
        with pytest.raises(_Kill):
            atomic_write_bytes(path, b"partial")


DECOYS = (
    "notes.tmp",
    ".metrics.csv.tmp",
    ".metrics.csv.short.tmp",
    ".metrics.csv.abcdefgh.tmp.keep",
    ".other.csv.abcdefgh.tmp",
    "metrics.csv.abcdefgh.tmp",
    "metrics.csv.damaged",
)


def test_a_restarted_run_removes_the_temp_files_of_killed_writes_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = _cell("adam@0.01")

    def kill_at_1(epoch: int) -> None:
        if epoch == 1:
            raise _Kill

    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=kill_at_1)
    directory = cell.directory(tmp_path)
    for name in ("metrics.csv", "checkpoint.pt", "meta.json"):
        _killed_write(directory / name, monkeypatch)
    for name in DECOYS:
        (directory / name).write_text("not the lab's temp file")
    temps = [p.name for p in directory.iterdir() if p.name.endswith(".tmp") and p.name not in DECOYS]
    assert len(temps) == 3, temps

    result = run_cell(cell, tmp_path)
    assert result.status == "finished" and read_json(directory / "meta.json")["resumed_from_epoch"] == 1
    left = sorted(p.name for p in directory.iterdir())
    assert left == sorted([".run.lock", "config.json", "meta.json", "metrics.csv", *DECOYS])


def test_remove_stale_temp_files_matches_the_names_atomic_writes_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from theorylr.lab._files import remove_stale_temp_files

    _killed_write(tmp_path / "meta.json", monkeypatch)
    (stale,) = tmp_path.iterdir()
    (tmp_path / "meta.json").write_text("{}")
    for name in DECOYS:
        (tmp_path / name).write_text("keep")
    (tmp_path / ".meta.json.abcdefgh.tmp").mkdir()  # a directory of that name is not a temp file
    assert remove_stale_temp_files(tmp_path, ["meta.json", "metrics.csv"]) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".meta.json.abcdefgh.tmp", "meta.json", *DECOYS])
    assert remove_stale_temp_files(tmp_path / "absent", ["meta.json"]) == []


@pytest.mark.parametrize("content", [b'{"status": "fini', b"[1, 2]"], ids=["cut", "not an object"])
def test_load_runs_names_an_unreadable_meta_json(tmp_path: Path, content: bytes) -> None:
    """A finished run whose meta.json was damaged lost its status without a word in the report's input."""
    directory = Path(run_cell(_cell(), tmp_path).directory)
    (directory / "meta.json").write_bytes(content)
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(directory / 'meta.json'))} cannot be read"):
        (run,) = load_runs(tmp_path)
    assert run.meta == {}
    (directory / "meta.json").unlink()  # not started (or removed): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_runs(tmp_path)


def test_compare_removes_the_temp_files_of_a_killed_compare_json_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compare.json is written under its lock only: a temp file of it found while holding the lock is a write
    killed mid-way, removed when the next comparison starts (a look-alike name is kept)."""
    kw = dict(out=tmp_path, epochs=1, trials=1, verbose=False, progress=False)
    compare("wine-mlp", "sgd@0.1", **kw)
    workload_dir = tmp_path / "wine-mlp"
    _killed_write(workload_dir / "compare.json", monkeypatch)
    (workload_dir / "compare.json.abcdefgh.tmp").write_text("not the lab's temp file")
    assert len([p for p in workload_dir.iterdir() if p.name.startswith(".compare.json.")]) == 1
    compare("wine-mlp", "sgd@0.1", **kw)
    assert not [p for p in workload_dir.iterdir() if p.name.startswith(".compare.json.") and p.suffix == ".tmp"]
    assert (workload_dir / "compare.json.abcdefgh.tmp").exists()
    assert len(read_json(workload_dir / "compare.json")["invocations"]) == 2
