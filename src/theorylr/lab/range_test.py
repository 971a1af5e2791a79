"""The learning-rate range test: the "what a user does by hand" baseline.

Smith's range test (Smith 2017, "Cyclical learning rates", §3.3; popularised by fastai and ``torch-lr-finder``)
trains for a few steps while the lr grows geometrically from ``start_lr`` to ``end_lr``,
``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))``, records the (exponentially smoothed) loss, stops
early once the loss exceeds ``diverge_factor`` times the best one, and suggests ``lr_at_min / 10`` -- one order of
magnitude below the lr that gave the lowest smoothed loss, the usual rule of thumb.

The test runs on a deep copy of the model, so the caller's model (weights, buffers, train/eval mode) is untouched.
The test itself draws no random numbers, but the model's own training-mode forward passes may (dropout draws
from torch's global generator): wrap the call in ``torch.random.fork_rng()`` to leave the global stream as it was,
as :func:`theorylr.suggest` does.

Example:
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
    >>> model = torch.nn.Linear(3, 1)
    >>> result = lr_range_test(model, lambda out, t: (out.squeeze(-1) - t).square().mean(), [(x, y)],
    ...                        lambda params, lr: torch.optim.SGD(params, lr=lr), num_steps=40)
    >>> 1e-3 < result.suggestion < 1.0
    True
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from theorylr._validation import check_int, check_module, check_number

__all__ = ["RangeTestResult", "check_range_test_options", "lr_range_test"]


@dataclass
class RangeTestResult:
    """What :func:`lr_range_test` measured.

    Attributes:
        lrs: the learning rates tried, in order.
        losses: the smoothed loss after each step (same length as ``lrs``).
        lr_at_min: the lr with the lowest smoothed loss.
        suggestion: ``lr_at_min / 10``.
        stopped_early: whether the loss diverged before ``end_lr``.

    :attr:`min_at_end` says when the loss was still falling at ``end_lr``.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lr_at_min: float = math.nan
    suggestion: float = math.nan
    stopped_early: bool = False

    @property
    def min_at_end(self) -> bool:
        """Whether the lowest loss came at the last lr tried, with no divergence: the loss was still falling when
        the sweep ended, so the minimum may lie beyond ``end_lr`` and ``lr_at_min`` (with the suggestion) is only
        a floor of what the test would say over a wider range."""
        return bool(self.lrs) and not self.stopped_early and self.lr_at_min == self.lrs[-1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "lr_at_min": self.lr_at_min,
            "suggestion": self.suggestion,
            "stopped_early": self.stopped_early,
            "min_at_end": self.min_at_end,
        }


def check_range_test_options(
    start_lr: Any = 1e-6, end_lr: Any = 10.0, num_steps: Any = 50, smoothing: Any = 0.05, diverge_factor: Any = 4.0
) -> None:
    """Check :func:`lr_range_test`'s options (its defaults stand in for those not given): ``ValueError`` naming the
    first bad one. :func:`theorylr.suggest` calls it before its estimates, so a bad option fails at once."""
    check_number("start_lr", start_lr, min_value=0.0, min_inclusive=False)
    check_number("end_lr", end_lr, min_value=start_lr, min_inclusive=False)
    check_int("num_steps", num_steps, min_value=2)
    check_number("smoothing", smoothing, min_value=0.0, max_value=1.0, min_inclusive=False)
    check_number("diverge_factor", diverge_factor, min_value=1.0, min_inclusive=False)


def lr_range_test(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer_factory: Callable[[Any, float], Optimizer],
    *,
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_steps: int = 50,
    smoothing: float = 0.05,
    diverge_factor: float = 4.0,
) -> RangeTestResult:
    """Run a learning-rate range test on a copy of ``model``.

    Args:
        model: the model (left untouched: the test trains a deep copy).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        batches: training batches; cycled when shorter than ``num_steps`` (one full batch is fine).
        optimizer_factory: ``optimizer_factory(parameters, lr) -> optimizer`` (e.g. ``torch.optim.SGD``).
        start_lr, end_lr: the geometric sweep's ends (defaults 1e-6 and 10).
        num_steps: the number of steps (default 50).
        smoothing: weight of the newest loss in the exponential moving average (default 0.05; 1 = no smoothing);
            the average is bias-corrected as in Adam.
        diverge_factor: stop once the smoothed loss exceeds this multiple of the best one, or is not finite
            (default 4); for a loss that can be negative, once it exceeds the best by ``diverge_factor - 1`` times
            the best's magnitude (the same rule for a positive loss).

    Returns:
        a :class:`RangeTestResult`.
    """
    check_module("model", model)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable (outputs, targets) -> scalar loss (got {loss_fn!r})")
    if not callable(optimizer_factory):
        raise ValueError(
            f"optimizer_factory must be a callable (parameters, lr) -> optimizer (got {optimizer_factory!r})"
        )
    check_range_test_options(start_lr, end_lr, num_steps, smoothing, diverge_factor)
    listed = list(batches)
    if not listed:
        raise ValueError("batches must hold at least one (inputs, targets) batch (got none)")

    trial = copy.deepcopy(model)
    trial.train()
    optimizer = optimizer_factory(trial.parameters(), start_lr)
    ratio = end_lr / start_lr
    result = RangeTestResult()
    average, best, lr = 0.0, math.inf, start_lr
    source = itertools.cycle(listed)
    # The loss measured before step i is the outcome of the step taken at lr_(i-1): record it against that lr.
    for i in range(num_steps + 1):
        x, y = next(source)
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = loss_fn(trial(x), y)
            loss.backward()
        if i > 0:
            value = float(loss.detach())
            average = smoothing * value + (1.0 - smoothing) * average
            smoothed = average / (1.0 - (1.0 - smoothing) ** i)
            result.lrs.append(lr)
            result.losses.append(smoothed)
            # diverge_factor times the best for a positive loss; measured from |best| so that a loss below zero (a
            # log-likelihood, a shifted loss: the same gradients) does not stop at its first rise
            if not math.isfinite(smoothed) or smoothed > best + (diverge_factor - 1.0) * abs(best):
                result.stopped_early = True
                break
            if smoothed < best:
                best, result.lr_at_min = smoothed, lr
        if i == num_steps:
            break
        lr = start_lr * ratio ** (i / (num_steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    if math.isnan(result.lr_at_min):  # diverged after the very first step
        result.lr_at_min = start_lr
    result.suggestion = result.lr_at_min / 10.0
    return result
