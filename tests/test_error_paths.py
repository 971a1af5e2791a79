"""Error paths no other test reaches, each through the public call a user would make, and three documented
behaviours of the lab (docs/lab.md, "Notes on individual rules") that had no test: a divergence in the middle of an
epoch, LARS with ``exclude_1d`` and ``decay="inverse"``, and exact-adam's ``@LR`` multiplier.

Every row of ``_RAISES`` names (as a comment) the ``raise`` it reaches; ``_SETUP_ERRORS`` are the rule set-up errors
that :func:`~theorylr.lab.run_cell` records as a ``failed`` run instead of raising.

Not tested, as no call reaches them: ``estimate/_state.py`` ``batch_weights``' "every batch is empty" (``as_batches``
raises first), ``lab/rules.py`` ``_StepFactor``'s unknown decay (built for the two names it handles only),
``_load``'s ``RuleUnavailableError`` for theorylr's own optimizers (the ``optimizer`` option is checked against their
names first) and ``optim/adaptive.py`` ``_LipschitzAdaptive._betas`` (abstract; every class overrides it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn

import theorylr
from tests.lab.conftest import TINY
from theorylr import theory
from theorylr.cli import main
from theorylr.data import Dataset, load_cifar10, make_quadratic, read_cifar10_batch, scale_features
from theorylr.distributed import sharded_norm_fn
from theorylr.estimate import data_loss, hessian_spectral_norm
from theorylr.lab import (
    Cell,
    CellResult,
    Rule,
    Workload,
    get_loss,
    load_runs,
    parse_seeds,
    register_workload,
    resolve_rule,
    run_cell,
)
from theorylr.lab._files import read_csv, read_json
from theorylr.lab.reproduce.claims import verdict_ratio, verdict_universal
from theorylr.lab.reproduce.exact_adam import batch_size_verdict
from theorylr.lab.reproduce.lars import lars_trajectory
from theorylr.lipschitz import ActivationTracker, LipschitzLR, gradient_norm_bound
from theorylr.models import BasicBlock
from theorylr.optim import LARS, AdaMo, OptimInfo, get_optimizer_info
from theorylr.optim.adaptive import adaptive_lipschitz

_X = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
_Y = torch.tensor([0, 1, 0, 1])
_CE = nn.CrossEntropyLoss()
_NOT_A_TENSOR: Any = [[1.0, 2.0, 3.0]]  # typed Any: the wrong type is the point
_HINGE = dataclasses.replace(TINY, name="tiny-wine-hinge", loss="multiclass_hinge", rule_options={})


def _frozen() -> nn.Module:
    return nn.Linear(3, 2).requires_grad_(False)


def _cell(spec: str, workload: Workload = TINY, epochs: int = 1) -> Cell:
    rule = resolve_rule(spec)
    return Cell(workload, rule, 0, float(rule.defaults["lr"]), 0, epochs)


def _with_options(**rule_options: dict[str, Any]) -> Workload:
    return dataclasses.replace(TINY, rule_options={**TINY.rule_options, **rule_options})


def _gzip_garbage(tmp: Path) -> object:
    path = tmp / "data_batch_1.bin.gz"
    path.write_bytes(b"\x1f\x8b" + b"not deflate data")
    return read_cifar10_batch(path)


def _cifar_binary_class_names(tmp: Path) -> object:
    """A complete CIFAR-10 folder (one record per batch) whose batches.meta.txt is not UTF-8 text."""
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (tmp / name).write_bytes(bytes(3073))
    (tmp / "batches.meta.txt").write_bytes(b"\xff\xfe\x00")
    return load_cifar10(tmp)


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class _PairNet(nn.Module):
    """A head on the first output of a module that returns a pair."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = _Pair(), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)[0])


def _tracked_pair_output() -> None:
    model = _PairNet()
    tracker = ActivationTracker(model, "softmax", penultimate="body")  # held: the hook lives as long as the tracker
    model(_X)
    tracker.close()


def _lipschitz_lr_step_after_close() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = LipschitzLR(optimizer, model, loss="softmax")
    model(_X)
    optimizer.step()
    scheduler.step()
    scheduler.close()
    scheduler.step()


def _adamo_step(**kwargs: Any) -> None:
    model = nn.Linear(3, 2)
    optimizer = AdaMo(model.parameters(), lipschitz="observed", **kwargs)
    _CE(model(_X), _Y).backward()
    optimizer.step()


def _adamo_closed_form_by_editing_the_group() -> None:
    model = nn.Linear(3, 2)
    optimizer = AdaMo(model.parameters(), lipschitz="observed")
    # The constructor, add_param_group and load_state_dict refuse closed_form without a model (another message);
    # editing param_groups, as one edits "lr", is the way left to ask for it.
    optimizer.param_groups[0]["lipschitz"] = "closed_form"
    _CE(model(_X), _Y).backward()
    optimizer.step()


def _adaptive_step(first_moment: bool, second_moment: bool) -> None:
    """The public functional step, beta1 0.9, without lipschitz_sq_avgs and with or without the moment buffers."""
    moment = [torch.zeros(2)]
    adaptive_lipschitz(
        [torch.zeros(2)],
        [torch.ones(2)],
        moment if first_moment else None,
        moment if second_moment else None,
        [torch.zeros(())],
        None,
        [torch.zeros(())],
        lipschitz=torch.tensor(1.0),
        lipschitz_sq=None,
        lr=0.1,
        beta1=0.9,
        beta2=0.9,
        eps=1e-8,
        weight_decay=0.0,
        bias_correction=False,
        initial_step_size=None,
        initial_steps=0,
        maximize=False,
        foreach=False,
    )


def _no_factory(ctx: Any) -> Any:
    raise AssertionError("never built")


# (id, call(tmp_path), exception, literal part of the message), each under a comment naming the raise it reaches.
_RAISES: list[tuple[str, Callable[[Path], object], type[BaseException], str]] = [
    # data/dataset.py:60, 97
    (
        "dataset-x-list",
        lambda tmp: Dataset("t", _NOT_A_TENSOR, _Y, _X, _Y, num_classes=2),
        ValueError,
        "x_train and y_train must be torch tensors",
    ),
    (
        "dataset-regression-int-y",
        lambda tmp: Dataset("t", _X, _Y, _X, _Y, task="regression"),
        ValueError,
        "y_train must be a floating tensor for regression",
    ),
    # data/files.py:82, 305, 328
    ("cifar-corrupt-gzip", _gzip_garbage, ValueError, "data_batch_1.bin.gz: corrupt or truncated gzip data ("),
    (
        "cifar-binary-class-names",
        _cifar_binary_class_names,
        ValueError,
        "batches.meta.txt: not a text file of class names ('utf-8' codec can't decode",
    ),
    (
        "cifar-no-directory",
        lambda tmp: load_cifar10(tmp / "none"),
        FileNotFoundError,
        "none: not a directory (expected the folder holding CIFAR-10's .bin files)",
    ),
    # data/scaling.py:75
    (
        "scale-features-list",
        lambda tmp: scale_features(_NOT_A_TENSOR, _X, "standardize"),
        ValueError,
        "x_train must be a torch.Tensor (got list)",
    ),
    # data/synthetic.py:305
    (
        "quadratic-int-dtype",
        lambda tmp: make_quadratic(dtype=torch.int64),
        ValueError,
        "dtype must be a floating torch dtype such as torch.float32 (got torch.int64)",
    ),
    (
        "quadratic-default-minimizer-1d",
        lambda tmp: make_quadratic((2.0,)),
        ValueError,
        "minimizer must be given with 1 eigenvalues: its default, (1, 1), has 2 entries",
    ),
    # estimate/_state.py:106, 145, 169, 212, 220
    (
        "estimate-empty-batches",
        lambda tmp: hessian_spectral_norm(nn.Linear(3, 2), _CE, [(_X[:0], _Y[:0])]),
        ValueError,
        "data holds no samples (every batch is empty)",
    ),
    (
        "estimate-no-batch-dim",
        lambda tmp: data_loss(nn.Linear(3, 2), _CE, ({"x": _X}, torch.tensor(0))),
        ValueError,
        "cannot tell a batch's size: neither its targets nor its inputs is a tensor with a batch dim",
    ),
    (
        "estimate-loss-not-callable",
        lambda tmp: hessian_spectral_norm(nn.Linear(3, 2), cast(Any, "mse"), (_X, _Y)),
        ValueError,
        "loss_fn must be callable as loss_fn(outputs, targets) (got 'mse')",
    ),
    (
        "estimate-empty-params",
        lambda tmp: hessian_spectral_norm(nn.Linear(3, 2), _CE, (_X, _Y), params=[]),
        ValueError,
        "params is empty: give at least one parameter of model, or None for all of them",
    ),
    (
        "estimate-frozen-model",
        lambda tmp: hessian_spectral_norm(_frozen(), _CE, (_X, _Y)),
        ValueError,
        "params must hold at least one tensor that requires grad",
    ),
    (
        "estimate-mixed-dtypes",
        lambda tmp: hessian_spectral_norm(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2).double()), _CE, (_X, _Y)),
        ValueError,
        "params must share one dtype and one device (got dtypes ['torch.float32', 'torch.float64']",
    ),
    # lab/_files.py check_config_values: an option config.json cannot record, refused when the workload is made
    # (it was a TypeError from inside the first run: "'object' object is not iterable")
    (
        "workload-option-not-json",
        lambda tmp: _with_options(sgd={"extra": object()}),
        ValueError,
        "must hold only what config.json can record (numbers, strings, None, lists and mappings): "
        "rule_options['sgd']['extra'] is of type object",
    ),
    (
        "rule-default-not-json",
        lambda tmp: Rule("r", "theory", "d", _no_factory, defaults={"lr": 0.1, "fn": print}),
        ValueError,
        "rule 'r' defaults must hold only what config.json can record",
    ),
    # lab/losses.py:108, 131, 152
    (
        "loss-no-classes",
        lambda tmp: get_loss("cross_entropy").outputs(None),
        ValueError,
        "loss 'cross_entropy' needs a classification dataset (got num_classes=None)",
    ),
    (
        "loss-regression-accuracy",
        lambda tmp: get_loss("least_squares").correct(_X, _X),
        ValueError,
        "loss 'least_squares' is a regression loss: accuracy is not defined",
    ),
    (
        "loss-unknown",
        lambda tmp: get_loss("hinge"),
        ValueError,
        "loss must be one of bce, binary_hinge, cross_entropy, least_squares, multiclass_hinge (got 'hinge')",
    ),
    # lab/reproduce/claims.py:94, 108; exact_adam.py:178; lars.py:159, 168
    ("claim-no-checks", lambda tmp: verdict_universal([]), ValueError, "checks must be non-empty: a claim with"),
    (
        "claim-thresholds-reversed",
        lambda tmp: verdict_ratio(1.0, 3.0, 2.0),
        ValueError,
        "holds_below must be <= partly_below (got 3.0 > 2.0)",
    ),
    (
        "batch-size-verdict-one",
        lambda tmp: batch_size_verdict([(64.0, 0.1)]),
        ValueError,
        "values must hold at least two batch sizes",
    ),
    (
        "trajectory-lr-length",
        lambda tmp: lars_trajectory(torch.square, [0.5], [0.1, 0.2], 3),
        ValueError,
        "lr must be a number or a sequence of 3 numbers (got 2)",
    ),
    (
        "trajectory-optimizer",
        lambda tmp: lars_trajectory(torch.square, [0.5], 0.1, 3, optimizer="adam"),
        ValueError,
        "optimizer must be 'lars' or 'gd' (got 'adam')",
    ),
    # lab/rules.py:208
    (
        "rule-name-with-space",
        lambda tmp: Rule("a b", "theory", "d", _no_factory),
        ValueError,
        "rule name must be non-empty without '/', '\\', ' ' or ',' (got 'a b')",  # one backslash, as in the name
    ),
    # lab/runner.py:203, 216
    (
        "seeds-list-of-words",
        lambda tmp: parse_seeds("0,one"),
        ValueError,
        "seeds must be a count or a comma-separated list of integers (got '0,one')",
    ),
    ("seeds-bool", lambda tmp: parse_seeds(True), ValueError, "seeds must be a count or a list of integers (got True)"),
    # lab/suggest.py:851, 895
    (
        "suggest-options-list",
        lambda tmp: theorylr.suggest(
            nn.Linear(3, 2), _CE, (_X, _Y), total_steps=9, estimate_options=cast(Any, [("tol", 1.0)])
        ),
        ValueError,
        "estimate_options must be a mapping or None (got list)",
    ),
    (
        "suggest-frozen-model",
        lambda tmp: theorylr.suggest(_frozen(), _CE, (_X, _Y), total_steps=9),
        ValueError,
        "model must have at least one parameter that requires grad",
    ),
    # lab/workloads.py:276
    (
        "register-dict",
        lambda tmp: register_workload(cast(Any, {"name": "x"})),
        ValueError,
        "workload must be a Workload (got dict)",
    ),
    # lipschitz/bounds.py:26, 223
    (
        "bound-activations-list",
        lambda tmp: gradient_norm_bound(_NOT_A_TENSOR, "softmax"),
        ValueError,
        "activations must be a torch.Tensor of shape (m, features) (got list)",
    ),
    (
        "bound-one-probability-column",
        lambda tmp: gradient_norm_bound(_X, "softmax", targets=torch.ones(4, 1)),
        ValueError,
        "probability targets need k >= 2 columns (got 1)",
    ),
    # lipschitz/scheduler.py:318
    (
        "lipschitz-lr-step-after-close",
        lambda tmp: _lipschitz_lr_step_after_close(),
        RuntimeError,
        "LipschitzLR.step(): the tracker is closed (close() removed its hook)",
    ),
    # lipschitz/tracker.py:249, 411, 414, 502, 607
    (
        "tracker-tuple-output",
        lambda tmp: _tracked_pair_output(),
        TypeError,
        "penultimate module _Pair returned tuple; the tracker needs a tensor output",
    ),
    (
        "tracker-no-linear",
        lambda tmp: ActivationTracker(nn.Conv1d(1, 1, 1)),
        ValueError,
        "num_classes must be given for loss='softmax' when the model has no nn.Linear",
    ),
    (
        "tracker-one-output",
        lambda tmp: ActivationTracker(nn.Linear(3, 1)),
        ValueError,
        "num_classes must be given for loss='softmax' when the last nn.Linear has 1 output (need k >= 2)",
    ),
    (
        "tracker-penultimate-list",
        lambda tmp: ActivationTracker(nn.Linear(3, 2), penultimate=_NOT_A_TENSOR),
        ValueError,
        "penultimate must be None, a module name or an nn.Module (got list)",
    ),
    (
        "tracker-targets-list",
        lambda tmp: ActivationTracker(nn.Linear(3, 2)).observe_targets(_NOT_A_TENSOR),
        ValueError,
        "targets must be a torch.Tensor (got list)",
    ),
    # models/resnet.py:51
    (
        "block-a-fewer-channels",
        lambda tmp: BasicBlock(16, 8, stride=2, shortcut="A"),
        ValueError,
        "shortcut 'A' needs stride 2 and out_channels >= in_channels when the shape changes",
    ),
    # optim/adaptive.py:211, 213, 961, 1009
    (
        "adaptive-beta1-no-moment",
        lambda tmp: _adaptive_step(False, False),
        ValueError,
        "beta1 must be 0 when there is no first moment (got 0.9)",
    ),
    (
        "adaptive-second-moment",
        lambda tmp: _adaptive_step(True, True),
        ValueError,
        "the second moment needs lipschitz_sq_avgs and lipschitz_sq",
    ),
    (
        "adamo-closed-form-edited",
        lambda tmp: _adamo_closed_form_by_editing_the_group(),
        RuntimeError,
        "lipschitz='closed_form' needs a tracker; build the optimizer with model=",
    ),
    (
        "adamo-max-fn-scalar",
        lambda tmp: _adamo_step(max_fn=torch.sum),
        RuntimeError,
        "max_fn must return a tensor of shape (2,), as it was given (got tensor(",
    ),
    # optim/lars.py:1008
    (
        "lars-mean-ratio-sharded",
        lambda tmp: LARS(nn.Linear(3, 2).parameters(), norm="mean_ratio", norm_fn=sharded_norm_fn()),
        ValueError,
        "norm='mean_ratio' cannot take sharded_norm_fn",
    ),
    # optim/registry.py:61, 151
    (
        "optim-info-not-optimizer",
        lambda tmp: OptimInfo("x", "torch.nn:Linear", "d", {}).load(),
        TypeError,
        "torch.nn:Linear is not a torch.optim.Optimizer subclass",
    ),
    (
        "optim-info-unknown",
        lambda tmp: get_optimizer_info("Adam"),
        ValueError,
        "optimizer must be one of AdaMo, AdaptiveRMSprop, AutoAdam, LARS, PercentDelta (got 'Adam')",
    ),
    # theory/lars.py:243, 284, 509, 548, 583
    (
        "lars-1d-steps-mismatch",
        lambda tmp: theory.lars_1d_trajectory(0.5, 1.0, [0.1, 0.2], steps=3),
        ValueError,
        "steps must equal len(lr) (got steps=3, len(lr)=2)",
    ),
    ("fallback-from-zero", lambda tmp: theory.steps_to_fallback(0.0, 0.5, 0.1), ValueError, "w0 must be non-zero"),
    (
        "theorem3-no-lrs",
        lambda tmp: theory.theorem3_bound([], lipschitz=1.0, m1=1.0, m2=1.0, w_star_norm=1.0),
        ValueError,
        "lrs must be non-empty",
    ),
    (
        "cosine-bound-m-above-l",
        lambda tmp: theory.strongly_convex_cosine_bound(2.0, 1.0),
        ValueError,
        "m must be <= lipschitz (got m=2.0, lipschitz=1.0)",
    ),
    (
        "region-cosine-above-one",
        lambda tmp: theory.region_radius(0.1, 1.0, 1.5),
        ValueError,
        "cosine must be a finite number in (0, 1] (got 1.5)",
    ),
]


@pytest.mark.parametrize(("call", "exception", "message"), [r[1:] for r in _RAISES], ids=[r[0] for r in _RAISES])
def test_error_path(
    tmp_path: Path, call: Callable[[Path], object], exception: type[BaseException], message: str
) -> None:
    with pytest.raises(exception, match=re.escape(message)):
        call(tmp_path)


# (id, rule spec, workload, exception, literal part of the message): set-up errors that run_cell records in
# meta.json (status "failed", error "<type>: <message>") rather than raising.
_SETUP_ERRORS: list[tuple[str, str, Workload, type[Exception], str]] = [
    # a typo in the optimizer option (it was reported as a class that "cannot be imported here")
    (
        "lars-optimizer-typo",
        "lars",
        _with_options(lars={"optimizer": "LRAS"}),
        ValueError,
        "rule option optimizer must be one of 'LARS', 'PercentDelta' (got 'LRAS'; did you mean 'LARS'?)",
    ),
    (
        "adamo-optimizer-typo",
        "adamo",
        _with_options(adamo={"optimizer": "Adamo"}),
        ValueError,
        "rule option optimizer must be one of 'AdaMo', 'AutoAdam', 'AdaptiveRMSprop' (got 'Adamo'",
    ),
    # lab/rules.py:390, 401, 477
    (
        "sgd-unknown-schedule",
        "sgd@0.1",
        _with_options(sgd={"schedule": "warmup"}),
        ValueError,
        "schedule must be one of constant, linear, step, inverse-sqrt",
    ),
    (
        "sgd-unknown-optimizer",
        "sgd@0.1",
        _with_options(sgd={"optimizer": "lbfgs"}),
        ValueError,
        "optimizer must be one of 'sgd', 'adam', 'rmsprop' (got 'lbfgs')",
    ),
    (
        "lars-unknown-decay",
        "lars",
        _with_options(lars={"decay": "cosine"}),
        ValueError,
        "decay must be None, 'linear' or 'inverse' (got 'cosine')",
    ),
    # lab/rules.py:594, 638: compare() skips these pairs (Rule.unsuitable); run_cell gets the factory's error
    (
        "lipschitz-sgd-on-hinge",
        "lipschitz-sgd",
        _HINGE,
        ValueError,
        "LipschitzLR has no closed form for the loss 'multiclass_hinge'",
    ),
    (
        "adamo-on-hinge",
        "adamo",
        _HINGE,
        ValueError,
        "AdaMo has no closed-form Lipschitz estimate for the loss 'multiclass_hinge'",
    ),
]


@pytest.mark.parametrize(
    ("spec", "workload", "exception", "message"), [r[1:] for r in _SETUP_ERRORS], ids=[r[0] for r in _SETUP_ERRORS]
)
def test_a_rule_set_up_error_is_recorded_as_failed(
    tmp_path: Path, spec: str, workload: Workload, exception: type[Exception], message: str
) -> None:
    result = run_cell(_cell(spec, workload), tmp_path)
    assert result.status == "failed"
    assert result.message.startswith(f"{exception.__name__}: ") and message in result.message, result.message
    assert read_json(Path(result.directory) / "meta.json")["error"] == result.message


def test_an_output_directory_that_cannot_be_written_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits: make os.access answer as for another user
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real(path, mode, **kw))
    out = locked / "runs"
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 2  # commands/_common.py:55
    captured = capsys.readouterr()
    assert captured.err.strip() == f"theorylr demo: error: --out {out}: {locked} is not writable"
    assert not out.exists()


def test_load_runs_flags_a_metrics_csv_that_the_csv_module_cannot_parse(tmp_path: Path) -> None:
    result = run_cell(_cell("sgd@0.1"), tmp_path)
    metrics = Path(result.directory) / "metrics.csv"
    with metrics.open("a", encoding="utf-8") as handle:  # one field over the csv module's limit (131072)
        handle.write("x" * 200_000 + "\n")
    pattern = rf"{re.escape(str(metrics))} cannot be read \(ValueError: not a readable CSV file \(field larger"
    with pytest.warns(RuntimeWarning, match=pattern):  # lab/_files.py:314
        (run,) = load_runs(tmp_path)
    assert run.status == "incomplete" and re.search(pattern, run.problem or "")


class _Kill(BaseException):
    """A stand-in for Ctrl-C: the runner records it and lets it through, keeping the checkpoint."""


def _kill(epoch: int) -> None:
    raise _Kill


def test_a_checkpoint_without_the_runners_keys_is_discarded(tmp_path: Path) -> None:
    cell = _cell("sgd@0.1", epochs=2)
    with pytest.raises(_Kill):
        run_cell(cell, tmp_path, epoch_callback=_kill)
    checkpoint = cell.directory(tmp_path) / "checkpoint.pt"
    assert checkpoint.exists()
    torch.save({"epoch": 1, "step": 3}, checkpoint)  # a dict, loadable, but not a theorylr checkpoint
    pattern = rf"{re.escape(str(checkpoint))} cannot be read \(ValueError: no elapsed, rows, model, optimizer"
    with pytest.warns(RuntimeWarning, match=pattern + r".*restarts from epoch 0"):  # lab/runner.py:801
        result = run_cell(cell, tmp_path)
    assert result.status == "finished" and result.epochs_done == 2
    assert re.match(pattern, read_json(cell.directory(tmp_path) / "meta.json")["discarded_checkpoint"])


# ----------------------------------------------------------------------------------------------------------------
# documented behaviours (docs/lab.md, "Notes on individual rules")


def _steps_per_epoch(workload: Workload) -> int:
    assert workload.batch_size is not None
    return math.ceil(workload.load_data().num_train / workload.batch_size)


def _rows(result: CellResult) -> list[dict[str, Any]]:
    return read_csv(Path(result.directory) / "metrics.csv")


def test_a_non_finite_mini_batch_loss_mid_epoch_is_a_divergence(tmp_path: Path) -> None:
    """At lr 1e30 the first mini-batch (at w0) is finite and the first update overflows: the second mini-batch of
    epoch 1 has a non-finite loss, before the epoch's full-batch evaluation (lab/runner.py:753)."""
    assert _steps_per_epoch(TINY) > 2  # step 2 is inside the epoch, not its last
    result = run_cell(_cell("sgd@1e+30", epochs=3), tmp_path)
    assert result.status == "diverged" and "non-finite training loss" in result.message
    meta = read_json(Path(result.directory) / "meta.json")
    assert meta["status"] == "diverged" and meta["epochs_done"] == 0
    diverged = meta["diverged"]
    assert {k: diverged[k] for k in ("where", "epoch", "step")} == {"where": "training loss", "epoch": 1, "step": 2}
    assert not math.isfinite(float(diverged["loss"]))
    assert [row["epoch"] for row in _rows(result)] == [0]


def test_lars_exclude_1d_with_inverse_decay(tmp_path: Path) -> None:
    """``lr/(1+t)`` after ``t`` optimizer steps, and biases on plain SGD (trust ratio 1) while weights are adapted."""
    workload = _with_options(lars={"exclude_1d": True, "decay": "inverse"})
    cell = _cell("lars", workload, epochs=2)
    result = run_cell(cell, tmp_path)
    assert result.status == "finished", result.message
    rows = _rows(result)
    per_epoch = _steps_per_epoch(workload)
    assert [row["step"] for row in rows] == [epoch * per_epoch for epoch in range(3)]
    for row in rows:
        assert row["lr"] == pytest.approx(cell.lr / (1 + row["step"]), rel=1e-6)
    biases = [k for k in rows[0] if k.startswith("trust_ratio/") and k.endswith(".bias")]
    weights = [k for k in rows[0] if k.startswith("trust_ratio/") and k.endswith(".weight")]
    assert biases and weights
    for row in rows[1:]:
        assert all(row[k] == 1.0 for k in biases), row
        assert all(row[k] != pytest.approx(1.0) for k in weights), row


def test_exact_adam_at_lr_multiplies_the_exact_step(tmp_path: Path) -> None:
    plain = _rows(run_cell(_cell("exact-adam"), tmp_path))
    doubled = _rows(run_cell(_cell("exact-adam@2"), tmp_path))
    alpha = plain[-1]["alpha"]
    assert alpha > 0 and plain[-1]["lr"] == pytest.approx(alpha, rel=1e-6)
    assert doubled[-1]["alpha"] == pytest.approx(alpha, rel=1e-6)  # the same estimate: same cell, same seed
    assert [row["lr"] for row in doubled] == pytest.approx([2 * alpha] * len(doubled), rel=1e-6)
