"""theorylr: learning rates derived from convergence theory, and a lab that checks whether they pay off.

The core (this namespace) needs torch alone:

* :class:`LARS`, :class:`PercentDelta` — proportional updates, ``lr * ||w|| / ||g|| * g`` per layer
  (Gitman, Dilipkumar & Parr); :func:`lars_param_groups` keeps biases and norm layers out.
* :func:`exact_step_adam` — Adam with the constant step ``sqrt(2 L(w0) / (K_hat T))``, ``K_hat`` the largest Hessian
  spectral norm over initialisation samples (:func:`smoothness`, :func:`hessian_spectral_norm`).
* :class:`LipschitzLR` — lr = 1 / L from closed forms, every epoch (Yedida & Saha), and the adaptive optimizers
  :class:`AdaMo`, :class:`AutoAdam`, :class:`AdaptiveRMSprop`.
* :func:`suggest` — every theory's learning rate for a model in one call (loaded on first use: it lives in the lab).

Sub-packages: :mod:`theorylr.theory` (the papers' predictions), :mod:`theorylr.estimate` (curvature),
:mod:`theorylr.lipschitz` (closed forms and bounds), :mod:`theorylr.optim`, :mod:`theorylr.data`,
:mod:`theorylr.models`, :mod:`theorylr.lab` (workloads, rules, runner, report).

Example:
    >>> import torch, theorylr
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = theorylr.LARS(model.parameters(), lr=0.1, momentum=0.9)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ below loads on first use, typed for checkers
    from theorylr import data as data
    from theorylr import distributed as distributed
    from theorylr import estimate as estimate
    from theorylr import lab as lab
    from theorylr import lipschitz as lipschitz
    from theorylr import models as models
    from theorylr import optim as optim
    from theorylr import theory as theory
    from theorylr.estimate import hessian_spectral_norm, smoothness
    from theorylr.lab.suggest import Suggestion, suggest
    from theorylr.lipschitz import LipschitzLR, gradient_norm_bound
    from theorylr.optim import (
        LARS,
        AdaMo,
        AdaptiveRMSprop,
        AutoAdam,
        ExactStep,
        PercentDelta,
        exact_step_adam,
        lars_param_groups,
    )

__version__ = "0.1.0"

__all__ = [
    "LARS",
    "AdaMo",
    "AdaptiveRMSprop",
    "AutoAdam",
    "ExactStep",
    "LipschitzLR",
    "PercentDelta",
    "Suggestion",
    "__version__",
    "exact_step_adam",
    "gradient_norm_bound",
    "hessian_spectral_norm",
    "lars_param_groups",
    "smoothness",
    "suggest",
]

# Public name -> module. Loaded on first access (PEP 562), so that ``import theorylr`` and ``theorylr --help`` stay
# cheap and the lab (matplotlib, scikit-learn) is imported only when ``suggest`` is first used.
_LAZY = {
    "LARS": "theorylr.optim",
    "PercentDelta": "theorylr.optim",
    "AdaMo": "theorylr.optim",
    "AutoAdam": "theorylr.optim",
    "AdaptiveRMSprop": "theorylr.optim",
    "ExactStep": "theorylr.optim",
    "exact_step_adam": "theorylr.optim",
    "lars_param_groups": "theorylr.optim",
    "LipschitzLR": "theorylr.lipschitz",
    "gradient_norm_bound": "theorylr.lipschitz",
    "hessian_spectral_norm": "theorylr.estimate",
    "smoothness": "theorylr.estimate",
    "suggest": "theorylr.lab.suggest",
    "Suggestion": "theorylr.lab.suggest",
}


# Subpackages, imported on first access too: ``theorylr.distributed.mean_reduce`` works after ``import theorylr``.
_SUBMODULES = ("data", "distributed", "estimate", "lab", "lipschitz", "models", "optim", "theory")


if not TYPE_CHECKING:  # hidden from checkers, which would type every misspelt name as Any (the imports above)

    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            value = getattr(importlib.import_module(_LAZY[name]), name)
            globals()[name] = value
            return value
        if name in _SUBMODULES:
            return importlib.import_module(f"theorylr.{name}")
        raise AttributeError(f"module 'theorylr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
