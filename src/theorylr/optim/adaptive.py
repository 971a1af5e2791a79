"""Lipschitz-adaptive optimizers of LipschitzLR §6: :class:`AdaMo`, :class:`AutoAdam` and :class:`AdaptiveRMSprop`.

All three replace the hand-picked learning rate with the inverse of an exponentially weighted average (EWA) of a
per-step Lipschitz estimate ``L_t`` (Yedida & Saha, *LipschitzLR*, §6, Algorithms 1-3). They share one functional
core, :func:`adaptive_lipschitz`; a variant is a configuration of it (first moment on/off, second moment on/off).

**The per-step Lipschitz estimate** ``L_t = D_t + lambda * K_t`` (the data term plus the L2 term of §5.3, where
``lambda`` is the group's ``weight_decay``):

- ``lipschitz="closed_form"`` (the default when a model or tracker is given, as in the paper's experiments):
  ``D_t`` is the closed-form constant of the batch of the latest training forward pass, from its penultimate
  activations (K_z, the batch size m and the number of classes k; see
  :class:`theorylr.lipschitz.tracker.ActivationTracker`), and ``K_t`` the tracker's weight bound (the largest
  weight-tensor norm of the model, §7.4).
- ``lipschitz="observed"`` (the default without a model): ``D_t = max_l ||g_l||``, the largest per-tensor gradient
  norm of the step over every parameter of every group, and ``K_t = max_l ||w_l||`` over the same parameters,
  computed on the device. This is the ``max ||grad_W L||`` of Algorithms 1 and 3 read literally.

``L_t`` is shared by all parameter groups (the paper takes one maximum over all layers), so groups are coupled.

**Coupling to a model.** Pass ``model=`` (with the loss settings) and the optimizer builds an
:class:`~theorylr.lipschitz.tracker.ActivationTracker` (a forward hook on the penultimate layer); or pass a
``tracker=`` you built yourself. The model and tracker are not hyperparameters: they stay out of ``defaults`` and
out of ``state_dict``. The hook is removed by :meth:`close`, when the optimizer is used as a context manager, or
when it is garbage-collected.

**Compiling the step.** ``torch.compile(opt.step, fullgraph=True)`` traces it without graph breaks. On a GPU,
compile with CUDA graphs and inductor's combo kernels (``options={"triton.cudagraphs": True, "combo_kernels":
True}``, state marked as static addresses; see the README). On an H200 with the ResNet-18 set this brought AdaMo
and AdaptiveRMSprop to 1.40x and 1.37x torch's fused Adam, and AutoAdam to 2.1x. With inductor's defaults they
ran at 3.5-4.4x (``benchmarks/RESULTS.md``, sixth pass).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    >>> opt = AdaMo(model.parameters(), model=model, loss="softmax", num_classes=3)
    >>> x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    >>> loss = nn.functional.cross_entropy(model(x), y)
    >>> loss.backward()
    >>> opt.step()
    >>> opt.param_groups[0]["lipschitz"]
    'closed_form'
    >>> L = float(opt.tracker.batch_lipschitz())  # this batch's (k - 1) ||A||_F / (k m), A the last layer's input
    >>> K = float(opt.state[model[0].weight]["lipschitz_avg"])  # the EWA after one step: (1 - beta) L
    >>> abs(K - 0.1 * L) < 1e-12
    True
    >>> opt.close()
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar, overload

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

from theorylr._validation import check_bool, check_choice, check_int, check_module, check_number, check_probability
from theorylr._warnings import warn
from theorylr.lipschitz.tracker import ActivationTracker
from theorylr.optim._base import (
    LR,
    check_lr,
    check_real,
    foreach_add_scaled_,
    foreach_mul_,
    inplace,
    load_keeping_scalar_states,
    params_with_grad,
    resolve_foreach,
    scalar_dtype,
    scalar_lr,
    scaled,
)
from theorylr.optim._norms import local_norms

_Loss = TypeVar("_Loss")  # what a step's closure returns (a tensor or a float), and so the step

__all__ = [
    "L2_ESTIMATES",
    "LIPSCHITZ_MODES",
    "AdaMo",
    "AdaptiveRMSprop",
    "AutoAdam",
    "adaptive_lipschitz",
    "squared_lipschitz_estimate",
]

LIPSCHITZ_MODES = ("closed_form", "observed")
_TensorList = list[Tensor] | tuple[Tensor, ...]
L2_ESTIMATES = ("no_cross", "square", "no_weight")


def squared_lipschitz_estimate(data_term: Tensor, reg_term: Tensor | float, estimate: str = "no_cross") -> Tensor:
    """The estimate ``L2_t`` of ``max ||(grad_W L)^2||`` that Auto-Adam averages into ``K2`` (LipschitzLR §6.3).

    With ``D`` the data term of the Lipschitz constant (e.g. ``(k-1) K_z / (k m)``) and ``R = lambda max ||w||`` the
    L2 term:

    - ``"square"``: ``(D + R)^2``. This is the paper's first estimate, ``||(max grad)^2||``, and also its second,
      ``D^2 + R^2 + 2 D R``: the two are the same number (the paper reports that the first diverged and the
      second oscillated; evaluated on the same batch they cannot differ).
    - ``"no_cross"`` (default): ``D^2 + R^2``, the second estimate with the cross term ``2 D R`` removed.
    - ``"no_weight"``: ``D^2 + 2 D R``, the second estimate with ``R^2`` removed.

    Args:
        data_term: ``D``, a tensor.
        reg_term: ``R`` (a tensor or a number; 0 without weight decay).
        estimate: one of ``"no_cross"``, ``"square"``, ``"no_weight"``.

    Example:
        >>> import torch
        >>> d = torch.tensor(3.0)
        >>> [float(squared_lipschitz_estimate(d, 1.0, e)) for e in ("square", "no_cross", "no_weight")]
        [16.0, 10.0, 15.0]

    .. note::
        The paper says the estimate that "worked quite well" is the second with "the middle term" removed. As
        printed, the middle term of ``D^2 + R^2 + 2DR`` is ``R^2``; the middle term of the expansion
        ``D^2 + 2DR + R^2`` is the cross term. We follow issue 5 and default to removing the cross term
        (``"no_cross"``); the literal reading is ``"no_weight"``. Without weight decay (``R = 0``) all three equal
        ``D^2``.
    """
    check_choice("estimate", estimate, L2_ESTIMATES)
    if estimate == "square":
        return (data_term + reg_term) ** 2
    if estimate == "no_cross":
        return data_term**2 + reg_term**2
    return data_term**2 + 2 * data_term * reg_term


# ----------------------------------------------------------------------------------------------------------------
# Functional core
# ----------------------------------------------------------------------------------------------------------------
def adaptive_lipschitz(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor] | None,
    exp_avg_sqs: list[Tensor] | None,
    lipschitz_avgs: list[Tensor],
    lipschitz_sq_avgs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lipschitz: Tensor,
    lipschitz_sq: Tensor | None,
    lr: LR,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    initial_step_size: float | None,
    initial_steps: int,
    maximize: bool,
    foreach: bool,
    shared_state: bool = False,
) -> None:
    """One step of the Lipschitz-adaptive family (in place; the shared core of AdaMo, AutoAdam, AdaptiveRMSprop).

    With ``g = grad + weight_decay * w`` (``-grad`` when maximizing), ``t`` the step and ``L_t``, ``L2_t`` the
    step's Lipschitz estimates::

        V  = beta1 V  + (1 - beta1) g         (first moment; without it V = g)
        S  = beta2 S  + (1 - beta2) g^2       (second moment)
        K1 = beta1 K1 + (1 - beta1) L_t
        K2 = beta2 K2 + (1 - beta2) L2_t      (with the second moment)
        bias_correction: V, K1 /= 1 - beta1^t;  S, K2 /= 1 - beta2^t               (§6.4)
        step = 1 / K1                                    (first moment only: AdaMo, Alg. 1)
             = (sqrt(K2) + eps) / K1                     (with the second moment: Auto-Adam, Alg. 3)
        step = initial_step_size   while t <= initial_steps                               (§7.3)
        W -= lr * step * V                               (first moment only)
        W -= lr * step * V / sqrt(S + eps)               (with the second moment)

    Args:
        params, grads: the parameters and their gradients (gradients are not modified).
        exp_avgs: ``V`` per parameter, or ``None`` for no first moment (then ``beta1`` must be 0).
        exp_avg_sqs: ``S`` per parameter, or ``None`` for no second moment.
        lipschitz_avgs: ``K1`` per parameter (0-dim tensors).
        lipschitz_sq_avgs: ``K2`` per parameter (0-dim), ``None`` without the second moment.
        steps: the step counters (0-dim tensors, incremented here).
        lipschitz: ``L_t`` (0-dim tensor, any device/dtype; cast per parameter).
        lipschitz_sq: ``L2_t`` (0-dim tensor), ``None`` without the second moment.
        lr: the multiplier (1.0 = the paper).
        beta1, beta2, eps, weight_decay, bias_correction, initial_step_size, initial_steps, maximize: as in the classes.
        foreach: take the ``torch._foreach_*`` path (else the single-tensor reference loop).
        shared_state: promise that the entries of ``lipschitz_avgs``, ``lipschitz_sq_avgs`` and ``steps`` hold
            equal values, each list of one dtype and device (parameters whose state was created together and that
            have stepped together since: what :class:`AdaMo` and its siblings track). The foreach path then
            computes the step's scalars once and applies them with single-scalar multi-tensor kernels, a few
            launches on a GPU instead of one per tensor (default ``False``: scalars per parameter).

    Complex ``params`` or ``grads`` are refused with a ``ValueError`` (``g * g`` is not ``|g|^2`` for them; pass
    ``torch.view_as_real``). Float16 parameters take the second moment's step in float32 (``S + eps`` and the
    denominator divided by ``lr`` leave float16's range where the step does not).

    ``K1`` is clamped below before the division (by its dtype's smallest normal number over its epsilon, 1e-31 in
    float32, so that ``lr / K1`` and the bias correction stay finite), so a step with a zero estimate and a zero
    gradient gives a zero update instead of ``0/0``.
    """
    if not params:
        return
    check_real("adaptive_lipschitz", "params", params)
    check_real("adaptive_lipschitz", "grads", grads)
    second = exp_avg_sqs is not None
    if exp_avgs is None and beta1 != 0.0:
        raise ValueError(f"beta1 must be 0 when there is no first moment (got {beta1!r})")
    if second and (lipschitz_sq_avgs is None or lipschitz_sq is None):
        raise ValueError("the second moment needs lipschitz_sq_avgs and lipschitz_sq")
    lr = scalar_lr(lr)  # a one-element tensor of any shape, e.g. (1,), as torch's optimizers take it
    func = functools.partial(_multi_tensor_adaptive, shared_state=shared_state) if foreach else _single_tensor_adaptive
    func(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        lipschitz_avgs,
        lipschitz_sq_avgs,
        steps,
        lipschitz=lipschitz,
        lipschitz_sq=lipschitz_sq,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        bias_correction=bias_correction,
        initial_step_size=initial_step_size,
        initial_steps=initial_steps,
        maximize=maximize,
    )


def _cast_like(value: Tensor, like: Tensor, cache: dict[tuple[torch.device, torch.dtype], Tensor]) -> Tensor:
    key = (like.device, like.dtype)
    if key not in cache:
        cache[key] = value.to(device=like.device, dtype=like.dtype)
    return cache[key]


def _k_floor(dtype: torch.dtype) -> float:
    """The floor of ``K1_hat`` before ``1 / K1_hat``: the dtype's smallest normal number over its epsilon (1e-31 in
    float32), so that the step's scale times ``lr`` and ``1 / (1 - beta1^t)`` stays finite for any product of the
    two below ``1 / eps`` (8e6 in float32): a zero estimate beside a zero gradient then gives a zero update, never
    ``inf * 0``. An estimate below the floor is one of a gradient far below the dtype's precision of anything else."""
    info = torch.finfo(dtype)
    return info.tiny / info.eps


def _step_scales(
    k1: Tensor,
    k2: Tensor | None,
    step: Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    bias_correction: bool,
    initial_step_size: float | None,
    initial_steps: int,
    lr: LR | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The scalars of one step, elementwise: on one parameter's 0-dim states or on several parameters' stacked in 1-D.

    Returns ``(scale, correction2)``. ``scale`` is the step size (``1 / K1_hat``, ``(sqrt(K2_hat) + eps) / K1_hat``,
    or ``initial_step_size`` during the override) times the first moment's bias correction ``1 / (1 - beta1^t)``,
    so that the update is ``W -= lr * scale * V`` (first moment only) or ``W -= lr * V / (sqrt(S_hat + eps) /
    scale)``; ``correction2 = 1 - beta2^t`` divides ``S`` (``None`` without bias correction or second moment).
    With ``lr`` (the first-moment-only form), ``scale`` is multiplied by ``-lr``: the update is then
    ``W += scale * V``, and what is cast to the parameters' dtype is a step's size, not ``1 / K1_hat`` (above
    float16's range, 65504, for gradients with norms below about 1.5e-5).
    """
    correction1 = None
    k1_hat = k1
    if bias_correction and beta1 != 0.0:
        correction1 = torch.pow(beta1, step).neg().add(1.0)
        k1_hat = k1.div(correction1)
    k1_hat = k1_hat.clamp_min(_k_floor(k1.dtype))
    correction2 = None
    if k2 is None:
        scale = k1_hat.reciprocal()
    else:
        k2_hat = k2
        if bias_correction:
            correction2 = torch.pow(beta2, step).neg().add(1.0)
            k2_hat = k2.div(correction2)
        scale = k2_hat.sqrt().add(eps).div(k1_hat)
    if initial_step_size is not None:
        scale = torch.where(step <= initial_steps, initial_step_size, scale)
    if correction1 is not None:
        scale = scale.div(correction1)
    if lr is not None:  # a tensor lr in scale's dtype first, as a 1-D stack of scales takes it (float64 lr, float32 w)
        scale = scale.mul(-(lr.to(scale.dtype) if isinstance(lr, Tensor) else lr))
    return scale, correction2


def _single_tensor_adaptive(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor] | None,
    exp_avg_sqs: list[Tensor] | None,
    lipschitz_avgs: list[Tensor],
    lipschitz_sq_avgs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lipschitz: Tensor,
    lipschitz_sq: Tensor | None,
    lr: LR,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    initial_step_size: float | None,
    initial_steps: int,
    maximize: bool,
) -> None:
    # The same operations, in the same order, as _multi_tensor_adaptive (so that the two paths agree to rounding).
    cache1: dict[tuple[torch.device, torch.dtype], Tensor] = {}
    cache2: dict[tuple[torch.device, torch.dtype], Tensor] = {}
    for i, param in enumerate(params):
        grad = grads[i].neg() if maximize else grads[i]
        if weight_decay != 0.0:
            grad = grad.add(param, alpha=weight_decay)
        step = steps[i]
        inplace(step).add_(1)
        # K = beta K + (1 - beta) L as a scale and an add: lerp_ computes K + w (L - K), nan for K = L = inf
        k1 = lipschitz_avgs[i]
        inplace(k1).mul_(beta1).add_(_cast_like(lipschitz, k1, cache1), alpha=1.0 - beta1)
        k2 = None
        if exp_avg_sqs is not None:
            assert lipschitz_sq_avgs is not None and lipschitz_sq is not None
            k2 = lipschitz_sq_avgs[i]
            inplace(k2).mul_(beta2).add_(_cast_like(lipschitz_sq, k2, cache2), alpha=1.0 - beta2)
        scale, correction2 = _step_scales(
            k1,
            k2,
            step,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            bias_correction=bias_correction,
            initial_step_size=initial_step_size,
            initial_steps=initial_steps,
            lr=lr if exp_avg_sqs is None else None,
        )
        direction = grad if exp_avgs is None else inplace(exp_avgs[i]).lerp_(grad, 1.0 - beta1)
        target = inplace(param)  # a 1-element view of a 0-dim parameter under compile, as direction is
        if exp_avg_sqs is None:  # scale = -lr / K1_hat, which may be beyond float16's range (the step is not)
            if param.dtype == torch.float16:
                target.add_(scaled(direction, scale))
            else:
                target.addcmul_(direction, scale)  # as the multi-tensor path's kernel: scale uncast
            continue
        s = inplace(exp_avg_sqs[i])
        s.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if param.dtype == torch.float16:  # in float32, as _float16_second_moment_step (see there)
            wide = s.to(torch.float32, copy=True)  # a copy even of float32 state (model.half() after steps)
            denom = wide.add_(eps) if correction2 is None else wide.div_(correction2).add_(eps)
            denom.sqrt_().div_(scale).div_(lr.neg().to(denom.dtype) if isinstance(lr, Tensor) else -lr)
            target.add_(direction.to(torch.float32, copy=True).div_(denom))
            continue
        denom = s.add(eps) if correction2 is None else s.div(correction2).add_(eps)
        denom.sqrt_().div_(scale)
        if isinstance(lr, Tensor):  # w += V / (d / -lr): the tensor's value is never read on the host
            # lr in the parameter's dtype, as the multi-tensor path takes it (a 0-dim 16-bit parameter's denom is
            # float32 here: 0-dim s / 0-dim float32 correction promotes)
            target.addcdiv_(direction, denom.div_(lr.neg().to(param.dtype)))
        else:
            target.addcdiv_(direction, denom, value=-lr)


def _grouped_step_scales(
    k1s: list[Tensor], k2s: list[Tensor] | None, steps: list[Tensor], **kwargs: Any
) -> tuple[list[Tensor], list[Tensor] | None]:
    """:func:`_step_scales` for every parameter, on its 0-dim states stacked in 1-D per device and dtype (a few small
    kernels for the whole list instead of a few per parameter); returns 0-dim views of the results, in order."""
    groups: dict[tuple[tuple[torch.device, torch.dtype], ...], list[int]] = {}
    for i in range(len(k1s)):
        states = (k1s[i], steps[i]) if k2s is None else (k1s[i], steps[i], k2s[i])
        groups.setdefault(tuple((t.device, t.dtype) for t in states), []).append(i)
    scales: list[Tensor] = list(k1s)  # every entry is replaced below
    corrections2: list[Tensor] = list(k1s)
    has_correction2 = False
    for key, idx in groups.items():
        k1 = [k1s[i] for i in idx]
        k2 = None if k2s is None else [k2s[i] for i in idx]
        step = [steps[i] for i in idx]
        results: Iterable[tuple[Tensor, Tensor | None]]
        if len({device for device, _ in key}) == 1:
            scale, correction2 = _step_scales(
                torch.stack(k1), None if k2 is None else torch.stack(k2), torch.stack(step), **kwargs
            )
            results = zip(scale.unbind(0), [None] * len(idx) if correction2 is None else correction2.unbind(0))
        else:  # e.g. steps left on the CPU by load_state_dict: 0-dim tensors mix across devices, stacked ones do not
            results = [_step_scales(k1[j], None if k2 is None else k2[j], step[j], **kwargs) for j in range(len(idx))]
        for i, (s, c2) in zip(idx, results):
            scales[i] = s
            if c2 is not None:
                corrections2[i] = c2
                has_correction2 = True
    return scales, corrections2 if has_correction2 else None


# On the CPU the parameter-sized passes run slab by slab: consecutive whole tensors of at most this many elements
# together (a larger tensor is a slab of its own). The temporaries are then one slab's, freed and reused while their
# pages are still mapped, and a slab's tensors are still in the cache for its next pass.
_CPU_SLAB_NUMEL = 1 << 20


def _slabs(tensors: list[Tensor], limit: int) -> list[slice]:
    out: list[slice] = []
    start = size = 0
    for i, t in enumerate(tensors):
        if i > start and size + t.numel() > limit:
            out.append(slice(start, i))
            start, size = i, 0
        size += t.numel()
    out.append(slice(start, len(tensors)))
    return out


def _multi_tensor_adaptive(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor] | None,
    exp_avg_sqs: list[Tensor] | None,
    lipschitz_avgs: list[Tensor],
    lipschitz_sq_avgs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lipschitz: Tensor,
    lipschitz_sq: Tensor | None,
    lr: LR,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    initial_step_size: float | None,
    initial_steps: int,
    maximize: bool,
    shared_state: bool = False,
) -> None:
    torch._foreach_add_(steps, 1)
    scalar_kwargs: dict[str, Any] = {
        "beta1": beta1,
        "beta2": beta2,
        "eps": eps,
        "bias_correction": bias_correction,
        "initial_step_size": initial_step_size,
        "initial_steps": initial_steps,
        "lr": lr if exp_avg_sqs is None else None,  # first moment only: scale = -lr / K1_hat
    }
    scales: list[Tensor] | Tensor
    corrections2: list[Tensor] | Tensor | None
    if shared_state:
        scales, corrections2 = _shared_scales(
            lipschitz_avgs, lipschitz_sq_avgs, steps, lipschitz, lipschitz_sq, params[0].dtype, **scalar_kwargs
        )
    else:
        # K = beta K + (1 - beta) L as a scale and an add, as the loop (an infinite L keeps K infinite, not nan)
        cache1: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        torch._foreach_mul_(lipschitz_avgs, beta1)
        torch._foreach_add_(
            lipschitz_avgs, [_cast_like(lipschitz, k, cache1) for k in lipschitz_avgs], alpha=1.0 - beta1
        )
        if exp_avg_sqs is not None:
            assert lipschitz_sq_avgs is not None and lipschitz_sq is not None
            cache2: dict[tuple[torch.device, torch.dtype], Tensor] = {}
            torch._foreach_mul_(lipschitz_sq_avgs, beta2)
            torch._foreach_add_(
                lipschitz_sq_avgs, [_cast_like(lipschitz_sq, k, cache2) for k in lipschitz_sq_avgs], alpha=1.0 - beta2
            )
        scales, corrections2 = _grouped_step_scales(lipschitz_avgs, lipschitz_sq_avgs, steps, **scalar_kwargs)
    if params[0].device.type == "cpu" and not torch.compiler.is_compiling():
        slabs = _slabs(params, _CPU_SLAB_NUMEL)
    else:
        slabs = [slice(0, len(params))]
    for s in slabs:
        _multi_tensor_update(
            params[s],
            grads[s],
            None if exp_avgs is None else exp_avgs[s],
            None if exp_avg_sqs is None else exp_avg_sqs[s],
            _part(scales, s),
            None if corrections2 is None else _part(corrections2, s),
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
        )


def _part(values: list[Tensor] | Tensor, s: slice) -> list[Tensor] | Tensor:
    """A slab's share of per-parameter scalars; one shared 0-dim scalar serves every slab."""
    return values if isinstance(values, Tensor) else values[s]


def _shared_scales(
    lipschitz_avgs: list[Tensor],
    lipschitz_sq_avgs: list[Tensor] | None,
    steps: list[Tensor],
    lipschitz: Tensor,
    lipschitz_sq: Tensor | None,
    dtype: torch.dtype,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """The EWAs and the step's scalars of :func:`_multi_tensor_adaptive` when every parameter's scalar state holds
    the same values (``shared_state``); returns ``(scale, correction2)`` once, cast to the parameters' ``dtype`` as
    the per-tensor kernels would cast them (float16 keeps them in float32, as the per-parameter path does).

    The EWAs are ``K = beta K + (1 - beta) L`` written as a scale by a Python number and an add of one 0-dim tensor,
    so that each has a single-scalar multi-tensor form (one launch for all parameters on a GPU); the scalars come
    from the first parameter's state. ``kwargs`` are :func:`_step_scales`'s.
    """
    beta1, beta2 = kwargs["beta1"], kwargs["beta2"]
    torch._foreach_mul_(lipschitz_avgs, beta1)
    torch._foreach_add_(lipschitz_avgs, lipschitz.to(lipschitz_avgs[0]), alpha=1.0 - beta1)
    if lipschitz_sq_avgs is not None:
        assert lipschitz_sq is not None
        torch._foreach_mul_(lipschitz_sq_avgs, beta2)
        torch._foreach_add_(lipschitz_sq_avgs, lipschitz_sq.to(lipschitz_sq_avgs[0]), alpha=1.0 - beta2)
    scale, correction2 = _step_scales(
        lipschitz_avgs[0], None if lipschitz_sq_avgs is None else lipschitz_sq_avgs[0], steps[0], **kwargs
    )
    if dtype == torch.float16:  # -lr / K1_hat may be beyond float16's range: the update takes it in float32
        return scale, correction2
    return scale.to(dtype), None if correction2 is None else correction2.to(dtype)


def _multi_tensor_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor] | None,
    exp_avg_sqs: list[Tensor] | None,
    scales: list[Tensor] | Tensor,
    corrections2: list[Tensor] | Tensor | None,
    *,
    lr: LR,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The parameter-sized passes. ``scales`` (and ``corrections2``) are one 0-dim tensor per parameter, or one
    0-dim tensor in the parameters' dtype for all of them (``shared_state``: torch's single-scalar kernels)."""
    # The passes over parameter-sized tensors (the default, without maximize and weight decay): V.lerp_(g);
    # S *= b2; S += (1 - b2) g^2; d = S + eps (the one temporary); sqrt_(d); d /= scale; W -= lr V / d. Without
    # the second moment: V.lerp_(g); W -= lr * scale * V. The step size and the bias corrections are folded into
    # the 0-dim ``scale`` of each parameter (see _step_scales); maximize and weight decay add a temporary for g.
    g: _TensorList = grads
    if maximize:
        g = torch._foreach_neg(grads)
        if weight_decay != 0.0:
            torch._foreach_add_(g, params, alpha=weight_decay)
    elif weight_decay != 0.0:
        g = torch._foreach_add(grads, params, alpha=weight_decay)
    direction: _TensorList = g
    if exp_avgs is not None:
        torch._foreach_lerp_(exp_avgs, g, 1.0 - beta1)
        direction = exp_avgs
    if exp_avg_sqs is not None:
        foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, g, g, value=1.0 - beta2)
    buckets = _dtype_buckets(params)
    if buckets is None:  # one dtype (the usual case): the whole list at once
        _multi_tensor_apply(params, direction, exp_avg_sqs, scales, corrections2, lr=lr, eps=eps)
        return
    for idx in buckets:  # a group mixing dtypes: lr cast to each dtype, float16 on its own path, one call per dtype
        _multi_tensor_apply(
            _pick(params, idx),
            _pick(direction, idx),
            None if exp_avg_sqs is None else _pick(exp_avg_sqs, idx),
            scales if isinstance(scales, Tensor) else _pick(scales, idx),
            corrections2 if corrections2 is None or isinstance(corrections2, Tensor) else _pick(corrections2, idx),
            lr=lr,
            eps=eps,
        )


def _pick(values: _TensorList, idx: list[int]) -> list[Tensor]:
    return [values[i] for i in idx]


def _dtype_buckets(params: list[Tensor]) -> list[list[int]] | None:
    """The positions of ``params`` per dtype, in order of first appearance; ``None`` if they share one dtype."""
    first = params[0].dtype
    if all(p.dtype == first for p in params):
        return None
    found: dict[torch.dtype, list[int]] = {}
    for i, p in enumerate(params):
        found.setdefault(p.dtype, []).append(i)
    return list(found.values())


def _multi_tensor_apply(
    params: list[Tensor],
    direction: _TensorList,
    exp_avg_sqs: list[Tensor] | None,
    scales: list[Tensor] | Tensor,
    corrections2: list[Tensor] | Tensor | None,
    *,
    lr: LR,
    eps: float,
) -> None:
    """The update of parameters of one dtype from their moments (already updated): ``W += scale * V`` without the
    second moment (the scales include ``-lr``), else ``W += V / (sqrt(S / correction2 + eps) / scale / -lr)``."""
    dtype = params[0].dtype
    if exp_avg_sqs is None:  # the scales include -lr here (see _step_scales)
        if isinstance(scales, Tensor) and dtype != torch.float16:  # no single-scalar addcmul:
            torch._foreach_add_(params, torch._foreach_mul(direction, scales))  # a scaled copy, then an add
        else:  # float16: products in float32, as -lr / K1_hat may be beyond float16's range (the step is not)
            foreach_add_scaled_(
                params, list(direction), [scales] * len(params) if isinstance(scales, Tensor) else scales
            )
        return
    if dtype == torch.float16:
        _float16_second_moment_step(params, direction, exp_avg_sqs, scales, corrections2, lr=lr, eps=eps)
        return
    if corrections2 is None:
        denom = torch._foreach_add(exp_avg_sqs, eps)
    else:
        denom = torch._foreach_div(exp_avg_sqs, corrections2)
        torch._foreach_add_(denom, eps)
    torch._foreach_sqrt_(denom)
    torch._foreach_div_(denom, scales)
    if isinstance(lr, Tensor):  # w += V / (d / -lr): the tensor's value is never read on the host
        torch._foreach_div_(denom, lr.neg().to(dtype))
        torch._foreach_addcdiv_(params, direction, denom)
    else:
        torch._foreach_addcdiv_(params, direction, denom, value=-lr)


def _float16_second_moment_step(
    params: list[Tensor],
    direction: _TensorList,
    exp_avg_sqs: list[Tensor],
    scales: list[Tensor] | Tensor,
    corrections2: list[Tensor] | Tensor | None,
    *,
    lr: LR,
    eps: float,
) -> None:
    """The second-moment update of float16 parameters, computed in float32 and added in one rounding.

    In float16 the denominator leaves the range where the step does not: ``d / -lr`` exceeds 65504 once ``d``
    exceeds ``65504 lr`` (``d`` is about ``|V|`` where the step is about ``lr``: with ``lr = 1e-4`` a coordinate
    whose gradient was above 6.6 did not move with a tensor ``lr``); ``eps = 1e-8`` vanishes beside any ``S`` and
    ``(1 - beta2) g^2`` underflows to 0 for small gradients, so that ``V / sqrt(S + eps)`` was ``V / 0 = inf``; and
    ``d / scale`` overflows for a small ``initial_step_size``. The loop of :func:`_single_tensor_adaptive` makes the
    same operations on one tensor at a time.
    """
    denom = [s.to(torch.float32, copy=True) for s in exp_avg_sqs]  # copies even of float32 state (see the loop)
    if corrections2 is not None:
        torch._foreach_div_(denom, corrections2)
    torch._foreach_add_(denom, eps)
    torch._foreach_sqrt_(denom)
    torch._foreach_div_(denom, scales)
    torch._foreach_div_(denom, lr.neg().to(torch.float32) if isinstance(lr, Tensor) else -lr)
    torch._foreach_add_(params, torch._foreach_div([v.float() for v in direction], denom))


# ----------------------------------------------------------------------------------------------------------------
# Shared optimizer class
# ----------------------------------------------------------------------------------------------------------------
def _shared_scalars_pay(params: list[Tensor]) -> bool:
    """Whether to apply one shared scalar to ``params`` (known to hold equal scalar states) with single-scalar
    multi-tensor kernels: off the CPU, where it turns one kernel launch per tensor into a few for the whole list
    (on an H200 with the ResNet-18 set, Auto-Adam's step went 2.44 -> 1.50 ms in float32, AdaMo's 1.20 -> 1.10;
    ``benchmarks/RESULTS.md``, fifth pass), with every parameter of one device and dtype. The CPU keeps its
    slab-wise per-tensor path (a foreach kernel is a loop there)."""
    first = params[0]
    return not first.is_cpu and all(p.device == first.device and p.dtype == first.dtype for p in params)


def _max_norm(tensors: list[Tensor], foreach: bool) -> Tensor:
    """The largest Frobenius norm among ``tensors``, as a 0-dim tensor on the first tensor's device (no sync).

    The norms are :func:`~theorylr.optim.lars.local_norms`'s: 16-bit tensors accumulated in float32, and with
    ``foreach`` the CPU kernels chosen there (BLAS dots for large float32 tensors with several threads; under
    ``torch.compile``, inductor's sums by rows of 4096 elements).
    """
    norms = local_norms(tensors, "l2", foreach=foreach)
    device = tensors[0].device
    return torch.stack([n.to(device) for n in norms]).amax()


def _shared_defaults(
    lipschitz: str | None,
    weight_decay: float,
    bias_correction: bool,
    initial_step_size: float | None,
    initial_steps: int,
    maximize: bool,
    foreach: bool | None,
) -> dict[str, Any]:
    """The hyperparameters every class of the family has, as ``defaults`` entries (checked by the shared class)."""
    return {
        "lipschitz": lipschitz,
        "weight_decay": weight_decay,
        "bias_correction": bias_correction,
        "initial_step_size": initial_step_size,
        "initial_steps": initial_steps,
        "maximize": maximize,
        "foreach": foreach,
    }


def _tracker_kwargs(
    loss: str,
    num_classes: int | None,
    penultimate: str | nn.Module | None,
    activation_norm: str,
    weight_bound: float | None,
    rigorous: bool,
) -> dict[str, Any]:
    """The :class:`ActivationTracker` arguments the classes take, for the tracker built from ``model=``."""
    return {
        "loss": loss,
        "num_classes": num_classes,
        "penultimate": penultimate,
        "activation_norm": activation_norm,
        "weight_bound": weight_bound,
        "rigorous": rigorous,
    }


class _LipschitzAdaptive(Optimizer):
    """Shared class of the Lipschitz-adaptive optimizers: a configuration of :func:`adaptive_lipschitz`."""

    _first_moment: ClassVar[bool] = True
    _second_moment: ClassVar[bool] = False

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        model: nn.Module | None,
        tracker: ActivationTracker | None,
        tracker_kwargs: dict[str, Any],
        max_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if max_fn is not None and not callable(max_fn):
            raise ValueError(f"max_fn must be a callable Tensor -> Tensor, or None (got {max_fn!r})")
        self.max_fn = max_fn
        if model is not None and tracker is not None:
            raise ValueError("pass either model (the optimizer builds a tracker) or tracker, not both")
        if model is not None:
            check_module("model", model)
        if tracker is not None and not isinstance(tracker, ActivationTracker):
            raise ValueError(f"tracker must be an ActivationTracker (got {type(tracker).__name__})")
        self._owns_tracker = model is not None
        self._coupled = model is not None or tracker is not None
        mode = defaults["lipschitz"]
        if mode is None:
            mode = "closed_form" if self._coupled else "observed"
        defaults = {**defaults, "lipschitz": mode}
        self.tracker = tracker
        self._check_group(defaults)
        super().__init__(params, defaults)  # checks every group through add_param_group
        if model is not None:  # hooks only once every argument is known good: an error above leaves the model bare
            self.tracker = ActivationTracker(model, **tracker_kwargs)
        # Per param group (by position): its parameters (ids) when last seen, and the positions of those whose
        # scalar states (step, K1, K2) hold equal values -- created together and stepped together since. Kept on
        # the host, rebuilt by __setstate__ (load_state_dict, unpickling); see _shared_state.
        self._cohorts: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        # The K_z tensor of the batch the last step read (a new tensor per recorded batch), and whether a step that
        # found no newer one has warned (see _estimates).
        self._last_pass: object = None
        self._warned = False
        if self._owns_tracker and self.tracker is not None:
            self._finalizer: weakref.finalize | None = weakref.finalize(self, self.tracker.close)
        else:
            self._finalizer = None

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate one param group's hyperparameters (the defaults, and every group, added later too)."""
        check_lr(group["lr"])
        check_number("weight_decay", group["weight_decay"], min_value=0.0)
        check_bool("bias_correction", group["bias_correction"])
        check_bool("maximize", group["maximize"])
        if group["foreach"] is not None:
            check_bool("foreach", group["foreach"])
        if group["initial_step_size"] is not None:
            check_number("initial_step_size", group["initial_step_size"], min_value=0.0)
            check_int("initial_steps", group["initial_steps"], min_value=1)
        elif group["initial_steps"] != 0:
            raise ValueError(
                f"initial_steps must be 0 without initial_step_size (got {group['initial_steps']!r}): pass "
                "initial_step_size, the step size of those first steps"
            )
        check_choice("lipschitz", group["lipschitz"], LIPSCHITZ_MODES)
        if group["lipschitz"] == "closed_form" and not self._coupled:
            raise ValueError("lipschitz='closed_form' needs model= or tracker= (use lipschitz='observed' without one)")
        if "beta" in group:
            check_probability("beta", group["beta"])
        if "betas" in group:
            betas = group["betas"]
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise ValueError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1) (got {betas!r})")
            check_probability("betas[0]", betas[0])
            check_probability("betas[1]", betas[1])
        if "eps" in group:
            check_number("eps", group["eps"], min_value=0.0)
        if "l2_estimate" in group:
            check_choice("l2_estimate", group["l2_estimate"], L2_ESTIMATES)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (torch semantics), checking its own settings as the constructor checks the defaults."""
        if "lipschitz" in param_group and param_group["lipschitz"] is None:  # as in the constructor
            param_group["lipschitz"] = "closed_form" if self._coupled else "observed"
        self._check_group({**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}})
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.load_state_dict`, except that the 0-dim running estimates
        (``lipschitz_avg``, ``lipschitz_sq_avg``) keep their float32/float64 dtype: torch casts floating state to
        the parameter's dtype, which for 16-bit parameters would round them (float16: overflow) at every reload,
        and the resumed run would leave the uninterrupted one. The saved groups' hyperparameters are checked first,
        as the constructor checks them; a saved group that lacks one of this optimizer's hyperparameters gets its
        default (the optimizer's own), and a saved state that lacks a key this optimizer keeps, or holds one it does
        not keep (another optimizer's checkpoint), is refused."""
        required = ["step", "lipschitz_avg"]
        required += ["exp_avg"] if self._first_moment else []
        required += ["exp_avg_sq", "lipschitz_sq_avg"] if self._second_moment else []
        load_keeping_scalar_states(
            self,
            state_dict,
            ("lipschitz_avg", "lipschitz_sq_avg"),
            self._check_group,
            required=required,
            allowed=required,
        )
        self._cohorts = self._equal_scalar_states()

    def __getstate__(self) -> dict[str, Any]:
        """torch's state; refused for an optimizer coupled to a tracker (``model=`` or ``tracker=``), as the tracker
        itself refuses: torch's copy would drop the tracker, and the copy fail at its first step."""
        if self._coupled:
            raise TypeError(
                f"{type(self).__name__} built with model= or tracker= cannot be pickled or copied: its tracker's hook "
                "is bound to the live model, which a copy would not track. Save optimizer.state_dict() and, after "
                "loading, build a new optimizer on the model (model=...) and call load_state_dict()"
            )
        state = super().__getstate__()
        if self.max_fn is not None:  # torch's state holds defaults, state and groups only
            state["max_fn"] = self.max_fn
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("max_fn", None)
        self.__dict__.setdefault("tracker", None)
        self.__dict__.setdefault("_owns_tracker", False)
        self.__dict__.setdefault("_coupled", self.tracker is not None)
        self.__dict__.setdefault("_finalizer", None)
        self.__dict__.setdefault("_last_pass", None)
        self.__dict__.setdefault("_warned", False)
        for group in self.param_groups:
            # A checkpoint that lacks a key gets this optimizer's own default (its constructor's arguments: AdaMo
            # with model= defaults to lipschitz="closed_form"); the fallbacks below are for an unpickled optimizer
            # whose defaults predate the key.
            for key, value in self.defaults.items():
                if key != "differentiable":  # torch's, added to defaults after the groups were built
                    group.setdefault(key, value)
            group.setdefault("lipschitz", "observed")
            group.setdefault("weight_decay", 0.0)
            group.setdefault("bias_correction", False)
            group.setdefault("initial_step_size", None)
            group.setdefault("initial_steps", 0)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            if self._second_moment:
                group.setdefault("l2_estimate", "no_cross")
        self._cohorts = self._equal_scalar_states()

    def _equal_scalar_states(self) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Cohorts read from the state's values: per group, the parameters with state if their scalar states are
        equal (one host read per group: this runs in ``load_state_dict`` and unpickling, never in ``step``)."""
        cohorts = {}
        for index, group in enumerate(self.param_groups):
            members = [j for j, p in enumerate(group["params"]) if self.state.get(p)]
            keys = ("step", "lipschitz_avg", "lipschitz_sq_avg") if self._second_moment else ("step", "lipschitz_avg")
            try:
                values = [[self.state[group["params"][j]][k] for j in members] for k in keys]
                equal = bool(members) and all(
                    len({(t.device, t.dtype) for t in ts}) == 1 and bool((torch.stack(ts) == ts[0]).all())
                    for ts in values
                )
            except (KeyError, RuntimeError, TypeError):  # a state from elsewhere: no cohort, per-tensor scalars
                equal = False
            if equal:
                cohorts[index] = (tuple(id(p) for p in group["params"]), tuple(members))
        return cohorts

    def _shared_state(self, index: int, group: dict[str, Any], params: list[Tensor], fresh: list[bool]) -> bool:
        """Whether the parameters stepped now (``params``, ``fresh`` where their state is about to be created) hold
        equal scalar states, and update the group's cohort for after this step. Host-side bookkeeping only.

        A cohort is the set of a group's parameters whose states were created in one step and that have stepped
        together since: the same arithmetic on the same inputs keeps their scalars equal. A parameter that skips a
        step (no gradient) leaves it; one whose state is created later never joins it.
        """
        owners = tuple(id(p) for p in group["params"])
        current = tuple(j for j, p in enumerate(group["params"]) if p.grad is not None)
        # Keyed by the group's position (torch.compile traces id() of tensors, not of dicts), checked against the
        # group's parameters so that a removed or reordered group is never mistaken for another.
        saved = self._cohorts.get(index)
        cohort = saved[1] if saved is not None and saved[0] == owners else None
        if all(fresh) or (cohort == current and not any(fresh)):  # created now, or the whole cohort stepped
            equal, after = True, current
        else:
            stepped = {j for j, f in zip(current, fresh) if not f}
            equal, after = False, tuple(j for j in (cohort or ()) if j in stepped)
        if after:
            self._cohorts[index] = (owners, after)
        else:
            self._cohorts.pop(index, None)
        return equal and _shared_scalars_pay(params)

    def close(self) -> None:
        """Remove the forward hook of the tracker this optimizer built (a shared ``tracker=`` is left alone)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> _LipschitzAdaptive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        raise NotImplementedError

    def _estimates(
        self, groups: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]
    ) -> dict[str, tuple[Tensor, Tensor | None]]:
        """``(data term, weight bound)`` for each Lipschitz mode in use (the bound only where weight decay is)."""
        modes = {group["lipschitz"] for group, params, _ in groups if params}
        need_bound = {group["lipschitz"] for group, params, _ in groups if params and group["weight_decay"] != 0.0}
        all_params = [p for _, params, _ in groups for p in params]
        foreach = resolve_foreach(self.defaults["foreach"], all_params)
        out: dict[str, tuple[Tensor, Tensor | None]] = {}
        if self.max_fn is not None:
            out["observed"] = self._global_maxima(groups, all_params, foreach, "observed" in need_bound)
        elif "observed" in modes:
            grads = [g for _, _, gs in groups for g in gs]
            bound = _max_norm(all_params, foreach) if "observed" in need_bound else None
            out["observed"] = (_max_norm(grads, foreach), bound)
        if "closed_form" in modes:
            if self.tracker is None:
                raise RuntimeError("lipschitz='closed_form' needs a tracker; build the optimizer with model=")
            if self.tracker.closed:
                raise RuntimeError(
                    "lipschitz='closed_form' reads the tracker's activations, but the tracker is closed (its hook "
                    "removed by close()); its L would be stale. Use lipschitz='observed' or a new optimizer"
                )
            latest = self.tracker._latest_pass()  # a new object for every recorded pass
            if latest is not None and latest is self._last_pass and not self._warned:
                warn(
                    f"{type(self).__name__}: no training forward pass of the tracked module since the last step "
                    "(the model in eval() mode, or under no_grad?): this step reuses the previous batch's L",
                    RuntimeWarning,
                )
                self._warned = True
            bound = self.tracker.weight_bound(foreach=foreach) if "closed_form" in need_bound else None
            out["closed_form"] = (self.tracker.batch_lipschitz(), bound)
            self._last_pass = latest  # once read: a step that raised (targets missing) has not used this batch
        return out

    def _global_maxima(
        self,
        groups: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]],
        params: list[Tensor],
        foreach: bool,
        need_bound: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """``(largest gradient norm, largest weight norm)`` over every rank's parameters, through ``max_fn``: called
        once per step on every rank, with zeros where this rank has no parameter (norms are >= 0), so that the
        ranks' collectives stay paired whatever their shards hold."""
        assert self.max_fn is not None
        grads = [g for _, _, gs in groups for g in gs]  # every group's, as without a hook
        # Decided from the groups' settings, which every rank holds alike (ZeRO shards the tensors, not the groups),
        # so that no rank skips its part; a norm nobody needs is sent as 0.
        bound_used = any(g["lipschitz"] == "observed" and g["weight_decay"] != 0.0 for g in self.param_groups)
        if params:
            device = params[0].device
        else:
            device = next((p.device for g in self.param_groups for p in g["params"]), torch.device("cpu"))
        # Exchanged in float64 (exact for any norm dtype, the same dtype on every rank), returned in the norms' own
        # dtype, as without a hook.
        wide = torch.float32 if device.type == "mps" else torch.float64
        zero = torch.zeros((), dtype=wide, device=device)
        grad_max = _max_norm(grads, foreach) if grads else None
        weight_max = _max_norm(params, foreach) if params and bound_used else None
        dtype = next((t.dtype for t in (grad_max, weight_max) if t is not None), torch.float32)
        local = torch.stack([zero if t is None else t.to(device, wide) for t in (grad_max, weight_max)])
        maxima = self.max_fn(local)
        if not isinstance(maxima, Tensor) or maxima.shape != (2,):
            raise RuntimeError(f"max_fn must return a tensor of shape (2,), as it was given (got {maxima!r})")
        maxima = maxima.to(dtype)
        return maxima[0], maxima[1] if need_bound else None

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], _Loss]) -> _Loss: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], _Loss] | None = None) -> _Loss | None:
        """Perform one optimization step.

        Args:
            closure: a callable that re-evaluates the model and returns the loss (optional).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        groups = []
        for group in self.param_groups:
            params, grads = params_with_grad(group, name)
            groups.append((group, params, grads))
        if not any(params for _, params, _ in groups):
            if self.max_fn is not None:  # this rank's shard has no gradient: its share of the collective is zeros
                self._global_maxima(groups, [], False, False)
            return loss
        estimates = self._estimates(groups)
        for index, (group, params, grads) in enumerate(groups):
            if not params:
                continue
            beta1, beta2 = self._betas(group)
            exp_avgs: list[Tensor] | None = [] if self._first_moment else None
            exp_avg_sqs: list[Tensor] | None = [] if self._second_moment else None
            k1s: list[Tensor] = []
            k2s: list[Tensor] | None = [] if self._second_moment else None
            steps: list[Tensor] = []
            shared = self._shared_state(index, group, params, [len(self.state[p]) == 0 for p in params])
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    dtype = scalar_dtype(p.dtype)
                    state["step"] = torch.zeros((), dtype=dtype, device=p.device)
                    state["lipschitz_avg"] = torch.zeros((), dtype=dtype, device=p.device)
                    if self._first_moment:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if self._second_moment:
                        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["lipschitz_sq_avg"] = torch.zeros((), dtype=dtype, device=p.device)
                steps.append(state["step"])
                k1s.append(state["lipschitz_avg"])
                if exp_avgs is not None:
                    exp_avgs.append(state["exp_avg"])
                if exp_avg_sqs is not None and k2s is not None:
                    exp_avg_sqs.append(state["exp_avg_sq"])
                    k2s.append(state["lipschitz_sq_avg"])
            data, bound = estimates[group["lipschitz"]]
            lam = group["weight_decay"]
            # l2_term(lam, bound) without its argument checks: lam was checked when the group was added, and a
            # check here would read a value torch.compile may hold as a symbol (a graph break under fullgraph).
            reg: Tensor | float = lam * bound if (lam != 0.0 and bound is not None) else 0.0
            lipschitz = data + reg
            lipschitz_sq = squared_lipschitz_estimate(data, reg, group["l2_estimate"]) if self._second_moment else None
            adaptive_lipschitz(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                k1s,
                k2s,
                steps,
                lipschitz=lipschitz,
                lipschitz_sq=lipschitz_sq,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group.get("eps", 0.0),
                weight_decay=lam,
                bias_correction=group["bias_correction"],
                initial_step_size=group["initial_step_size"],
                initial_steps=group["initial_steps"],
                maximize=group["maximize"],
                foreach=resolve_foreach(group["foreach"], params),
                shared_state=shared,
            )
        return loss


_COUPLING_DOC = """
    Coupling (not hyperparameters; kept out of ``defaults`` and ``state_dict``):
        model: build an :class:`~theorylr.lipschitz.tracker.ActivationTracker` on this model (default ``None``).
        tracker: use this tracker instead (e.g. one shared by two optimizers; default ``None``).
        loss, num_classes, penultimate, activation_norm, weight_bound, rigorous: passed to the tracker built from
            ``model`` (defaults ``"softmax"``, ``None``, ``None`` = the input of the last ``nn.Linear``, ``"fro"``,
            ``None`` = the largest weight-tensor norm, ``False`` = the paper's closed form).
        max_fn: for parameters sharded by tensor over ranks (``ZeroRedundancyOptimizer``): a hook that turns this
            rank's maxima into the global ones (default ``None``: the parameters are all here).
            ``lipschitz="observed"`` takes ``L_t`` (and ``K_w``) as maxima over every parameter, of which each rank
            holds a shard; with a hook, every step calls ``max_fn(t)`` once on a 1-D tensor ``[largest gradient
            norm, largest weight norm]`` of this rank's parameters (0 for none, on every rank, even one holding no
            parameter) and uses what it returns. :func:`theorylr.distributed.max_reduce` all-reduces it with
            ``MAX``. Kept on the optimizer.
"""


class AdaMo(_LipschitzAdaptive):
    r"""Adaptive momentum, LipschitzLR Algorithm 1: momentum SGD whose step is the inverse of an EWA of ``L_t``.

    Update rule (``g = grad + weight_decay * w``, ``L_t`` the step's Lipschitz estimate, see the module doc)::

        V = beta V + (1 - beta) g
        K = beta K + (1 - beta) L_t
        W -= lr * V / K                    (lr * initial_step_size * V while t <= initial_steps)

    With ``lipschitz="observed"``, ``|V_i| <= K`` for every coordinate (``K`` averages the largest gradient norm,
    ``V`` the gradient), so no coordinate moves more than ``lr`` per step: the paper's ``Delta w <= 1``.

    Args:
        params: parameters or parameter groups.
        lr: multiplier on the Lipschitz step (default 1.0, the paper); a torch scheduler may change it. A 0-dim
            tensor is taken too (a compiled step then reads it without recompiling when a scheduler changes it).
        beta: EWA coefficient of ``V`` and ``K`` (default 0.9).
        lipschitz: ``"closed_form"`` or ``"observed"`` (default: ``"closed_form"`` with a model/tracker, else
            ``"observed"``).
        weight_decay: L2 coefficient ``lambda``: adds ``lambda w`` to the gradient and ``lambda K_w`` to ``L_t``
            (§5.3; default 0).
        bias_correction: divide ``V`` and ``K`` by ``1 - beta^t`` (§6.4; default ``False``).
        initial_step_size: the step used instead of ``1/K`` for the first ``initial_steps`` steps, the paper's
            "initial lr" (§7.3; default ``None``). Not called ``initial_lr``: torch schedulers store the base
            learning rate under ``group["initial_lr"]``.
        initial_steps: how many steps ``initial_step_size`` lasts (default 0; >= 1 with ``initial_step_size``).
        maximize: maximize the objective (default ``False``).
        foreach: use the multi-tensor path (default ``None``: when every parameter allows it). On the CPU it
            runs the parameter-sized passes in slabs of consecutive tensors (at most 2^20 elements each) so that
            its one temporary stays small and mapped; the arithmetic is the loop's (``benchmarks/RESULTS.md``).
            Off the CPU, parameters whose scalar states were created in one step and have stepped together since
            (the usual case: no parameter skipped a step) share one step size, applied with single-scalar
            multi-tensor kernels: a few launches on a GPU instead of one per tensor (``shared_state`` of
            :func:`adaptive_lipschitz`; the grouping is rebuilt from the state's values by ``load_state_dict``).

    {coupling}

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = AdaMo([w], lr=1.0, beta=0.9)             # observed mode: no model given
        >>> (w ** 2).sum().backward()
        >>> opt.step()                                       # V = 0.1 g, K = 0.1 ||g||: W -= g / ||g||
        >>> w.detach()
        tensor([ 2.4000, -3.2000])

    Reference: Yedida & Saha, *LipschitzLR*, §6.1, Algorithm 1; first-epoch override §7.3.

    .. note::
        With ``bias_correction=True`` both ``V`` and ``K`` are divided by the same ``1 - beta^t`` (as §6.4 says),
        so the correction cancels and the update is unchanged; the flag is kept for symmetry with Auto-Adam.
        The exception is the ``initial_step_size`` steps: no ``K`` divides ``V`` there, so the corrected ``V`` is
        used, as Adam uses its corrected first moment (the first step is then ``1 / (1 - beta)`` times, 10 times
        at ``beta = 0.9``, the uncorrected one).
        §6.4 counts ``t`` in epochs; here ``t`` is the parameter's step count, as in ``torch.optim.Adam``.
        ``K`` is clamped away from zero before the division (the paper has no ``eps``). A gradient whose norm
        overflows (finite entries, an infinite ``L_t``) makes ``K`` infinite for good, and every later step 0:
        the run stops moving instead of turning nan (Auto-Adam and adaptive RMSprop turn nan there). Watch the
        state's ``lipschitz_avg`` to tell that from convergence.
        The paper's "on the first epoch, set K to 0.1 and use this value as the learning rate" is
        ``initial_step_size=0.1, initial_steps=<steps per epoch>``; ``K`` keeps averaging during those steps.
    """

    _first_moment = True
    _second_moment = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        beta: float = 0.9,
        *,
        lipschitz: str | None = None,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
        initial_step_size: float | None = None,
        initial_steps: int = 0,
        maximize: bool = False,
        foreach: bool | None = None,
        model: nn.Module | None = None,
        tracker: ActivationTracker | None = None,
        loss: str = "softmax",
        num_classes: int | None = None,
        penultimate: str | nn.Module | None = None,
        activation_norm: str = "fro",
        weight_bound: float | None = None,
        rigorous: bool = False,
        max_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "beta": beta,
            **_shared_defaults(
                lipschitz, weight_decay, bias_correction, initial_step_size, initial_steps, maximize, foreach
            ),
        }
        tracker_kwargs = _tracker_kwargs(loss, num_classes, penultimate, activation_norm, weight_bound, rigorous)
        super().__init__(params, defaults, model=model, tracker=tracker, tracker_kwargs=tracker_kwargs, max_fn=max_fn)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return group["beta"], 0.0


class AutoAdam(_LipschitzAdaptive):
    r"""Auto-Adam, LipschitzLR Algorithm 3: Adam whose step size comes from EWAs of ``L_t`` and ``L2_t``.

    Update rule (``g = grad + weight_decay * w``; ``L2_t`` from :func:`squared_lipschitz_estimate`)::

        V  = b1 V  + (1 - b1) g;         S  = b2 S  + (1 - b2) g^2
        K1 = b1 K1 + (1 - b1) L_t;       K2 = b2 K2 + (1 - b2) L2_t
        W -= lr * (sqrt(K2) + eps) / K1 * V / sqrt(S + eps)
                                          (lr * initial_step_size * V / sqrt(S + eps) while t <= initial_steps)

    Args:
        params: parameters or parameter groups.
        lr: multiplier (default 1.0, the paper). A 0-dim tensor is taken too (a compiled step
            then reads it without recompiling when a scheduler changes it).
        betas: ``(b1, b2)`` (default ``(0.9, 0.999)``, the paper's).
        eps: added inside the square root of ``S`` and to ``sqrt(K2)``, as Algorithm 3 writes it (default 1e-8).
        l2_estimate: ``"no_cross"`` (default), ``"square"`` or ``"no_weight"`` (§6.3; see
            :func:`squared_lipschitz_estimate`).
        lipschitz, weight_decay, bias_correction, initial_step_size, initial_steps, maximize, foreach: as in
            :class:`AdaMo`.

    {coupling}

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = AutoAdam([w], betas=(0.9, 0.999), eps=0.0)
        >>> (w ** 2).sum().backward()
        >>> opt.step()            # sqrt(K2)/K1 = sqrt(0.001)/0.1 and V/sqrt(S) = 0.1 g / (sqrt(0.001)|g|): a unit step
        >>> w.detach().round(decimals=5)  # 2 and -3 up to float32 rounding (which depends on the CPU's kernels)
        tensor([ 2., -3.])

    Reference: Yedida & Saha, *LipschitzLR*, §6.3, Algorithm 3; bias correction §6.4; initial lr §7.3, §9.

    .. note::
        The paper puts ``eps`` inside ``sqrt(S + eps)``; we keep that, which floors the denominator at
        ``sqrt(eps)`` (1e-4 with the default) rather than ``eps``. With ``bias_correction=True`` the ``1 - b1^t``
        factors of ``V`` and ``K1`` cancel and those of ``S`` and ``K2`` cancel up to ``eps``, so the flag changes
        the update only through ``eps``, except during the ``initial_step_size`` steps, where no ``K1``, ``K2``
        divide and ``V / sqrt(S + eps)`` is corrected as in Adam (§6.4 counts ``t`` in epochs; here ``t`` is the
        parameter's step count, as in ``torch.optim.Adam``). In observed mode, ``L2_t`` applies the same estimates to
        ``D = max ||g_l||`` and ``R = lambda max ||w_l||``.

        What the step size comes to: without weight decay ``L2_t = L_t^2`` in every estimate, so once the EWAs have
        warmed up ``sqrt(K2) / K1`` is about 1, while ``V / sqrt(S)`` is of order 1 per coordinate. Auto-Adam with
        ``lr = 1`` is then roughly Adam with a learning rate of 1, far larger than Adam's usual 1e-3; this is
        consistent with the paper's report that Auto-Adam did poorly (§7.4, §9) and that fixing ``K1 = 1``,
        ``K2 = 1e-6`` (an Adam step of 1e-3) fixed it. Use ``lr`` (the multiplier) to scale it down.
    """

    _first_moment = True
    _second_moment = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        l2_estimate: str = "no_cross",
        lipschitz: str | None = None,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
        initial_step_size: float | None = None,
        initial_steps: int = 0,
        maximize: bool = False,
        foreach: bool | None = None,
        model: nn.Module | None = None,
        tracker: ActivationTracker | None = None,
        loss: str = "softmax",
        num_classes: int | None = None,
        penultimate: str | nn.Module | None = None,
        activation_norm: str = "fro",
        weight_bound: float | None = None,
        rigorous: bool = False,
        max_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "l2_estimate": l2_estimate,
            **_shared_defaults(
                lipschitz, weight_decay, bias_correction, initial_step_size, initial_steps, maximize, foreach
            ),
        }
        tracker_kwargs = _tracker_kwargs(loss, num_classes, penultimate, activation_norm, weight_bound, rigorous)
        super().__init__(params, defaults, model=model, tracker=tracker, tracker_kwargs=tracker_kwargs, max_fn=max_fn)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        beta1, beta2 = group["betas"]
        return beta1, beta2


class AdaptiveRMSprop(_LipschitzAdaptive):
    r"""Adaptive RMSprop (LipschitzLR §6.2), reconstructed as Auto-Adam without the first moment.

    Update rule (Auto-Adam with ``b1 = 0``, so ``V = g`` and ``K1 = L_t``)::

        S  = beta S  + (1 - beta) g^2;   K2 = beta K2 + (1 - beta) L2_t
        W -= lr * (sqrt(K2) + eps) / L_t * g / sqrt(S + eps)
                                          (lr * initial_step_size * g / sqrt(S + eps) while t <= initial_steps)

    Args:
        params: parameters or parameter groups.
        lr: multiplier (default 1.0). A 0-dim tensor is taken too (a compiled step
            then reads it without recompiling when a scheduler changes it).
        beta: EWA coefficient of ``S`` and ``K2`` (default 0.9, the paper's RMSprop baseline).
        eps: as in :class:`AutoAdam` (default 1e-8).
        l2_estimate: as in :class:`AutoAdam` (default ``"no_cross"``).
        lipschitz, weight_decay, bias_correction, initial_step_size, initial_steps, maximize, foreach: as in
            :class:`AdaMo`.

    {coupling}

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = AdaptiveRMSprop([w], beta=0.9, eps=0.0)
        >>> (w ** 2).sum().backward()
        >>> opt.step()          # sqrt(K2)/K1 = sqrt(0.1) and g/sqrt(S) = g/(sqrt(0.1)|g|): a unit step
        >>> w.detach()
        tensor([ 2., -3.])

    Reference: Yedida & Saha, *LipschitzLR*, §6.2 (text only) and Algorithm 3.

    .. note::
        The paper's Algorithm 2 is missing from its text (only the caption survives). We reconstruct it, as issue 5
        asks, as Algorithm 3 without the first moment: setting ``b1 = 0`` makes ``V = g`` and ``K1 = L_t``. The
        §6.2 prose ("maintain an EWA of the Lipschitz constant as before") could also mean averaging ``K1`` with
        ``beta``; that reading is not implemented.
    """

    _first_moment = False
    _second_moment = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        beta: float = 0.9,
        eps: float = 1e-8,
        *,
        l2_estimate: str = "no_cross",
        lipschitz: str | None = None,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
        initial_step_size: float | None = None,
        initial_steps: int = 0,
        maximize: bool = False,
        foreach: bool | None = None,
        model: nn.Module | None = None,
        tracker: ActivationTracker | None = None,
        loss: str = "softmax",
        num_classes: int | None = None,
        penultimate: str | nn.Module | None = None,
        activation_norm: str = "fro",
        weight_bound: float | None = None,
        rigorous: bool = False,
        max_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "beta": beta,
            "eps": eps,
            "l2_estimate": l2_estimate,
            **_shared_defaults(
                lipschitz, weight_decay, bias_correction, initial_step_size, initial_steps, maximize, foreach
            ),
        }
        tracker_kwargs = _tracker_kwargs(loss, num_classes, penultimate, activation_norm, weight_bound, rigorous)
        super().__init__(params, defaults, model=model, tracker=tracker, tracker_kwargs=tracker_kwargs, max_fn=max_fn)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return 0.0, group["beta"]


for _cls in (AdaMo, AutoAdam, AdaptiveRMSprop):
    _cls.__doc__ = (_cls.__doc__ or "").replace("{coupling}", _COUPLING_DOC.strip())
del _cls
