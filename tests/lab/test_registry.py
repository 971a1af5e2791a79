"""Registry integrity: every rule runs on a tiny workload, every workload is well-formed, schedules are exact."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from tests.lab.conftest import TINY, TINY_BINARY
from theorylr.lab import (
    DEFAULT_RULES,
    DEFAULT_WORKLOAD,
    KINDS,
    RULES,
    WORKLOADS,
    Cell,
    LogGrid,
    Rule,
    Target,
    Workload,
    compare,
    get_rule,
    get_workload,
    lr_range_test,
    register_rule,
    register_workload,
    resolve_rule,
    run_cell,
)
from theorylr.lab._files import read_csv, read_json
from theorylr.lab.rules import SCHEDULES, _schedule

# Columns a rule must log beside the standard ones (rule-specific quantities for the report).
EXPECTED_COLUMNS = {
    "lars": ("trust_ratio/",),
    "lars-decay": ("trust_ratio/",),
    "percent-delta": ("trust_ratio/",),
    "percent-delta-decay": ("trust_ratio/",),
    "exact-adam": ("alpha", "K_hat", "L0"),
    "lipschitz-sgd": ("L", "K_z", "K_w"),
    "lipschitz-sgd-rigorous": ("L", "K_z", "K_w"),
    "lipschitz-momentum": ("L", "K_z", "K_w"),
    "adamo": ("K", "effective_lr"),
    "auto-adam": ("K", "K2", "effective_lr"),
    "adaptive-rmsprop": ("K", "K2", "effective_lr"),
    "prodigy": ("d", "effective_lr"),
    "dadapt-adam": ("d", "effective_lr"),
    "dog": ("effective_lr",),
}


def _one_epoch(rule: Rule, workload: Workload, root: Path) -> tuple[dict, list[dict]]:
    lr = rule.trial_lrs(3)[1] if rule.tuned else float(workload.options_for(rule.name).get("lr", rule.defaults["lr"]))
    result = run_cell(Cell(workload, rule, 1 if rule.tuned else 0, lr, 0, 1), root)
    meta = read_json(Path(result.directory) / "meta.json")
    assert result.status == "finished", meta.get("traceback", result.message)
    return meta, read_csv(Path(result.directory) / "metrics.csv")


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_runs_one_epoch(name: str, tmp_path: Path) -> None:
    rule = get_rule(name)
    if not rule.available():
        pytest.skip(rule.missing_message())
    meta, rows = _one_epoch(rule, TINY, tmp_path)
    assert [r["epoch"] for r in rows] == [0.0, 1.0]
    last = rows[-1]
    for key in ("train_loss", "grad_norm", "test_loss", "test_accuracy", "lr", "wall_time"):
        assert isinstance(last[key], float) and math.isfinite(last[key]), key
    assert last["step"] == 3.0 and last["wall_time"] >= meta["setup_time"] >= 0.0
    for prefix in EXPECTED_COLUMNS.get(name, ()):
        matching = [k for k in last if k == prefix or (prefix.endswith("/") and k.startswith(prefix))]
        assert matching and all(isinstance(last[k], float) for k in matching), (prefix, sorted(last))


@pytest.mark.parametrize("name", [n for n in sorted(RULES) if "lipschitz" in n or n in ("adamo", "auto-adam")])
def test_lipschitz_rules_on_the_binary_closed_form(name: str, tmp_path: Path) -> None:
    _, rows = _one_epoch(get_rule(name), TINY_BINARY, tmp_path)
    assert math.isfinite(rows[-1]["train_loss"])


def test_lipschitz_rule_sets_lr_to_one_over_l(tmp_path: Path) -> None:
    """The logged lr after an epoch is multiplier / L of that epoch (LipschitzLR's schedule), per the files."""
    workload = dataclasses.replace(TINY, epochs=3)
    for name, multiplier in (("lipschitz-sgd", 1.0), ("lipschitz-sgd@0.5", 0.5)):
        rule = resolve_rule(name)
        result = run_cell(Cell(workload, rule, 0, multiplier, 0, 3), tmp_path)
        rows = read_csv(Path(result.directory) / "metrics.csv")
        assert math.isnan(rows[0]["lr"])  # not known before the first batch: not the bare multiplier
        for row in rows[1:]:
            assert row["lr"] == pytest.approx(multiplier / row["L"], rel=1e-12)
    # with initial_lr the first epoch's lr is known at epoch 0
    base = get_rule("lipschitz-sgd")
    rule = dataclasses.replace(base, name="lipschitz-initial", defaults={**base.defaults, "initial_lr": 0.25})
    result = run_cell(Cell(workload, rule, 0, 1.0, 0, 3), tmp_path / "initial")
    rows = read_csv(Path(result.directory) / "metrics.csv")
    assert rows[0]["lr"] == 0.25 and rows[1]["lr"] == pytest.approx(1.0 / rows[1]["L"], rel=1e-12)


def test_exact_adam_lr_is_the_papers_formula(tmp_path: Path) -> None:
    meta, rows = _one_epoch(get_rule("exact-adam"), TINY, tmp_path)
    step = meta["setup"]["exact_step"]
    total_steps = 1 * 3
    alpha = math.sqrt(2 * step["initial_loss"] / (step["k_hat"] * total_steps))
    assert rows[-1]["alpha"] == pytest.approx(alpha, rel=1e-12) and rows[-1]["lr"] == pytest.approx(alpha, rel=1e-12)
    assert rows[-1]["K_hat"] == step["k_hat"] == max(s["lambda_max"] for s in step["smoothness"]["samples"])


def test_registry_rows_are_consistent() -> None:
    assert DEFAULT_WORKLOAD in WORKLOADS and not WORKLOADS[DEFAULT_WORKLOAD].needs_data_dir
    assert set(DEFAULT_RULES) <= set(RULES)
    for rule in RULES.values():
        assert rule.kind in KINDS and rule.description and "lr" in rule.defaults
        assert (rule.kind == "tuned") == rule.tuned
        assert rule.factory.__module__ == "theorylr.lab.rules"  # module-level: picklable for worker processes
    kinds = {r.kind for r in RULES.values()}
    assert kinds == set(KINDS)
    # the rules are all registered
    for name in (
        "lars",
        "lars-decay",
        "percent-delta",
        "percent-delta-decay",
        "exact-adam",
        "lipschitz-sgd",
        "lipschitz-sgd-rigorous",
        "adamo",
        "auto-adam",
        "adaptive-rmsprop",
        "prodigy",
        "dadapt-adam",
        "schedulefree-adamw",
        "dog",
        "sgd-range-test",
        "adam-range-test",
    ):
        assert name in RULES
    for base in ("sgd", "momentum", "adam"):
        for schedule in SCHEDULES:
            assert (base if schedule == "constant" else f"{base}-{schedule}") in RULES
    for workload in WORKLOADS.values():
        assert workload.loss_spec.name == workload.loss
        assert workload.to_dict()["name"] == workload.name


def test_registration_and_spec_errors() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_rule(get_rule("adam"))
    with pytest.raises(ValueError, match="already registered"):
        register_workload(get_workload("digits-mlp"))
    with pytest.raises(ValueError, match="search space"):
        Rule("x", "tuned", "d", get_rule("adam").factory, defaults={"lr": 1.0})
    with pytest.raises(ValueError, match="kind must be one of"):
        Rule("x", "magic", "d", get_rule("adam").factory, defaults={"lr": 1.0})
    with pytest.raises(ValueError, match="defaults must include 'lr'"):
        Rule("x", "theory", "d", get_rule("adam").factory)
    with pytest.raises(ValueError, match="NAME@LR"):
        resolve_rule("adam@fast")
    with pytest.raises(ValueError, match="lr must be"):
        resolve_rule("adam@-1")
    with pytest.raises(ValueError, match="loss must be one of"):
        Workload("w", "d", "iris", "linear", "l1")
    with pytest.raises(ValueError, match="batch_size"):
        Workload("w", "d", "iris", "linear", "cross_entropy", batch_size=0)
    with pytest.raises(ValueError, match="target metric"):
        Target("speed", 1.0)
    fixed = resolve_rule("adam-cosine@3e-3")
    assert (fixed.name, fixed.kind, fixed.search, fixed.defaults["lr"]) == ("adam-cosine@0.003", "baseline", None, 3e-3)
    assert fixed.defaults["schedule"] == "cosine"
    # two lrs that %g writes alike get names (and run directories) of their own; %g stays where it is exact
    names = [resolve_rule(f"adam@{lr}").name for lr in ("0.0012345678", "0.00123457", "1e-5", "100", "1e3")]
    assert names == ["adam@0.0012345678", "adam@0.00123457", "adam@1e-05", "adam@100", "adam@1000"]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"name": ".."}, "not '.' or '..'"),
        ({"name": "."}, "not '.' or '..'"),
        ({"name": "a\nb"}, "control characters"),
        ({"name": 5}, "workload name must be a non-empty string"),
        ({"dataset": "imagenet"}, "dataset must be one of"),
        ({"model": "nope"}, "model must be one of"),
        ({"init": "nope"}, "init must be one of"),
        ({"target": ("test_accuracy", 0.9)}, "target must be a Target"),
        ({"needs_data_dir": "no"}, "needs_data_dir"),
    ],
)
def test_workload_fields_are_checked_when_the_workload_is_made(fields: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "name": "w",
        "description": "d",
        "dataset": "iris",
        "model": "linear",
        "loss": "cross_entropy",
    }
    with pytest.raises(ValueError, match=match):
        Workload(**{**base, **fields})  # type: ignore[arg-type]


def test_registration_checks_rule_options_and_a_binary_loss_needs_two_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rule_options names no rule \['larz'\]"):
        register_workload(Workload("w-opts", "d", "iris", "linear", "cross_entropy", rule_options={"larz": {}}))
    assert "w-opts" not in WORKLOADS
    three_classes = Workload("w-bce-iris", "d", "iris", "linear", "bce", epochs=1)
    for workload in (three_classes, dataclasses.replace(three_classes, name="w-hinge-iris", loss="binary_hinge")):
        with pytest.raises(ValueError, match=r"is binary \(one logit, two classes\) but the dataset has 3 classes"):
            compare(workload, "sgd@0.1", out=tmp_path, epochs=1, verbose=False)
    assert not any(tmp_path.iterdir())  # refused before any run


def test_log_grid() -> None:
    assert LogGrid(1e-3, 1.0).points(4) == [0.001, 0.01, 0.1, 1.0]
    assert LogGrid(1e-4, 1e-2).points(1) == [0.001]
    points = LogGrid(1e-4, 1e-1).points(7)
    ratios = [points[i + 1] / points[i] for i in range(6)]
    assert all(r == pytest.approx(10**0.5, rel=1e-5) for r in ratios)
    with pytest.raises(ValueError, match="trials"):
        LogGrid(1e-3, 1.0).points(0)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_follow_their_formulas(name: str) -> None:
    """The lr at every step of T = 30 steps, against the closed form in SCHEDULES (OneCycleLR: its peak)."""
    total, lr = 30, 0.2
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)
    scheduler = _schedule(name, optimizer, total, lr)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    t = [i / total for i in range(total)]
    expected = {
        "constant": [lr] * total,
        "linear": [lr * (1 - s) for s in t],
        "step": [lr * 0.1 ** (i // 10) for i in range(total)],
        "inverse-sqrt": [lr / math.sqrt(1 + 99 * s) for s in t],
        "inverse-time": [lr / (1 + 9 * s) for s in t],
        "exponential": [lr * 0.01**s for s in t],
        "cosine": [lr * 0.5 * (1 + math.cos(math.pi * s)) for s in t],
    }
    if name == "onecycle":
        assert max(seen) == pytest.approx(lr) and seen[0] == pytest.approx(lr / 25)
        assert seen.index(max(seen)) == round(0.3 * total) - 1
    else:
        assert seen == pytest.approx(expected[name], rel=1e-9, abs=1e-15)


def test_range_test_on_a_quadratic_leaves_the_model_untouched() -> None:
    """Least squares with Hessian H = X^T X / m: GD diverges above 2 / lambda_max(H); the suggestion must be a
    stable lr, within a factor 100 of 1 / lambda_max."""
    torch.manual_seed(0)
    x = torch.randn(256, 6, dtype=torch.float64) * torch.tensor([3.0, 1, 1, 1, 1, 0.5], dtype=torch.float64)
    y = x @ torch.randn(6, dtype=torch.float64)
    model = torch.nn.Linear(6, 1, bias=False).double().eval()
    before = model.weight.detach().clone()
    loss = lambda out, t: 0.5 * (out.squeeze(-1) - t).square().mean()  # noqa: E731
    result = lr_range_test(model, loss, [(x, y)], lambda p, lr: torch.optim.SGD(p, lr=lr), num_steps=60)
    lam = float(torch.linalg.eigvalsh(x.T @ x / x.shape[0]).max())
    assert result.suggestion < 2.0 / lam and result.suggestion > 0.01 / lam
    assert result.stopped_early  # the sweep to lr = 10 >> 2 / lambda_max blows up
    assert len(result.lrs) == len(result.losses) and result.lrs == sorted(result.lrs)
    assert torch.equal(model.weight, before) and not model.training
    assert not result.min_at_end and result.to_dict()["min_at_end"] is False


def test_a_range_test_whose_loss_still_falls_at_end_lr_says_so() -> None:
    """A sweep that ends below the divergence (end_lr = 0.1 on a quadratic with 2 / lambda_max far above it) has its
    lowest loss at its last lr: lr_at_min / 10 is then a floor, not the test's answer, and suggest says so."""
    from theorylr.lab.suggest import _range_row

    x = torch.eye(3, dtype=torch.float64)
    model = torch.nn.Linear(3, 1, bias=False).double()
    loss = lambda out, t: 0.5 * (out.squeeze(-1) - t).square().mean()  # noqa: E731
    sweep = lr_range_test(model, loss, [(x, torch.ones(3, dtype=torch.float64))], torch.optim.SGD, end_lr=0.1)
    assert sweep.min_at_end and not sweep.stopped_early and sweep.lr_at_min == sweep.lrs[-1] == pytest.approx(0.1)
    assert "the minimum may lie beyond end_lr" in _range_row("sgd", sweep, {}).message
    wide = lr_range_test(model, loss, [(x, torch.ones(3, dtype=torch.float64))], torch.optim.SGD, end_lr=100.0)
    assert not wide.min_at_end and _range_row("sgd", wide, {}).message == ""


@pytest.mark.parametrize(("name", "base"), [("adam-range-test", "adam"), ("sgd-range-test", "sgd")])
def test_range_tests_take_no_at_lr(name: str, base: str) -> None:
    """The range test chooses its own lr: NAME@LR would be ignored, so it is refused, naming the fixed-lr rule."""
    assert get_rule(name).chosen_lr and not get_rule(base).chosen_lr
    with pytest.raises(ValueError, match=f"rule '{name}' takes no @LR.*'{base}@0.5'"):
        resolve_rule(f"{name}@0.5")
    assert resolve_rule(f"{base}@0.5").defaults["lr"] == 0.5


def test_exact_adam_does_not_apply_to_a_hinge_loss(tmp_path: Path) -> None:
    """A piecewise-linear loss has no curvature (K_hat = 0): compare skips exact-adam there with the reason, and a
    run forced through anyway fails with a message saying so, not with a bare argument check."""
    svm = dataclasses.replace(get_workload("separable-svm"), epochs=1, rule_options={"exact-adam": {"num_samples": 2}})
    rule = get_rule("exact-adam")
    reason = rule.unsuitable(svm)
    assert reason is not None and "'binary_hinge' is piecewise linear" in reason and "K_hat = 0" in reason
    assert rule.unsuitable(TINY) is None and rule.unsuitable(TINY_BINARY) is None
    result = compare(svm, "exact-adam,sgd@0.1", out=tmp_path / "skipped", verbose=False)
    assert [r.rule for r in result.results] == ["sgd@0.1"]
    assert read_json(tmp_path / "skipped" / svm.name / "compare.json")["invocations"][0]["skipped"][0]["reason"] == (
        reason
    )
    with pytest.raises(ValueError, match="none of the rules can run"):  # nothing else to run: an error
        compare(svm, "exact-adam", out=tmp_path / "nothing", verbose=False)
    forced = run_cell(Cell(svm, rule, 0, 1.0, 0, 1), tmp_path / "forced")
    assert forced.status == "failed" and "needs K_hat > 0" in forced.message and "no curvature" in forced.message
