"""theorylr.lab.range_test: option checks, defaults, the recorded sweep and its stopping rule (gaps a mutation
review found; the docstrings name the mutation), and a loss below zero."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from theorylr.lab.range_test import check_range_test_options, lr_range_test

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# lab/range_test.py
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("end_lr", [1e-3, 1e-2])
def test_end_lr_must_exceed_start_lr(end_lr: float) -> None:
    """R02 (range_test.py:78, ``min_value=start_lr`` -> ``0.0``): a sweep that does not grow is refused."""
    with pytest.raises(ValueError, match="end_lr"):
        check_range_test_options(start_lr=1e-2, end_lr=end_lr)


def test_num_steps_one_is_refused() -> None:
    """R03 (range_test.py:79, ``min_value=2`` -> ``1``): one step has no geometric sweep (i / (num_steps - 1)
    divided by zero)."""
    with pytest.raises(ValueError, match="num_steps"):
        check_range_test_options(num_steps=1)


def test_smoothing_above_one_is_refused() -> None:
    """R04 (range_test.py:80, ``max_value=1.0`` -> ``2.0``): the newest loss's weight lies in (0, 1]."""
    check_range_test_options(smoothing=1.0)
    with pytest.raises(ValueError, match="smoothing"):
        check_range_test_options(smoothing=1.5)


def _scripted(values: list[float], **options: float) -> object:
    """lr_range_test on a loss that returns the given values in turn (the first, before any step, unrecorded)."""
    it = iter(values)
    model = nn.Linear(1, 1)

    def loss_fn(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return out.sum() * 0.0 + next(it)

    sgd = lambda params, lr: torch.optim.SGD(params, lr=lr)  # noqa: E731
    return lr_range_test(model, loss_fn, [(torch.zeros(1, 1), torch.zeros(1))], sgd, **options)  # type: ignore[arg-type]


def test_diverge_factor_at_most_one_is_refused() -> None:
    """R05 (range_test.py:81, ``min_value=1.0`` -> ``0.0``): a factor <= 1 would stop at the first loss that is not
    a new best."""
    with pytest.raises(ValueError, match="diverge_factor"):
        check_range_test_options(diverge_factor=0.5)


def test_default_diverge_factor_is_four() -> None:
    """R06 (range_test.py:94, default 4 -> 5): a smoothed loss of 4.5 times the best stops the default test."""
    result = _scripted([9.0, 1.0, 4.5] + [1.0] * 10, smoothing=1.0, num_steps=10)
    assert result.stopped_early and result.losses == [1.0, 4.5]  # type: ignore[attr-defined]


def test_default_smoothing_is_0_05_bias_corrected() -> None:
    """R07 (range_test.py:93, default 0.05 -> 0.1): after losses 1 and 2 the smoothed value is
    (0.05 * 2 + 0.95 * 0.05) / (1 - 0.95^2)."""
    result = _scripted([9.0, 1.0, 2.0, 1.0], num_steps=3)
    assert result.losses[:2] == pytest.approx([1.0, 0.1475 / 0.0975], rel=1e-12)  # type: ignore[attr-defined]


def test_default_sweep_runs_from_1e_6_to_10() -> None:
    """R08 (range_test.py:90, default start_lr 1e-6 -> 1e-5): the documented defaults, ends included."""
    result = _scripted([1.0] * 51)
    assert len(result.lrs) == 50  # type: ignore[attr-defined]
    assert result.lrs[0] == pytest.approx(1e-6, rel=1e-12)  # type: ignore[attr-defined]
    assert result.lrs[-1] == pytest.approx(10.0, rel=1e-12)  # type: ignore[attr-defined]


def test_range_test_trains_the_copy_of_a_model_in_eval_mode() -> None:
    """R09 (range_test.py:126, ``trial.train()`` deleted): the test trains, so dropout and batch norm must be in
    training mode even when the caller's model is in eval mode (which it keeps)."""
    seen: list[bool] = []

    class Probe(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(self.training)
            return super().forward(x)

    model = Probe(2, 1).eval()
    loss = lambda out, t: (out.squeeze(-1) - t).square().mean()  # noqa: E731
    lr_range_test(
        model, loss, [(torch.randn(4, 2), torch.randn(4))], lambda p, lr: torch.optim.SGD(p, lr=lr), num_steps=3
    )
    assert seen and all(seen)
    assert not model.training


def test_the_last_steps_outcome_is_recorded() -> None:
    """R12 (range_test.py:133, ``range(num_steps + 1)`` -> ``range(num_steps)``): one loss per lr tried, the last
    lr's too (its loss is measured by one more forward pass)."""
    result = _scripted([1.0] * 6, num_steps=5, start_lr=1e-3, end_lr=1e-1)
    assert len(result.lrs) == len(result.losses) == 5  # type: ignore[attr-defined]
    assert result.lrs[-1] == pytest.approx(1e-1, rel=1e-12)  # type: ignore[attr-defined]


def test_a_nan_loss_stops_the_range_test() -> None:
    """R17 (range_test.py:145, the finiteness test dropped): nan compares false with everything, so only the
    explicit test stops on it."""
    result = _scripted([1.0, 1.0, 0.5, math.nan] + [0.1] * 10, smoothing=1.0, num_steps=10)
    assert result.stopped_early  # type: ignore[attr-defined]
    assert len(result.losses) == 3 and result.lr_at_min == result.lrs[1]  # type: ignore[attr-defined]


def test_a_loss_of_exactly_diverge_factor_times_the_best_does_not_stop() -> None:
    """R18 (range_test.py:145, ``>`` -> ``>=``): the test stops once the loss *exceeds* the factor times the best."""
    result = _scripted([9.0, 1.0, 4.0, 1.0, 1.0], smoothing=1.0, num_steps=4)
    assert not result.stopped_early and len(result.losses) == 4  # type: ignore[attr-defined]


def test_a_flat_loss_picks_the_first_lr_of_the_plateau() -> None:
    """R19 (range_test.py:148, ``<`` -> ``<=``): on a plateau the lowest loss is first reached at start_lr; the
    mutant moved lr_at_min to end_lr, suggesting an lr 10^6 times larger."""
    result = _scripted([1.0] * 11, num_steps=10, start_lr=1e-6, end_lr=1.0, smoothing=1.0)
    assert result.lr_at_min == pytest.approx(1e-6)  # type: ignore[attr-defined]


def test_a_first_loss_that_is_nan_gives_start_lr() -> None:
    """R22 (range_test.py:156, the fallback deleted): diverging at the very first step leaves no minimum; the
    suggestion is start_lr / 10, not nan."""
    result = _scripted([1.0, math.nan, 1.0, 1.0], num_steps=3, start_lr=1e-4, end_lr=1e-2)
    assert result.stopped_early  # type: ignore[attr-defined]
    assert result.lr_at_min == 1e-4 and result.suggestion == pytest.approx(1e-5)  # type: ignore[attr-defined]


def test_range_test_losses_are_those_of_plain_sgd_at_the_swept_lrs() -> None:
    """R26 (range_test.py:135, ``zero_grad`` deleted): gradients must not accumulate across steps; with smoothing
    1 the recorded losses are those of SGD run by hand at the recorded lrs."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, dtype=F64), torch.randn(16, dtype=F64)
    model = nn.Linear(3, 1).double()
    loss = lambda out, t: (out.squeeze(-1) - t).square().mean()  # noqa: E731
    result = lr_range_test(
        model,
        loss,
        [(x, y)],
        lambda p, lr: torch.optim.SGD(p, lr=lr),
        num_steps=6,
        start_lr=1e-2,
        end_lr=1e-1,
        smoothing=1.0,
    )
    twin = copy.deepcopy(model)
    expected = []
    for lr in result.lrs:
        twin.zero_grad()
        loss(twin(x), y).backward()
        with torch.no_grad():
            for p in twin.parameters():
                p -= lr * p.grad
        with torch.no_grad():
            expected.append(float(loss(twin(x), y)))
    assert result.losses == pytest.approx(expected, rel=1e-12)


def test_a_loss_below_zero_is_swept_as_the_same_loss_shifted_above() -> None:
    """A constant added to the loss changes no gradient, so the sweep must not change. The rule "smoothed > 4 x
    best" stopped MSE - 10 (a negative loss, as a log-likelihood can be) at its second step and suggested
    start_lr / 10; the rule now measures the rise from |best|."""
    torch.manual_seed(0)
    x = torch.randn(64, 3, dtype=F64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    model = nn.Linear(3, 1).double()
    sweeps = []
    for shift in (0.0, -10.0):
        loss = lambda out, t, s=shift: (out.squeeze(-1) - t).square().mean() + s  # noqa: E731
        sweeps.append(lr_range_test(model, loss, [(x, y)], torch.optim.SGD, num_steps=40))
    plain, shifted = sweeps
    assert len(plain.lrs) > 10 and plain.lrs == shifted.lrs
    assert shifted.suggestion == plain.suggestion and shifted.stopped_early == plain.stopped_early
