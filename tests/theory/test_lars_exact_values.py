"""theorylr.theory.lars on values worked out by hand from the documented formulas."""

from __future__ import annotations

import math

import pytest

from theorylr.theory import lars as theory


def test_steps_to_interval_approx_from_above_is_positive() -> None:
    """``|log(a / w0)| / lr`` with ``w0 = 7``, ``a = 2``, ``lr = 0.2``: ``|log(2/7)| / 0.2 = log(3.5) / 0.2 = 6.26``.

    The printed §3.1 form ``log(a / w0) / lr`` is negative from above; the docstring takes its magnitude. The exact
    count is 5 (``7 * 0.8^5 = 2.29 <= a (1 + lr) = 2.4 < 7 * 0.8^4 = 2.87``), of the same order.
    """
    value = theory.steps_to_interval_approx(7.0, 2.0, 0.2)
    assert value == pytest.approx(math.log(3.5) / 0.2, rel=1e-12)
    assert value > 0
    assert theory.steps_to_interval(7.0, 2.0, 0.2) == 5
    # From below the sign is already positive: log(1 / 0.1) / 0.1 = 23.03 (the docstring example).
    assert theory.steps_to_interval_approx(0.1, 1.0, 0.1) == pytest.approx(math.log(10.0) / 0.1, rel=1e-12)
    # Negative w0 and a: magnitudes, log(7 / 2) / 0.2 again.
    assert theory.steps_to_interval_approx(-7.0, -2.0, 0.2) == pytest.approx(math.log(3.5) / 0.2, rel=1e-12)


def test_lars_1d_trajectory_stays_at_the_minimiser() -> None:
    """``w_{k+1} = w_k - lr_k |w_k| sign(w_k - a)`` (``sign(0) = 0``): ``w0 = 0.5``, ``a = 1``, lrs ``[1, 0.5]``.

    ``w_1 = 0.5 - 1 * 0.5 * (-1) = 1.0 = a``; then ``sign(w_1 - a) = 0``, so ``w_2 = 1.0``: ``[0.5, 1.0, 1.0]``.
    (Treating ``w = a`` as above the minimiser would give ``w_2 = 1 - 0.5 = 0.5``.)
    """
    assert theory.lars_1d_trajectory(0.5, 1.0, [1.0, 0.5]) == [0.5, 1.0, 1.0]
    # The same from above: w0 = 2, a = 1, lr 0.5 -> 2 - 0.5 * 2 = 1 = a, then stays.
    assert theory.lars_1d_trajectory(2.0, 1.0, 0.5, 3) == [2.0, 1.0, 1.0, 1.0]


def test_descent_bound_single_step_by_hand() -> None:
    """``(||w0 - w*||^2 + sum lr_i^2 ||w_i||^2) / (2 sum lr_i ||w_i|| / ||g_i||)`` with ``lr = 0.1``, ``||w|| = 2``,
    ``||g|| = 1``, ``dist0 = 1``: numerator ``1 + 0.01 * 4 = 1.04``, denominator ``2 * 0.1 * 2 / 1 = 0.4``: ``2.6``.
    """
    assert theory.descent_bound([0.1], [2.0], [1.0], 1.0) == pytest.approx(2.6, rel=1e-12)
    # Two steps, ||w|| = 3 and 0.5, ||g|| = 2 and 1, lr 0.2 and 0.4, dist0 = 2:
    # num = 4 + 0.04 * 9 + 0.16 * 0.25 = 4.4; den = 2 * (0.2 * 3 / 2 + 0.4 * 0.5 / 1) = 1.0: 4.4.
    assert theory.descent_bound([0.2, 0.4], [3.0, 0.5], [2.0, 1.0], 2.0) == pytest.approx(4.4, rel=1e-12)


def test_region_radius_rejects_lr_equal_to_twice_the_cosine() -> None:
    """``R = lr ||w*|| (1 + (1 + lr) / (2c - lr))`` is valid for ``lr < 2c`` only; at ``lr = 2c`` the denominator is
    0, and the documented answer is a ValueError (not a ZeroDivisionError)."""
    with pytest.raises(ValueError, match="lr must be < 2"):
        theory.region_radius(1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="lr must be < 2"):
        theory.region_radius(0.2, 3.0, 0.1)
    # Just inside: lr = 0.5, ||w*|| = 1, c = 0.5: R = 0.5 * (1 + 1.5 / 0.5) = 2.
    assert theory.region_radius(0.5, 1.0, 0.5) == pytest.approx(2.0, rel=1e-12)
