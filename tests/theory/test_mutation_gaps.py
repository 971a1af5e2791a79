"""Gaps a mutation review of theorylr.theory.lars found: each test kills a mutant that survived the rest of the
suite (the docstrings name the mutation)."""

from __future__ import annotations

import math

import pytest
import torch

from theorylr.theory.lars import (
    invariant_interval,
    lars_1d_trajectory,
    steps_to_fallback,
    steps_to_interval,
    steps_to_interval_approx,
    theorem3_bound,
)

F64 = torch.float64

# ----------------------------------------------------------------------------------------------------------------
# theory/lars.py
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [lambda: invariant_interval(1.0, 0.0), lambda: steps_to_interval(0.5, 1.0, 0.0)])
def test_lr_zero_is_refused(fn) -> None:  # type: ignore[no-untyped-def]
    """L01 (lars.py:77, ``0.0 < value`` -> ``0.0 <= value``): lr must lie in (0, 1); with lr = 0 the interval is a
    point and steps_to_interval divided by log1p(0) = 0."""
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, 1\)"):
        fn()


def test_log_ratio_of_a_subnormal_quotient_keeps_full_precision() -> None:
    """L08 (lars.py:139, ``q >= float_info.min`` -> ``q > 0``): a subnormal quotient has lost bits; the
    approximation was 2e-7 off."""
    w0, a, lr = 1e20, 1.2345e-300, 0.5
    expected = (math.log(w0) - math.log(a)) / lr
    assert steps_to_interval_approx(w0, a, lr) == pytest.approx(expected, rel=1e-12)


def test_log_ratio_of_an_overflowing_quotient() -> None:
    """L09 (lars.py:141, ``log x - log y`` -> ``log x + log y``): a / w0 = 1e400 overflows a float."""
    assert steps_to_interval_approx(1e-200, 1e200, 0.1) == pytest.approx(400 * math.log(10) / 0.1, rel=1e-12)


def test_steps_to_interval_beyond_the_exact_check_is_still_the_first_step_inside() -> None:
    """L13 (lars.py:178, ``ceil`` -> ``floor``): past 10,000 steps the logarithms' count is returned unchecked;
    floor made it one step short (the iterate still below the interval)."""
    w0, a, lr = 0.001, 1.0, 1e-4
    k = steps_to_interval(w0, a, lr)
    assert k > 10_000
    assert w0 * (1 + lr) ** k >= a * (1 - lr) > w0 * (1 + lr) ** (k - 1)


def test_steps_to_interval_counts_an_iterate_landing_exactly_on_the_lower_end() -> None:
    """L16 (lars.py:190, ``low_q <= x`` -> ``low_q < x``): the interval is closed; from below 4 -> 6 -> 9 = a(1-lr)
    (a = 18, lr = 0.5) is inside after 2 steps, all exact in binary."""
    assert steps_to_interval(4.0, 18.0, 0.5) == 2
    assert lars_1d_trajectory(4.0, 18.0, 0.5, 2)[-1] == 9.0 == invariant_interval(18.0, 0.5)[0]


def test_a_sequence_lr_with_a_matching_steps_is_accepted() -> None:
    """L24 (lars.py:242, the length comparison broken): steps equal to len(lr) is allowed with a sequence."""
    assert lars_1d_trajectory(0.5, 1.0, [0.5, 0.5], steps=2) == [0.5, 0.75, 1.125]
    with pytest.raises(ValueError, match="steps must equal len"):
        lars_1d_trajectory(0.5, 1.0, [0.5, 0.5], steps=3)


def test_steps_to_fallback_when_w0_equals_min_norm() -> None:
    """L26 (lars.py:285, ``<`` -> ``<=``): |w_0| = min_norm is not below min_norm, so the first fallback is k = 1."""
    assert steps_to_fallback(0.125, 0.5, 0.125) == 1
    assert steps_to_fallback(-0.125, 0.5, 0.125) == 1


def test_steps_to_fallback_beyond_the_exact_check_is_the_first_step_below() -> None:
    """L27 (lars.py:287, ``+ 1`` -> ``+ 0``): past 10,000 steps the logarithms' count is returned unchecked."""
    w0, lr, min_norm = 1.0, 1e-4, 1e-3
    k = steps_to_fallback(w0, lr, min_norm)
    assert k > 10_000
    assert w0 * (1 - lr) ** k < min_norm <= w0 * (1 - lr) ** (k - 1)


def test_theorem3_bound_by_hand_with_m1_not_one() -> None:
    """L48 (lars.py:515, ``m1**2`` -> ``m1``): every existing check used M1 = 1. Here M3 = 3 + 2 = 5,
    numerator 2^2 + 25 * 10 * 0.01 = 6.5, denominator 2 * 0.5 / (2 * 2) * 1.0 = 0.25."""
    assert theorem3_bound([0.1] * 10, lipschitz=2.0, m1=2.0, m2=0.5, w_star_norm=3.0) == pytest.approx(26.0, rel=1e-12)


def test_strongly_convex_cosine_bound_allows_m_equal_to_lipschitz() -> None:
    """L52 (lars.py:547, ``m > lipschitz`` -> ``>=``): m = L (a multiple of the identity's quadratic) gives cos 1."""
    from theorylr.theory.lars import strongly_convex_cosine_bound

    assert strongly_convex_cosine_bound(2.0, 2.0) == 1.0
