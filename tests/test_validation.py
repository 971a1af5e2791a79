"""The shared argument checks: what they accept (Python and NumPy numbers) and what they refuse (bools, nan)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from theorylr._validation import check_int, check_number


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(0.5), np.int64(1), np.float16(0.25)])
def test_real_numbers_of_python_and_numpy_are_numbers(value: object) -> None:
    check_number("x", value, min_value=0.0, max_value=1.0)


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), math.nan, np.float32("inf"), "0.5", None, Fraction(1, 2), Decimal("0.5")]
)
def test_bools_non_finite_values_strings_and_numbers_torch_refuses_are_refused(value: object) -> None:
    """A ``Fraction`` is a ``numbers.Real``, but torch's operators refuse it (``add_(alpha=Fraction(1, 2))``): it
    would pass the check and fail in the first step."""
    with pytest.raises(ValueError, match="x must be a finite number"):
        check_number("x", value)


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_python_and_numpy_integers_are_integers(value: object) -> None:
    check_int("n", value, min_value=1, max_value=3)


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, np.float64(3.0), np.int64(0), Fraction(3, 1)])
def test_bools_floats_and_out_of_range_integers_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        check_int("n", value, min_value=1)


def test_exact_step_adam_takes_a_numpy_step_count() -> None:
    import torch
    from torch import nn

    from theorylr.optim.exact_adam import exact_step_adam

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    data = (torch.randn(16, 3), torch.randint(0, 2, (16,)))
    _, step = exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=np.int64(100), num_samples=2)
    _, same = exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=100, num_samples=2)
    assert step.alpha == same.alpha


@pytest.mark.parametrize(
    ("value", "hint"),
    [("lasr", "lars"), ("Adam", "adam"), ("exact_adam", "exact-adam"), ("sgd-step", "sgd-step"), ("zzz", None)],
)
def test_choice_errors_suggest_the_closest_name(value: str, hint: str | None) -> None:
    from theorylr._validation import check_choice

    choices = ("lars", "adam", "exact-adam", "sgd-step", "sgd")
    if value in choices:
        assert check_choice("rule", value, choices) == value
        return
    with pytest.raises(ValueError) as info:
        check_choice("rule", value, choices)
    message = str(info.value)
    assert message.startswith("rule must be one of 'lars', 'adam'")
    assert (f"; did you mean {hint!r}?)" in message) if hint else message.endswith(f"(got {value!r})")


def test_lab_names_suggest_the_closest_rule_and_workload() -> None:
    from theorylr.lab import get_workload, resolve_rule

    with pytest.raises(ValueError, match=r"\(got 'lasr'; did you mean 'lars'\?\)"):
        resolve_rule("lasr")
    with pytest.raises(ValueError, match=r"\(got 'minst-lenet'; did you mean 'mnist-lenet'\?\)"):
        get_workload("minst-lenet")


def test_an_int_past_floats_range_is_refused_by_name() -> None:
    """``float(10**400)`` raised a bare OverflowError that named no argument."""
    with pytest.raises(ValueError, match=r"lr must be a finite number >= 0.0 \(got 1000"):
        check_number("lr", 10**400, min_value=0.0)


def test_seeds_past_torchs_range_are_refused_by_name() -> None:
    import torch
    from torch import nn

    from theorylr._validation import SEED_MAX
    from theorylr.estimate import hessian_spectral_norm

    model = nn.Linear(2, 1)
    data = (torch.randn(4, 2), torch.randn(4, 1))
    with pytest.raises(ValueError, match="seed must be an integer >= 0 and <= 9223372036854775807"):
        hessian_spectral_norm(model, nn.MSELoss(), data, seed=2**64)
    assert hessian_spectral_norm(model, nn.MSELoss(), data, seed=SEED_MAX).value > 0
