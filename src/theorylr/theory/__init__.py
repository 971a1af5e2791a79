"""The papers' predictions as plain functions (torch and math only).

* :mod:`theorylr.theory.lars`: proportional updates (Gitman, Dilipkumar & Parr): the 1-D invariant interval,
  steps to reach it, origin attraction, Theorem 2 / Corollary 2.1 (as stated, and the rigorous variants),
  Theorem 3's decaying lr, the 2-D region radius.
* :mod:`theorylr.theory.adam`: Adam's "exact" constant step ``alpha = sqrt(2 (L(w0) - L*) / (K_hat T))``.

Example:
    >>> from theorylr.theory import constant_step, invariant_interval
    >>> invariant_interval(2.0, 0.1)
    (1.8, 2.2)
    >>> round(constant_step(2.0, 4.0, 100), 6)
    0.1
"""

from __future__ import annotations

from theorylr.theory.adam import constant_step, delta_squared
from theorylr.theory.lars import (
    corollary_2_1,
    corollary_2_1_rigorous,
    descent_bound,
    fixed_lr_bound,
    invariant_interval,
    lars_1d_trajectory,
    origin_attraction,
    quadratic_cosine_bound,
    region_lower_bound,
    region_radius,
    steps_to_fallback,
    steps_to_interval,
    steps_to_interval_approx,
    strongly_convex_cosine_bound,
    theorem2_bound,
    theorem2_constants,
    theorem3_bound,
    theorem3_lr,
)

__all__ = [
    "constant_step",
    "corollary_2_1",
    "corollary_2_1_rigorous",
    "delta_squared",
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
