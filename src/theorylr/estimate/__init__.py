"""Curvature of a model's loss as linear algebra over a Hessian-vector product.

* :func:`hvp` / :class:`HessianOperator`: ``v -> H v`` for the loss over fixed data (double backward with the
  first backward's graph reused, or ``torch.func`` forward-over-reverse).
* :func:`power_iteration`, :func:`lanczos`: extreme eigenvalues of any symmetric matvec, stopped on the residual.
* :func:`hessian_spectral_norm`: ``||H||_2 = max(|lambda_max|, |lambda_min|)`` at the current weights.
* :func:`smoothness`: ``K_hat``, the largest spectral norm over initialisation samples (Algorithm 2 of
  the exact-step Adam paper), the smoothness constant behind :func:`theorylr.optim.exact_adam.exact_step_adam`.

Every estimator leaves the model as it found it (weights, buffers, train/eval flags, global RNG state).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from theorylr.estimate import hessian_spectral_norm
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    >>> data = (torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,)))
    >>> r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0)
    >>> r.value == max(abs(r.lambda_max), abs(r.lambda_min)) and r.converged
    True
"""

from __future__ import annotations

from theorylr.estimate.eigen import EigenResult, MatVec, lanczos, power_iteration
from theorylr.estimate.hvp import BACKENDS, HessianOperator, default_backend, default_graph_budget, hvp
from theorylr.estimate.smoothness import (
    Sampler,
    SmoothnessEstimate,
    SmoothnessSample,
    reset_parameters_sampler,
    smoothness,
)
from theorylr.estimate.spectral import METHODS, SpectralNormResult, data_loss, hessian_spectral_norm

__all__ = [
    "BACKENDS",
    "METHODS",
    "EigenResult",
    "HessianOperator",
    "MatVec",
    "Sampler",
    "SmoothnessEstimate",
    "SmoothnessSample",
    "SpectralNormResult",
    "data_loss",
    "default_backend",
    "default_graph_budget",
    "hessian_spectral_norm",
    "hvp",
    "lanczos",
    "power_iteration",
    "reset_parameters_sampler",
    "smoothness",
]
