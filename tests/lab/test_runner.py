"""The runner: results as files, statuses, resuming after a kill, evaluation against a dense reference."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.lab.conftest import TINY, TINY_DROPOUT
from theorylr.lab import (
    Cell,
    CellResult,
    ConfigMismatchError,
    LogGrid,
    Rule,
    RuleSetup,
    compare,
    evaluate,
    get_loss,
    get_rule,
    get_workload,
    parse_seeds,
    plan_cells,
    resolve_rule,
    run_cell,
)
from theorylr.lab._files import read_csv, read_json


def _cell(workload, spec: str, *, trial: int = 0, seed: int = 0, epochs: int | None = None) -> Cell:
    rule = resolve_rule(spec)
    lr = (
        rule.trial_lrs(3)[trial]
        if rule.tuned
        else float(workload.options_for(rule.name).get("lr", rule.defaults["lr"]))
    )
    return Cell(workload, rule, trial, lr, seed, epochs or workload.epochs)


def _metrics_without_time(directory: Path) -> list[dict]:
    """The rows without their wall times, a nan as the string "nan" (LipschitzLR's epoch-0 lr) so that rows compare."""
    return [
        {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items() if k != "wall_time"}
        for row in read_csv(directory / "metrics.csv")
    ]


class _Kill(BaseException):
    """A stand-in for Ctrl-C / kill: a BaseException the runner must not swallow."""


def _kill_at(epoch: int):
    def callback(e: int) -> None:
        if e == epoch:
            raise _Kill

    return callback


def test_files_of_a_finished_run(tmp_path: Path) -> None:
    cell = _cell(TINY, "momentum-cosine", trial=1)
    result = run_cell(cell, tmp_path)
    directory = tmp_path / "tiny-wine-mlp" / "momentum-cosine" / "trial-01" / "seed-0"
    assert result.status == "finished" and Path(result.directory) == directory
    config = read_json(directory / "config.json")
    assert config["lr"] == cell.lr == LogGrid(1e-3, 1.0).points(3)[1]
    assert config["rule"]["name"] == "momentum-cosine" and config["workload"]["name"] == "tiny-wine-mlp"
    meta = read_json(directory / "meta.json")
    assert meta["status"] == "finished" and meta["torch"] == torch.__version__
    assert {"started", "ended", "git_commit", "cpu", "gpu", "theorylr", "setup_time"} <= set(meta)
    rows = read_csv(directory / "metrics.csv")
    assert [r["epoch"] for r in rows] == [0.0, 1.0, 2.0]
    assert [r["step"] for r in rows] == [0.0, 3.0, 6.0]  # 134 examples, batch 48: 3 steps per epoch
    assert all(rows[i]["wall_time"] <= rows[i + 1]["wall_time"] for i in range(2))
    for key in ("train_loss", "train_accuracy", "grad_norm", "test_loss", "test_accuracy", "lr"):
        assert all(isinstance(r[key], float) and math.isfinite(r[key]) for r in rows), key
    # the cosine schedule stepped 6 times over T = 6 steps: lr reaches 0 at the end
    assert rows[0]["lr"] == pytest.approx(cell.lr) and rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert not (directory / "checkpoint.pt").exists()
    # a second run of the same cell is skipped
    again = run_cell(cell, tmp_path)
    assert again.skipped and again.status == "finished"


@pytest.mark.parametrize(
    ("workload", "spec"),
    [
        (TINY_DROPOUT, "adam-cosine"),  # dropout (global RNG), shuffling (batch RNG), per-step scheduler
        (TINY_DROPOUT, "momentum-onecycle"),  # momentum buffers, OneCycleLR state
        (TINY, "lipschitz-sgd"),  # epoch scheduler with hooks and history
        (TINY, "auto-adam"),  # Lipschitz-adaptive optimizer state
        (TINY, "dog"),  # an averaged model outside the optimizer
        (TINY, "schedulefree-adamw"),  # train/eval switching
        (TINY, "lars-decay"),  # trust ratios in optimizer state, per-step LinearLR
        (TINY, "exact-adam"),  # the estimate is redone at resume (seeded) and must give the same step
        (TINY, "prodigy"),  # d and its sums in the param groups
    ],
)
def test_resume_after_a_kill_gives_identical_metrics(tmp_path: Path, workload, spec: str) -> None:
    rule = resolve_rule(spec)
    if not rule.available():
        pytest.skip(rule.missing_message())
    epochs = 4
    cell = _cell(workload, spec, trial=1, epochs=epochs)
    straight = run_cell(cell, tmp_path / "straight")
    assert straight.status == "finished", straight.message
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path / "killed", epoch_callback=_kill_at(2))
    killed_dir = Path(straight.directory.replace("straight", "killed"))
    assert read_json(killed_dir / "meta.json")["status"] == "interrupted"
    assert (killed_dir / "checkpoint.pt").exists()
    assert len(read_csv(killed_dir / "metrics.csv")) == 3  # epochs 0, 1, 2 kept
    resumed = run_cell(cell, tmp_path / "killed")
    assert resumed.status == "finished" and not resumed.skipped
    meta = read_json(killed_dir / "meta.json")
    assert meta["resumed_from_epoch"] == 2 and len(meta["resumed"]) == 1
    assert _metrics_without_time(killed_dir) == _metrics_without_time(Path(straight.directory))


def _die_at_epoch_2(epoch: int) -> None:
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)


def _run_and_die(root: str) -> None:
    run_cell(_cell(TINY_DROPOUT, "adam", trial=2), root, epoch_callback=_die_at_epoch_2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses fork and SIGKILL")
def test_resume_after_kill_9_of_the_process(tmp_path: Path) -> None:
    """A real SIGKILL of a (forked) process after epoch 2, then the same cell again: identical metrics."""
    child = multiprocessing.get_context("fork").Process(target=_run_and_die, args=(str(tmp_path / "killed"),))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    cell = _cell(TINY_DROPOUT, "adam", trial=2)
    directory = cell.directory(tmp_path / "killed")
    assert read_json(directory / "meta.json")["status"] == "running"  # what a kill -9 leaves behind
    assert len(read_csv(directory / "metrics.csv")) == 3
    assert run_cell(cell, tmp_path / "killed").status == "finished"
    straight = run_cell(cell, tmp_path / "straight")
    assert _metrics_without_time(directory) == _metrics_without_time(Path(straight.directory))


def test_divergence_is_recorded_with_its_step(tmp_path: Path) -> None:
    workload = dataclasses.replace(get_workload("diabetes-leastsq"), epochs=6)  # least squares: overflows fast
    cell = _cell(workload, "sgd@1e10")
    result = run_cell(cell, tmp_path)
    assert result.status == "diverged"
    meta = read_json(Path(result.directory) / "meta.json")
    assert meta["status"] == "diverged"
    assert meta["diverged"]["epoch"] >= 1 and meta["diverged"]["step"] >= 1
    assert meta["diverged"]["loss"] in ("nan", "inf")
    rows = read_csv(Path(result.directory) / "metrics.csv")
    assert len(rows) == meta["diverged"]["epoch"]  # every epoch before the one that diverged
    assert run_cell(cell, tmp_path).skipped  # diverged is final: not rerun


def test_a_degenerate_lipschitz_constant_is_recorded_as_diverged(tmp_path: Path) -> None:
    """LipschitzLR's L = 0 (every penultimate ReLU killed by a too-large step) ends the run as diverged, not failed."""
    from theorylr.lipschitz.scheduler import DegenerateLipschitzError

    def collapse(epoch: int) -> None:
        if epoch == 2:
            raise DegenerateLipschitzError("LipschitzLR: the epoch's activations gave L = 0.0")

    result = run_cell(_cell(TINY, "sgd@0.1", epochs=4), tmp_path, epoch_callback=collapse)
    assert result.status == "diverged"
    meta = read_json(Path(result.directory) / "meta.json")
    assert meta["status"] == "diverged" and "L = 0.0" in meta["diverged"]["where"]
    assert meta["diverged"]["epoch"] == len(read_csv(Path(result.directory) / "metrics.csv"))


def _broken_factory(ctx) -> RuleSetup:
    raise RuntimeError("factory exploded")


def test_failure_is_recorded_and_retried(tmp_path: Path) -> None:
    rule = Rule("broken", "baseline", "always fails", _broken_factory, defaults={"lr": 0.1})
    cell = Cell(TINY, rule, 0, 0.1, 0, 2)
    result = run_cell(cell, tmp_path)
    assert result.status == "failed" and "factory exploded" in result.message
    meta = read_json(Path(result.directory) / "meta.json")
    assert meta["error"] == "RuntimeError: factory exploded" and "Traceback" in meta["traceback"]
    again = run_cell(cell, tmp_path)
    assert not again.skipped and again.status == "failed"


def test_changed_configuration_is_refused(tmp_path: Path) -> None:
    run_cell(_cell(TINY, "adam", epochs=1), tmp_path)
    with pytest.raises(ConfigMismatchError, match="epochs"):
        run_cell(_cell(TINY, "adam", epochs=2), tmp_path)


def test_plan_cells_and_seeds() -> None:
    rules = [get_rule("adam"), get_rule("lipschitz-sgd"), resolve_rule("sgd@0.5")]
    cells = plan_cells(TINY, rules, [0, 1], 3, trials=4)
    assert len(cells) == 4 * 2 + 2 + 2
    assert [c.lr for c in cells if c.rule.name == "adam" and c.seed == 0] == LogGrid(1e-4, 1e-1).points(4)
    assert {c.lr for c in cells if c.rule.name == "sgd@0.5"} == {0.5}
    assert parse_seeds(3) == [0, 1, 2] and parse_seeds("2") == [0, 1] and parse_seeds("4,1") == [4, 1]
    for bad in (0, "x", "1,1", [-1]):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def test_evaluate_matches_a_dense_reference() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Dropout(0.5), nn.Linear(7, 3)).double()
    model.train()
    x, y = torch.randn(50, 5, dtype=torch.float64), torch.randint(0, 3, (50,))
    loss = get_loss("cross_entropy")
    got = evaluate(model, loss, x, y, batch_size=8, gradient=True)
    assert model.training  # mode restored
    model.eval()
    out = model(x)
    reference = nn.functional.cross_entropy(out, y)
    grads = torch.autograd.grad(reference, list(model.parameters()))
    assert got["loss"] == pytest.approx(float(reference.detach()), rel=1e-12)
    assert got["accuracy"] == pytest.approx(float((out.argmax(1) == y).double().mean()))
    assert got["grad_norm"] == pytest.approx(float(torch.cat([g.flatten() for g in grads]).norm()), rel=1e-10)
    assert all(p.grad is None for p in model.parameters())  # no .grad touched
    # the gradient over the first 20 examples only, with chunks that straddle the limit
    sub = torch.autograd.grad(nn.functional.cross_entropy(model(x[:20]), y[:20]), list(model.parameters()))
    partial = evaluate(model, loss, x, y, batch_size=8, gradient=True, grad_samples=20)
    assert partial["grad_norm"] == pytest.approx(float(torch.cat([g.flatten() for g in sub]).norm()), rel=1e-10)


def test_compare_runs_every_cell_and_skips_missing_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prodigyopt" else real(name, *a))
    result = compare(TINY, "adam,prodigy,sgd@0.1", out=tmp_path, seeds=2, epochs=1, trials=2)
    assert result.counts() == {"finished": 2 * 2 + 2}
    assert [name for name, _ in result.skipped_rules] == ["prodigy"]
    out = capsys.readouterr().out
    assert "skipping rule 'prodigy'" in out and "pip install prodigyopt" in out
    assert not (tmp_path / "tiny-wine-mlp" / "prodigy").exists()
    record = read_json(tmp_path / "tiny-wine-mlp" / "compare.json")
    assert record["invocations"][-1]["skipped"][0]["rule"] == "prodigy"
    # the same command again: everything is skipped as done
    again = compare(TINY, "adam,prodigy,sgd@0.1", out=tmp_path, seeds=2, epochs=1, trials=2, verbose=False)
    assert all(r.skipped for r in again.results)


def test_compare_json_records_how_each_invocation_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An invocation is "running" while it runs, then "complete" (with its runs' statuses), "interrupted" or
    "error: <type>": an earlier invocation that stopped is not mistaken for one whose runs all ran."""
    from theorylr.lab import runner

    path = tmp_path / "tiny-wine-mlp" / "compare.json"
    real = runner.run_cell
    seen: list[str] = []

    def stop(cell: object, root: Path, **kwargs: object) -> object:
        seen.append(read_json(path)["invocations"][-1]["status"])
        raise exc

    for exc, status in ((KeyboardInterrupt(), "interrupted"), (RuntimeError("disk"), "error: RuntimeError")):
        monkeypatch.setattr(runner, "run_cell", stop)
        with pytest.raises(type(exc)):
            compare(TINY, "sgd@0.1", out=tmp_path, epochs=1, verbose=False)
        entry = read_json(path)["invocations"][-1]
        assert (entry["status"], entry["counts"]) == (status, {})
    assert seen == ["running", "running"]
    monkeypatch.setattr(runner, "run_cell", real)
    compare(TINY, "sgd@0.1,adam", out=tmp_path, epochs=1, trials=1, verbose=False)
    entries = read_json(path)["invocations"]
    assert entries[-1]["status"] == "complete" and entries[-1]["counts"] == {"finished": 2}
    assert entries[-1]["ended"] >= entries[-1]["time"]
    assert len({e["id"] for e in entries}) == 3


def _record_many(root: str, n: int) -> None:
    from theorylr.lab import runner

    for _ in range(n):
        runner._record_invocation(Path(root), TINY, [], [], [0], 1, 1, 1)


@pytest.mark.skipif(sys.platform == "win32", reason="the lock is fcntl's (POSIX)")
def test_concurrent_comparisons_keep_every_invocation_record(tmp_path: Path) -> None:
    """Two processes appending to one compare.json at once: the lock serialises the read-modify-writes (without it
    about half of the records were lost in this test)."""
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    workers = [ctx.Process(target=_record_many, args=(str(tmp_path), 30)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    entries = read_json(tmp_path / TINY.name / "compare.json")["invocations"]
    assert len(entries) == 60 and len({e["id"] for e in entries}) == 60


def test_rules_that_do_not_apply_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svm = dataclasses.replace(get_workload("separable-svm"), epochs=1)  # hinge loss: no closed-form Lipschitz constant
    result = compare(svm, "lipschitz-sgd,adamo,sgd@0.1", out=tmp_path, trials=1)
    assert [name for name, _ in result.skipped_rules] == ["lipschitz-sgd", "adamo"]
    assert "no closed-form Lipschitz constant" in capsys.readouterr().out
    assert result.counts() == {"finished": 1}


def test_compare_in_worker_processes_matches_in_process(tmp_path: Path) -> None:
    kwargs = {"seeds": 1, "epochs": 2, "trials": 2, "verbose": False}
    serial = compare(TINY_DROPOUT, "adam,momentum", out=tmp_path / "serial", jobs=1, **kwargs)
    parallel = compare(TINY_DROPOUT, "adam,momentum", out=tmp_path / "parallel", jobs=2, **kwargs)
    assert parallel.counts() == {"finished": 4}
    for a, b in zip(serial.results, parallel.results):
        assert _metrics_without_time(Path(a.directory)) == _metrics_without_time(Path(b.directory))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the patched worker is inherited through fork")
def test_a_worker_that_dies_is_reported_and_its_runs_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker killed from outside (here: it exits on its own in the middle of a run) ends the comparison with
    WorkerDiedError, not a BrokenProcessPool traceback; compare.json records it; the same command resumes."""
    from theorylr.cli import main
    from theorylr.lab import WorkerDiedError, runner

    real = runner.run_cell

    def dies_on_adam(cell: Cell, root: str, **kwargs: object) -> CellResult:
        if cell.rule.name == "adam":
            os._exit(9)  # as a SIGKILL would: no result, no clean-up
        return real(cell, root, **kwargs)

    monkeypatch.setattr(runner, "run_cell", dies_on_adam)
    kwargs = {"seeds": 1, "epochs": 1, "trials": 1, "verbose": False, "start_method": "fork"}
    with pytest.raises(WorkerDiedError, match=r"a worker process died .* run the same command again to resume"):
        compare(TINY, "adam,sgd@0.1", out=tmp_path, jobs=2, **kwargs)
    assert read_json(tmp_path / TINY.name / "compare.json")["invocations"][-1]["status"] == "error: WorkerDiedError"
    argv = ["compare", "--workload", "iris-softmax", "--rules", "adam,sgd@0.1", "--epochs", "1", "--trials", "1"]
    argv += ["--jobs", "2", "--threads", "1", "--out", str(tmp_path / "cli"), "--quiet"]
    assert main(argv) == 1  # the command: one line and exit 1
    assert "theorylr compare: error: a worker process died" in capsys.readouterr().err
    monkeypatch.setattr(runner, "run_cell", real)
    again = compare(TINY, "adam,sgd@0.1", out=tmp_path, jobs=2, **kwargs)
    assert again.counts() == {"finished": 2}


def test_compare_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rule must be one of"):
        compare(TINY, "no-such-rule", out=tmp_path)
    with pytest.raises(ValueError, match="must not repeat"):
        compare(TINY, "adam,adam", out=tmp_path)
    with pytest.raises(ValueError, match="trials"):
        compare(TINY, "adam", out=tmp_path, trials=0)
    with pytest.raises(ValueError, match="data-dir"):
        compare("mnist-lenet", "adam", out=tmp_path)
    with pytest.raises(ValueError, match="workload must be one of"):
        compare("nope", "adam", out=tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# damaged files, bad arguments


def _interrupted_at_2(cell: Cell, root: Path) -> Path:
    """Run ``cell`` until a kill after epoch 2: its directory holds meta.json, metrics.csv (3 rows), checkpoint.pt."""
    with pytest.raises(_Kill):
        run_cell(cell, root, epoch_callback=_kill_at(2))
    return cell.directory(root)


@pytest.mark.parametrize(("content", "reason"), [('{"status": "fini', "Unterminated string"), ("[]", "a JSON list")])
def test_an_unreadable_meta_json_redoes_a_finished_run(tmp_path: Path, content: str, reason: str) -> None:
    cell = _cell(TINY, "adam", trial=1, epochs=3)
    straight = run_cell(cell, tmp_path / "straight")
    directory = Path(run_cell(cell, tmp_path / "damaged").directory)
    (directory / "meta.json").write_text(content)
    with pytest.warns(RuntimeWarning, match=rf"meta\.json cannot be read \({reason}.*\): the run is redone"):
        again = run_cell(cell, tmp_path / "damaged")
    assert again.status == "finished" and not again.skipped  # no checkpoint left: redone from epoch 0
    assert read_json(directory / "meta.json")["status"] == "finished"
    assert _metrics_without_time(directory) == _metrics_without_time(Path(straight.directory))


def test_an_unreadable_meta_json_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    cell = _cell(TINY, "adam", trial=1, epochs=4)
    directory = _interrupted_at_2(cell, tmp_path)
    (directory / "meta.json").write_text('{"status": "interr')
    with pytest.warns(RuntimeWarning, match="meta.json cannot be read"):
        again = run_cell(cell, tmp_path)
    assert again.status == "finished"
    assert read_json(directory / "meta.json")["resumed_from_epoch"] == 2


@pytest.mark.parametrize("content", ['{"workload": ', '"a string"'])
def test_an_unreadable_config_json_is_a_clear_error(tmp_path: Path, content: str) -> None:
    cell = _cell(TINY, "sgd@0.1", epochs=1)
    run_cell(cell, tmp_path)
    path = cell.directory(tmp_path) / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigMismatchError, match=rf"{re.escape(str(path))}.*cannot be read.*delete that directory"):
        run_cell(cell, tmp_path)
    with pytest.raises(ValueError, match=r"config\.json cannot be read"):
        compare(TINY, "sgd@0.1", out=tmp_path, epochs=1, verbose=False)


@pytest.mark.parametrize("content", ["garbage{", '{"workload": {}}'])
def test_an_unreadable_compare_json_is_a_clear_error(tmp_path: Path, content: str) -> None:
    compare(TINY, "sgd@0.1", out=tmp_path, epochs=1, verbose=False)
    path = tmp_path / "tiny-wine-mlp" / "compare.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} cannot be read .*move or delete it"):
        compare(TINY, "sgd@0.1", out=tmp_path, epochs=1, verbose=False)
    assert path.read_text() == content  # never silently replaced


@pytest.mark.parametrize("damage", ["truncate", "not-a-dict"])
def test_an_unreadable_checkpoint_is_discarded_and_the_run_restarts(tmp_path: Path, damage: str) -> None:
    cell = _cell(TINY_DROPOUT, "adam-cosine", trial=1, epochs=4)
    straight = run_cell(cell, tmp_path / "straight")
    directory = _interrupted_at_2(cell, tmp_path / "damaged")
    checkpoint = directory / "checkpoint.pt"
    if damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    else:
        torch.save([1, 2], checkpoint)
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(checkpoint))} cannot be read .*restarts from epoch 0"):
        again = run_cell(cell, tmp_path / "damaged")
    assert again.status == "finished", again.message
    meta = read_json(directory / "meta.json")
    assert "resumed_from_epoch" not in meta and str(checkpoint) in meta["discarded_checkpoint"]
    assert _metrics_without_time(directory) == _metrics_without_time(Path(straight.directory))


def test_a_resumed_run_drops_metrics_rows_written_after_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between writing metrics.csv and the checkpoint leaves a row the checkpoint does not have."""
    from theorylr.lab import runner

    cell = _cell(TINY, "sgd@0.1", epochs=4)
    directory = _interrupted_at_2(cell, tmp_path)
    rows = read_csv(directory / "metrics.csv")
    runner.write_csv(directory / "metrics.csv", [*rows, {**rows[-1], "epoch": 3}])

    def diverge_at_3(row: dict, epoch: int, step: int) -> None:
        if epoch == 3:
            raise runner._DivergedError(epoch, step, math.nan, "training loss")

    monkeypatch.setattr(runner, "_check_finite", diverge_at_3)
    assert run_cell(cell, tmp_path).status == "diverged"
    assert [r["epoch"] for r in read_csv(directory / "metrics.csv")] == [0.0, 1.0, 2.0]


def test_compare_checks_the_device_first(tmp_path: Path) -> None:
    for bad in ("tpu", "cuda:x", ""):
        with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"):
            compare(TINY, "sgd@0.1", out=tmp_path, epochs=1, device=bad)
    unavailable = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match=rf"device '{unavailable}' is not available"):
        compare(TINY, "sgd@0.1", out=tmp_path, epochs=1, device=unavailable)
    assert not any(tmp_path.iterdir())  # nothing was run nor written
    with pytest.raises(ValueError, match="device must be"):
        run_cell(_cell(TINY, "sgd@0.1", epochs=1), tmp_path, device="tpu")


def test_compare_checks_the_data_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from theorylr.lab import runner, workloads

    missing = tmp_path / "no-such-folder"
    expected = rf"cannot load the mnist data of workload 'mnist-logreg' .*{re.escape(str(missing))}"
    with pytest.raises(ValueError, match=expected):
        compare("mnist-logreg", "sgd@0.1", out=tmp_path / "out", data_dir=missing, epochs=1)
    assert not (tmp_path / "out").exists()

    real = workloads.Workload.load_data

    def no_training_examples(self: workloads.Workload, data_dir: object = None) -> object:
        data = real(self, None)
        return dataclasses.replace(data, x_train=data.x_train[:0], y_train=data.y_train[:0])

    monkeypatch.setattr(runner, "_DATA_CACHE", {})
    monkeypatch.setattr(workloads.Workload, "load_data", no_training_examples)
    with pytest.raises(ValueError, match=r"hold no examples \(x_train empty\)"):
        compare(TINY, "sgd@0.1", out=tmp_path / "out", epochs=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rules", ["", " , ", []])
def test_compare_refuses_an_empty_rule_list(tmp_path: Path, rules: str | list[str]) -> None:
    with pytest.raises(ValueError, match=r"rules must name at least one rule, one of .*adam.*lipschitz-sgd"):
        compare(TINY, rules, out=tmp_path)


def test_a_file_system_without_locks_still_records_invocations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flock refused (ENOLCK on some network mounts): compare.json is written unlocked, as before locks."""
    fcntl = pytest.importorskip("fcntl")

    def refuse(fd: int, operation: int) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    compare(TINY, "sgd@0.1", out=tmp_path, epochs=1, verbose=False)
    assert read_json(tmp_path / TINY.name / "compare.json")["invocations"][-1]["status"] == "complete"


def test_runs_on_other_data_files_are_refused_and_the_same_files_elsewhere_resume(tmp_path: Path) -> None:
    """The fingerprint of data read from --data-dir is part of every run's config: a seed added (or a run resumed)
    on other files is refused, never mixed into one summary; the same files in another folder are the same data."""
    import shutil

    import numpy as np

    from tests.data.test_files import idx_bytes, make_mnist, write
    from theorylr.lab.runner import ConfigMismatchError

    first, moved, other = tmp_path / "a", tmp_path / "moved", tmp_path / "b"
    make_mnist(first, size=28)
    shutil.copytree(first, moved)
    make_mnist(other, size=28)
    write(other / "train-labels-idx1-ubyte", idx_bytes(np.zeros(20, dtype=np.uint8)))  # other labels
    out = tmp_path / "out"
    compare("mnist-logreg", "sgd@0.1", out=out, data_dir=first, seeds=1, epochs=1, verbose=False)
    config = read_json(out / "mnist-logreg" / "sgd@0.1" / "trial-00" / "seed-0" / "config.json")
    assert len(config["data"]["sha256"]) == 64 and config["data"]["train"] == 20
    again = compare("mnist-logreg", "sgd@0.1", out=out, data_dir=moved, seeds=2, epochs=1, verbose=False)
    assert again.counts() == {"finished": 2}
    with pytest.raises(ConfigMismatchError, match="data differ: the files read from --data-dir"):
        compare("mnist-logreg", "sgd@0.1", out=out, data_dir=other, seeds=3, epochs=1, verbose=False)


def test_built_in_data_keep_their_config_without_a_fingerprint(tmp_path: Path) -> None:
    compare(TINY, "sgd@0.1", out=tmp_path, seeds=1, epochs=1, verbose=False)
    config = next(tmp_path.rglob("config.json"))
    assert "data" not in read_json(config)


def test_compare_with_no_runnable_rule_is_an_error_naming_each_reason(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"none of the rules can run on workload 'separable-svm'.*exact-adam: .*lipschitz-sgd: "
    ):
        compare("separable-svm", "exact-adam,lipschitz-sgd", out=tmp_path, epochs=1, verbose=False)
    assert not any(tmp_path.iterdir())  # nothing recorded: the report will not claim a comparison ran


def test_a_resume_keeps_the_first_parts_environment_and_records_what_changed(tmp_path: Path) -> None:
    """meta.json's threads, device, versions describe where the run started; each resume adds what differed (the
    run's wall time spans both parts, so a figure read from it must not take the last part's thread count alone)."""
    cell = _cell(TINY, "sgd@0.1", epochs=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.raises(_Kill):
            run_cell(cell, tmp_path, epoch_callback=_kill_at(1))
        torch.set_num_threads(2)
        assert run_cell(cell, tmp_path).status == "finished"
    finally:
        torch.set_num_threads(threads)
    meta = read_json(cell.directory(tmp_path) / "meta.json")
    assert meta["threads"] == 1 and "git_dirty" in meta
    (part,) = meta["resumed_environment"]
    assert part["threads"] == 2 and part["started"] == meta["resumed"][0] and "torch" not in part


def test_a_resume_keeps_the_first_setup_time(tmp_path: Path) -> None:
    """A resume builds the rule again (exact-step Adam estimates K_hat again, to the same number); meta.json's
    ``setup_time``, which epoch 0's wall time includes, was overwritten by the resume's."""
    cell = _cell(TINY, "exact-adam", epochs=3)
    directory = _interrupted_at_2(cell, tmp_path)
    first = read_json(directory / "meta.json")
    assert run_cell(cell, tmp_path).status == "finished"
    meta = read_json(directory / "meta.json")
    assert meta["setup_time"] == first["setup_time"] and meta["resume_setup_time"] > 0
    assert meta["setup"] == first["setup"]  # the same K_hat and step
    straight = run_cell(cell, tmp_path / "straight")
    assert "resume_setup_time" not in read_json(Path(straight.directory) / "meta.json")
