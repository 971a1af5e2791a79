"""Theorem 2 of Gitman et al. as stated is not a bound: the real LARS optimizer breaks it on the paper's own 1-D
quadratic from a far start, while the corrected bound (fixed_lr_bound) holds there."""

from __future__ import annotations

import torch

from theorylr.optim.lars import LARS
from theorylr.theory import lars as theory


def _lars_gaps(w0: float, a: float, lr: float, steps: int) -> tuple[list[float], list[float]]:
    w = torch.nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    opt = LARS([w], lr=lr, momentum=0.0, eps=0.0, min_norm=0.0)
    iterates = [w0]
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (w - a) ** 2).sum().backward()
        opt.step()
        iterates.append(float(w.detach()))
    return iterates, [0.5 * (x - a) ** 2 for x in iterates]


def test_stated_theorem2_fails_on_a_far_start_and_fixed_lr_bound_holds() -> None:
    a, w0, lr = 10.0, 20.0, 0.1
    iterates, gaps = _lars_gaps(w0, a, lr, 200)
    m1 = max(abs(x - a) for x in iterates)
    m2 = min(abs(x) for x in iterates)
    assert m1 == 10.0 and m2 >= 9.0
    c1, c2 = theory.theorem2_constants(1.0, m1, m2, abs(a))
    violated = [k for k in range(1, 200) if min(gaps[:k]) > theory.theorem2_bound(k, lr, c1, c2)]
    assert violated == [1, 2, 3, 4, 5]  # min_{i<k} f(w_i) - f* above the stated bound
    proof_indexing = [k for k in range(1, 200) if min(gaps[1 : k + 1]) > theory.theorem2_bound(k, lr, c1, c2)]
    assert proof_indexing == [1, 2, 3, 4]
    for k in range(1, 200):
        bound = theory.fixed_lr_bound(k, lr, lipschitz=1.0, m1=m1, m2=m2, w_star_norm=abs(a), dist0=abs(w0 - a))
        assert min(gaps[:k]) <= bound


def test_the_proofs_own_last_line_holds_there() -> None:
    # With the factor ||w0 - w*||^2 the proof ends with, the inequality is not broken on this instance.
    a, w0, lr = 10.0, 20.0, 0.1
    iterates, gaps = _lars_gaps(w0, a, lr, 200)
    m1, m2 = max(abs(x - a) for x in iterates), min(abs(x) for x in iterates)
    c1, c2 = theory.theorem2_constants(1.0, m1, m2, abs(a))
    dist0 = abs(w0 - a)
    assert all(min(gaps[:k]) <= c1 * dist0**2 / (k * lr) + lr**2 * c2 for k in range(1, 200))
