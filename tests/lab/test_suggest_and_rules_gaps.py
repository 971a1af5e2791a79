"""Gaps a mutation review of theorylr.suggest, its CLI and the lab's rules found (178 mutants, 80 gaps): each test
kills mutants that survived the rest of the suite (its comment names them), plus a bug it found (a last nn.Linear
called with a keyword argument)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from theorylr.estimate import SpectralNormResult
from theorylr.lab.losses import get_loss
from theorylr.lab.suggest import _gd_rows, detect_loss, suggest

D = torch.float64


def _regression() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(30, 5, generator=gen, dtype=D)
    y = torch.randn(30, 4, generator=gen, dtype=D)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        model = nn.Linear(5, 4).to(D)
    return model, x, y


def _classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=gen, dtype=D)
    y = torch.randint(0, 3, (32,), generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)
    return model, x, y


def test_least_squares_scale_per_criterion() -> None:
    # s = 1/p for the lab's 0.5 * mean (suggest.py:328 "half_mean" -> "mse" survived) and 2/p for F.mse_loss
    # (suggest.py:347 "mse" -> "half_mean" survived); p = 4 outputs per example.
    model, x, y = _regression()
    lab = suggest(model, get_loss("least_squares"), (x, y), total_steps=10)
    assert lab.row("lipschitz-rigorous").quantities["s"] == 0.25
    functional = suggest(model, F.mse_loss, (x, y), total_steps=10)
    assert functional.row("lipschitz-rigorous").quantities["s"] == 0.5
    # the rigorous lr refers to the criterion itself: half the MSE constant -> twice the lr
    ratio = lab.row("lipschitz-rigorous").lr / functional.row("lipschitz-rigorous").lr
    assert ratio == pytest.approx(2.0, rel=1e-12)


def test_detect_loss_refuses_weighted_criteria() -> None:
    # suggest.py:331 (class weights ignored) and :335 (pos_weight ignored) survived.
    assert detect_loss(nn.CrossEntropyLoss(weight=torch.ones(3))) is None
    assert detect_loss(nn.BCEWithLogitsLoss(weight=torch.ones(1))) is None
    assert detect_loss(nn.BCEWithLogitsLoss(pos_weight=torch.ones(1))) is None


def test_functional_cross_entropy_padding_gets_no_lipschitz_lr() -> None:
    # F.cross_entropy ignores -100 by default (suggest.py:345 "-100" -> "-1" survived).
    model, x, y = _classifier()
    y[20:] = -100
    s = suggest(model, F.cross_entropy, (x, y), total_steps=10)
    for name in ("lipschitz-paper", "lipschitz-rigorous"):
        row = s.row(name)
        assert row.lr is None and "ignore_index (-100" in row.message


def test_zero_curvature_gives_gd_rows_without_lr() -> None:
    # A loss linear in the weights: K = 0 (suggest.py:401 "k > 0" -> "k >= 0" raised ZeroDivisionError).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Linear(3, 2).to(D)
    x = torch.randn(8, 3, dtype=D)
    s = suggest(model, lambda out, t: out.mean(), (x, torch.zeros(8, dtype=D)), total_steps=10)
    for name in ("gd-descent", "gd-stability"):
        row = s.row(name)
        assert row.quantities["K"] == 0.0
        assert row.lr is None and "no finite positive curvature" in row.message


def test_infinite_curvature_gives_gd_rows_without_lr() -> None:
    # suggest.py:401 dropping math.isfinite(k) gave lr = 1/inf = 0.0.
    result = SpectralNormResult(math.inf, math.inf, 0.0, 4, 0.0, True, 1.0, "lanczos", 0)
    for row in _gd_rows(result):
        assert row.lr is None and "no finite positive curvature" in row.message


def test_unconverged_curvature_is_flagged() -> None:
    # suggest.py:403 "not result.converged" -> "result.converged" survived.
    model, x, y = _classifier()
    s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, estimate_options={"max_matvecs": 2})
    row = s.row("gd-descent")
    assert row.quantities["converged"] is False and "Lanczos stopped before converging" in row.message
    converged = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10)
    assert converged.row("gd-descent").quantities["converged"] is True
    assert converged.row("gd-descent").message == ""


def test_zero_activations_give_no_paper_lr_and_say_why() -> None:
    # K_z = 0 makes the paper's L = 0: suggest.py:495 "not value > 0" -> "not value >= 0" lost the message and
    # :497 "value > 0" -> "value >= 0" raised ZeroDivisionError.
    model, x, y = _classifier()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()  # tanh(0) = 0: the last layer's input is zero
    s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10)
    paper = s.row("lipschitz-paper")
    assert paper.lr is None and paper.message.startswith("L = 0.0") and "zero activations" in paper.message
    assert s.row("lipschitz-rigorous").lr is not None  # the bias's gradient still bounds B away from 0


def test_least_squares_k_last_is_the_norm_of_weight_and_bias() -> None:
    # suggest.py:514-515 (_last_layer_norm without the bias, or with abs instead of square) survived: the tests read
    # K_last back from the row instead of computing it.
    model, x, y = _regression()
    s = suggest(model, nn.MSELoss(), (x, y), total_steps=10)
    expected = math.sqrt(float(model.weight.detach().square().sum()) + float(model.bias.detach().square().sum()))
    row = s.row("lipschitz-rigorous")
    assert row.quantities["K_last"] == pytest.approx(expected, rel=1e-12, abs=0)
    # K: the largest parameter norm (§7.4), not ||[W, b]|| (suggest.py:600 "K": K_last survived)
    assert row.quantities["K"] == max(float(model.weight.detach().norm()), float(model.bias.detach().norm()))


def test_softmax_with_one_output_says_it_needs_two() -> None:
    # suggest.py:593 "k < 2" -> "k < 1" survived.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Linear(5, 1).to(D)
    x = torch.randn(16, 5, dtype=D)
    s = suggest(
        model,
        lambda out, t: out.square().mean(),
        (x, torch.zeros(16, dtype=torch.long)),
        total_steps=10,
        loss="softmax",
    )
    for name in ("lipschitz-paper", "lipschitz-rigorous"):
        row = s.row(name)
        assert row.lr is None and "softmax needs k >= 2 outputs" in row.message


def test_lipschitz_rows_take_the_largest_batch_whatever_the_order() -> None:
    # suggest.py:610 keeping the last batch's L instead of the largest survived (the existing test's largest batch
    # came last).
    model, x, y = _classifier()
    first = [(x[:24], y[:24]), (x[24:], y[24:])]
    second = first[::-1]
    a = suggest(model, nn.CrossEntropyLoss(), first, total_steps=10)
    b = suggest(model, nn.CrossEntropyLoss(), second, total_steps=10)
    for name in ("lipschitz-paper", "lipschitz-rigorous"):
        assert a.row(name).lr == pytest.approx(b.row(name).lr, rel=1e-12, abs=0)


def test_unconverged_k_hat_is_flagged() -> None:
    # suggest.py:643 (the exact-adam row's message on an unconverged K_hat, inverted) and :637 ("N") survived.
    model, x, y = _classifier()
    s = suggest(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        total_steps=10,
        optimizer="adam",
        num_samples=2,
        estimate_options={"max_matvecs": 2},
    )
    row = s.row("exact-adam")
    assert row.quantities["converged"] is False and "K_hat may be low" in row.message
    assert row.quantities["N"] == 2 and len(row.quantities["samples"]) == 2
    ok = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="adam", num_samples=2)
    assert ok.row("exact-adam").quantities["converged"] is True and ok.row("exact-adam").message == ""


def test_trust_ratios_use_the_size_weighted_mean_gradient() -> None:
    # suggest.py:677 dropping "* (n / total)" (the gradient summed over batches) survived: one batch or several
    # must give the same ratios.
    model, x, y = _classifier()
    one = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="lars")
    two = suggest(model, nn.CrossEntropyLoss(), [(x[:8], y[:8]), (x[8:], y[8:])], total_steps=10, optimizer="lars")
    a, b = one.row("lars-trust-ratios").quantities, two.row("lars-trust-ratios").quantities
    assert b["||g||"] == pytest.approx(a["||g||"], rel=1e-10, abs=0)
    assert b["ratio/0.weight"] == pytest.approx(a["ratio/0.weight"], rel=1e-10, abs=0)


def test_trust_ratio_summary_statistics() -> None:
    # suggest.py:705 min -> max and :706 median -> mean survived.
    import statistics

    model, x, y = _classifier()
    q = (
        suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="lars")
        .row("lars-trust-ratios")
        .quantities
    )
    ratios = [v for k, v in q.items() if k.startswith("ratio/")]
    assert len(ratios) == 4
    assert q["min"] == min(ratios) and q["max"] == max(ratios)
    assert q["median"] == statistics.median(ratios)
    assert q["global_ratio"] == pytest.approx(q["||w||"] / q["||g||"], rel=1e-12, abs=0)


def test_zero_gradient_gives_an_infinite_global_ratio() -> None:
    # suggest.py:704 "g_norm > 0" -> "g_norm >= 0" raised ZeroDivisionError at a stationary point.
    model = nn.Linear(3, 2).to(D)
    with torch.no_grad():
        model.weight.fill_(0.5)
        model.bias.fill_(0.0)
    x = torch.randn(8, 3, dtype=D)
    y = model(x).detach()  # zero residual: zero gradient
    s = suggest(model, nn.MSELoss(), (x, y), total_steps=10, optimizer="lars")
    q = s.row("lars-trust-ratios").quantities
    assert q["||g||"] == 0.0 and q["global_ratio"] == math.inf


def test_default_distance_bound_uses_the_given_w_star_norm() -> None:
    # M1 = ||w0|| + ||w*|| (eq. (5)); suggest.py:738 "w_norm + w_star_norm" -> "w_norm + w_norm" survived.
    model, x, y = _classifier()
    s = suggest(
        model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="lars", target_accuracy=0.01, w_star_norm=0.5
    )
    row = s.row("lars-corollary-2.1")
    w0 = row.quantities["M2"] * 2  # M2 = ||w0|| / 2 stands in
    assert row.quantities["||w*||"] == 0.5
    assert row.quantities["M1"] == pytest.approx(w0 + 0.5, rel=1e-12, abs=0)
    assert "M1 = ||w0|| + ||w*||" in row.quantities["assumed"] and "||w*|| = ||w0||" not in row.quantities["assumed"]


def test_range_test_rows_use_adam_and_lars() -> None:
    # suggest.py:819 torch.optim.Adam -> torch.optim.AdamW survived: only the SGD range test was compared.
    from theorylr.lab.range_test import lr_range_test
    from theorylr.optim.lars import LARS

    model, x, y = _classifier()
    opts = {"num_steps": 6}
    s = suggest(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        total_steps=10,
        optimizer=["adam", "lars"],
        num_samples=1,
        range_test=True,
        range_test_options=opts,
    )
    for name, factory in (("adam", lambda p, lr: torch.optim.Adam(p, lr=lr)), ("lars", lambda p, lr: LARS(p, lr=lr))):
        reference = lr_range_test(model, nn.CrossEntropyLoss(), [(x, y)], factory, **opts)
        assert s.range_tests[name].losses == reference.losses
        assert s.row(f"range-test-{name}").lr == reference.suggestion


def test_range_test_row_flags_a_minimum_at_the_end_of_the_sweep() -> None:
    # suggest.py:843 "if result.min_at_end" inverted survived.
    model, x, y = _classifier()
    s = suggest(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        total_steps=10,
        range_test=True,
        range_test_options={"start_lr": 1e-3, "end_lr": 1e-2, "num_steps": 6},
    )
    assert s.range_tests["sgd"].min_at_end
    row = s.row("range-test-sgd")
    assert row.lr is not None and "this is a floor (raise end_lr)" in row.message
    wide = suggest(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        total_steps=10,
        range_test=True,
        range_test_options={"start_lr": 1e-3, "end_lr": 1e4, "num_steps": 20},
    )
    assert not wide.range_tests["sgd"].min_at_end and wide.row("range-test-sgd").message == ""


def test_optimizer_lists_are_put_in_canonical_order() -> None:
    # suggest.py:885: "all" inside a list dropped, or the user's order kept, survived.
    model, x, y = _classifier()
    s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer=["lars", "sgd"])
    assert s.settings["optimizers"] == ["sgd", "lars"]
    assert s.rows[0].optimizer == "sgd" and s.rows[-1].optimizer == "lars"
    s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer=["sgd", "all"], num_samples=1)
    assert s.settings["optimizers"] == ["sgd", "adam", "lars"]


@pytest.mark.parametrize("name", ["distance_bound", "min_weight_norm"])
def test_zero_bounds_are_refused_except_w_star_norm(name: str) -> None:
    # suggest.py:910 min_inclusive=True for every bound survived (only -1 was tried); ||w*|| = 0 is allowed.
    model, x, y = _classifier()
    with pytest.raises(ValueError, match=name):
        suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="lars", **{name: 0.0})
    s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="lars", w_star_norm=0.0)
    assert s.row("lars-corollary-2.1").lr is None  # no target_accuracy


def test_explicit_loss_keeps_the_criterions_scale_and_ignore_index() -> None:
    # suggest.py:1034 (scale reset to "paper" when loss= names the detected kind) and :1033 (ignore_index read from
    # the detection, None for an unrecognised criterion, instead of from loss_fn) survived.
    model, x, y = _regression()
    detected = suggest(model, nn.MSELoss(), (x, y), total_steps=10)
    explicit = suggest(model, nn.MSELoss(), (x, y), total_steps=10, loss="least_squares")
    assert explicit.row("lipschitz-rigorous").quantities["s"] == detected.row("lipschitz-rigorous").quantities["s"]
    assert explicit.row("lipschitz-rigorous").lr == detected.row("lipschitz-rigorous").lr

    model, x, y = _classifier()
    y[20:] = -100
    weighted = nn.CrossEntropyLoss(weight=torch.ones(3, dtype=D))  # not detected; loss= forces the closed form
    s = suggest(model, weighted, (x, y), total_steps=10, loss="softmax")
    row = s.row("lipschitz-rigorous")
    assert row.lr is None and "ignore_index (-100" in row.message


def test_settings_count_trainable_parameters_only() -> None:
    # suggest.py:1093 dropping "if p.requires_grad" survived.
    model, x, y = _classifier()
    model[0].weight.requires_grad_(False)
    s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10)
    assert s.settings["parameters"] == 6 + 18 + 3


def test_table_details_format_hide_and_truncate() -> None:
    # suggest.py:1120 (".4g"), :1127 (hidden keys shown), :1129-1130 (the "... more" count) survived.
    from theorylr.lab.suggest import Suggestion, SuggestionRow

    ten = {f"q{i}": i for i in range(9)} | {"K": 1.23456789, "loss": "softmax", "criterion": "nn.X"}
    table = " ".join(Suggestion(rows=(SuggestionRow("gd-descent", "sgd", 0.5, "1/K", ten),)).table().split())
    assert "K = 1.235" in table and "K = 1.23," not in table
    assert "loss =" not in table and "criterion =" not in table
    assert "more in the JSON" not in table  # exactly 10 shown quantities
    twelve = {f"q{i}": i for i in range(12)}
    table = " ".join(Suggestion(rows=(SuggestionRow("gd-descent", "sgd", 0.5, "1/K", twelve),)).table().split())
    assert "q9 = 9, ... (2 more in the JSON)" in table and "q10" not in table


def test_plot_draws_finite_losses_and_titles_the_range_test(tmp_path, monkeypatch) -> None:
    # suggest.py:1174 (non-finite losses drawn) and :1191 (the "(no range test)" title inverted) survived.
    from matplotlib.figure import Figure

    from theorylr.lab.range_test import RangeTestResult
    from theorylr.lab.suggest import Suggestion, SuggestionRow

    figures: list[Figure] = []
    save = Figure.savefig

    def keep(self: Figure, *args: object, **kwargs: object) -> None:
        figures.append(self)
        save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    curve = RangeTestResult(lrs=[1e-3, 1e-2, 1e-1], losses=[1.0, 0.5, math.inf], lr_at_min=1e-2, suggestion=1e-3)
    rows = (SuggestionRow("range-test-sgd", "sgd", 1e-3, "lr_at_min / 10"),)
    Suggestion(rows=rows, settings={"model": "M"}, range_tests={"sgd": curve}).plot(tmp_path / "a.png")
    ax = figures[-1].axes[0]
    assert ax.get_title() == "theorylr suggest: M"
    assert list(ax.lines[0].get_xdata()) == [1e-3, 1e-2]
    Suggestion(rows=rows, settings={"model": "M"}).plot(tmp_path / "b.png")
    assert figures[-1].axes[0].get_title() == "theorylr suggest: M (no range test)"


def test_range_test_options_and_sampler_types_are_checked() -> None:
    # suggest.py:1019 (a list of pairs accepted as range_test_options) and :1021 (a non-callable sampler accepted
    # when no adam row uses it) survived.
    model, x, y = _classifier()
    with pytest.raises(ValueError, match="range_test_options must be a mapping"):
        suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, range_test_options=[("num_steps", 3)])
    with pytest.raises(ValueError, match="sampler must be None or a callable"):
        suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, sampler=3)


def test_cli_optimizer_list_ignores_empty_parts() -> None:
    # commands/suggest.py:64 dropping "if part.strip()" survived ("sgd,adam," became ["sgd", "adam", ""]).
    from theorylr.commands.suggest import _optimizers

    assert _optimizers(" sgd, adam ,,") == ["sgd", "adam"]


def test_cli_total_steps_count_a_partial_last_batch() -> None:
    # commands/suggest.py:117 (floor instead of ceil) and :123 (epochs only) survived: T = epochs x batches per epoch,
    # and digits-lenet's 1348 examples in batches of 256 make 6 batches, the last one partial.
    from theorylr.commands.suggest import build_inputs

    inputs = build_inputs("digits-lenet")
    assert len(inputs["batches"]) == 6
    assert inputs["total_steps"] == inputs["workload"].epochs * 6 == 120


def test_rule_spec_with_zero_lr_or_spaces() -> None:
    # rules.py:260 (lr = 0 accepted by with_lr) and :311 (the spec not stripped) survived.
    from theorylr.lab.rules import resolve_rule

    with pytest.raises(ValueError, match="adam@0"):
        resolve_rule("adam@0")
    rule = resolve_rule("  adam@1e-3 ")
    assert rule.name == "adam@0.001" and rule.defaults["lr"] == 1e-3


# ---------------------------------------------------------------------------------------------------------------
# theorylr.lab.rules


def test_registry_defaults_and_grids() -> None:
    # rules.py:760-765, 792, 806, 821, 831, 838-840, 888: every default lr, grid, momentum, decay and flag survived.
    from theorylr.lab.rules import get_rule

    def grid(name: str) -> tuple[float, float]:
        search = get_rule(name).search
        assert search is not None
        return search.low, search.high

    assert grid("sgd") == grid("momentum-cosine") == (1e-3, 1.0)
    assert grid("adam") == grid("adam-onecycle") == (1e-4, 1e-1)
    assert get_rule("sgd").defaults == {"optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "schedule": "constant"}
    assert get_rule("momentum").defaults == {"optimizer": "sgd", "momentum": 0.9, "lr": 0.01, "schedule": "constant"}
    assert get_rule("adam-step").defaults == {"optimizer": "adam", "lr": 1e-3, "schedule": "step"}
    assert get_rule("adam-range-test").defaults["num_steps"] == 50
    assert get_rule("lars").defaults == {"optimizer": "LARS", "lr": 0.05}
    assert get_rule("percent-delta-decay").defaults == {"optimizer": "PercentDelta", "lr": 0.05, "decay": "linear"}
    assert get_rule("exact-adam").defaults == {"lr": 1.0, "num_samples": 10}
    assert get_rule("lipschitz-sgd").defaults == {"lr": 1.0, "momentum": 0.0, "rigorous": False}
    assert get_rule("lipschitz-sgd-rigorous").defaults == {"lr": 1.0, "momentum": 0.0, "rigorous": True}
    assert get_rule("lipschitz-momentum").defaults == {"lr": 1.0, "momentum": 0.9, "rigorous": False}
    assert get_rule("schedulefree-adamw").defaults == {"lr": 0.0025, "warmup_fraction": 0.05}


def test_lipschitz_rules_apply_only_with_a_closed_form() -> None:
    # rules.py:567 ("is None" inverted) survived.
    from theorylr.lab.rules import get_rule
    from theorylr.lab.workloads import get_workload

    rule = get_rule("lipschitz-sgd")
    assert rule.unsuitable(get_workload("iris-softmax")) is None
    assert "no closed-form Lipschitz constant" in (rule.unsuitable(get_workload("separable-svm")) or "")


def test_schedules_step_size_onecycle_momentum_and_zero_total() -> None:
    # rules.py:381 (ceil -> floor), :388 (momentum SGD not cycled) and :375 (total 0 not clamped) survived.
    from theorylr.lab.rules import _schedule

    p = [nn.Parameter(torch.zeros(2))]
    assert _schedule("step", torch.optim.SGD(p, lr=0.1), 10, 0.1).step_size == 4  # ceil(10 / 3)
    assert _schedule("onecycle", torch.optim.SGD(p, lr=0.1, momentum=0.9), 10, 0.1).cycle_momentum is True
    assert _schedule("onecycle", torch.optim.SGD(p, lr=0.1), 10, 0.1).cycle_momentum is False
    assert _schedule("onecycle", torch.optim.SGD(p, lr=0.1), 0, 0.1).total_steps == 1


def _context(options: dict[str, Any], *, epochs: int = 2, model: nn.Module | None = None) -> Any:
    from theorylr.lab.losses import get_loss
    from theorylr.lab.rules import RuleContext
    from theorylr.lab.workloads import get_workload

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=gen)
    y = torch.randint(0, 3, (24,), generator=gen)
    if model is None:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    return RuleContext(
        model,
        get_loss("cross_entropy"),
        get_workload("iris-softmax"),
        x,
        y,
        lambda g: iter([(x, y)]),
        epochs,
        1,
        3,
        options,
        0,
    )


def test_torch_baseline_takes_momentum_and_weight_decay() -> None:
    # rules.py:396 and :398 (options ignored) survived.
    from theorylr.lab.rules import build_torch_baseline

    setup = build_torch_baseline(_context({"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "lr": 0.1}))
    group = setup.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4 and group["lr"] == 0.1


def test_range_test_rule_defaults_and_schedule_peak() -> None:
    # rules.py:436-438 (the sweep's default start, end and length) and :442 (the schedule built for ctx.lr, not the
    # chosen lr) survived.
    from theorylr.lab.rules import build_range_test

    setup = build_range_test(_context({"optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "schedule": "onecycle"}))
    result = setup.info["range_test"]
    assert result["lrs"][0] == pytest.approx(1e-6, rel=1e-12, abs=0)
    assert result["stopped_early"] or (len(result["lrs"]) == 50 and result["lrs"][-1] == pytest.approx(10.0))
    assert setup.scheduler is not None and setup.optimizer.param_groups[0]["max_lr"] == setup.info["chosen_lr"]
    assert setup.info["chosen_lr"] != 0.1


def test_lars_rule_defaults_to_one_group_and_decays_over_the_run() -> None:
    # rules.py:465 (exclude_1d default) and :476 (total_iters) survived.
    from theorylr.lab.rules import build_lars

    setup = build_lars(_context({"optimizer": "LARS", "lr": 0.05, "decay": "linear"}, epochs=7))
    assert len(setup.optimizer.param_groups) == 1
    assert setup.scheduler is not None and setup.scheduler.total_iters == 7


def test_exact_adam_rule_default_samples() -> None:
    # rules.py:531 (num_samples default 10) survived.
    from theorylr.lab.rules import build_exact_adam

    setup = build_exact_adam(_context({"lr": 1.0}))
    assert setup.info["exact_step"]["smoothness"]["num_samples"] == 10


def test_lipschitz_rule_defaults_to_plain_sgd() -> None:
    # rules.py:601 (momentum default 0.0) survived.
    from theorylr.lab.rules import build_lipschitz

    setup = build_lipschitz(_context({"lr": 1.0, "rigorous": False}))
    try:
        assert setup.optimizer.param_groups[0]["momentum"] == 0.0
    finally:
        if setup.close is not None:
            setup.close()


def test_d_probe_effective_lr() -> None:
    # rules.py:694 (effective lr = d, without lr) survived.
    from theorylr.lab.rules import _d_probe

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    opt.param_groups[0]["d"] = 4.0
    assert _d_probe(opt) == {"lr": 0.5, "d": 4.0, "effective_lr": 2.0}


def test_schedulefree_warmup_is_a_fraction_of_the_run() -> None:
    # rules.py:709 (warmup_fraction * total_steps) survived.
    pytest.importorskip("schedulefree")
    from theorylr.lab.rules import build_schedulefree

    setup = build_schedulefree(_context({"lr": 0.0025, "warmup_fraction": 0.5}, epochs=10))
    assert setup.optimizer.param_groups[0]["warmup_steps"] == 5


# ---------------------------------------------------------------------------------------------------------------
# the CLI


def test_cli_passes_its_flags_to_suggest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # commands/suggest.py:160-161, 164-165 (--target-accuracy, --num-samples, --range-test-steps, --seed dropped) and
    # :179 ("plot: PATH" printed with --json instead of without) survived.
    import json

    from theorylr.cli import main
    from theorylr.lab.suggest import Suggestion

    argv = [
        "suggest",
        "--workload",
        "iris-softmax",
        "--optimizer",
        "adam,lars",
        "--json",
        "--num-samples",
        "1",
        "--target-accuracy",
        "0.05",
        "--range-test",
        "--range-test-steps",
        "4",
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    s = Suggestion.from_dict(json.loads(capsys.readouterr().out))
    assert s.settings["seed"] == 3 and s.settings["num_samples"] == 1 and s.settings["target_accuracy"] == 0.05
    assert s.row("exact-adam").quantities["N"] == 1 and s.row("lars-corollary-2.1").lr is not None
    assert s.row("range-test-adam").quantities["num_steps"] == 4 and len(s.range_tests["adam"].lrs) <= 4
    plot = tmp_path / "p.png"
    assert main(["suggest", "--workload", "iris-softmax", "--optimizer", "sgd", "--plot", str(plot)]) == 0
    assert f"plot: {plot}" in capsys.readouterr().out


def test_adaptive_probe_effective_lr_and_dog_gamma() -> None:
    # rules.py:659-660 (effective_lr = lr (sqrt(K2) + eps) / K for Auto-Adam) and :731 (DoG's gamma 8) survived.
    from theorylr.lab.rules import build_dog, build_lipschitz_adaptive

    ctx = _context({"optimizer": "AutoAdam", "lr": 0.5})
    setup = build_lipschitz_adaptive(ctx)
    try:
        ctx.loss(ctx.model(ctx.x_train), ctx.y_train).backward()
        setup.optimizer.step()
        q = setup.probe()
        eps = setup.optimizer.param_groups[0]["eps"]
        assert q["effective_lr"] == pytest.approx(0.5 * (math.sqrt(q["K2"]) + eps) / q["K"], rel=1e-12, abs=0)
    finally:
        setup.close()
    pytest.importorskip("dog")
    assert build_dog(_context({"lr": 1.0})).stateful["averager"].gamma == 8.0


def test_a_last_linear_called_with_a_keyword_argument_gets_its_lipschitz_rows() -> None:
    """``self.head(input=h)``: a forward pre-hook without ``with_kwargs`` sees no input, and both LipschitzLR rows
    said "the model's output does not come from its last nn.Linear" (the tracker reads ``input=`` too)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(input=torch.tanh(self.hidden(x)))

    model, x, y = _classifier()
    keyword = Net().to(D)
    keyword.hidden.load_state_dict(model[0].state_dict())
    keyword.head.load_state_dict(model[2].state_dict())
    by_position = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="sgd")
    by_keyword = suggest(keyword, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="sgd")
    for name in ("lipschitz-paper", "lipschitz-rigorous"):
        assert by_keyword.row(name).message == "" and by_keyword.row(name).lr == by_position.row(name).lr
