"""LipschitzLR: learning rate = 1 / (Lipschitz constant of the loss), from closed forms.

Yedida & Saha, *LipschitzLR: Using theoretically computed adaptive learning rates for fast convergence*.
The paper's closed forms live in :mod:`~theorylr.lipschitz.closed_form` (each with its equation number); the
rigorous upper bound that replaces them where they are not bounds is
:func:`~theorylr.lipschitz.bounds.gradient_norm_bound`; the per-epoch schedule is
:class:`~theorylr.lipschitz.scheduler.LipschitzLR`, fed by forward hooks on the penultimate layer
(:class:`~theorylr.lipschitz.tracker.ActivationTracker`).

Example:
    >>> from theorylr.lipschitz import softmax_cross_entropy
    >>> softmax_cross_entropy(10.0, 100, 10)  # (k - 1) K_z / (k m)
    0.09
"""

from __future__ import annotations

from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import (
    ACTIVATION_NORMS,
    activation_norm,
    binary_cross_entropy,
    l2_term,
    least_squares,
    least_squares_nn,
    least_squares_nn_rigorous,
    least_squares_rigorous,
    logistic_regression,
    softmax_cross_entropy,
    softmax_regression,
    spectral_norm_bound,
    tikhonov_term,
    weight_bound_estimate,
)
from theorylr.lipschitz.scheduler import DegenerateLipschitzError, LipschitzLR
from theorylr.lipschitz.tracker import ActivationTracker, EpochStats, find_last_linear, untracked

__all__ = [
    "ACTIVATION_NORMS",
    "ActivationTracker",
    "DegenerateLipschitzError",
    "EpochStats",
    "LipschitzLR",
    "activation_norm",
    "binary_cross_entropy",
    "find_last_linear",
    "gradient_norm_bound",
    "l2_term",
    "least_squares",
    "least_squares_nn",
    "least_squares_nn_rigorous",
    "least_squares_rigorous",
    "logistic_regression",
    "softmax_cross_entropy",
    "softmax_regression",
    "spectral_norm_bound",
    "tikhonov_term",
    "untracked",
    "weight_bound_estimate",
]
