"""theorylr.theory.lars: NumPy scalars are taken as numbers, bools and non-numbers are refused by name."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from theorylr.theory import lars as theory


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: theory.invariant_interval(2.0, np.float32(0.25)), (1.5, 2.5)),
        (lambda: theory.theorem2_bound(np.int64(100), np.float64(0.1), 2.0, np.float32(16.0)), 0.36),
        (lambda: theory.region_lower_bound(0.1, np.int64(3)), 0.3 / 2.1),
        (lambda: theory.steps_to_interval(np.int64(3), 1.0, 0.1), theory.steps_to_interval(3.0, 1.0, 0.1)),
        (lambda: theory.steps_to_fallback(np.float32(1.0), 0.5, 0.1), 4),
        (lambda: theory.lars_1d_trajectory(0.5, np.float32(1.0), 0.5, 3), [0.5, 0.75, 1.125, 0.5625]),
        (lambda: theory.theorem3_lr(np.int64(3), 0.4, np.float32(1.0)), 0.1),
    ],
)
def test_numpy_scalars_are_numbers_and_give_python_numbers(call: Callable[[], object], expected: object) -> None:
    """np.float32 / np.int64 were refused ('lr must be a number in (0, 1) (got np.float32(0.1))') or crashed deep
    inside (Fraction, numpy bool subtraction); the results are plain Python numbers."""
    got = call()
    assert got == pytest.approx(expected, rel=1e-6)
    flat = got if isinstance(got, (tuple, list)) else [got]
    assert all(type(v) in (float, int) for v in flat)


def test_steps_to_interval_with_a_float32_start_counts_on_the_number_given() -> None:
    w0 = np.float32(0.1)
    assert theory.steps_to_interval(w0, 1.0, 0.1) == theory.steps_to_interval(float(w0), 1.0, 0.1)
    assert type(theory.steps_to_fallback(np.float32(0.5), 0.1, 0.01)) is int


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.theorem2_bound(10, True, 1.0, 1.0), r"lr must be a finite number > 0 \(got True\)"),
        (lambda: theory.corollary_2_1(True, 1.0, 1.0), "eps must be"),
        (lambda: theory.invariant_interval(2.0, True), "lr must be"),
        (lambda: theory.quadratic_cosine_bound(True), "condition_number must be"),
        (lambda: theory.region_lower_bound(0.1, False), "w_star_norm must be"),
    ],
)
def test_bools_are_not_numbers(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_lars_1d_trajectory_takes_a_numpy_lr_and_sequences() -> None:
    assert theory.lars_1d_trajectory(0.5, 1.0, np.float32(0.5), 3) == [0.5, 0.75, 1.125, 0.5625]
    assert theory.lars_1d_trajectory(0.5, 1.0, np.array([0.5, 0.5])) == [0.5, 0.75, 1.125]
    assert theory.lars_1d_trajectory(0.5, 1.0, torch.tensor([0.5, 0.5], dtype=torch.float64)) == [0.5, 0.75, 1.125]


@pytest.mark.parametrize(
    ("lr", "match"),
    [
        ("x", r"lr must be a finite number >= 0 or a sequence of them \(got 'x'\)"),
        (None, r"lr must be .* \(got None\)"),
        (True, r"lr must be a finite number >= 0 \(got True\)"),
        ([0.1, "x"], r"lr\[1\] must be a finite number >= 0"),
        ([0.1, True], r"lr\[1\]"),
        (torch.tensor(0.5), "lr must be"),
    ],
)
def test_lars_1d_trajectory_checks_lr(lr: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        theory.lars_1d_trajectory(0.5, 1.0, lr, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.region_radius(0.1, 1.0, None), r"cosine must be a finite number in \(0, 1\] \(got None\)"),
        (lambda: theory.region_radius(0.1, 1.0, "x"), "cosine must be"),
        (lambda: theory.region_radius(0.1, 1.0, torch.tensor(0.5)), "cosine must be"),
        (lambda: theory.region_radius(0.1, 1.0, float("nan")), "cosine must be"),
        (lambda: theory.theorem3_lr(1, 0.1, "x"), r"power must be a finite number in \(0.5, 1\]"),
        (lambda: theory.theorem3_lr(1, 0.1, None), "power must be"),
        (lambda: theory.theorem3_lr(1, 0.1, True), "power must be"),
    ],
)
def test_cosine_and_power_are_checked(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_region_radius_returns_a_float_for_a_numpy_cosine() -> None:
    r = theory.region_radius(0.1, 2.0, np.float32(1.0))
    assert type(r) is float and r == pytest.approx(theory.region_radius(0.1, 2.0, 1.0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.descent_bound(0.1, [1.0], [1.0], 1.0), r"lrs must be a sequence of numbers \(got 0.1\)"),
        (lambda: theory.descent_bound([0.1], 1.0, [1.0], 1.0), "w_norms must be a sequence"),
        (lambda: theory.descent_bound([0.1], [1.0], None, 1.0), "grad_norms must be a sequence"),
        (lambda: theory.descent_bound("ab", "ab", "ab", 1.0), "lrs must be a sequence"),
        (
            lambda: theory.theorem3_bound(0.1, lipschitz=1.0, m1=1.0, m2=1.0, w_star_norm=1.0),
            "lrs must be a sequence of numbers",
        ),
    ],
)
def test_lrs_must_be_a_sequence(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_bounds_take_numpy_arrays_of_lrs() -> None:
    lrs = np.array([0.1] * 10)
    expected = theory.theorem3_bound([0.1] * 10, lipschitz=2.0, m1=1.0, m2=0.5, w_star_norm=3.0)
    assert theory.theorem3_bound(lrs, lipschitz=2.0, m1=1.0, m2=0.5, w_star_norm=3.0) == pytest.approx(expected)
    assert theory.descent_bound(np.array([0.1, 0.1]), [1.0, 1.0], [2.0, 2.0], 1.0) == pytest.approx(5.1)
