"""The paper's predictions (theorylr.theory.lars) against the real LARS optimizer.

Every run uses :class:`theorylr.optim.lars.LARS` itself with ``momentum=0`` and ``eps=0`` (the paper's eq. (1)),
in float64, and checks the predictions exactly: step counts are equal, invariance holds at every step, and the
iterates equal the predicted sequence to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import pytest
import torch

from theorylr.optim.lars import LARS
from theorylr.theory import lars as theory

Loss = Callable[[torch.Tensor], torch.Tensor]
A = 1.7  # the minimiser of the 1-D functions


def _convex_1d(a: float) -> dict[str, Loss]:
    return {
        "quadratic": lambda w: (w - a) ** 2 / 2,
        "log-cosh": lambda w: torch.log(torch.cosh(w - a)),
        "quartic": lambda w: (w - a) ** 4 / 4,
    }


FUNCTIONS = _convex_1d(A)


def _run_1d(
    loss: Loss, w0: float, lr: float, steps: int, *, min_norm: float = 0.0, lrs: Sequence[float] | None = None
) -> list[float]:
    """The real optimizer on a 1-element parameter; returns w_0 .. w_steps."""
    w = torch.nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    opt = LARS([w], lr=lr, momentum=0.0, eps=0.0, min_norm=min_norm)
    out = [w0]
    for k in range(steps):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[k]
        opt.zero_grad()
        loss(w).sum().backward()
        opt.step()
        out.append(float(w.detach()))
    return out


def _assert_sequences_close(got: Sequence[float], expected: Sequence[float], rtol: float) -> None:
    torch.testing.assert_close(
        torch.tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64), rtol=rtol, atol=0
    )


def _away_from_integers(x: float) -> bool:
    return abs(x - round(x)) > 1e-6


# ----------------------------------------------------------------------------------------------------------------
# §3.1 / §3.3: the invariant interval and the steps to reach it
# ----------------------------------------------------------------------------------------------------------------
CASES_1D = [
    *((w0, lr, A) for w0 in (0.05, 1.65, 60.0) for lr in (0.02, 0.1, 0.45)),
    *((w0, 0.1, -A) for w0 in (0.8, 9.0)),  # a < 0: the mirror image
]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize(("w0", "lr", "a"), CASES_1D)
def test_enters_the_interval_at_the_predicted_step_never_skips_and_never_leaves(
    name: str, w0: float, lr: float, a: float
) -> None:
    w0 = math.copysign(w0, a)
    loss = _convex_1d(a)[name]
    predicted = theory.steps_to_interval(w0, a, lr)
    low, high = theory.invariant_interval(a, lr)
    traj = _run_1d(loss, w0, lr, predicted + 60)

    inside = [low <= w <= high for w in traj]
    first = inside.index(True)
    assert first <= predicted, "entered later than predicted"
    bound = (
        math.log(abs(a) * (1 - lr) / abs(w0)) / math.log1p(lr)
        if abs(w0) < abs(a) * (1 - lr)
        else math.log(abs(a) * (1 + lr) / abs(w0)) / math.log1p(-lr)
    )
    if predicted > 0 and _away_from_integers(bound):
        assert first == predicted  # the count is exact, not only an upper bound
    assert all(inside[first:]), "left the interval"
    # Never skips: before entering, every iterate is on w0's side of the interval, moving monotonically towards it.
    side = 1 if abs(w0) < abs(a) else -1
    for w in traj[:first]:
        assert abs(w) < abs(a) * (1 - lr) if side > 0 else abs(w) > abs(a) * (1 + lr)
    for u, v in pairwise(traj[: first + 1]):
        assert side * (abs(v) - abs(u)) > 0 and u * v > 0
    # The iterates are the predicted sign iteration, whatever the convex function (§3.3).
    _assert_sequences_close(traj, theory.lars_1d_trajectory(w0, a, lr, len(traj) - 1), rtol=1e-12)


def test_steps_are_about_log_ratio_over_lr_for_small_lr() -> None:
    for lr in (1e-2, 1e-3, 1e-4):
        for w0 in (0.01, 50.0):
            exact, approx = theory.steps_to_interval(w0, A, lr), theory.steps_to_interval_approx(w0, A, lr)
            assert abs(exact - approx) / approx < 2 * lr + 1 / approx


def test_one_d_convergence_region_is_lr_times_a() -> None:
    """§3.1: in the interval, |w - a| <= lr |a|, and the iterates keep oscillating (no convergence at fixed lr)."""
    lr = 0.05
    traj = _run_1d(FUNCTIONS["quadratic"], 0.3, lr, 600)
    tail = [abs(w - A) for w in traj[300:]]
    assert max(tail) <= lr * A * (1 + 1e-12)
    assert max(tail) >= theory.region_lower_bound(lr, A)


# ----------------------------------------------------------------------------------------------------------------
# §3.2: the origin attracts when w0 and a have opposite signs
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_origin_attraction_rate_then_the_sgd_fallback(name: str) -> None:
    loss, w0, lr, min_norm = FUNCTIONS[name], -3.0, 0.1, 0.01
    k_star = theory.steps_to_fallback(w0, lr, min_norm)
    traj = _run_1d(loss, w0, lr, k_star + 1, min_norm=min_norm)
    predicted = [theory.origin_attraction(w0, lr, k) for k in range(k_star + 1)]
    _assert_sequences_close(traj[: k_star + 1], predicted, rtol=1e-12)
    assert abs(traj[k_star]) < min_norm <= abs(traj[k_star - 1])
    # At k*, ||w|| < min_norm: the step is plain gradient descent, w - lr f'(w).
    w = torch.tensor([traj[k_star]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(w).sum(), w)
    assert traj[k_star + 1] == pytest.approx(traj[k_star] - lr * float(grad), rel=1e-14)


def test_origin_attraction_without_fallback_never_changes_sign() -> None:
    traj = _run_1d(FUNCTIONS["quadratic"], -3.0, 0.1, 300, min_norm=0.0)
    assert all(w < 0 for w in traj)
    _assert_sequences_close(traj, [theory.origin_attraction(-3.0, 0.1, k) for k in range(301)], rtol=1e-12)


def test_fallback_lets_the_iterates_reach_the_interval() -> None:
    lr = 0.1
    traj = _run_1d(FUNCTIONS["quadratic"], -3.0, lr, 400, min_norm=0.01)
    low, high = theory.invariant_interval(A, lr)
    assert all(low <= w <= high for w in traj[-50:])


# ----------------------------------------------------------------------------------------------------------------
# §4.3, Theorem 3: decaying learning rates converge
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("power", [1.0, 0.75])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_theorem3_schedule_converges_to_the_minimiser(name: str, power: float) -> None:
    steps = 1000
    lrs = [theory.theorem3_lr(k, 0.5, power) for k in range(steps)]
    traj = _run_1d(FUNCTIONS[name], 0.2, lrs[0], steps, lrs=lrs)
    _assert_sequences_close(traj, theory.lars_1d_trajectory(0.2, A, lrs), rtol=1e-12)

    err = [abs(w - A) for w in traj]
    # Exact consequence of eq. (1): e_{k+1} = |e_k - lr_k |w_k||. After a crossing at step j (the side of a
    # changes), e_j <= lr_{j-1} |w_{j-1}|, and e decreases until the next crossing.
    crossings = [j for j in range(1, steps + 1) if (traj[j] - A) * (traj[j - 1] - A) < 0]
    assert crossings, "never reached the minimiser"
    for j, nxt in zip(crossings, [*crossings[1:], steps + 1]):
        envelope = lrs[j - 1] * abs(traj[j - 1])
        assert all(e <= envelope * (1 + 1e-9) for e in err[j:nxt])
    # Crossings keep coming (sum lr = inf), so the envelope, and the error, go to 0 (sum lr^2 < inf bounds it).
    assert crossings[-1] >= steps - 20
    assert err[-1] <= lrs[crossings[-1] - 1] * abs(traj[crossings[-1] - 1]) * (1 + 1e-9)
    assert err[-1] < 5 * lrs[-1] * A
    assert max(err[steps // 2 :]) < max(err[steps // 4 : steps // 2]) < max(err[steps // 8 : steps // 4])


def test_theorem3_bound_holds_on_the_run_and_goes_to_zero() -> None:
    steps = 1000
    lrs = [theory.theorem3_lr(k, 0.5) for k in range(steps)]
    loss = FUNCTIONS["quadratic"]
    traj = _run_1d(loss, 0.2, lrs[0], steps, lrs=lrs)
    gaps = [(w - A) ** 2 / 2 for w in traj]  # f(w) - f*
    grads = [abs(w - A) for w in traj]
    m1 = max(abs(w - A) for w in traj)
    m2 = min(abs(w) for w in traj)
    bounds = []
    for k in (10, 100, steps):
        # the data-dependent form of (8) and its last form with Theorem 1's M1, the M2 of Theorem 2 and L = 1
        measured = min(gaps[:k])
        data = theory.descent_bound(lrs[:k], [abs(w) for w in traj[:k]], grads[:k], abs(traj[0] - A))
        constant = theory.theorem3_bound(lrs[:k], lipschitz=1.0, m1=m1, m2=m2, w_star_norm=A)
        assert measured <= data <= constant * (1 + 1e-12)
        bounds.append(constant)
    assert bounds == sorted(bounds, reverse=True)


def test_theorem3_lr_rejects_schedules_outside_the_conditions() -> None:
    assert theory.theorem3_lr(0, 0.3) == 0.3
    assert theory.theorem3_lr(8, 0.3, 0.5 + 1e-9) == pytest.approx(0.1, rel=1e-8)
    for power in (0.5, 1.01, 0.0):
        with pytest.raises(ValueError, match="power"):
            theory.theorem3_lr(1, 0.1, power)


# ----------------------------------------------------------------------------------------------------------------
# §4.2: Theorem 2, Corollary 2.1, and the corrected fixed-lr bound
# ----------------------------------------------------------------------------------------------------------------
def test_corollary_2_1_lr_minimises_the_step_count_and_meets_eps() -> None:
    c1, c2, eps = 2.0, 16.0, 1e-2
    lr, k = theory.corollary_2_1(eps, c1, c2)

    def needed(eta: float) -> float:
        return c1 / (eta * (eps - eta**2 * c2))

    assert needed(lr) < min(needed(lr * 0.99), needed(lr * 1.01))
    assert k - 1 <= needed(lr) < k
    assert theory.theorem2_bound(k, lr, c1, c2) < eps <= theory.theorem2_bound(k - 1, lr, c1, c2) * (1 + 1e-12)
    assert needed(lr) == pytest.approx(3 * math.sqrt(3 * c2) * c1 / (2 * eps**1.5), rel=1e-12)


def test_rigorous_corollary_lr_minimises_its_step_count() -> None:
    c1, c2, eps = 2.0, 16.0, 1e-2
    lr, k = theory.corollary_2_1_rigorous(eps, c1, c2)

    def needed(eta: float) -> float:
        return c1 / (eta * (eps - eta * c2))

    assert needed(lr) < min(needed(lr * 0.99), needed(lr * 1.01))
    assert k - 1 <= needed(lr) < k
    assert c1 / (k * lr) + lr * c2 < eps


def test_theorem2_constants_as_stated() -> None:
    c1, c2 = theory.theorem2_constants(lipschitz=3.0, m1=2.0, m2=0.5, w_star_norm=1.0)
    assert (c1, c2) == (3.0 * 2.0 / (2 * 0.5), 3.0 * 9.0 / 2)


# ----------------------------------------------------------------------------------------------------------------
# §5 / Fig. 1: fixed-lr LARS on a 2-D quadratic ends in a region of size ~ lr ||w*||; GD converges
# ----------------------------------------------------------------------------------------------------------------
KAPPA = 5.0
_ROT = torch.tensor([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]], dtype=torch.float64)
HESSIAN = _ROT @ torch.diag(torch.tensor([1.0, KAPPA], dtype=torch.float64)) @ _ROT.T
W_STAR = torch.tensor([1.0, 2.0], dtype=torch.float64)
W_INIT = torch.tensor([-3.0, 5.0], dtype=torch.float64)


def _quadratic(w: torch.Tensor) -> torch.Tensor:
    e = w - W_STAR
    return 0.5 * e @ HESSIAN @ e


def _run_2d(
    opt_factory: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer], steps: int
) -> dict[str, list[float]]:
    w = torch.nn.Parameter(W_INIT.clone())
    opt = opt_factory([w])
    rec: dict[str, list[float]] = {"dist": [], "f": [], "w_norm": [], "g_norm": []}
    for _ in range(steps):
        opt.zero_grad()
        loss = _quadratic(w)
        loss.backward()
        rec["dist"].append(float((w.detach() - W_STAR).norm()))
        rec["f"].append(float(loss.detach()))
        rec["w_norm"].append(float(w.detach().norm()))
        rec["g_norm"].append(float(w.grad.norm()))  # type: ignore[union-attr]
        opt.step()
    rec["dist"].append(float((w.detach() - W_STAR).norm()))
    return rec


def test_fixed_lr_lars_region_is_bounded_by_the_derived_constant_and_grows_with_lr() -> None:
    steps, w_star = 800, float(W_STAR.norm())
    cosine = theory.quadratic_cosine_bound(KAPPA)
    sizes = []
    for lr in (0.01, 0.04, 0.16, 0.64):
        rec = _run_2d(lambda ps, lr=lr: LARS(ps, lr=lr, eps=0.0, min_norm=0.0), steps)
        dist = rec["dist"]
        radius = theory.region_radius(lr, w_star, cosine)
        enter = next(k for k, d in enumerate(dist) if d <= radius)
        assert enter < steps // 2
        assert max(dist[enter:]) <= radius, "left the derived region"
        tail = dist[steps // 2 :]
        # Never converges: of two consecutive iterates one is at least lr ||w*|| / (2 + lr) away.
        low = theory.region_lower_bound(lr, w_star)
        assert min(max(a, b) for a, b in pairwise(tail)) >= low
        sizes.append(max(tail))
        assert low <= max(tail) <= radius
        # The corrected Theorem 2 bound and inequality (8) hold on the run (L = kappa; M1, M2 measured).
        m1, m2 = max(dist), min(rec["w_norm"])
        for k in (1, 10, 100, steps):
            best = min(rec["f"][:k])
            rigorous = theory.fixed_lr_bound(k, lr, lipschitz=KAPPA, m1=m1, m2=m2, w_star_norm=w_star, dist0=dist[0])
            data = theory.descent_bound([lr] * k, rec["w_norm"][:k], rec["g_norm"][:k], dist[0])
            assert best <= data <= rigorous * (1 + 1e-12)
    assert sizes == sorted(sizes) and sizes[-1] > 10 * sizes[0]
    # Gradient descent with lr = 1/L converges on the same problem.
    gd = _run_2d(lambda ps: torch.optim.SGD(ps, lr=1 / KAPPA), steps)
    assert gd["dist"][-1] < 1e-12


def test_region_radius_constant_and_validity() -> None:
    # c = 1 (isotropic): R ~ 1.5 lr ||w*|| for small lr.
    assert theory.region_radius(1e-6, 1.0, 1.0) / 1e-6 == pytest.approx(1.5, rel=1e-5)
    assert theory.strongly_convex_cosine_bound(1.0, KAPPA) <= theory.quadratic_cosine_bound(KAPPA)
    with pytest.raises(ValueError, match="lr"):
        theory.region_radius(1.3, 1.0, 0.6)


# ----------------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: theory.steps_to_interval(-1.0, 1.0, 0.1), "same sign"),
        (lambda: theory.steps_to_interval(0.0, 1.0, 0.1), "non-zero"),
        (lambda: theory.invariant_interval(1.0, 1.0), "lr"),
        (lambda: theory.steps_to_fallback(1.0, 0.1, 0.0), "min_norm"),
        (lambda: theory.lars_1d_trajectory(1.0, 2.0, 0.1), "steps"),
        (lambda: theory.descent_bound([], [], [], 1.0), "lrs"),
        (lambda: theory.theorem2_bound(0, 0.1, 1.0, 1.0), "k"),
        (lambda: theory.quadratic_cosine_bound(0.5), "condition_number"),
        (lambda: theory.invariant_interval(math.nan, 0.1), "a must be a finite number"),
        (lambda: theory.steps_to_interval(math.inf, 1.0, 0.1), "w0 must be a finite number"),
        (lambda: theory.steps_to_fallback(math.inf, 0.5, 0.1), "w0 must be a finite number"),
        (lambda: theory.lars_1d_trajectory(1.0, 2.0, -0.5, 2), "lr"),
        (lambda: theory.lars_1d_trajectory(1.0, 2.0, 0.1, -3), "steps"),
        (lambda: theory.theorem2_bound(5, 0.1, -1.0, 1.0), "c1"),
        (lambda: theory.theorem2_bound(1.5, 0.1, 1.0, 1.0), "k must be an integer"),  # type: ignore[arg-type]
        (lambda: theory.descent_bound([0.1], [1.0], [0.0], 1.0), r"grad_norms\[0\]"),
        (lambda: theory.corollary_2_1(1e-300, 1.0, 1.0), "overflows"),
    ],
)
def test_theory_arguments_are_checked(call: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("lr", [0.5, 0.375, 0.25, 0.125])
def test_steps_to_interval_is_exact_where_w0_lies_on_a_power_from_the_interval(lr: float) -> None:
    """w0 = a (1 - lr) / (1 + lr)^k (or from above): the logarithms' ceiling can round to either side there. The
    reference iterates eq. (1) in exact rational arithmetic on the floats given."""
    from fractions import Fraction

    def exact(w0: float, lr: float) -> int:
        w, eta = Fraction(w0), Fraction(lr)
        low, high, steps = 1 - eta, 1 + eta, 0
        while not low <= w <= high:
            w, steps = (w + eta * w if w < low else w - eta * w), steps + 1
        return steps

    for k in range(1, 30):
        for w0 in ((1 - lr) / (1 + lr) ** k, (1 + lr) / (1 - lr) ** k):
            assert theory.steps_to_interval(w0, 1.0, lr) == exact(w0, lr), (w0, lr, k)


def test_steps_to_fallback_is_exact_where_min_norm_lies_on_a_power() -> None:
    """Where ``min_norm`` is (the float nearest to) ``|w0| (1-lr)^k``, the logarithms round the count one off; the
    count is checked with rationals on the numbers given, as a brute-force search finds it."""
    from fractions import Fraction

    assert theory.steps_to_fallback(1.0, 0.1, 0.43046721) == 8  # 0.9^8 as a float: the logarithms said 9
    for w0 in (1.0, 3.0, -0.5):
        for lr in (0.1, 0.2, 0.3, 0.5):
            for k in range(1, 25):
                min_norm = float(Fraction(abs(w0)) * (1 - Fraction(lr)) ** k)
                expected = next(
                    j for j in range(200) if Fraction(abs(w0)) * (1 - Fraction(lr)) ** j < Fraction(min_norm)
                )
                assert theory.steps_to_fallback(w0, lr, min_norm) == expected, (w0, lr, k)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.theorem3_bound([-0.1, 0.05], lipschitz=1, m1=1, m2=1, w_star_norm=1), r"lrs\[0\]"),
        (lambda: theory.theorem3_bound([0.0, 0.0], lipschitz=1, m1=1, m2=1, w_star_norm=1), "every lr is 0"),
        (lambda: theory.theorem3_bound([0.1], lipschitz=1, m1=1, m2=1, w_star_norm=-5), "w_star_norm"),
        (lambda: theory.descent_bound([0.0], [1.0], [1.0], 1.0), "no step was taken"),
        (lambda: theory.quadratic_cosine_bound(math.inf), "condition_number"),
        (lambda: theory.origin_attraction(1.0, 0.5, 2.5), "k must be an integer"),
        (lambda: theory.fixed_lr_bound(2.5, 0.1, lipschitz=1, m1=1, m2=1, w_star_norm=1, dist0=1), "k must be"),
        (lambda: theory.theorem3_lr(2.5, 0.1), "k must be an integer"),
    ],
)
def test_theory_helpers_refuse_inputs_that_have_no_bound(call: Callable[[], object], match: str) -> None:
    """Negative or all-zero learning rates returned a negative 'bound' or a ZeroDivisionError; fractional step
    counts were taken."""
    with pytest.raises(ValueError, match=match):
        call()
