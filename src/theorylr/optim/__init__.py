"""theorylr's optimizers: thin ``torch.optim.Optimizer`` classes over functional cores.

* :class:`LARS` / :class:`PercentDelta`: proportional updates ``lr * ||w|| / ||g|| * g`` per tensor.
* :class:`AdaMo`, :class:`AutoAdam`, :class:`AdaptiveRMSprop`: the LipschitzLR paper's adaptive optimizers.
* :func:`exact_step_adam`: a ``torch.optim.Adam`` with the exact constant step ``sqrt(2 L(w0) / (K_hat T))``.

Every optimizer is a row of :data:`theorylr.optim.registry.OPTIMIZERS`, which drives the generic test suite.

Example:
    >>> import torch
    >>> from theorylr.optim import LARS
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = LARS(model.parameters(), lr=0.1, momentum=0.9)
    >>> model(torch.randn(8, 3)).square().mean().backward()
    >>> opt.step()
"""

from __future__ import annotations

from theorylr.optim._norms import local_norms
from theorylr.optim.adaptive import AdaMo, AdaptiveRMSprop, AutoAdam
from theorylr.optim.exact_adam import ExactStep, NonFiniteStepError, exact_step_adam
from theorylr.optim.lars import LARS, PercentDelta, lars
from theorylr.optim.param_groups import lars_param_groups
from theorylr.optim.registry import OPTIMIZERS, OptimInfo, get_optimizer_info

__all__ = [
    "LARS",
    "OPTIMIZERS",
    "AdaMo",
    "AdaptiveRMSprop",
    "AutoAdam",
    "ExactStep",
    "NonFiniteStepError",
    "OptimInfo",
    "PercentDelta",
    "exact_step_adam",
    "get_optimizer_info",
    "lars",
    "lars_param_groups",
    "local_norms",
]
