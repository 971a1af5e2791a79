"""Paper-fidelity checks: claims of Gitman et al. (LARS) and of the exact-step Adam paper, verified on the real code.

The LARS side checks the proof steps of Lemma 1 and Theorem 1 (appendix) with :class:`theorylr.optim.lars.LARS`
itself, and the derived region of :func:`theorylr.theory.lars.region_radius` for invariance *and* tightness; the
defaults of :class:`LARS` against eq. (1) with the tweaks of §6.1. Many points are stepped at once by giving each
its own parameter tensor: LARS computes one trust ratio per tensor, so one ``step()`` is one eq. (1) step of every
point. The Adam side checks the documented departure of ``exact_step_adam`` from Algorithm 1 (bias correction).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.estimate._reference import classification_data, mlp
from tests.theory.test_lars_theory import _run_1d
from theorylr.optim.exact_adam import exact_step_adam
from theorylr.optim.lars import LARS, PercentDelta
from theorylr.theory import lars as theory

F64 = torch.float64


def _spd(eigenvalues: list[float], seed: int) -> torch.Tensor:
    """A symmetric matrix with the given eigenvalues and a random orthonormal basis."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=F64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ q.T


def _lars_step_each(points: torch.Tensor, hessian: torch.Tensor, w_star: torch.Tensor, lr: float) -> torch.Tensor:
    """One step of the real LARS (eq. (1): no momentum, eps 0, min_norm 0) from every row of ``points`` on
    ``f(w) = (w - w*)^T H (w - w*) / 2``, each row its own parameter tensor (so its own trust ratio)."""
    params = [nn.Parameter(p.clone()) for p in points]
    for p in params:
        p.grad = hessian @ (p.detach() - w_star)
    LARS(params, lr=lr, eps=0.0, min_norm=0.0).step()
    return torch.stack([p.detach() for p in params])


def _directions(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, dim, generator=g, dtype=F64)
    return e / e.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------------
# eq. (1) and §6.1: the defaults
# ----------------------------------------------------------------------------------------------------------------
def test_default_lars_is_eq_1_with_the_eps_and_the_sgd_fallback_of_section_6_1() -> None:
    """§6.1: "a small constant epsilon term in the denominator of the local learning rate" and "if the norm of the
    variable is close to zero (less than 0.01), then we switch to SGD"; eq. (1) otherwise (L2 norms, ratio
    ``||w|| / ||g||`` with coefficient 1, no momentum), per tensor. Only ``lr`` is given here."""
    lr = 0.1
    big = nn.Parameter(torch.tensor([3.0, 4.0], dtype=F64))  # ||w|| = 5
    tiny_grad = nn.Parameter(torch.tensor([0.6, 0.8], dtype=F64))  # ||w|| = 1, ||g|| = 1e-8 = eps
    small = nn.Parameter(torch.tensor([0.006, 0.008], dtype=F64))  # ||w|| = 0.01 exactly: adapted (strict <)
    below = nn.Parameter(torch.tensor([0.0054, 0.0072], dtype=F64))  # ||w|| = 0.009: SGD
    params = [big, tiny_grad, small, below]
    grads = [
        torch.tensor([0.0, 10.0], dtype=F64),
        torch.tensor([1e-8, 0.0], dtype=F64),
        torch.tensor([2.0, 0.0], dtype=F64),
        torch.tensor([2.0, 0.0], dtype=F64),
    ]
    starts = [p.detach().clone() for p in params]
    opt = LARS(params, lr=lr)
    for _ in range(2):  # a second step with the same gradients: no momentum means the same kind of step again
        for p, g in zip(params, grads):
            p.grad = g.clone()
        before = [p.detach().clone() for p in params]
        opt.step()
        for p, g, w in zip(params, grads, before):
            w_norm, g_norm = float(w.norm()), float(g.norm())
            ratio = 1.0 if w_norm < 0.01 else w_norm / (g_norm + 1e-8)
            torch.testing.assert_close(p.detach(), w - lr * ratio * g, rtol=1e-13, atol=0)
    # the eps is 1e-8: ||g|| = eps halves the ratio to ||w|| / (2 eps), so each step moves w by lr ||w|| / 2
    assert float(starts[1][0]) - 0.05 - lr * 0.5 * math.hypot(0.55, 0.8) == pytest.approx(float(tiny_grad.detach()[0]))
    # PercentDelta: the same with L1 norms (||w||_1 = 7, ||g||_1 = 10: ratio 0.7)
    w = nn.Parameter(torch.tensor([3.0, -4.0], dtype=F64))
    w.grad = torch.tensor([6.0, -4.0], dtype=F64)
    PercentDelta([w], lr=lr).step()
    torch.testing.assert_close(
        w.detach(), torch.tensor([3.0, -4.0], dtype=F64) - lr * 7.0 / (10.0 + 1e-8) * w.grad, rtol=1e-14, atol=0
    )


# ----------------------------------------------------------------------------------------------------------------
# Lemma 1 and Theorem 1 (appendix): the set S of points whose next step is farther from w*
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lr", [0.05, 0.3, 0.8])
def test_lemma1_equivalence_2_3_membership_of_s_is_the_cosine_condition(lr: float) -> None:
    """(2) <=> (3): the step from ``w`` is not farther from ``w*`` iff ``||w|| / ||w - w*|| <= (2 / lr) cos(alpha)``,
    ``alpha`` the angle between ``w - w*`` and ``grad f(w)``; checked both ways on 1000 points of a 3-D quadratic."""
    hessian = _spd([0.5, 2.0, 9.0], seed=1)
    w_star = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    g = torch.Generator().manual_seed(2)
    points = w_star + torch.randn(1000, 3, generator=g, dtype=F64) * torch.logspace(-2, 2, 1000, dtype=F64)[:, None]
    after = _lars_step_each(points, hessian, w_star, lr)
    e = points - w_star
    grads = e @ hessian
    cos = (e * grads).sum(1) / (e.norm(dim=1) * grads.norm(dim=1))
    lhs, rhs = points.norm(dim=1) / e.norm(dim=1), 2.0 / lr * cos
    clear = (lhs - rhs).abs() > 1e-9 * rhs  # leave out the boundary, where rounding decides
    in_s = (after - w_star).norm(dim=1) > e.norm(dim=1)
    assert clear.sum() > 990
    assert torch.equal(in_s[clear], (lhs > rhs)[clear])
    assert 0 < int(in_s.sum()) < len(points)  # both sides of the condition occur


def test_lemma1_with_lr_m_over_l_no_point_beyond_twice_w_star_moves_away() -> None:
    """The proof of Lemma 1 with ``eps = 1``: for ``||w|| > M(1)`` (here ``2 ||w*||``, where ``||w|| / ||w - w*|| <
    2``) and ``lr <= m / L``, eq. (4)'s ``cos(alpha) >= m / L`` gives ``w`` outside ``S``: the next iterate is not
    farther from ``w*``. Theorem 1's "not diverge" rests on this."""
    m, big_l = 0.5, 12.0
    hessian = _spd([m, 3.0, big_l], seed=3)
    w_star = torch.tensor([2.0, 1.0, -1.0], dtype=F64)
    radius = 2 * float(w_star.norm())
    dirs = _directions(1000, 3, seed=4)
    scales = radius * torch.logspace(1e-6, 3, 1000, dtype=F64)  # ||w|| from just above 2||w*|| to 1e3x
    points = dirs * scales[:, None]
    assert bool((points.norm(dim=1) > radius).all())
    e = points - w_star
    grads = e @ hessian
    cos = (e * grads).sum(1) / (e.norm(dim=1) * grads.norm(dim=1))
    assert float(cos.min()) >= theory.strongly_convex_cosine_bound(m, big_l)  # eq. (4)
    lr = theory.strongly_convex_cosine_bound(m, big_l)  # the lemma's lr = m / L
    after = _lars_step_each(points, hessian, w_star, lr)
    assert bool(((after - w_star).norm(dim=1) <= e.norm(dim=1) * (1 + 1e-14)).all())


@pytest.mark.parametrize(("eigenvalues", "seed"), [([1.0, 5.0], 0), ([1.0, 3.0, 40.0], 1), ([2.0, 2.5, 3.0, 8.0], 2)])
def test_theorem1_with_an_explicit_m_distance_never_exceeds_max_of_start_and_region_radius(
    eigenvalues: list[float], seed: int
) -> None:
    """Theorem 1 (iterates bounded), with the constant made explicit: outside the ball of radius ``R``
    (:func:`region_radius`) the distance to ``w*`` does not grow, and from inside the ball a step stays in it, so
    ``||w_k - w*|| <= max(||w_0 - w*||, R)`` for every ``k``; 24 runs of 150 steps per quadratic, the real LARS."""
    dim = len(eigenvalues)
    hessian = _spd(eigenvalues, seed)
    g = torch.Generator().manual_seed(10 + seed)
    w_star = torch.randn(dim, generator=g, dtype=F64) * 3
    cosine = theory.quadratic_cosine_bound(max(eigenvalues) / min(eigenvalues))
    lr = 0.6 * 2 * cosine
    radius = theory.region_radius(lr, float(w_star.norm()), cosine)
    starts = w_star + torch.randn(24, dim, generator=g, dtype=F64) * torch.logspace(-1, 2, 24, dtype=F64)[:, None]
    params = [nn.Parameter(s.clone()) for s in starts]
    opt = LARS(params, lr=lr, eps=0.0, min_norm=0.0)
    bound = torch.clamp((starts - w_star).norm(dim=1), min=radius) * (1 + 1e-12)
    worst = 0.0
    for _ in range(150):
        for p in params:
            p.grad = hessian @ (p.detach() - w_star)
        opt.step()
        dist = torch.stack([(p.detach() - w_star).norm() for p in params])
        assert bool((dist <= bound).all())
        worst = max(worst, float((dist / radius).max()))
    assert worst > 0.3  # the runs do reach the region's scale (the check is not vacuous)


# ----------------------------------------------------------------------------------------------------------------
# §5 / Fig. 1: the derived region radius is invariant and close to tight
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kappa", "fraction", "tight"), [(4.0, 0.9, 0.915), (50.0, 0.9, 0.994), (50.0, 0.999, 0.9999)])
def test_region_radius_ball_is_invariant_and_nearly_tight(kappa: float, fraction: float, tight: float) -> None:
    """:func:`region_radius`: a step of the real LARS from any point within ``R`` of ``w*`` lands within ``R``
    (points on the sphere of radius ``R`` and inside it), and some point on the sphere lands beyond ``tight * R``,
    so ``R`` is not loose by more than ``1 - tight`` there (lr = ``fraction * 2c``, c the Kantorovich cosine).
    Measured maxima (360 or 3600 directions alike): 0.9184, 0.9946, 0.99994."""
    hessian = torch.diag(torch.tensor([1.0, kappa], dtype=F64))
    w_star = torch.tensor([1.0, 0.0], dtype=F64)
    cosine = theory.quadratic_cosine_bound(kappa)
    lr = fraction * 2 * cosine
    radius = theory.region_radius(lr, 1.0, cosine)
    angles = torch.linspace(0, 2 * math.pi, 361, dtype=F64)[:-1]
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    points = torch.cat([w_star + s * radius * circle for s in (1.0, 0.6, 0.2, 0.02)])
    after = _lars_step_each(points, hessian, w_star, lr)
    ratios = (after - w_star).norm(dim=1) / radius
    assert float(ratios.max()) <= 1 + 1e-12
    assert float(ratios[: len(circle)].max()) >= tight


def test_kantorovich_cosine_bound_is_attained() -> None:
    """:func:`quadratic_cosine_bound` is the minimum of ``cos(e, A e)``, not only a lower bound: attained at
    ``e = u_1 / sqrt(lambda_1) + u_n / sqrt(lambda_n)`` (the extreme eigenvectors), so :func:`region_radius` with it
    uses the exact worst case of a quadratic."""
    eigenvalues = [0.3, 1.1, 4.0, 7.5]
    a = _spd(eigenvalues, seed=5)
    vals, vecs = torch.linalg.eigh(a)
    e = vecs[:, 0] / vals[0].sqrt() + vecs[:, -1] / vals[-1].sqrt()
    cos = float(e @ a @ e / (e.norm() * (a @ e).norm()))
    assert cos == pytest.approx(theory.quadratic_cosine_bound(7.5 / 0.3), rel=1e-12)
    others = _directions(20000, 4, seed=6)
    cos_all = (others * (others @ a)).sum(1) / (others @ a).norm(dim=1)
    assert float(cos_all.min()) >= cos * (1 - 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# §3.1: exact hits of the minimiser, and the precondition of §3.3
# ----------------------------------------------------------------------------------------------------------------
def test_more_than_two_points_of_the_interval_reach_the_optimum_exactly() -> None:
    """§3.1 says 1-D LARS "can get exactly to the optimum from only 2 specific points". Inside the interval
    ``[a(1-lr), a(1+lr)] = [1.5, 4.5]`` (``a = 3``, ``lr = 0.5``) both ``a / (1 + lr) = 2`` and
    ``a / (1 - lr^2) = 4`` (two steps: 4 -> 2 -> 3) reach ``a`` exactly, and so does every point of the preimage
    tree (``8/3 -> 4``, ...): countably many, not two. The real optimizer then stays at ``a`` (zero gradient)."""
    a, lr = 3.0, 0.5
    low, high = theory.invariant_interval(a, lr)
    for w0, steps in ((2.0, 1), (4.0, 2)):
        assert low <= w0 <= high
        closed = theory.lars_1d_trajectory(w0, a, lr, steps + 3)
        real = _run_1d(lambda w: (w - a) ** 2 / 2, w0, lr, steps + 3)
        assert closed == real
        assert real[steps:] == [a] * 4 and a not in real[:steps]


def test_lars_1d_trajectory_needs_a_unique_minimiser() -> None:
    """The note of :func:`lars_1d_trajectory` (§3.3 says "any convex function"): ``f(w) = relu(|w - 1.5| - 0.5)^2``
    is convex with minimisers ``[1, 2]`` (``a = 1.5`` is one). From ``w0 = 4`` with ``lr = 0.1`` the real LARS agrees
    with the closed form until it lands in the flat set (``1.913...`` after 7 steps), then stays (zero gradient);
    the closed form, which assumes ``sign(f'(w)) = sign(w - a)``, goes on to ``1.72, 1.55, ...``."""
    steps = 12
    real = _run_1d(lambda w: torch.relu((w - 1.5).abs() - 0.5) ** 2, 4.0, 0.1, steps)
    closed = theory.lars_1d_trajectory(4.0, 1.5, 0.1, steps)
    assert real[:8] == pytest.approx(closed[:8], rel=1e-14)
    assert 1.0 <= real[7] <= 2.0 and real[6] > 2.0
    assert real[7:] == [real[7]] * (steps - 6)  # stops in the flat set
    assert abs(closed[8] - real[8]) > 0.1


# ----------------------------------------------------------------------------------------------------------------
# exact-step Adam: the optimizer is torch's Adam (bias-corrected), not the paper's Algorithm 1
# ----------------------------------------------------------------------------------------------------------------
def test_exact_step_adams_first_step_is_bias_corrected_not_algorithm_1() -> None:
    """The note of :func:`exact_step_adam`: torch's Adam, whose first step moves every coordinate by
    ``alpha g / (|g| + eps) ~ alpha sign(g)``; Algorithm 1 (no bias correction, ``rho`` added to ``sqrt(v)``)
    would move it by ``alpha (1 - b1) g / (sqrt(1 - b2) |g| + rho)``, about ``3.16 alpha`` with the defaults."""
    model, (x, y) = mlp(nn.Tanh), classification_data()
    opt, step = exact_step_adam(model, nn.CrossEntropyLoss(), (x, y), 100, num_samples=2)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    nn.CrossEntropyLoss()(model(x), y).backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]  # type: ignore[union-attr]
    opt.step()
    beta1, beta2 = 0.9, 0.999
    for p, w, g in zip(model.parameters(), before, grads):
        torch_adam = w - step.alpha * g / (g.abs() + 1e-8)
        algorithm1 = w - step.alpha * (1 - beta1) * g / (math.sqrt(1 - beta2) * g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), torch_adam, rtol=1e-10, atol=1e-12)
        moved = (p.detach() - w).abs()
        assert bool((moved < 0.5 * (algorithm1 - w).abs() + 1e-12).all())


def test_torch_adams_step_over_algorithm_1s_under_a_constant_gradient() -> None:
    """The figures of :func:`exact_step_adam`'s note: with a constant gradient ``g``, Algorithm 1 (no bias correction,
    ``rho`` negligible) moves by ``alpha (1 - b1^t) / sqrt(1 - b2^t)`` at step ``t`` and torch's Adam by ``alpha``:
    the ratio ``sqrt(1 - b2^t) / (1 - b1^t)`` is 0.316 at t = 1, smallest (0.152) at t = 12, 0.795 at t = 1000."""
    alpha, g = 1e-6, 0.5  # a tiny step: the gradient stays ~constant in sign and value
    w = nn.Parameter(torch.zeros(1, dtype=F64))
    opt = torch.optim.Adam([w], lr=alpha, eps=1e-30)
    beta1, beta2 = 0.9, 0.999
    ratios = []
    for t in range(1, 1001):
        before = float(w.detach())
        w.grad = torch.full((1,), g, dtype=F64)
        opt.step()
        torch_step = before - float(w.detach())
        algorithm1_step = alpha * (1 - beta1**t) / math.sqrt(1 - beta2**t)
        ratios.append(torch_step / algorithm1_step)
    assert ratios[0] == pytest.approx(0.3162, abs=1e-4)
    assert min(range(1000), key=ratios.__getitem__) + 1 == 12 and ratios[11] == pytest.approx(0.1522, abs=1e-4)
    assert ratios[999] == pytest.approx(0.7952, abs=1e-4)
    assert 1 / ratios[11] == pytest.approx(6.57, abs=0.01)  # "up to about 6.6 times as far"
