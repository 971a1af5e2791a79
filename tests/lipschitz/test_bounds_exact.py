"""gradient_norm_bound's softmax bound with targets, on cases whose exact values are derived by hand.

The bound is a minimum over centre weights ``alpha`` of ``(alpha ||C_1^T A||_F + r_alpha S(A)) / m``; on the case
below it equals the true supremum of the gradient norm, so any change to the radius ``r_alpha`` or to the centre
``C_1`` shows up as a wrong number (not only as a looser bound).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from theorylr.lipschitz.bounds import _softmax_radius, gradient_norm_bound

F64 = torch.float64


def test_softmax_bound_with_targets_equals_the_exact_supremum() -> None:
    r"""``a = [[1, 0], [1, 0]]``, class targets ``[0, 1]``, ``k = 2``: the bound is exactly ``1 / sqrt(2)``.

    The true supremum: both rows are equal, so ``z_1 = z_2`` and both examples share ``p = softmax(z)``. The
    gradient is ``(1/m) sum_i (p - y_i) a_i^T = (1/2) (2p - e_0 - e_1) [1, 0]^T``, of Frobenius norm
    ``||p - (1/2, 1/2)||``. Over the open simplex its supremum is ``||e_0 - (1/2, 1/2)|| = 1/sqrt(2)``.

    The bound (docstring formula): ``S(A) = min(sum_i ||a_i||, sqrt(m) ||A||_2) = min(2, sqrt(2) sqrt(2)) = 2``
    (``per_row`` is exactly 2; the spectral term is an upper bound on 2). The class sums are
    ``Y^T A = [[1, 0], [1, 0]]`` and ``sum_i a_i / k = [1, 0]``, so the centre ``||C_1^T A||_F`` is 0 and every
    candidate is ``r_alpha * 2 / 2 = r_alpha``. For ``k = 2``:
    ``r_alpha^2 = max(alpha^2 / 2, 2 (1 - alpha / 2)^2)``; the second term decreases in ``alpha`` and is at least
    ``1/2``, the first is at most ``1/2``: the minimum over ``alpha in {0, 1/8, .., 1}`` is at ``alpha = 1``,
    ``r_1 = sqrt(1/2)``. So ``B = 1/sqrt(2)``, the supremum.

    Wrong variants give: ``same = alpha^2`` -> ``min_alpha max(alpha^2, 2 (1 - alpha/2)^2)`` at ``alpha = 7/8``
    = ``0.875``; ``(k - 1)`` in place of ``(k - 2)`` -> ``r_1^2 = 1/2 + 1/4``, ``0.866``; the class mean without
    ``/ k`` -> centre ``||[2, 0] - Y^T A|| = sqrt(2)`` and ``B = sqrt(2)`` (at ``alpha = 0``).
    """
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    targets = torch.tensor([0, 1])
    bound = gradient_norm_bound(a, "softmax", num_classes=2, targets=targets)
    assert float(bound) == pytest.approx(1 / math.sqrt(2), rel=1e-12, abs=0)

    # The supremum itself, approached: all mass on one class (p -> e_0) by a large logit gap.
    w = torch.tensor([[40.0, 0.0], [0.0, 0.0]], dtype=F64, requires_grad=True)
    torch.nn.functional.cross_entropy(a @ w.T, targets).backward()
    assert float(torch.linalg.vector_norm(w.grad)) == pytest.approx(1 / math.sqrt(2), rel=1e-12)


def test_softmax_bound_with_probability_targets_matches_the_class_index_case() -> None:
    """The same case with one-hot probability targets (``Y^T A`` from a matrix product): the same ``1/sqrt(2)``."""
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    assert float(gradient_norm_bound(a, "softmax", targets=probs)) == pytest.approx(1 / math.sqrt(2), rel=1e-12)


def _brute_radius(alpha: float, k: int, n: int = 12) -> float:
    """``max ||p - y - alpha (1/k - y)||`` over ``p, y`` on the grid ``{c / n : c in N^k, sum c = n}`` of the simplex.

    The grid contains the vertices ``e_j``; the function is convex in ``(p, y)``, so its maximum over the product of
    simplices is at a pair of vertices, and the grid maximum (vertices included) is the exact maximum.
    """
    grid = [c for c in itertools.product(range(n + 1), repeat=k) if sum(c) == n]
    pts = torch.tensor(grid, dtype=F64) / n  # (G, k), every row in the simplex
    p, y = pts[:, None, :], pts[None, :, :]
    return float(torch.linalg.vector_norm(p - y - alpha * (1 / k - y), dim=-1).max())


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # same  = alpha^2 (1 - 1/k) = 2/3; other = (2/3)^2 + (1/3)^2 + (1/3)^2 = 6/9: sqrt(2/3)
        (1.0, math.sqrt(2 / 3)),
        # same = 1/4 * 2/3 = 1/6; other = (5/6)^2 + (4/6)^2 + (1/6)^2 = 42/36: sqrt(7/6)
        (0.5, math.sqrt(7 / 6)),
        # alpha = 0: ||p - y|| <= ||e_a - e_b|| = sqrt(2)
        (0.0, math.sqrt(2)),
    ],
)
def test_softmax_radius_is_the_maximum_over_the_simplex(alpha: float, expected: float) -> None:
    r"""``_softmax_radius(alpha, 3)`` against a brute-force maximum over the simplex (``k = 3``).

    Hand values (the docstring's formula, with ``p = y = e_l`` giving ``alpha^2 (1 - 1/k)`` and ``p = e_j``,
    ``y = e_l`` giving ``(1 - alpha/k)^2 + (1 - alpha + alpha/k)^2 + (k - 2) (alpha/k)^2``): 0.8165 at
    ``alpha = 1``, 1.0801 at ``alpha = 1/2``, ``sqrt(2)`` at ``alpha = 0``. The brute force enumerates all pairs of
    points of a grid of step 1/12 on the simplex (91 points, vertices included) and takes the largest norm.
    """
    brute = _brute_radius(alpha, 3)
    assert brute == pytest.approx(expected, rel=1e-12)
    assert _softmax_radius(alpha, 3) == pytest.approx(expected, rel=1e-12)
    assert _softmax_radius(alpha, 3) == pytest.approx(brute, rel=1e-12)


def test_softmax_radius_k4_against_vertices() -> None:
    """``k = 4``: both vertex cases computed directly from ``e_j`` (no formula), for several ``alpha``."""
    k = 4
    eye = torch.eye(k, dtype=F64)
    for alpha in (0.25, 0.5, 0.75, 1.0):
        best = max(float(torch.linalg.vector_norm(p - y - alpha * (1 / k - y))) for p in eye for y in eye)
        assert _softmax_radius(alpha, k) == pytest.approx(best, rel=1e-12), alpha
