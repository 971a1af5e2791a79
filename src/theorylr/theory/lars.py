r"""The predictions of Gitman, Dilipkumar & Parr's analysis of LARS, as functions.

*Convergence Analysis of Gradient Descent Algorithms with Proportional Updates* studies eq. (1),
``w_{k+1} = w_k - lr_k ||w_k|| / ||grad f(w_k)|| * grad f(w_k)`` (no momentum, no eps). This module turns its
statements into numbers that the tests compare with the real :class:`theorylr.optim.lars.LARS`:

* §3.1/§3.3 (1-D, a convex ``f`` with a unique minimiser ``a``): the invariant interval, the exact number of steps to
  reach it, and the iterates themselves (:func:`invariant_interval`, :func:`steps_to_interval`,
  :func:`lars_1d_trajectory`);
* §3.2: the origin as an attractive fixed point (:func:`origin_attraction`, :func:`steps_to_fallback`);
* §4.2: Theorem 2's bound and Corollary 2.1's learning rate, as stated and in a corrected form
  (:func:`theorem2_constants`, :func:`theorem2_bound`, :func:`corollary_2_1`, :func:`fixed_lr_bound`,
  :func:`corollary_2_1_rigorous`);
* §4.3: Theorem 3's schedules and its bound (8) (:func:`theorem3_lr`, :func:`theorem3_bound`,
  :func:`descent_bound`);
* §5 / Fig. 1: the size of the region that fixed-lr LARS ends in on a strongly convex function (derived here;
  the paper only shows it exists): :func:`region_radius`, :func:`region_lower_bound`.

Only ``math`` is used: the functions take Python numbers or NumPy scalars (``np.float32(0.1)``, not bools
or tensors) and return Python numbers.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from theorylr._validation import check_int, check_number

__all__ = [
    "corollary_2_1",
    "corollary_2_1_rigorous",
    "descent_bound",
    "fixed_lr_bound",
    "invariant_interval",
    "lars_1d_trajectory",
    "origin_attraction",
    "quadratic_cosine_bound",
    "region_lower_bound",
    "region_radius",
    "steps_to_fallback",
    "steps_to_interval",
    "steps_to_interval_approx",
    "strongly_convex_cosine_bound",
    "theorem2_bound",
    "theorem2_constants",
    "theorem3_bound",
    "theorem3_lr",
]


# The checks below take Python numbers and NumPy scalars (np.float32(0.1), np.int64(3)), never bools or tensors, and
# return Python numbers, so that the arithmetic after them (Fraction, math, comparisons) sees a float or an int.
def _real(name: str, value: Any, allowed: str = "a finite number") -> float:
    """``value`` as a Python float, when it is a finite real number; else a ValueError naming ``name``."""
    try:
        check_number(name, value)
    except ValueError:
        raise ValueError(f"{name} must be {allowed} (got {value!r})") from None
    return float(value)


def _int(name: str, value: Any, *, min_value: int) -> int:
    """``value`` as a Python int, when it is an integer ``>= min_value``; else a ValueError naming ``name``."""
    check_int(name, value, min_value=min_value)
    return int(value)


def _check_lr(lr: Any) -> float:
    """``lr`` as a Python float, when it is a finite number in ``(0, 1)``."""
    allowed = "a finite number in (0, 1)"
    value = _real("lr", lr, allowed)
    if not 0.0 < value < 1.0:
        raise ValueError(f"lr must be {allowed} (got {lr!r})")
    return value


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a Python float, when it is a finite number ``> 0`` (``>= 0`` with ``allow_zero``)."""
    allowed = f"a finite number {'>= 0' if allow_zero else '> 0'}"
    v = _real(name, value, allowed)
    if not (v >= 0 if allow_zero else v > 0):
        raise ValueError(f"{name} must be {allowed} (got {value!r})")
    return v


def _as_list(name: str, values: Any, allowed: str = "a sequence of numbers") -> list[Any]:
    """The elements of ``values`` (a list, a tuple, a 1-D NumPy array or tensor) as a list; a ValueError naming
    ``name`` for anything else (a number, a string, ``None``). The elements are left for the caller to check."""
    if getattr(values, "ndim", None) == 1 and hasattr(values, "tolist"):
        return list(values.tolist())
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        return list(values)
    raise ValueError(f"{name} must be {allowed} (got {values!r})")


def _same_sign(w0: float, a: float) -> tuple[float, float]:
    w0 = _real("w0", w0)
    a = _real("a", a)
    if a == 0 or w0 == 0:
        raise ValueError(f"w0 and a must be non-zero (got w0={w0!r}, a={a!r}): eq. (1) never leaves 0")
    if (w0 > 0) != (a > 0):
        raise ValueError(
            f"w0 and a must have the same sign (got w0={w0!r}, a={a!r}); with opposite signs the iterates are "
            "attracted to the origin instead (see origin_attraction)"
        )
    return abs(w0), abs(a)


# ----------------------------------------------------------------------------------------------------------------
# §3: one dimension
# ----------------------------------------------------------------------------------------------------------------
def invariant_interval(a: float, lr: float) -> tuple[float, float]:
    """The interval ``[a(1-lr), a(1+lr)]`` that 1-D LARS never leaves once inside (paper §3.1, §3.3).

    For any differentiable convex ``f`` on the real line with a unique minimiser ``a`` (a flat minimum breaks the
    closed form: see :func:`lars_1d_trajectory`) and a fixed ``0 < lr < 1``, eq. (1) reads
    ``w_{k+1} = w_k - lr |w_k| sign(w_k - a)``; from ``w in [a(1-lr), a)`` it goes to ``(1+lr) w`` in
    ``[a(1-lr^2), a(1+lr))``, and symmetrically from above, so the interval is invariant. Returned as
    ``(low, high)`` with ``low <= high`` (for ``a < 0`` the ends swap).

    Example:
        >>> invariant_interval(2.0, 0.25)
        (1.5, 2.5)
    """
    lr = _check_lr(lr)
    a = _real("a", a)
    ends = (a * (1 - lr), a * (1 + lr))
    return (min(ends), max(ends))


def _log_ratio(x: float, y: float) -> float:
    """``log(x / y)`` for positive ``x``, ``y``: of the quotient where it is a normal float (exact to rounding), else
    ``log x - log y`` (a quotient beyond float's range: the difference is then large, and its rounding small)."""
    q = x / y
    if math.isfinite(q) and q >= sys.float_info.min:
        return math.log(q)
    return math.log(x) - math.log(y)


def steps_to_interval(w0: float, a: float, lr: float) -> int:
    r"""The number of LARS steps from ``w0`` to the first iterate inside :func:`invariant_interval` (§3.1).

    Below the interval the iterates are ``w_k = (1+lr)^k w0``, above it ``w_k = (1-lr)^k w0``, so the count is the
    smallest integer ``k >= 0`` with

    .. code-block:: text

        k >= log(a(1-lr) / w0) / log(1+lr)     if |w0| < |a|(1-lr)   (from below)
        k >= log(a(1+lr) / w0) / log(1-lr)     if |w0| > |a|(1+lr)   (from above)

    (0 inside). The iterates cannot skip the interval: from ``w < a(1-lr)`` the next one is below
    ``a(1-lr^2) < a(1+lr)``. ``w0`` and ``a`` must be non-zero and of the same sign (§3.2 otherwise). The count is
    that of exact arithmetic on the numbers given (checked with rationals up to 10,000 steps); a float64 run of
    eq. (1) rounds each step and can take one step more or fewer where an iterate lands on an end of the interval.

    .. note::
        §3.1 prints the count from above as ``k >= -log(a(1+lr) / w0) / log(1-lr) ~ (1/lr) log(a / w0)``. With
        ``w0 > a(1+lr)`` both logarithms are negative, so the printed bound is negative (every ``k >= 0`` meets it)
        and so is its approximation: sign slips. The count here drops the leading minus, as the case from below
        has none; it is the first ``k`` of the iterates ``(1-lr)^k w0`` inside the interval (for ``w0 = 7``,
        ``a = 2``, ``lr = 0.2``: 5 steps, where the printed form gives 0). :func:`steps_to_interval_approx` takes
        the approximation's magnitude.

    Example:
        >>> steps_to_interval(0.1, 1.0, 0.1)  # 0.1 * 1.1**k >= 0.9 first at k = 24
        24
    """
    lr = _check_lr(lr)
    w, a_abs = _same_sign(w0, a)
    low, high = a_abs * (1 - lr), a_abs * (1 + lr)
    if low <= w <= high:
        return 0
    if w < low:
        k = max(0, math.ceil(_log_ratio(low, w) / math.log1p(lr)))
    else:
        k = max(0, math.ceil(_log_ratio(high, w) / math.log1p(-lr)))
    if k > _EXACT_STEPS:
        return k
    # The logarithms round: where w0 lies on a power of (1 +- lr) from the interval's end, the ceiling can be one
    # off. Exact arithmetic on the floats given decides (w_k = (1 +- lr)^k w0 as rationals).
    w_q, lr_q, factor = Fraction(w), Fraction(lr), Fraction(1) + (Fraction(lr) if w < low else -Fraction(lr))
    low_q, high_q = Fraction(a_abs) * (1 - lr_q), Fraction(a_abs) * (1 + lr_q)

    def inside(steps: int) -> bool:
        x = w_q * factor**steps
        return low_q <= x <= high_q

    while k > 0 and inside(k - 1):
        k -= 1
    while not inside(k):
        k += 1
    return k


# steps_to_interval checks its count with exact rational arithmetic up to this many steps (beyond, the logarithms'
# count is returned: at most one off, and only where w0 lies exactly on a power of (1 +- lr) from the interval).
_EXACT_STEPS = 10_000


def steps_to_interval_approx(w0: float, a: float, lr: float) -> float:
    """The paper's approximation of :func:`steps_to_interval`, ``|log(a / w0)| / lr`` (§3.1): ``O(1/lr)`` steps.

    .. note::
        §3.1 prints ``(1/lr) log(a / w0)`` for a start above the interval, which is negative there (``w0 > a``):
        the magnitude is the approximation of the count, from either side (see :func:`steps_to_interval`).

    Example:
        >>> round(steps_to_interval_approx(0.1, 1.0, 0.1), 2)
        23.03
    """
    lr = _check_lr(lr)
    w, a_abs = _same_sign(w0, a)
    return abs(_log_ratio(a_abs, w)) / lr


def lars_1d_trajectory(w0: float, a: float, lr: float | Sequence[float], steps: int | None = None) -> list[float]:
    """The iterates ``w_0 .. w_K`` of eq. (1) in one dimension, for a convex ``f`` with a unique minimiser ``a``
    (§3.3).

    ``w_{k+1} = w_k - lr_k |w_k| sign(w_k - a)``: the update depends on ``f`` only through the sign of
    ``f'(w) = sign(w - a)``. ``lr`` is a constant (then ``steps`` is required) or the sequence ``lr_0 ..
    lr_{K-1}`` (a list, a tuple, or a 1-D array or tensor), each a finite number ``>= 0``. This is the real
    optimizer's prediction with ``momentum=0``, ``eps=0`` and ``min_norm=0``.

    .. note::
        §3.3 says "any convex function", but ``sign(f'(w)) = sign(w - a)`` for every ``w != a`` holds only when
        ``a`` is the unique minimiser. When ``f`` is flat on an interval of minimisers (e.g.
        ``relu(|w - 1.5| - 0.5)^2``, minimal on ``[1, 2]``), the real optimizer stops at the first iterate that
        lands in that interval (zero gradient), while this closed form keeps oscillating around ``a``.

    Example:
        >>> lars_1d_trajectory(0.5, 1.0, 0.5, 3)
        [0.5, 0.75, 1.125, 0.5625]
    """
    w = _real("w0", w0)
    a = _real("a", a)
    if isinstance(lr, numbers.Real):  # a bool too: refused here by name
        eta = _check_positive("lr", lr, allow_zero=True)
        if steps is None:
            raise ValueError("steps is required when lr is a number")
        lrs = [eta] * _int("steps", steps, min_value=0)
    else:
        items = _as_list("lr", lr, "a finite number >= 0 or a sequence of them")
        lrs = [_check_positive(f"lr[{i}]", x, allow_zero=True) for i, x in enumerate(items)]
        if steps is not None and _int("steps", steps, min_value=0) != len(lrs):
            raise ValueError(f"steps must equal len(lr) (got steps={steps}, len(lr)={len(lrs)})")
    out = [w]
    for eta in lrs:
        w = w - eta * abs(w) * ((w > a) - (w < a))
        out.append(w)
    return out


def origin_attraction(w0: float, lr: float, k: int) -> float:
    """The ``k``-th iterate ``(1-lr)^k w0`` when ``w0`` and the minimiser have opposite signs (§3.2).

    Then ``sign(w - a) = sign(w)`` and eq. (1) is ``w_{k+1} = (1-lr) w_k``: the iterates shrink geometrically to
    the origin and never change sign, until an SGD fallback (``||w|| < min_norm``, §3.2, §6.1) takes over.

    Example:
        >>> origin_attraction(-2.0, 0.5, 3)
        -0.25
    """
    lr = _check_lr(lr)
    w0 = _real("w0", w0)
    k = _int("k", k, min_value=0)
    return (1 - lr) ** k * w0


def steps_to_fallback(w0: float, lr: float, min_norm: float) -> int:
    """The first ``k`` with ``|(1-lr)^k w0| < min_norm``: when origin attraction hands over to SGD (§3.2).

    ``k = floor(log(min_norm / |w0|) / log(1-lr)) + 1`` (0 when ``|w0| < min_norm`` already), checked with exact
    arithmetic on the numbers given up to 10,000 steps, as :func:`steps_to_interval` is: where ``min_norm`` lies on
    a power ``|w0| (1-lr)^k`` the logarithms can round the count one off.

    Example:
        >>> steps_to_fallback(1.0, 0.5, 0.1)  # 1, .5, .25, .125, .0625
        4
        >>> steps_to_fallback(1.0, 0.5, 0.125)  # |w_3| = 0.125 is not below 0.125: the 4th step falls back
        4
    """
    lr = _check_lr(lr)
    w0 = _real("w0", w0)
    min_norm = _check_positive("min_norm", min_norm)
    if w0 == 0:
        raise ValueError("w0 must be non-zero")
    if abs(w0) < min_norm:
        return 0
    k = math.floor(_log_ratio(min_norm, abs(w0)) / math.log1p(-lr)) + 1
    if k > _EXACT_STEPS:
        return k
    w_q, factor, bound = Fraction(abs(w0)), 1 - Fraction(lr), Fraction(min_norm)

    def below(steps: int) -> bool:
        return w_q * factor**steps < bound

    while k > 0 and below(k - 1):
        k -= 1
    while not below(k):
        k += 1
    return k


# ----------------------------------------------------------------------------------------------------------------
# §4.2: fixed learning rate
# ----------------------------------------------------------------------------------------------------------------
def theorem2_constants(lipschitz: float, m1: float, m2: float, w_star_norm: float) -> tuple[float, float]:
    """Theorem 2's constants as the paper states them: ``C1 = L M1 / (2 M2)``, ``C2 = L (||w*|| + M1)^2 / 2``.

    ``L``: Lipschitz constant of the gradient; ``M1``: Theorem 1's bound ``||w_k - w*|| <= M1``; ``M2``: the
    assumed lower bound ``||w_k|| >= M2``.

    .. note::
        The appendix proof ends with ``C1 ||w0 - w*||^2`` where the statement has ``C1``; the statement drops
        the factor ``||w0 - w*||^2`` (at most ``M1^2``), and with it :func:`theorem2_bound` is not a bound (a
        counterexample is there). See :func:`fixed_lr_bound` for a bound whose proof holds.

    Example:
        >>> theorem2_constants(2.0, 1.0, 0.5, 3.0)
        (2.0, 16.0)
    """
    lipschitz, m1, m2 = (_check_positive(n, v) for n, v in (("lipschitz", lipschitz), ("m1", m1), ("m2", m2)))
    w_star_norm = _check_positive("w_star_norm", w_star_norm, allow_zero=True)
    return lipschitz * m1 / (2 * m2), lipschitz * (w_star_norm + m1) ** 2 / 2


def theorem2_bound(k: int, lr: float, c1: float, c2: float) -> float:
    """Theorem 2 as stated: ``min_{i<k} f(w_i) - f* <= C1 / (k lr) + lr^2 C2`` (§4.2), with ``C1``, ``C2`` from
    :func:`theorem2_constants`.

    .. note::
        **Not a bound as stated.** (1) The statement's ``C1 = L M1 / (2 M2)`` drops the factor ``||w0 - w*||^2``
        that the appendix proof ends with, and the inequality then fails for a start far from ``w*``: on the
        paper's own §3.1 quadratic ``f(w) = (w - 10)^2 / 2`` from ``w0 = 20`` with ``lr = 0.1`` (``L = 1``,
        ``M1 = ||w0 - w*|| = 10``, ``M2 = min |w_k| >= 9``, ``||w*|| = 10``) the bound at ``k = 1`` is 7.56 while
        ``f(w0) - f* = 50`` (and ``f(w1) - f* = 32``, so the proof's indexing ``min_{1<=i<=k}`` fails too); it
        fails for ``k <= 5`` there (``k <= 4`` in the proof's indexing), and for some ``k`` on 15-19 % of random
        convex quadratics with random starts (1-3 dimensions). (2) Even with the factor
        restored, the proof bounds ``(||g_k|| / ||w_k||) (||w_k - w*||^2 - ||w_{k+1} - w*||^2)`` by ``(L M1 / M2)``
        times the difference, which is only valid when the difference is non-negative; LARS's distance to ``w*``
        is not monotone (§3.1), so the telescoping sum does not follow (we found no violation of that version on
        random quadratics, but it is unproven). The bound that the same steps do prove is :func:`fixed_lr_bound`
        (``||w0 - w*||^2`` kept, an ``lr`` term instead of ``lr^2``).

    Example:
        >>> round(theorem2_bound(100, 0.1, 2.0, 16.0), 6)
        0.36
        >>> c1, c2 = theorem2_constants(1.0, 10.0, 9.0, 10.0)  # f = (w - 10)^2 / 2 from w0 = 20, as in the note
        >>> round(theorem2_bound(1, 0.1, c1, c2), 3), 0.5 * (20.0 - 10.0) ** 2  # the bound < f(w0) - f*
        (7.556, 50.0)
        >>> fixed_lr_bound(1, 0.1, lipschitz=1.0, m1=10.0, m2=9.0, w_star_norm=10.0, dist0=10.0) >= 50.0
        True
    """
    k = _int("k", k, min_value=1)
    lr = _check_positive("lr", lr)
    c1 = _check_positive("c1", c1, allow_zero=True)
    c2 = _check_positive("c2", c2, allow_zero=True)
    return c1 / (k * lr) + lr**2 * c2


def corollary_2_1(eps: float, c1: float, c2: float) -> tuple[float, int]:
    """Corollary 2.1 as stated: ``lr = sqrt(eps / (3 C2))`` and the steps for ``min f - f* < eps`` (§4.2).

    From Theorem 2, ``k > C1 / (lr (eps - lr^2 C2))``; the ``lr`` above minimises the right side, which becomes
    ``3 sqrt(3 C2) C1 / (2 eps^1.5)``: an ``O(1/eps^1.5)`` rate. Returns ``(lr, k)`` with ``k`` the smallest
    integer above that value.

    .. note::
        Inherits the flaw of :func:`theorem2_bound`: the step count is not guaranteed. On ``f(w) = (w - 10)^2 / 2``
        from ``w0 = 20`` (``L = 1``, and ``M1 = 10``, ``M2 = 9`` measured on the run: ``C1 = 5/9``, ``C2 = 200``)
        it promises 8 steps at ``eps = 2``, 2 at ``eps = 5`` and 1 from ``eps = 7.5`` on. Yet the best of the
        iterates ``w_1 .. w_k`` is still more than ``eps`` above ``f*`` for every ``eps`` from 2 to 20 (at
        ``eps = 5``: ``f(w_2) - f* = 21.2``; at ``eps = 20``: ``f(w_1) - f* = 20.15``), and ``f(w0) - f* = 50``.
        :func:`corollary_2_1_rigorous` is the count that follows from :func:`fixed_lr_bound`.

    Example:
        >>> lr, k = corollary_2_1(0.01, 2.0, 16.0)
        >>> round(lr, 6), k
        (0.014434, 20785)
    """
    eps, c1, c2 = (_check_positive(n, v) for n, v in (("eps", eps), ("c1", c1), ("c2", c2)))
    lr = math.sqrt(eps / (3 * c2))
    bound = 3 * math.sqrt(3 * c2) * c1 / 2 / eps / math.sqrt(eps)  # divided in turn: eps^1.5 may underflow
    return lr, _steps_above("corollary_2_1", bound)


def _steps_above(what: str, bound: float) -> int:
    """The smallest integer above ``bound``; a ValueError when it is not finite (eps too small for a float)."""
    if not math.isfinite(bound):
        raise ValueError(f"{what}: the step count overflows a float (eps too small for these constants)")
    return math.floor(bound) + 1


def fixed_lr_bound(
    k: int, lr: float, *, lipschitz: float, m1: float, m2: float, w_star_norm: float, dist0: float
) -> float:
    r"""A fixed-lr bound that follows from the paper's own inequalities (the correct variant of Theorem 2).

    .. code-block:: text

        min_{i<k} f(w_i) - f*  <=  L M1 ||w0 - w*||^2 / (2 M2 k lr)  +  lr L M1 (||w*|| + M1)^2 / (2 M2)

    Derivation (the first step of Theorem 3's proof, with a constant ``lr``): expanding the update and using
    convexity, ``<g_i, w_i - w*> >= f_i - f*``,

    .. code-block:: text

        ||w_{i+1} - w*||^2 <= ||w_i - w*||^2 - 2 lr (||w_i|| / ||g_i||) (f_i - f*) + lr^2 ||w_i||^2 .

    Summing over ``i < k`` and using ``||w_i|| / ||g_i|| >= M2 / (L M1)`` (``||g_i|| <= L ||w_i - w*|| <= L M1``),
    ``f_i - f* >= min_i f_i - f*`` and ``||w_i|| <= ||w*|| + M1`` gives the bound. It needs only convexity and an
    ``L``-Lipschitz gradient besides Theorem 1's ``M1`` and Theorem 2's ``M2``, and yields an ``O(1/eps^2)``
    rate (:func:`corollary_2_1_rigorous`), the rate the paper itself quotes for decaying learning rates.

    Example:
        >>> round(fixed_lr_bound(100, 0.1, lipschitz=2.0, m1=1.0, m2=0.5, w_star_norm=3.0, dist0=1.0), 6)
        3.4
    """
    k = _int("k", k, min_value=1)
    lr, lipschitz, m1, m2 = (
        _check_positive(n, v) for n, v in (("lr", lr), ("lipschitz", lipschitz), ("m1", m1), ("m2", m2))
    )
    w_star_norm = _check_positive("w_star_norm", w_star_norm, allow_zero=True)
    dist0 = _check_positive("dist0", dist0, allow_zero=True)
    c1 = lipschitz * m1 * dist0**2 / (2 * m2)
    c2 = lipschitz * m1 * (w_star_norm + m1) ** 2 / (2 * m2)
    return c1 / (k * lr) + lr * c2


def corollary_2_1_rigorous(eps: float, c1: float, c2: float) -> tuple[float, int]:
    """Learning rate and step count for ``min f - f* < eps`` from a bound ``C1 / (k lr) + lr C2``.

    With :func:`fixed_lr_bound`'s constants (``C1 = L M1 ||w0 - w*||^2 / (2 M2)``,
    ``C2 = L M1 (||w*|| + M1)^2 / (2 M2)``): ``k > C1 / (lr (eps - lr C2))`` is smallest at ``lr = eps / (2 C2)``,
    giving ``k > 4 C1 C2 / eps^2``. Returns ``(lr, k)``, ``k`` the smallest integer above the bound.

    Example:
        >>> corollary_2_1_rigorous(0.01, 2.0, 16.0)
        (0.0003125, 1280001)
    """
    eps, c1, c2 = (_check_positive(n, v) for n, v in (("eps", eps), ("c1", c1), ("c2", c2)))
    return eps / (2 * c2), _steps_above("corollary_2_1_rigorous", 4 * c1 * c2 / eps / eps)


# ----------------------------------------------------------------------------------------------------------------
# §4.3: decaying learning rate
# ----------------------------------------------------------------------------------------------------------------
def theorem3_lr(k: int, lr0: float, power: float = 1.0) -> float:
    """A schedule meeting Theorem 3's conditions: ``lr_k = lr0 / (k + 1)^power`` with ``1/2 < power <= 1`` (§4.3).

    Then ``sum lr_k = inf`` (power <= 1) and ``sum lr_k^2 < inf`` (power > 1/2); other powers (and anything but a
    finite number) are rejected with a ValueError.

    Example:
        >>> theorem3_lr(3, 0.4)
        0.1
    """
    allowed = "a finite number in (0.5, 1] for sum lr = inf and sum lr^2 < inf"
    p = _real("power", power, allowed)
    if not 0.5 < p <= 1.0:
        raise ValueError(f"power must be {allowed} (got {power!r})")
    lr0 = _check_positive("lr0", lr0)
    k = _int("k", k, min_value=0)
    return lr0 / (k + 1) ** p


def descent_bound(lrs: Sequence[float], w_norms: Sequence[float], grad_norms: Sequence[float], dist0: float) -> float:
    """Theorem 3's inequality (8), first form, on a measured run: a bound on ``min_{i<k} f(w_i) - f*``.

    .. code-block:: text

        min_{i<k} f(w_i) - f*  <=  (||w_0 - w*||^2 + sum_i lr_i^2 ||w_i||^2) / (2 sum_i lr_i ||w_i|| / ||g_i||)

    for eq. (1) on any convex differentiable ``f`` and any step sizes ``lr_0 .. lr_{k-1}`` (§4.3, appendix),
    with ``||w_i||`` and ``||g_i|| > 0`` the norms at step ``i`` (the same norm as the update, L2 in the paper).
    Each of ``lrs``, ``w_norms``, ``grad_norms`` is a list, a tuple, or a 1-D array or tensor of numbers.

    Example:
        >>> round(descent_bound([0.1, 0.1], [1.0, 1.0], [2.0, 2.0], 1.0), 6)
        5.1
    """
    lrs, w_norms, grad_norms = (
        _as_list(n, v) for n, v in (("lrs", lrs), ("w_norms", w_norms), ("grad_norms", grad_norms))
    )
    if not (len(lrs) == len(w_norms) == len(grad_norms)) or not lrs:
        raise ValueError("lrs, w_norms and grad_norms must be non-empty and of equal length")
    lrs = [_check_positive(f"lrs[{i}]", eta, allow_zero=True) for i, eta in enumerate(lrs)]
    w_norms = [_check_positive(f"w_norms[{i}]", w, allow_zero=True) for i, w in enumerate(w_norms)]
    grad_norms = [_check_positive(f"grad_norms[{i}]", g) for i, g in enumerate(grad_norms)]  # the bound divides by it
    dist0 = _check_positive("dist0", dist0, allow_zero=True)
    num = dist0**2 + sum(eta**2 * w**2 for eta, w in zip(lrs, w_norms))
    den = 2 * sum(eta * w / g for eta, w, g in zip(lrs, w_norms, grad_norms))
    if den == 0:
        raise ValueError("descent_bound: every lr_i * ||w_i|| is 0 (no step was taken), so there is no bound")
    return num / den


def theorem3_bound(lrs: Sequence[float], *, lipschitz: float, m1: float, m2: float, w_star_norm: float) -> float:
    """Theorem 3's inequality (8), last form: ``(M1^2 + M3^2 sum lr_i^2) / (2 M2 / (M1 L) sum lr_i)`` (§4.3).

    ``M3 = ||w*|| + M1``. Under the conditions of :func:`theorem3_lr` the numerator stays bounded and the
    denominator grows without bound, so the bound, and ``min f - f*``, go to 0. ``lrs`` is a list, a tuple, or a
    1-D array or tensor of numbers.

    Example:
        >>> round(theorem3_bound([0.1] * 10, lipschitz=2.0, m1=1.0, m2=0.5, w_star_norm=3.0), 6)
        5.2
    """
    lrs = [_check_positive(f"lrs[{i}]", eta, allow_zero=True) for i, eta in enumerate(_as_list("lrs", lrs))]
    if not lrs:
        raise ValueError("lrs must be non-empty")
    if not sum(lrs) > 0:
        raise ValueError("theorem3_bound: every lr is 0 (no step was taken), so there is no bound")
    lipschitz, m1, m2 = (_check_positive(n, v) for n, v in (("lipschitz", lipschitz), ("m1", m1), ("m2", m2)))
    w_star_norm = _check_positive("w_star_norm", w_star_norm, allow_zero=True)
    m3 = w_star_norm + m1
    return (m1**2 + m3**2 * sum(eta**2 for eta in lrs)) / (2 * m2 / (m1 * lipschitz) * sum(lrs))


# ----------------------------------------------------------------------------------------------------------------
# §5 / Fig. 1: the region fixed-lr LARS ends in
# ----------------------------------------------------------------------------------------------------------------
def quadratic_cosine_bound(condition_number: float) -> float:
    """``min_e cos(e, A e) = 2 sqrt(kappa) / (1 + kappa)`` for a symmetric positive definite ``A`` (Kantorovich).

    For ``f(w) = (w - w*)^T A (w - w*) / 2`` the gradient is ``A e`` with ``e = w - w*``; ``kappa = L / m``.

    Example:
        >>> quadratic_cosine_bound(1.0), round(quadratic_cosine_bound(9.0), 6)
        (1.0, 0.6)
    """
    kappa = _real("condition_number", condition_number, "a finite number >= 1")
    if not kappa >= 1:
        raise ValueError(f"condition_number must be a finite number >= 1 (got {condition_number!r})")
    return 2 * math.sqrt(kappa) / (1 + kappa)


def strongly_convex_cosine_bound(m: float, lipschitz: float) -> float:
    """``cos(w - w*, grad f(w)) >= m / L`` for ``m``-strongly convex ``f`` with ``L``-Lipschitz gradient (eq. (4)).

    This is the paper's bound in the proof of Lemma 1 (looser than :func:`quadratic_cosine_bound` on quadratics).

    Example:
        >>> strongly_convex_cosine_bound(1.0, 4.0)
        0.25
    """
    m = _check_positive("m", m)
    lipschitz = _check_positive("lipschitz", lipschitz)
    if m > lipschitz:
        raise ValueError(f"m must be <= lipschitz (got m={m!r}, lipschitz={lipschitz!r})")
    return m / lipschitz


def region_radius(lr: float, w_star_norm: float, cosine: float) -> float:
    r"""A radius ``R`` such that fixed-lr LARS, once within ``R`` of ``w*``, stays within ``R`` for ever.

    .. code-block:: text

        R = lr ||w*|| (1 + (1 + lr) / (2c - lr)),     valid for lr < 2c,

    where ``c`` (``cosine``) is a lower bound on ``cos(w - w*, grad f(w))``: :func:`quadratic_cosine_bound` for a
    quadratic, :func:`strongly_convex_cosine_bound` in general. For small ``lr``, ``R ~ (1 + 1/(2c)) lr ||w*||``
    (``1.5 lr ||w*||`` when ``c = 1``): the region of Fig. 1 shrinks linearly with ``lr`` and with ``||w*||``.

    Derivation (L2 norm, ``e = w - w*``, ``g = grad f(w)``, step ``s = lr ||w|| g / ||g||``):

    .. code-block:: text

        ||e - s||^2 = ||e||^2 - 2 lr ||w|| <e, g> / ||g|| + lr^2 ||w||^2
                   <= ||e||^2 - lr ||w|| (2c ||e|| - lr ||w||).

    So the distance can only grow (Lemma 1's set ``S``) when ``2c ||e|| < lr ||w|| <= lr (||w*|| + ||e||)``, i.e.
    ``||e|| < r = lr ||w*|| / (2c - lr)``; one step from there moves at most ``lr ||w|| <= lr (||w*|| + r)``, so it
    lands within ``r + lr (||w*|| + r) = R``. Outside ``S`` the distance does not grow. Hence the ball of radius
    ``R`` is invariant. The paper proves only that some bounded region exists (Lemma 1, Theorem 1).

    Example:
        >>> region_radius(0.1, 2.0, 1.0)
        0.31578947368421056
    """
    lr_f = _check_positive("lr", lr)
    w_star_norm = _check_positive("w_star_norm", w_star_norm, allow_zero=True)
    c = _real("cosine", cosine, "a finite number in (0, 1]")
    if not 0 < c <= 1:
        raise ValueError(f"cosine must be a finite number in (0, 1] (got {cosine!r})")
    if lr_f >= 2 * c:
        raise ValueError(f"lr must be < 2 * cosine = {2 * c!r} for a bounded region (got {lr!r})")
    return lr_f * w_star_norm * (1 + (1 + lr_f) / (2 * c - lr_f))


def region_lower_bound(lr: float, w_star_norm: float) -> float:
    """Of any two consecutive fixed-lr LARS iterates, one is at least ``lr ||w*|| / (2 + lr)`` from ``w*``.

    Consecutive iterates are ``lr ||w_k||`` apart, so ``m = max(||e_k||, ||e_{k+1}||) >= lr ||w_k|| / 2 >=
    lr (||w*|| - m) / 2``. Fixed-lr LARS therefore never converges (unless it lands exactly on ``w*``): the region
    of Fig. 1 has a size between this and :func:`region_radius`, both proportional to ``lr ||w*||``.

    Example:
        >>> region_lower_bound(0.1, 2.1)
        0.1
    """
    lr = _check_positive("lr", lr)
    w_star_norm = _check_positive("w_star_norm", w_star_norm, allow_zero=True)
    return lr * w_star_norm / (2 + lr)
