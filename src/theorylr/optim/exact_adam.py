"""Adam with the "exact" constant step size, in one call (the exact-step Adam paper, Section 4.2)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from theorylr._validation import check_int, check_module, check_number
from theorylr._warnings import warn
from theorylr.estimate import SmoothnessEstimate, data_loss, smoothness
from theorylr.theory.adam import constant_step

__all__ = ["ExactStep", "NonFiniteStepError", "exact_step_adam"]

LossFn = Callable[[Any, Any], Tensor]


@dataclass(frozen=True)
class ExactStep:
    """The step size chosen by :func:`exact_step_adam` and what it came from.

    Attributes:
        alpha: the constant step size given to the optimizer as ``lr``.
        initial_loss: ``L(w0)``, the loss at the model's weights when :func:`exact_step_adam` was called.
        smoothness: the :class:`~theorylr.estimate.SmoothnessEstimate` (``k_hat`` and every sample).
        total_steps: ``T``, the optimizer steps the step size is planned for.
        final_loss: ``L(w*)`` used in the formula (the paper's 0 by default).

    Example:
        >>> from theorylr.estimate import SmoothnessEstimate
        >>> step = ExactStep(alpha=0.1, initial_loss=2.0, smoothness=SmoothnessEstimate(8.0, (), 0), total_steps=50)
        >>> step.k_hat, step.to_dict()["alpha"]
        (8.0, 0.1)
    """

    alpha: float
    initial_loss: float
    smoothness: SmoothnessEstimate
    total_steps: int
    final_loss: float = 0.0

    @property
    def k_hat(self) -> float:
        """The smoothness estimate ``K_hat``."""
        return self.smoothness.k_hat

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs (JSON-serialisable): the step, its inputs and the full smoothness estimate."""
        return {
            "alpha": float(self.alpha),
            "initial_loss": float(self.initial_loss),
            "k_hat": float(self.k_hat),
            "total_steps": int(self.total_steps),  # a NumPy integer passed as T, too
            "final_loss": float(self.final_loss),
            "smoothness": self.smoothness.to_dict(),
        }


def exact_step_adam(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    total_steps: int,
    *,
    num_samples: int = 10,
    seed: int = 0,
    optimizer_class: type[Optimizer] = torch.optim.Adam,
    final_loss: float = 0.0,
    mode: str = "eval",
    estimate_kwargs: Mapping[str, Any] | None = None,
    **optimizer_kwargs: Any,
) -> tuple[Optimizer, ExactStep]:
    r"""An Adam optimizer whose constant ``lr`` is the paper's step :math:`\alpha = \sqrt{2 L(w_0) / (\hat K T)}`.

    Steps:

    1. :math:`L(w_0)`: the loss of ``model`` at its current (initial) weights on ``data``
       (:func:`~theorylr.estimate.data_loss`, in ``mode``);
    2. :math:`\hat K`: Algorithm 2 over ``num_samples`` initialisation draws (:func:`~theorylr.estimate.smoothness`);
    3. :math:`\alpha` = :func:`theorylr.theory.adam.constant_step` (``final_loss`` as :math:`L(w^*)`);
    4. ``optimizer_class(params, lr=alpha, **optimizer_kwargs)``, ``params`` those of the estimate
       (``estimate_kwargs["params"]`` when given, else ``model.parameters()``).

    The model comes back unchanged (weights, buffers, modes, RNG state). Keep ``lr`` constant while training: the
    guarantee is for a fixed step (no scheduler). A warning says when a spectral norm did not converge (a low
    ``K_hat``: a step too large).

    .. note::
        The default sampler of Algorithm 2 re-draws the weights with each module's ``reset_parameters()``. A model
        that initialises itself otherwise in ``__init__`` (``self.apply(init_fn)``, a zeroed head) is sampled from
        torch's defaults instead: pass ``estimate_kwargs={"sampler": ...}`` that applies the model's own
        initialisation (in place). Losses whose mean is not over every sample (``ignore_index``, class
        ``weight``) make the batch-size weighting of mini-batches approximate: give the data as one batch.

    Args:
        model: the network at its initial weights.
        loss_fn: a mean-reduced criterion ``loss_fn(outputs, targets)``.
        data: the training data as an ``(inputs, targets)`` pair (full batch) or an iterable of such batches
            (the paper's mini-batch variant; the loss is the batch-size-weighted mean).
        total_steps: :math:`T`, the number of **optimizer steps** you will take (``optimizer.step()`` calls):
            in mini-batch training, epochs times batches per epoch, not epochs.
        num_samples: :math:`N` of Algorithm 2 (default 10).
        seed: master seed of the weight samples (default 0).
        optimizer_class: an Adam-like ``torch.optim.Optimizer`` subclass taking ``lr`` (default
            ``torch.optim.Adam``).
        final_loss: :math:`L(w^*)` (default 0, the paper's choice).
        mode: ``"eval"`` (default), ``"train"`` or ``"current"``, for both the loss and the Hessians.
        estimate_kwargs: further keywords for :func:`~theorylr.estimate.smoothness` (``method``, ``tol``,
            ``max_matvecs``, ``sampler``, ``progress``, ``backend``, ``reduce``, ...).
        **optimizer_kwargs: passed to ``optimizer_class`` (``betas``, ``eps``, ``weight_decay``, ...; not ``lr`` or
            ``params``). They are tried on a stand-in parameter first, so that a bad one fails before the estimate.

    Returns:
        ``(optimizer, step)``: the optimizer, and an :class:`ExactStep` for logging (``step.to_dict()``).

    Raises:
        ValueError: a bad argument, ``final_loss >= L(w0)``, or ``K_hat = 0`` (a loss without curvature);
            :class:`NonFiniteStepError` (also a ``FloatingPointError``) when ``L(w0)`` or ``K_hat`` is not finite.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> data = (torch.randn(32, 4), torch.randint(0, 3, (32,)))
        >>> opt, step = exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=100, num_samples=2)
        >>> opt.param_groups[0]["lr"] == step.alpha == (2 * step.initial_loss / (step.k_hat * 100)) ** 0.5
        True

    Reference:
        The exact-step Adam paper: Section 4.2 (the step), Algorithm 2 (``K_hat``), Theorems 1-2.

    .. note::
        ``torch.optim.Adam`` adds bias correction, which the paper's Algorithm 1 does not have, and ``eps`` plays
        the role of the paper's ``rho``; the step size is used unchanged, as in the paper's experiments. The two
        differ most early on: under a constant gradient, torch's step is ``sqrt(1 - beta2^t) / (1 - beta1^t)`` times
        Algorithm 1's at the same ``alpha`` (``eps``, ``rho`` aside), 0.32 at ``t = 1``, 0.15 at ``t = 12`` (the
        smallest), 0.80 at ``t = 1000`` with the default betas, tending to 1. The algorithm the theorems cover thus
        moves up to about 6.6 times as far per step early in training.
    """
    check_module("model", model)
    check_int("total_steps", total_steps, min_value=1)
    check_int("num_samples", num_samples, min_value=1)
    check_number("final_loss", final_loss)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
        raise ValueError(f"optimizer_class must be a torch.optim.Optimizer subclass (got {optimizer_class!r})")
    if "lr" in optimizer_kwargs:
        raise ValueError("lr must not be given: exact_step_adam computes it (pass the other optimizer arguments)")
    if "params" in optimizer_kwargs:
        raise ValueError("params must not be given: the optimizer takes model.parameters()")
    # A keyword of the estimate that the optimizer does not take (sampler=, which the default sampler's warning asks
    # for, or max_matvecs=): named here rather than as the optimizer's TypeError about an unexpected keyword.
    accepted = inspect.signature(optimizer_class).parameters
    misplaced = sorted(set(optimizer_kwargs) & set(inspect.signature(smoothness).parameters) - set(accepted))
    if misplaced and not any(q.kind is inspect.Parameter.VAR_KEYWORD for q in accepted.values()):
        raise ValueError(
            f"{', '.join(misplaced)}: keyword(s) of the smoothness estimate, not of {optimizer_class.__name__}; pass "
            f"estimate_kwargs={{{', '.join(repr(k) + ': ...' for k in misplaced)}}}"
        )
    if estimate_kwargs is not None and not isinstance(estimate_kwargs, Mapping):
        raise ValueError(
            f"estimate_kwargs must be a mapping of smoothness() keywords or None (got {estimate_kwargs!r})"
        )
    extra = dict(estimate_kwargs or {})
    if extra.get("params") is not None:
        extra["params"] = list(extra["params"])  # read twice: by the estimate and by the optimizer
    clash = sorted(set(extra) & {"num_samples", "seed", "mode"})
    if clash:
        raise ValueError(f"estimate_kwargs must not repeat {clash}: pass them to exact_step_adam directly")
    if not isinstance(data, (tuple, list, Mapping)):  # a DataLoader or generator: read once, for both steps
        if isinstance(data, Tensor) or not isinstance(data, Iterable):
            raise ValueError(
                "data must be an (inputs, targets) pair or an iterable of such pairs (a list, a DataLoader, a "
                f"generator; got {type(data).__name__})"
            )
        data = list(data)
    _check_optimizer_arguments(model, optimizer_class, optimizer_kwargs)
    reduce = extra.get("reduce")
    initial_loss = data_loss(model, loss_fn, data, mode=mode, reduce=reduce)
    if not math.isfinite(initial_loss):  # before the costly estimate, whose Hessians would be inf/nan too
        raise NonFiniteStepError(
            f"the initial loss L(w0) on data is {initial_loss!r}: the exact step sqrt(2 L(w0) / (K_hat T)) needs a "
            "finite loss at the initial weights (check the model's initialisation, the data and loss_fn)"
        )
    if not initial_loss > final_loss:  # before the costly estimate, which could not give a step
        raise ValueError(
            f"final_loss must be below initial_loss, the loss L(w0) = {initial_loss!r} on data (got "
            f"final_loss={final_loss!r}): the step sqrt(2 (L(w0) - L(w*)) / (K_hat T)) needs a positive gap"
        )
    estimate = smoothness(model, loss_fn, data, num_samples=num_samples, seed=seed, mode=mode, **extra)
    if not math.isfinite(estimate.k_hat):
        raise NonFiniteStepError(
            f"K_hat = {estimate.k_hat!r}: a sampled Hessian's spectral norm is not finite (the loss or its curvature "
            "overflows at the sampled weights; check the scale of the data and the initialisation), so the exact "
            "step sqrt(2 L(w0) / (K_hat T)) is undefined"
        )
    if not estimate.k_hat > 0:
        raise ValueError(
            f"K_hat = {estimate.k_hat!r}: the exact step sqrt(2 L(w0) / (K_hat T)) needs K_hat > 0, and every sampled "
            "Hessian was zero; the loss has no curvature at those points (a piecewise-linear loss, such as a hinge, "
            "on a linear or ReLU model)"
        )
    unconverged = sum(not s.result.converged for s in estimate.samples)
    if unconverged:
        low = sorted({str(p.dtype) for p in model.parameters() if p.dtype in (torch.float16, torch.bfloat16)})
        hint = (
            f"; the model is {', '.join(low)}, whose Hessian-vector products resolve no residual below about its eps "
            "(2**-7 for bfloat16, 2**-10 for float16): pass estimate_kwargs tol above it, or estimate on a float32 "
            "copy of the model"
            if low
            else ""
        )
        warn(
            f"exact_step_adam: {unconverged} of the {len(estimate.samples)} Hessian spectral norms did not converge "
            "within max_matvecs to tol; an unconverged estimate is low, so K_hat may be too small and the step too "
            f"large (raise estimate_kwargs max_matvecs, or loosen tol){hint}",
            RuntimeWarning,
        )
    alpha = constant_step(initial_loss, estimate.k_hat, total_steps, final_loss)
    # The parameters the estimate covered: params= if given (the step is the curvature's over those), else all.
    trained = extra["params"] if extra.get("params") is not None else model.parameters()
    optimizer = optimizer_class(trained, lr=alpha, **optimizer_kwargs)  # type: ignore[call-arg]
    step = ExactStep(
        alpha=alpha, initial_loss=initial_loss, smoothness=estimate, total_steps=total_steps, final_loss=final_loss
    )
    return optimizer, step


class NonFiniteStepError(ValueError, FloatingPointError):
    """The exact step is undefined because ``L(w0)`` or ``K_hat`` is not finite (a loss or curvature that overflows
    at the initial or sampled weights). A ``ValueError`` as before, and a ``FloatingPointError``: the lab records
    such a run as diverged, as a non-finite loss in training."""


def _check_optimizer_arguments(
    model: nn.Module, optimizer_class: type[Optimizer], optimizer_kwargs: Mapping[str, Any]
) -> None:
    """Build ``optimizer_class`` once on a one-element stand-in for the model's parameters (their dtype and device),
    so that a bad optimizer argument (``betas=(0.9, 2.0)``, an unknown keyword) fails with the optimizer's own error
    before the costly estimate of ``K_hat`` rather than after it. The stand-in is discarded; the model is not
    touched."""
    first = next(iter(model.parameters()), None)
    if first is None or nn.parameter.is_lazy(first):  # the loss and the estimate refuse these with their reasons
        return
    probe = torch.zeros(1, dtype=first.dtype, device=first.device, requires_grad=True)
    optimizer_class([probe], lr=1e-3, **optimizer_kwargs)  # type: ignore[call-arg]
