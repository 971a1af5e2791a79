"""The optimizer registry: one row per optimizer, and the data that drives the generic test suite.

A row names the class by import path (so the registry imports nothing heavy), the keyword sets the suite tries,
the arguments that must be rejected, and capability flags. Adding an optimizer to theorylr means adding a row
here; ``tests/optim/test_generic.py`` then runs every generic check on it.

Example:
    >>> from theorylr.optim.registry import OPTIMIZERS
    >>> sorted(OPTIMIZERS)[:2]
    ['AdaMo', 'AdaptiveRMSprop']
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch.optim import Optimizer

__all__ = ["OPTIMIZERS", "OptimInfo", "get_optimizer_info"]


@dataclass(frozen=True)
class OptimInfo:
    """One registered optimizer.

    Attributes:
        name: public name (``theorylr.<name>``).
        target: ``"module:Class"`` import path.
        description: one line for listings.
        descent_kwargs: keyword arguments under which the optimizer reduces the generic suite's small regression
            loss to below half its initial value in 60 full-batch steps.
        sample_kwargs: further configurations the suite runs through every structural check (state_dict,
            foreach == loop, param groups, dtypes, no host sync). Include every mode switch worth covering.
        invalid_kwargs: ``(kwargs, argument_name)`` pairs: constructing with ``kwargs`` must raise ``ValueError``
            whose message names ``argument_name``.
        supports_foreach: the class takes ``foreach`` and has a multi-tensor path.
        supports_maximize: the class takes ``maximize``.
        groups_independent: two param groups evolve exactly as two separate optimizers would (false when the
            update couples all parameters, e.g. through a global Lipschitz estimate).
    """

    name: str
    target: str
    description: str
    descent_kwargs: Mapping[str, Any]
    sample_kwargs: tuple[Mapping[str, Any], ...] = ()
    invalid_kwargs: tuple[tuple[Mapping[str, Any], str], ...] = ()
    supports_foreach: bool = True
    supports_maximize: bool = True
    groups_independent: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> type[Optimizer]:
        """Import and return the optimizer class."""
        module, _, attr = self.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise TypeError(f"{self.target} is not a torch.optim.Optimizer subclass")
        return cls

    def configurations(self) -> tuple[Mapping[str, Any], ...]:
        """The descent configuration followed by every sample configuration."""
        return (self.descent_kwargs, *self.sample_kwargs)


_ROWS: list[OptimInfo] = [
    OptimInfo(
        name="LARS",
        target="theorylr.optim.lars:LARS",
        description="Layer-wise proportional updates, lr * ||w|| / ||g|| * g (L2 norms), with momentum.",
        descent_kwargs={"lr": 0.1, "momentum": 0.9},
        sample_kwargs=(
            {"lr": 0.05, "momentum": 0.0, "eps": 0.0},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2, "denominator": "sum"},
            {"lr": 0.05, "momentum": 0.5, "trust_clip": True, "trust_coefficient": 1e-3},
            {"lr": 0.05, "momentum": 0.9, "norm": "linf", "min_norm": 0.5},
            {"lr": 0.05, "momentum": 0.9, "adapt": False},
            # The plain momentum buffer (the default off the CPU), with every term that touches it.
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2, "factored_momentum": False},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "trust_clip": True, "factored_momentum": False},
        ),
        invalid_kwargs=(
            ({"lr": -1.0}, "lr"),
            ({"momentum": -0.1}, "momentum"),
            ({"momentum": 0.0, "nesterov": True}, "nesterov"),
            ({"weight_decay": -1.0}, "weight_decay"),
            ({"eps": -1.0}, "eps"),
            ({"trust_coefficient": 0.0}, "trust_coefficient"),
            ({"norm": "l3"}, "norm"),
            ({"denominator": "product"}, "denominator"),
            ({"min_norm": -1.0}, "min_norm"),
            ({"factored_momentum": "yes"}, "factored_momentum"),
        ),
    ),
    OptimInfo(
        name="PercentDelta",
        target="theorylr.optim.lars:PercentDelta",
        description="LARS with L1 norms (Abu-El-Haija's PercentDelta as the proportional-updates paper states it).",
        descent_kwargs={"lr": 0.1, "momentum": 0.9},
        sample_kwargs=(
            {"lr": 0.05, "momentum": 0.0, "norm": "mean_ratio"},
            {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2, "trust_clip": True},
            {"lr": 0.05, "momentum": 0.9, "norm": "mean_ratio", "factored_momentum": False},
        ),
        invalid_kwargs=(({"lr": -1.0}, "lr"), ({"norm": "l7"}, "norm")),
    ),
    OptimInfo(
        name="AdaMo",
        target="theorylr.optim.adaptive:AdaMo",
        description="Adaptive momentum (LipschitzLR Alg. 1): W -= lr * V / K, K an EWA of the Lipschitz estimate.",
        descent_kwargs={"lr": 1.0, "lipschitz": "observed"},
        sample_kwargs=({"lr": 0.5, "lipschitz": "observed", "beta": 0.5, "bias_correction": True},),
        invalid_kwargs=(({"lr": -1.0}, "lr"), ({"beta": 1.5}, "beta"), ({"lipschitz": "guess"}, "lipschitz")),
        supports_maximize=True,
        groups_independent=False,
    ),
    OptimInfo(
        name="AutoAdam",
        target="theorylr.optim.adaptive:AutoAdam",
        description="Auto-Adam (LipschitzLR Alg. 3): Adam's moments with a step from EWAs of L and of L2.",
        # lr is a multiplier; at 1.0 sqrt(K2)/K1 -> 1 makes this Adam with a unit step, which oscillates here.
        descent_kwargs={"lr": 0.05, "lipschitz": "observed"},
        sample_kwargs=({"lr": 0.5, "lipschitz": "observed", "betas": (0.8, 0.9), "bias_correction": True},),
        invalid_kwargs=(({"lr": -1.0}, "lr"), ({"betas": (0.9, 1.0)}, "betas"), ({"eps": -1.0}, "eps")),
        groups_independent=False,
    ),
    OptimInfo(
        name="AdaptiveRMSprop",
        target="theorylr.optim.adaptive:AdaptiveRMSprop",
        description="Adaptive RMSprop (LipschitzLR §6, reconstructed): Auto-Adam without the first moment.",
        # As for AutoAdam: at lr=1.0 each coordinate moves about 1 per step, which diverges on the suite's problem.
        descent_kwargs={"lr": 0.05, "lipschitz": "observed"},
        sample_kwargs=({"lr": 0.5, "lipschitz": "observed", "beta": 0.8, "bias_correction": True},),
        invalid_kwargs=(({"lr": -1.0}, "lr"), ({"beta": -0.1}, "beta"), ({"eps": -1.0}, "eps")),
        groups_independent=False,
    ),
]

OPTIMIZERS: dict[str, OptimInfo] = {row.name: row for row in _ROWS}


def get_optimizer_info(name: str) -> OptimInfo:
    """Return the registry row called ``name`` (``ValueError`` listing the names otherwise)."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"optimizer must be one of {', '.join(sorted(OPTIMIZERS))} (got {name!r})") from None
