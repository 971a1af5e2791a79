"""Scores, the tuning grid and read_metrics at the cases a mutation-testing pass found unchecked, by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.lab.conftest import hand_run as _run
from theorylr.lab._files import write_csv
from theorylr.lab.results import read_metrics
from theorylr.lab.scores import best_trial, summarize, time_to_target
from theorylr.lab.tuning import LogGrid
from theorylr.lab.workloads import Target

NAN = math.nan


def _rows(losses: list[float], accuracies: list[float] | None = None) -> list[dict]:
    accuracies = accuracies if accuracies is not None else [0.5] * len(losses)
    return [
        {"epoch": float(e), "step": 10.0 * e, "wall_time": 1.0 + e, "train_loss": loss, "test_accuracy": acc}
        for e, (loss, acc) in enumerate(zip(losses, accuracies))
    ]


# ----------------------------------------------------------------------------------------------------------------
# scores
# ----------------------------------------------------------------------------------------------------------------
def test_a_trial_with_one_seed_still_running_has_not_ended() -> None:
    """Trial 1 has one seed finished and one running, with a lower loss so far: it has not ended (every run must
    have), so the ended trial 0 is the best despite its worse score."""
    ended = [_run(_rows([2.0, 1.0]), trial=0, seed=s) for s in (0, 1)]
    half = [_run(_rows([2.0, 0.1]), "finished", trial=1, seed=0), _run(_rows([2.0, 0.1]), "running", trial=1, seed=1)]
    assert best_trial({0: ended, 1: half}, "train_loss") == 0
    assert best_trial({1: half, 0: ended}, "train_loss") == 0
    done = [_run(_rows([2.0, 0.1]), trial=1, seed=s) for s in (0, 1)]
    assert best_trial({0: ended, 1: done}, "train_loss") == 1  # once both have ended, the lower score wins


def test_a_target_met_at_epoch_0_is_reached_at_step_0() -> None:
    rows = [
        {"epoch": 0.0, "step": 0.0, "wall_time": 0.25, "test_accuracy": 0.95},
        {"epoch": 1.0, "step": 10.0, "wall_time": 1.5, "test_accuracy": 0.97},
    ]
    assert time_to_target(_run(rows), Target("test_accuracy", 0.9)) == (0.0, 0.25)


def test_reached_counts_the_seeds_that_reach_the_target() -> None:
    reach = [0.5, 0.92, 0.95]
    never = [0.5, 0.6, 0.7]
    runs = [
        _run(_rows([2.0, 1.0, 0.5], reach), seed=0),
        _run(_rows([2.0, 1.0, 0.5], never), seed=1),
        _run(_rows([2.0, 1.0, 0.5], reach), seed=2),
    ]
    (summary,) = summarize(runs)["w"]
    assert summary.seeds == 3 and summary.reached == 2
    assert summary.steps_to_target == 10.0 and summary.time_to_target == 2.0  # median of (10, inf, 10)
    (one,) = summarize([runs[0], runs[1]])["w"]
    assert one.reached == 1 and one.time_to_target == math.inf  # median of (2, inf): half never reach it


def test_best_test_accuracy_is_the_median_of_each_seeds_nanmax() -> None:
    """Each seed's best accuracy over its epochs (missing evaluations skipped, not its last), then the median."""
    runs = [
        _run(_rows([2.0, 1.0, 0.8, 0.6], [0.5, NAN, 0.9, 0.8]), seed=0),  # max 0.9, last 0.8, min 0.5
        _run(_rows([2.0, 1.0, 0.8, 0.6], [0.4, 0.7, NAN, 0.6]), seed=1),  # max 0.7, last 0.6
        _run(_rows([2.0, 1.0, 0.8, 0.6], [NAN, 0.3, 0.85, NAN]), seed=2),  # max 0.85, last nan
    ]
    (summary,) = summarize(runs)["w"]
    assert summary.best_test_accuracy == 0.85
    without = [_run([{k: v for k, v in r.items() if k != "test_accuracy"} for r in _rows([1.0, 0.5])], seed=3)]
    (none,) = summarize(without)["w"]
    assert math.isnan(none.best_test_accuracy)


# ----------------------------------------------------------------------------------------------------------------
# tuning
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("low", "high", "name"), [(1.0, 0.1, "high"), (0.0, 1.0, "low"), (-1.0, 1.0, "low")])
def test_log_grid_refuses_a_bad_range_at_construction(low: float, high: float, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be"):
        LogGrid(low, high)


def test_log_grid_accepts_a_single_point() -> None:
    assert LogGrid(0.5, 0.5).points(3) == [0.5, 0.5, 0.5]


# ----------------------------------------------------------------------------------------------------------------
# read_metrics
# ----------------------------------------------------------------------------------------------------------------
def _metrics(directory: Path, epochs: range) -> None:
    write_csv(directory / "metrics.csv", [{"epoch": e, "train_loss": 1.0 / (e + 1)} for e in epochs])


def test_epochs_done_0_with_later_rows_is_a_problem(tmp_path: Path) -> None:
    _metrics(tmp_path, range(3))
    rows, problem = read_metrics(tmp_path, {"status": "finished", "epochs_done": 0})
    assert len(rows) == 3
    assert problem is not None and "holds 3 rows (epochs 0 to 2), not one row for each of epochs 0 to 0" in problem


def test_rows_beyond_epochs_done_are_a_problem(tmp_path: Path) -> None:
    _metrics(tmp_path, range(5))
    for status in ("finished", "diverged"):
        rows, problem = read_metrics(tmp_path, {"status": status, "epochs_done": 2})
        assert len(rows) == 5
        assert problem is not None and "holds 5 rows (epochs 0 to 4), not one row for each of epochs 0 to 2" in problem
    assert read_metrics(tmp_path, {"status": "finished", "epochs_done": 4})[1] is None


def test_an_ended_run_with_a_header_only_file_and_no_epochs_done_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,train_loss\n")
    for status in ("finished", "diverged"):
        rows, problem = read_metrics(tmp_path, {"status": status})
        assert rows == []
        assert problem is not None and "holds 0 rows, not one row for each of epochs 0, 1, 2, ..." in problem
    assert read_metrics(tmp_path, {"status": "running"}) == ([], None)
    _metrics(tmp_path, range(3))  # rows 0, 1, 2 and no epochs_done (not written by the runner): nothing wrong
    rows, problem = read_metrics(tmp_path, {"status": "finished"})
    assert len(rows) == 3 and problem is None


@pytest.mark.parametrize("status", ["running", "interrupted", "failed", None])
def test_a_run_that_has_not_ended_may_have_a_last_row_cut_short(tmp_path: Path, status: str | None) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,train_loss\n0,1.0\n1,0.5\n2,0.2")  # no final newline
    meta = {} if status is None else {"status": status, "epochs_done": 7}
    rows, problem = read_metrics(tmp_path, meta)
    assert problem is None
    assert rows == [{"epoch": 0.0, "train_loss": 1.0}, {"epoch": 1.0, "train_loss": 0.5}]
    rows, problem = read_metrics(tmp_path, {"status": "finished"})  # the same file for a finished run: flagged
    assert problem is not None and "ends in the middle of a row" in problem
