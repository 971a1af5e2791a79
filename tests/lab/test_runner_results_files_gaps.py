"""Gaps that mutation testing of the lab's runner, results reader and atomic file writes found: what each write
makes durable, the stale temp files and locks, the JSON and CSV edge cases, the statuses and epochs that the
results reader derives, and the resume and divergence bookkeeping of a run."""

from __future__ import annotations

import itertools
import json
import math
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.lab.conftest import TINY
from theorylr.lab import Cell, Rule, RuleContext, RuleSetup, _files, run_cell
from theorylr.lab._files import (
    atomic_write_bytes,
    check_config_values,
    config_default,
    decode_non_finite,
    locked,
    read_csv,
    read_json,
    remove_stale_temp_files,
    write_csv,
    write_json,
)

# ----------------------------------------------------------------------------------------------------------------
# _files: what an atomic write makes durable


def test_an_atomic_write_syncs_the_whole_file_then_the_directory_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data must be on disk before the rename (flushed out of Python's buffer first), and the directory entry
    after it: a power cut then leaves the old or the new file, never an empty one."""
    path = tmp_path / "metrics.csv"
    data = b"epoch,loss\n0,1.0\n" * 50
    synced: list[tuple[bool, int, bool]] = []  # (a directory?, size, target already renamed?)
    real_fsync = os.fsync

    def record(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((stat.S_ISDIR(info.st_mode), info.st_size, path.exists()))
        real_fsync(fd)

    monkeypatch.setattr(_files.os, "fsync", record)
    atomic_write_bytes(path, data)
    assert path.read_bytes() == data
    assert synced[0] == (False, len(data), False)  # the temp file, complete, before it replaces anything
    assert [entry[0] for entry in synced] == [False, True]
    assert synced[1][2]  # the directory, after the rename


def test_a_keyboard_interrupt_mid_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "meta.json"
    write_json(path, {"status": "running"})

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"status": "finished"})
    monkeypatch.undo()
    assert read_json(path) == {"status": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_remove_stale_temp_files_takes_exactly_eight_random_characters(tmp_path: Path) -> None:
    stale = tmp_path / ".metrics.csv.ab_12xyz.tmp"
    kept = [".metrics.csv.ab_12xyz9.tmp", ".metrics.csv.ab_12xy.tmp", ".metrics.csv.ab_12xyz.tmp.bak"]
    for name in [stale.name, *kept]:
        (tmp_path / name).write_text("{")
    (tmp_path / ".meta.json.ab_12xyz.tmp").symlink_to(tmp_path / kept[0])  # a link is never removed
    assert remove_stale_temp_files(tmp_path, ["metrics.csv", "meta.json"]) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".meta.json.ab_12xyz.tmp", *kept])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fcntl locks (POSIX)")
def test_locked_holds_an_exclusive_lock_beside_the_file(tmp_path: Path) -> None:
    import fcntl

    path = tmp_path / "compare.json"
    with locked(path):
        lock = tmp_path / "compare.json.lock"
        assert lock.exists() and not path.exists()
        # another open file description (what another process would have) is not even granted a shared lock
        with open(lock, "rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    with open(lock, "rb") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end of the block
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)


def test_locked_serialises_read_modify_write_of_one_file(tmp_path: Path) -> None:
    path = tmp_path / "count.json"
    write_json(path, {"n": 0})
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with locked(path):
            inside.set()
            release.wait(10)
            order.append("first")

    def second() -> None:
        inside.wait(10)
        with locked(path):
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    release.set()
    for t in threads:
        t.join(20)
    assert order == ["first", "second"]


# ----------------------------------------------------------------------------------------------------------------
# _files: JSON


def test_write_json_writes_paths_as_text_and_keys_as_strings_and_ends_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"out": Path("/data/results"), 1: "one", "b": 2})  # int and str keys: sort_keys must not fail
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert json.loads(text) == {"out": "/data/results", "1": "one", "b": 2}


def test_write_json_refuses_what_json_cannot_hold_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        write_json(path, {"a": object()})
    assert read_json(path) == {"a": 1}


def test_non_finite_values_are_encoded_with_their_sign() -> None:
    encoded = _files.encode_non_finite({"up": math.inf, "down": -math.inf, "t": torch.tensor(-math.inf)})
    assert encoded == {"up": "inf", "down": "-inf", "t": "-inf"}
    assert decode_non_finite(encoded) == {"up": math.inf, "down": -math.inf, "t": -math.inf}
    assert _files.encode_non_finite((np.float64(math.nan),)) == ["nan"]  # a tuple, a NumPy scalar


def test_decode_non_finite_reads_the_legacy_form_only_alone() -> None:
    assert decode_non_finite({"__float__": "-inf"}) == -math.inf
    mixed = {"__float__": "inf", "note": "nan"}  # not the legacy form: a mapping, decoded item by item
    assert decode_non_finite(mixed) == {"__float__": math.inf, "note": pytest.approx(math.nan, nan_ok=True)}
    assert decode_non_finite(("inf",)) == ("inf",)  # JSON gives lists: anything else is left as it is


def test_config_default_keeps_a_one_element_vector_a_list() -> None:
    assert json.dumps({"w": torch.tensor([2.0])}, default=config_default) == '{"w": [2.0]}'
    assert json.dumps({"w": torch.tensor(2.0), "n": np.int64(3)}, default=config_default) == '{"w": 2.0, "n": 3}'


def test_check_config_values_names_an_entry_that_contains_itself() -> None:
    looped: dict = {"a": 1}
    looped["self"] = looped
    with pytest.raises(ValueError, match=r"model_options\['self'\] contains itself"):
        check_config_values("model_options", looped)


def test_check_config_values_accepts_a_none_key_and_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r": options\['x'\] is of type object$"):
        check_config_values("options", {None: 1, "x": object()})


# ----------------------------------------------------------------------------------------------------------------
# _files: CSV


def test_write_csv_columns_are_the_union_of_the_rows_keys_in_first_seen_order(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write_csv(path, [{"epoch": 0, "lr": None}, {"epoch": 1, "K_hat": 2.5, "lr": 0.1}])
    assert path.read_text() == "epoch,lr,K_hat\n0,,\n1,0.1,2.5\n"
    assert read_csv(path) == [{"epoch": 0.0, "lr": None, "K_hat": None}, {"epoch": 1.0, "lr": 0.1, "K_hat": 2.5}]


def test_read_csv_names_the_line_a_ragged_row_ends_on_after_a_multi_line_cell(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('epoch,note\n0,"two\nlines"\n1\n2,x\n')
    with pytest.raises(ValueError, match=r"line 4 has 1 fields, the header has 2"):
        read_csv(path)


def test_read_csv_drops_a_last_row_with_too_few_fields_even_after_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("epoch,loss,lr\n0,0.5,1.0\n1,0.25\n")
    assert read_csv(path) == [{"epoch": 0.0, "loss": 0.5, "lr": 1.0}]


def test_read_csv_skips_blank_lines_and_names_an_unparsable_file(tmp_path: Path) -> None:
    import csv

    path = tmp_path / "m.csv"
    path.write_text("epoch,loss\n0,1.0\n\n1,0.5\n")
    assert read_csv(path) == [{"epoch": 0.0, "loss": 1.0}, {"epoch": 1.0, "loss": 0.5}]
    path.write_text("epoch,note\n0," + "x" * (csv.field_size_limit() + 1) + "\n")  # csv.Error: field too large
    with pytest.raises(ValueError, match=r"m\.csv: not a readable CSV file \(field larger than field limit"):
        read_csv(path)


def test_load_checkpoint_refuses_a_file_that_is_not_a_dict(tmp_path: Path) -> None:
    from theorylr.lab._files import load_checkpoint

    torch.save([{"epoch": 1}], tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c\.pt is not a theorylr checkpoint \(expected a dict, got list\)"):
        load_checkpoint(tmp_path / "c.pt")


# ----------------------------------------------------------------------------------------------------------------
# results: what a run directory reads back as

CONFIG = {"workload": {"name": "w"}, "rule": {"name": "r", "kind": "baseline"}, "trial": 0, "seed": 0, "lr": 0.1}


def _run_dir(root: Path, name: str, *, meta: dict | None = None, rows: list[dict] | None = None, **config) -> Path:
    directory = root / name
    write_json(directory / "config.json", {**CONFIG, **config})
    if meta is not None:
        write_json(directory / "meta.json", meta)
    if rows is not None:
        write_csv(directory / "metrics.csv", rows)
    return directory


def _epochs(n: int) -> list[dict]:
    return [{"epoch": e, "step": 3 * e, "wall_time": 0.5 * (e + 1), "train_loss": 1.0 / (e + 1)} for e in range(n)]


def test_run_properties_read_back_from_the_files(tmp_path: Path) -> None:
    from theorylr.lab.results import load_runs

    _run_dir(tmp_path, "a", meta={"status": "finished", "epochs_done": 2}, rows=_epochs(3))
    (run,) = load_runs(tmp_path)
    assert run.status == "finished" and run.problem is None
    assert run.wall_time == 1.5  # no wall_time in meta.json: the last row's
    assert run.columns() == ["epoch", "step", "wall_time", "train_loss"]
    assert run.final("train_loss") == pytest.approx(1 / 3, abs=0)
    assert math.isnan(run.final("test_accuracy"))  # a column it does not have


def test_run_wall_time_of_zero_seconds_is_kept_and_a_column_missing_in_some_rows_is_nan() -> None:
    from theorylr.lab.results import Run

    run = Run(Path("."), dict(CONFIG), {"status": "finished", "wall_time": 0}, [{"epoch": 0.0}, {"lr": 0.5}])
    assert run.wall_time == 0.0  # a recorded 0 is a time, not a missing one
    assert run.columns() == ["epoch", "lr"]
    assert np.isnan(run.column("lr")[0]) and run.column("lr")[1] == 0.5
    assert Run(Path("."), dict(CONFIG)).status == "missing"  # no meta.json: never started
    assert math.isnan(Run(Path("."), dict(CONFIG)).final("lr"))  # no rows
    assert math.isnan(Run(Path("."), dict(CONFIG), {"status": "running"}).wall_time)
    assert Run(Path("."), dict(CONFIG), {}, [{"lr": 0.25}]).final("lr") == 0.25  # one row: its value


def test_only_a_finished_run_with_a_problem_shows_as_incomplete() -> None:
    from theorylr.lab.results import Run

    def status(meta_status: str, problem: str | None) -> str:
        return Run(Path("."), dict(CONFIG), {"status": meta_status}, [], problem).status

    assert status("finished", "cut") == "incomplete"
    assert status("finished", None) == "finished"
    assert status("diverged", "cut") == "diverged"
    assert status("interrupted", "cut") == "interrupted"


def test_load_runs_finds_runs_at_any_depth_sorted_by_trial_then_seed(tmp_path: Path) -> None:
    from theorylr.lab.results import load_runs

    _run_dir(tmp_path, "x", trial=1, seed=0)
    _run_dir(tmp_path, "deep/er/still/deeper/y", trial=0, seed=1)
    _run_dir(tmp_path, "z", trial=0, seed=0)
    runs = load_runs(tmp_path)
    assert [(r.trial, r.seed) for r in runs] == [(0, 0), (0, 1), (1, 0)]
    assert [r.status for r in runs] == ["missing"] * 3 and all(r.rows == [] for r in runs)


@pytest.mark.parametrize(
    "config",
    [{"epochs": True}, {"epochs": 2.0}, {"lr": "fast"}, {"trial": "first"}, {"workload": "w"}],
    ids=["epochs-bool", "epochs-float", "lr-text", "trial-text", "workload-text"],
)
def test_load_runs_leaves_out_a_config_it_cannot_read(tmp_path: Path, config: dict) -> None:
    from theorylr.lab.results import load_runs

    _run_dir(tmp_path, "good")
    _run_dir(tmp_path, "bad", seed=1, **config)
    assert [r.directory.name for r in load_runs(tmp_path)] == ["good"]


def test_load_runs_warns_that_a_diverged_run_with_a_problem_stays_diverged(tmp_path: Path) -> None:
    from theorylr.lab.results import load_runs

    directory = _run_dir(tmp_path, "d", meta={"status": "diverged", "epochs_done": 3}, rows=_epochs(2))
    with pytest.warns(RuntimeWarning, match=r"the diverged run is shown as diverged with the rows that could be read"):
        (run,) = load_runs(tmp_path)
    assert run.status == "diverged" and str(directory / "metrics.csv") in (run.problem or "")
    assert len(run.rows) == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [("wall_time", True), ("epochs_done", 2.0), ("epochs_done", False), ("status", ["finished"]), ("diverged", 3)],
)
def test_read_meta_refuses_a_field_of_the_wrong_type(tmp_path: Path, key: str, value: object) -> None:
    from theorylr.lab.results import read_meta

    write_json(tmp_path / "meta.json", {"status": "finished", key: value})
    meta, problem = read_meta(tmp_path)
    assert meta is None and problem is not None and f"({key!r} holds" in problem


def test_read_meta_keeps_absent_and_null_fields(tmp_path: Path) -> None:
    from theorylr.lab.results import read_meta

    write_json(tmp_path / "meta.json", {"status": "running", "wall_time": None, "epochs_done": 0})
    assert read_meta(tmp_path) == ({"status": "running", "wall_time": None, "epochs_done": 0}, None)


# read_metrics: which files a run that ended may have


@pytest.mark.parametrize(
    ("status", "done", "problem"),
    [
        ("diverged", 0, False),
        ("diverged", None, False),
        ("diverged", 2, True),
        ("finished", 0, True),
        ("finished", None, True),
    ],
)
def test_a_missing_metrics_csv_is_a_problem_unless_the_run_diverged_before_epoch_0(
    tmp_path: Path, status: str, done: int | None, problem: bool
) -> None:
    from theorylr.lab.results import read_metrics

    meta = {"status": status} if done is None else {"status": status, "epochs_done": done}
    rows, found = read_metrics(tmp_path, meta)
    assert rows == [] and (found is not None) == problem
    if problem:
        assert f"is missing, though meta.json says the run {status}" in found


@pytest.mark.parametrize("done", [-1, True], ids=["negative", "bool"])
def test_an_epochs_done_the_runner_cannot_have_written_only_needs_epochs_0_1_2(tmp_path: Path, done: object) -> None:
    from theorylr.lab.results import read_metrics

    write_csv(tmp_path / "metrics.csv", _epochs(3))
    rows, problem = read_metrics(tmp_path, {"status": "finished", "epochs_done": done})
    assert len(rows) == 3 and problem is None
    write_csv(tmp_path / "metrics.csv", _epochs(3)[1:])  # epoch 0 missing
    assert "not one row for each of epochs 0, 1, 2, ..." in (read_metrics(tmp_path, {"status": "finished"})[1] or "")


@pytest.mark.parametrize("status", ["finished", "diverged"])
def test_an_ended_run_needs_exactly_epochs_0_to_epochs_done(tmp_path: Path, status: str) -> None:
    from theorylr.lab.results import read_metrics

    write_csv(tmp_path / "metrics.csv", _epochs(3))
    assert read_metrics(tmp_path, {"status": status, "epochs_done": 2}) == (read_csv(tmp_path / "metrics.csv"), None)
    for done in (1, 3):  # one row too many, one too few
        problem = read_metrics(tmp_path, {"status": status, "epochs_done": done})[1]
        assert (
            problem is not None
            and f"holds 3 rows (epochs 0 to 2), not one row for each of epochs 0 to {done}" in problem
        )
    rows = _epochs(3)
    rows[1]["epoch"] = 5  # a mixed copy: the right count, the wrong epochs
    write_csv(tmp_path / "metrics.csv", rows)
    assert "(epochs 0 to 2)" in (read_metrics(tmp_path, {"status": status, "epochs_done": 2})[1] or "")


def test_a_metrics_csv_ending_in_a_carriage_return_or_empty_is_cut_short_for_an_ended_run(tmp_path: Path) -> None:
    from theorylr.lab.results import read_metrics

    (tmp_path / "metrics.csv").write_text("epoch,train_loss\n0,1.0\n1,0.5\r", newline="")
    rows, problem = read_metrics(tmp_path, {"status": "finished", "epochs_done": 0})
    assert len(rows) == 1 and "ends in the middle of a row" in (problem or "")
    (tmp_path / "metrics.csv").write_bytes(b"")
    rows, problem = read_metrics(tmp_path, {"status": "finished", "epochs_done": 0})
    assert rows == [] and "ends in the middle of a row" in (problem or "")
    assert read_metrics(tmp_path, {"status": "interrupted"}) == ([], None)


def test_a_running_run_may_hold_any_prefix_of_its_epochs(tmp_path: Path) -> None:
    from theorylr.lab.results import read_metrics

    rows = _epochs(3)
    rows[2]["epoch"] = 7  # whatever it holds, it is not judged before it ends
    write_csv(tmp_path / "metrics.csv", rows)
    assert read_metrics(tmp_path, {"status": "running", "epochs_done": 1}) == (read_csv(tmp_path / "metrics.csv"), None)


def test_without_prose_drops_the_description_and_reference_of_both_the_workload_and_the_rule() -> None:
    from theorylr.lab.results import without_prose

    config = {
        "workload": {"name": "w", "description": "a", "reference": "b", "epochs": 3},
        "rule": {"name": "r", "description": "c", "reference": "d", "lr": 0.1},
        "seed": 0,
    }
    assert without_prose(config) == {
        "workload": {"name": "w", "epochs": 3},
        "rule": {"name": "r", "lr": 0.1},
        "seed": 0,
    }
    assert config["workload"]["description"] == "a"  # the argument is left as it was


def test_check_consistent_compares_the_seeds_of_each_trial_with_the_first(tmp_path: Path) -> None:
    from theorylr.lab.results import Run, check_consistent, group_runs

    def run(trial: int, seed: int, lr: float, name: str = "") -> Run:
        return Run(tmp_path / f"{trial}-{seed}{name}", {**CONFIG, "trial": trial, "seed": seed, "lr": lr})

    trials = [run(0, 0, 0.1), run(0, 1, 0.1), run(1, 0, 0.3), run(1, 1, 0.3)]
    check_consistent(trials)  # two trials of other lrs, each over two seeds: consistent
    assert {t: [r.seed for r in rs] for t, rs in group_runs(trials)["w"]["r"].items()} == {0: [0, 1], 1: [0, 1]}
    with pytest.raises(ValueError, match=r"0-0 and .*0-2 are seeds of r trial 0 on w with different .*\(lr differ"):
        check_consistent([*trials, run(0, 2, 0.2)])
    with pytest.raises(ValueError, match=r"1-1 and .*1-1copy are both r trial 1 seed 1 on w"):
        check_consistent([*trials, run(1, 1, 0.3, "copy")])


# ----------------------------------------------------------------------------------------------------------------
# runner: a rule that diverges (or fails) exactly where a test wants it

_MODE: dict[str, Any] = {"setup": None, "closed": 0}  # how the next set-up goes; set-ups closed so far


def _probe_factory(ctx: RuleContext) -> RuleSetup:
    """SGD; from optimizer step ``poison_after`` on, the model's outputs make the cross-entropy +inf (every example
    of a class other than 0), so that the next forward pass (a training step or the full-batch evaluation) sees it."""
    if _MODE["setup"] == "fpe":
        raise FloatingPointError("L = 0.0 at set-up")
    if _MODE["setup"] == "error":
        raise RuntimeError("a transient failure at set-up")
    poison_after = int(ctx.options["poison_after"])
    state = {"steps": 0}

    def poison(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if 0 < poison_after <= state["steps"]:
            mask = torch.full_like(output, -math.inf)
            mask[:, 0] = 0.0
            output = output * 0.0 + mask  # still part of the graph: the step's backward() runs
        return output

    handle = ctx.model.register_forward_hook(poison)

    def after_step() -> None:
        state["steps"] += 1

    def close() -> None:
        _MODE["closed"] += 1
        handle.remove()

    optimizer = torch.optim.SGD(ctx.model.parameters(), lr=ctx.options["lr"])
    return RuleSetup(optimizer, after_step=after_step, close=close, info={"poison_after": poison_after})


@pytest.fixture
def probe_mode() -> Iterator[dict[str, Any]]:
    _MODE.update(setup=None, closed=0)
    yield _MODE
    _MODE.update(setup=None, closed=0)


def _probe_cell(poison_after: int = 0, epochs: int = 3) -> Cell:
    """TINY (134 examples, batch 48: 3 steps per epoch), SGD poisoned from step ``poison_after`` (0: never)."""
    defaults = {"lr": 0.05, "poison_after": poison_after}
    return Cell(
        TINY,
        Rule("probe-sgd", "baseline", "SGD that diverges on cue (tests)", _probe_factory, defaults),
        0,
        0.05,
        0,
        epochs,
    )


class _Kill(BaseException):
    """A stand-in for Ctrl-C / kill: a BaseException the runner must not swallow."""


def _kill_at(epoch: int) -> Callable[[int], None]:
    def callback(e: int) -> None:
        if e == epoch:
            raise _Kill

    return callback


def test_a_training_loss_that_becomes_inf_is_a_divergence_at_its_exact_step(tmp_path: Path, probe_mode: dict) -> None:
    """Poisoned after step 4 (epoch 2's first): step 5's loss is +inf. The run is diverged at epoch 2, step 5, with
    the training loss, its rows are epochs 0 and 1 (epochs_done 1), no checkpoint is left and the set-up is closed."""
    cell = _probe_cell(poison_after=4, epochs=4)
    seen: list[int] = []
    result = run_cell(cell, tmp_path, progress=seen.append)
    assert result.status == "diverged" and not result.skipped
    assert result.message == "non-finite training loss (inf) at epoch 2, step 5"
    assert result.epochs_done == 1 and seen == [1]
    directory = Path(result.directory)
    meta = read_json(directory / "meta.json")
    assert meta["diverged"] == {"epoch": 2, "step": 5, "loss": "inf", "where": "training loss"}
    assert meta["epochs_done"] == 1
    rows = read_csv(directory / "metrics.csv")
    assert [(r["epoch"], r["step"]) for r in rows] == [(0.0, 0.0), (1.0, 3.0)]
    assert result.final["train_loss"] == rows[-1]["train_loss"] and result.final["epoch"] == 1.0
    # the time spent in the epoch that diverged counts: more than the last row's
    assert (
        meta["wall_time"]
        > rows[-1]["wall_time"]
        == pytest.approx(result.wall_time - (meta["wall_time"] - rows[-1]["wall_time"]))
    )
    assert not (directory / "checkpoint.pt").exists()
    assert probe_mode["closed"] == 1
    again = run_cell(cell, tmp_path)  # diverged is final
    assert again.skipped and again.status == "diverged" and again.wall_time == meta["wall_time"]
    assert again.line().endswith(": diverged (already done, skipped)")


def test_a_full_batch_loss_that_becomes_inf_ends_the_run_at_that_epoch(tmp_path: Path, probe_mode: dict) -> None:
    """Poisoned after step 3, the last of epoch 1: the training steps were finite, epoch 1's evaluation is not."""
    result = run_cell(_probe_cell(poison_after=3), tmp_path)
    meta = read_json(Path(result.directory) / "meta.json")
    assert meta["diverged"] == {"epoch": 1, "step": 3, "loss": "inf", "where": "full-batch train_loss"}
    assert meta["epochs_done"] == 0 == result.epochs_done
    assert [r["epoch"] for r in read_csv(Path(result.directory) / "metrics.csv")] == [0.0]  # not the inf row


def test_an_infinite_full_batch_gradient_norm_alone_is_a_divergence(
    tmp_path: Path, probe_mode: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from theorylr.lab import runner

    real = runner.evaluate
    calls = {"gradient": 0}

    def evaluate(*args: Any, **kwargs: Any) -> dict[str, float]:
        out = real(*args, **kwargs)
        if kwargs.get("gradient"):
            calls["gradient"] += 1
            if calls["gradient"] == 3:  # epoch 2's evaluation
                out["grad_norm"] = math.inf
        return out

    monkeypatch.setattr(runner, "evaluate", evaluate)
    result = run_cell(_probe_cell(), tmp_path)
    meta = read_json(Path(result.directory) / "meta.json")
    assert result.status == "diverged"
    assert meta["diverged"] == {"epoch": 2, "step": 6, "loss": "inf", "where": "full-batch grad_norm"}
    assert meta["epochs_done"] == 1


def test_a_divergence_in_the_set_up_removes_an_earlier_attempts_rows(tmp_path: Path, probe_mode: dict) -> None:
    """An interrupted run redone whose set-up then diverges (LipschitzLR's L = 0): diverged at epoch 0, with no
    metrics.csv (the rows there were the earlier attempt's) and epochs_done 0; a rerun skips it."""
    cell = _probe_cell()
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=_kill_at(1))
    directory = cell.directory(tmp_path)
    assert (directory / "metrics.csv").exists()
    probe_mode["setup"] = "fpe"
    result = run_cell(cell, tmp_path)
    assert result.status == "diverged" and result.epochs_done == 0 and result.final == {}
    assert result.message == "diverged: L = 0.0 at set-up"
    meta = read_json(directory / "meta.json")
    assert meta["diverged"] == {
        "epoch": 0,
        "step": None,
        "loss": None,
        "where": "FloatingPointError: L = 0.0 at set-up",
    }
    assert meta["epochs_done"] == 0 and "ended" in meta
    assert not (directory / "metrics.csv").exists()
    assert not (directory / "checkpoint.pt").exists()
    probe_mode["setup"] = None
    assert run_cell(cell, tmp_path).skipped


def test_a_failure_in_the_set_up_of_a_resume_keeps_the_progress_made(tmp_path: Path, probe_mode: dict) -> None:
    """An interrupted run whose resume fails (a transient error): its rows and checkpoint stay, so the next attempt
    resumes from the same epoch and ends with the rows of an uninterrupted run."""
    cell = _probe_cell()
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=_kill_at(1))
    directory = cell.directory(tmp_path)
    rows = read_csv(directory / "metrics.csv")
    probe_mode["setup"] = "error"
    failed = run_cell(cell, tmp_path)
    assert failed.status == "failed" and failed.message == "RuntimeError: a transient failure at set-up"
    assert read_csv(directory / "metrics.csv") == rows and (directory / "checkpoint.pt").exists()
    probe_mode["setup"] = None
    resumed = run_cell(cell, tmp_path)
    assert resumed.status == "finished"
    meta = read_json(directory / "meta.json")
    assert meta["resumed_from_epoch"] == 1 and "error" not in meta and "traceback" not in meta
    straight = run_cell(cell, tmp_path / "straight")
    without_time = [{k: v for k, v in r.items() if k != "wall_time"} for r in read_csv(directory / "metrics.csv")]
    assert without_time == [
        {k: v for k, v in r.items() if k != "wall_time"} for r in read_csv(Path(straight.directory) / "metrics.csv")
    ]


# ----------------------------------------------------------------------------------------------------------------
# runner: resuming, skipping and the files a run leaves


def test_a_resume_keeps_the_start_drops_the_old_end_while_running_and_continues_the_clock(
    tmp_path: Path, probe_mode: dict
) -> None:
    cell = _probe_cell(epochs=4)
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=_kill_at(2))
    directory = cell.directory(tmp_path)
    first = read_json(directory / "meta.json")
    assert first["status"] == "interrupted" and "ended" in first
    before = read_csv(directory / "metrics.csv")
    during: list[dict] = []
    result = run_cell(cell, tmp_path, epoch_callback=lambda e: during.append(read_json(directory / "meta.json")))
    assert result.status == "finished"
    assert [m["status"] for m in during] == ["running", "running"]
    assert not any("ended" in m for m in during)  # the interrupted part's end is not this part's
    meta = read_json(directory / "meta.json")
    assert meta["started"] == first["started"] and meta["resumed"] == [during[0]["resumed"][0]]
    assert meta["resumed"][0] >= first["ended"]
    rows = read_csv(directory / "metrics.csv")
    assert rows[:3] == before  # the first part's rows, wall times included
    walls = [r["wall_time"] for r in rows]
    assert all(a < b for a, b in itertools.pairwise(walls))  # the resumed part goes on from the checkpoint's time
    assert meta["wall_time"] == walls[-1] == result.wall_time


def test_the_wall_time_includes_the_set_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probe_mode: dict) -> None:
    import time

    slow = 0.2

    def slow_factory(ctx: RuleContext) -> RuleSetup:
        time.sleep(slow)
        return _probe_factory(ctx)

    rule = Rule("slow-sgd", "baseline", "SGD with a slow set-up (tests)", slow_factory, {"lr": 0.05, "poison_after": 0})
    result = run_cell(Cell(TINY, rule, 0, 0.05, 0, 2), tmp_path)
    meta = read_json(Path(result.directory) / "meta.json")
    rows = read_csv(Path(result.directory) / "metrics.csv")
    assert meta["setup_time"] >= slow and rows[0]["wall_time"] == meta["setup_time"]
    assert rows[-1]["wall_time"] > rows[1]["wall_time"] > meta["setup_time"]


def test_a_checkpoint_kept_on_request_stays_and_a_later_skip_leaves_it(tmp_path: Path, probe_mode: dict) -> None:
    cell = _probe_cell(epochs=2)
    result = run_cell(cell, tmp_path, keep_checkpoint=True)
    directory = Path(result.directory)
    assert result.status == "finished" and (directory / "checkpoint.pt").exists()
    assert read_json(directory / "meta.json")["keep_checkpoint"] is True
    assert run_cell(cell, tmp_path).skipped and (directory / "checkpoint.pt").exists()


def test_a_skip_leaves_a_checkpoint_when_meta_json_does_not_say_it_was_to_go(tmp_path: Path, probe_mode: dict) -> None:
    """A result written before ``keep_checkpoint`` was recorded: its checkpoint.pt is not known to be a leftover."""
    cell = _probe_cell(epochs=2)
    directory = Path(run_cell(cell, tmp_path, keep_checkpoint=True).directory)
    meta = read_json(directory / "meta.json")
    del meta["keep_checkpoint"]
    write_json(directory / "meta.json", meta)
    assert run_cell(cell, tmp_path).skipped and (directory / "checkpoint.pt").exists()
    write_json(directory / "meta.json", {**meta, "keep_checkpoint": False})  # a kill before its removal
    assert run_cell(cell, tmp_path).skipped and not (directory / "checkpoint.pt").exists()


def test_a_config_json_that_is_not_an_object_is_a_clear_error(tmp_path: Path, probe_mode: dict) -> None:
    from theorylr.lab import ConfigMismatchError

    cell = _probe_cell(epochs=1)
    run_cell(cell, tmp_path)
    path = cell.directory(tmp_path) / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigMismatchError, match=r"cannot be read \(a JSON list, not an object\).*delete that"):
        run_cell(cell, tmp_path)


def test_a_config_json_holding_a_json_string_is_named_as_such(tmp_path: Path, probe_mode: dict) -> None:
    from theorylr.lab import ConfigMismatchError

    cell = _probe_cell(epochs=1)
    run_cell(cell, tmp_path)
    (cell.directory(tmp_path) / "config.json").write_text('"hello"')
    with pytest.raises(ConfigMismatchError, match=r"cannot be read \(a JSON str, not an object\)"):
        run_cell(cell, tmp_path)


def test_a_checkpoint_that_lacks_a_part_is_discarded_and_the_run_restarts(tmp_path: Path, probe_mode: dict) -> None:
    from theorylr.lab._files import load_checkpoint, save_checkpoint

    cell = _probe_cell(epochs=3)
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=_kill_at(2))
    checkpoint = cell.directory(tmp_path) / "checkpoint.pt"
    saved = load_checkpoint(checkpoint)
    del saved["rng"], saved["stateful"]
    save_checkpoint(checkpoint, saved)
    with pytest.warns(
        RuntimeWarning, match=r"checkpoint\.pt cannot be read \(ValueError: no stateful, rng\); discarded"
    ):
        result = run_cell(cell, tmp_path)
    assert result.status == "finished"
    assert "resumed_from_epoch" not in read_json(cell.directory(tmp_path) / "meta.json")


def test_a_restart_from_epoch_0_forgets_an_earlier_resume(tmp_path: Path, probe_mode: dict) -> None:
    """Interrupted, resumed and interrupted again, then its checkpoint lost: redone from epoch 0, so meta.json must
    not keep the earlier resume's epoch and set-up time."""
    cell = _probe_cell(epochs=4)
    directory = cell.directory(tmp_path)
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=_kill_at(1))
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=_kill_at(3))
    meta = read_json(directory / "meta.json")
    assert meta["resumed_from_epoch"] == 1 and "resume_setup_time" in meta
    (directory / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="restarts from epoch 0"):
        assert run_cell(cell, tmp_path).status == "finished"
    meta = read_json(directory / "meta.json")
    assert "resumed_from_epoch" not in meta and "resume_setup_time" not in meta


def test_a_damaged_copy_never_replaces_a_link_named_like_one(tmp_path: Path, probe_mode: dict) -> None:
    cell = _probe_cell(epochs=2)
    directory = Path(run_cell(cell, tmp_path).directory)
    metrics = directory / "metrics.csv"
    metrics.write_text(metrics.read_text()[:-5])
    (directory / "metrics.csv.damaged").symlink_to(tmp_path / "nowhere")  # a dangling link: exists() is False
    with pytest.warns(RuntimeWarning, match=r"kept as metrics\.csv\.damaged-2: the finished run is redone"):
        assert run_cell(cell, tmp_path).status == "finished"
    assert (directory / "metrics.csv.damaged").is_symlink()
    assert (directory / "metrics.csv.damaged-2").is_file()


def test_a_second_process_on_the_same_cell_waits_and_then_skips_it(tmp_path: Path, probe_mode: dict) -> None:
    """Two comparisons into one directory: the cell's lock makes the second wait for the first and skip the run."""
    cell = _probe_cell(epochs=3)
    results: dict[str, object] = {}

    def second() -> None:
        results["second"] = run_cell(cell, tmp_path)

    other = threading.Thread(target=second)

    def start_the_other(epoch: int) -> None:
        if epoch == 1:
            other.start()
            other.join(0.5)  # it waits on the lock
            results["waited"] = other.is_alive()

    results["first"] = run_cell(cell, tmp_path, epoch_callback=start_the_other)
    other.join(60)
    assert results["waited"] is True
    assert results["first"].status == "finished" and not results["first"].skipped  # type: ignore[attr-defined]
    assert results["second"].skipped  # type: ignore[attr-defined]


def test_a_result_line_leaves_out_non_finite_metrics() -> None:
    from theorylr.lab import CellResult

    result = CellResult("w", "r", 0, 0.1, 0, "diverged", "d", epochs_done=2, wall_time=1.25)
    result.final = {"train_loss": math.inf, "test_accuracy": 0.5}
    result.message = "non-finite training loss (inf) at epoch 3, step 9"
    assert result.line() == (
        "w/r seed 0: diverged, 2 epochs, 1.2 s, test_accuracy 0.5, non-finite training loss (inf) at epoch 3, step 9"
    )


def test_compare_counts_each_status_and_restores_torch_threads(tmp_path: Path, probe_mode: dict) -> None:
    from theorylr.lab import compare

    rule = _probe_cell().rule
    threads = torch.get_num_threads()
    result = compare(TINY, [rule], out=tmp_path, seeds=3, epochs=1, verbose=False, progress=False, threads=1)
    assert result.counts() == {"finished": 3}
    assert torch.get_num_threads() == threads


def _halving_factory(ctx: RuleContext) -> RuleSetup:
    optimizer = torch.optim.SGD(ctx.model.parameters(), lr=ctx.options["lr"])
    interval = str(ctx.options["interval"])
    return RuleSetup(optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5), scheduler_interval=interval)


@pytest.mark.parametrize(("interval", "halvings"), [("epoch", 1), ("step", 3)])
def test_the_scheduler_steps_once_an_epoch_or_once_a_step(tmp_path: Path, interval: str, halvings: int) -> None:
    """TINY has 3 optimizer steps per epoch: the lr recorded after epoch e is halved e (or 3e) times."""
    rule = Rule(
        "halving-sgd", "baseline", "SGD halving its lr (tests)", _halving_factory, {"lr": 0.5, "interval": interval}
    )
    result = run_cell(Cell(TINY, rule, 0, 0.5, 0, 3), tmp_path)
    assert result.status == "finished"
    lrs = [row["lr"] for row in read_csv(Path(result.directory) / "metrics.csv")]
    assert lrs == [0.5 * 0.5 ** (halvings * e) for e in range(4)]
