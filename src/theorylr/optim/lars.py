"""Gradient descent with proportional updates: :class:`LARS` and :class:`PercentDelta`.

Each parameter tensor ("layer") takes a step whose size is proportional to its own norm and independent of the
gradient's magnitude (Gitman, Dilipkumar & Parr, *Convergence Analysis of Gradient Descent Algorithms with
Proportional Updates*, eq. (1), with the implementation details of its §6.1). The class is thin: it checks the
arguments, keeps the state and calls :func:`lars`, which runs either the single-tensor reference loop or the
multi-tensor (``torch._foreach_*``) path. The per-tensor norms (:func:`local_norms`, the default ``norm_fn``, and
its fast kernels) live in :mod:`theorylr.optim._norms`, which the adaptive optimizers and
:mod:`theorylr.distributed` share.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, overload

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

from theorylr._validation import check_bool, check_choice, check_number, check_probability
from theorylr.optim._base import (
    LR,
    StackedScalars,
    add_scaled_,
    add_times_,
    check_lr,
    check_real,
    foreach_add_scaled_,
    foreach_add_times_,
    foreach_mul_,
    inplace,
    load_keeping_scalar_states,
    params_with_grad,
    resolve_foreach,
    scalar_dtype,
    scalar_lr,
    scale_in,
    scale_list,
    scaled,
    stack_scalars,
)
from theorylr.optim._norms import (
    _DOT_MIN_NUMEL,
    NormFn,
    _bucket_norms,
    _compiled_l2_norms,
    _compiled_on_cpu,
    local_norms,
)

_Loss = TypeVar("_Loss")  # what a step's closure returns (a tensor or a float), and so the step

__all__ = [
    "DENOMINATORS",
    "LARS",
    "NORMS",
    "LarsLayout",
    "NormFn",
    "PercentDelta",
    "lars",
    "lars_layout",
    "local_norms",
]

#: The ``norm`` modes: three vector norms and PercentDelta's mean element-wise ratio.
NORMS: tuple[str, ...] = ("l2", "l1", "linf", "mean_ratio")
#: The ``denominator`` modes: ``||g + wd w||`` ("decayed") or ``||g|| + wd ||w||`` ("sum").
DENOMINATORS: tuple[str, ...] = ("decayed", "sum")

# What LARS keeps per parameter (see step): a checkpoint whose state holds anything else is another optimizer's.
_STATE_KEYS = frozenset({"momentum_buffer", "momentum_scale", "momentum_growth", "trust_ratio"})
_HYPERPARAMETERS = (
    "lr",
    "momentum",
    "dampening",
    "weight_decay",
    "nesterov",
    "trust_coefficient",
    "eps",
    "norm",
    "denominator",
    "min_norm",
    "trust_clip",
    "adapt",
    "foreach",
    "maximize",
    "factored_momentum",
)


def _call_norm_fn(norm_fn: NormFn, tensors: list[Tensor], norm: str) -> list[Tensor]:
    """Call a user's hook once and check the shape of its answer (shapes and types only: no host sync)."""
    result = norm_fn(tensors, norm)
    contract = (
        f"norm_fn must return one 0-dim tensor per input tensor ({len(tensors)}), as a list or a 1-D tensor of "
        f"length {len(tensors)}"
    )
    if isinstance(result, Tensor):
        if result.dim() > 1:
            raise RuntimeError(f"{contract} (got a tensor of shape {tuple(result.shape)})")
        result = list(result.unbind(0)) if result.dim() == 1 else [result]
    if not isinstance(result, (list, tuple)):
        raise RuntimeError(f"{contract} (got {type(result).__name__})")
    result = list(result)
    bad = next((n for n in result if not (isinstance(n, Tensor) and n.dim() == 0)), None)
    if bad is not None:
        got = f"shape {tuple(bad.shape)}" if isinstance(bad, Tensor) else type(bad).__name__
        raise RuntimeError(f"{contract} (got {got} among them)")
    if len(result) != len(tensors):
        raise RuntimeError(f"{contract} (got {len(result)} norms)")
    return result


def _norm_inputs(
    params: list[Tensor], grads: list[Tensor], dirs: list[Tensor], *, norm: str, denominator: str, eps: float
) -> tuple[list[Tensor], str]:
    """The tensors whose norms the trust ratio needs, in one list: the weights, then the denominator's tensors.

    "l1"/"l2"/"linf": weights then ``d = g + wd w`` ("decayed") or ``g`` ("sum"). "mean_ratio": weights then the
    element-wise ratios ``q = |u| / (|w| + eps)`` with ``u = d`` or ``g``, under the L1 norm (``||q||_1 / numel``
    is then the mean ratio). ``dirs`` may carry the sign of ``maximize``: norms do not see it.

    ``q`` is computed in :func:`scalar_dtype` of the weight (float32 for 16-bit weights), its denominator floored
    at that dtype's smallest normal number: in float16 ``eps = 1e-8`` vanishes beside ``|w|``, the floor (6.1e-5)
    exceeds a weight of 1e-5, and a ratio above 65504 (``|g| / |w| = 1e5``) is inf, which froze the tensor.
    """
    second = dirs if denominator == "decayed" else grads
    if norm != "mean_ratio":
        return [*params, *second], norm
    qs = []
    for p, u in zip(params, second):
        dtype = scalar_dtype(p.dtype)  # p.dtype for float32/float64: .to() returns the tensor itself, no copy
        qs.append(u.abs().to(dtype).div_((p.abs().to(dtype) + eps).clamp_min_(torch.finfo(dtype).tiny)))
    return [*params, *qs], "l1"


def _norm_inputs_foreach(
    params: list[Tensor], grads: list[Tensor], dirs: list[Tensor], *, norm: str, denominator: str, eps: float
) -> tuple[list[Tensor], str]:
    """:func:`_norm_inputs` with ``torch._foreach_*`` kernels (same arithmetic, element by element)."""
    second = dirs if denominator == "decayed" else grads
    if norm != "mean_ratio":
        return [*params, *second], norm
    scale = list(torch._foreach_abs(params))
    qs = list(torch._foreach_abs(second))
    for i, p in enumerate(params):  # 16-bit weights: the ratios in float32 (see _norm_inputs)
        dtype = scalar_dtype(p.dtype)
        if dtype != p.dtype:
            scale[i], qs[i] = scale[i].to(dtype), qs[i].to(dtype)
    torch._foreach_add_(scale, eps)
    for s in scale:  # per-tensor floor: dtypes may differ within a group
        s.clamp_min_(torch.finfo(s.dtype).tiny)
    torch._foreach_div_(qs, scale)
    return [*params, *qs], "l1"


# ----------------------------------------------------------------------------------------------------------------
# The trust ratio (one formula for both paths: it works on 0-dim tensors and on stacked 1-D tensors alike)
# ----------------------------------------------------------------------------------------------------------------
def _trust_ratio(
    w_norm: Tensor,
    second_norm: Tensor,
    *,
    norm: str,
    denominator: str,
    weight_decay: float,
    trust_coefficient: float,
    eps: float,
    min_norm: float,
    trust_clip: bool,
) -> Tensor:
    if denominator == "sum":
        # "sum": ||g|| + wd ||w||; for "mean_ratio" the element-wise ratio of wd * w to w is wd itself.
        den = second_norm + weight_decay * (1.0 if norm == "mean_ratio" else w_norm)
    else:
        den = second_norm
    raw = trust_coefficient / den if norm == "mean_ratio" else trust_coefficient * w_norm / (den + eps)
    # Ratio 1 (plain SGD) near the origin (paper §3.2, §6.1), at a zero weight and at a zero denominator, and where
    # a finite weight norm over a positive but tiny denominator overflows (the L1/Linf norms and "mean_ratio" have
    # no squares to underflow first): the masked lanes may hold inf/nan, which torch.where never lets through. An
    # infinite weight norm is not masked: a diverged weight keeps its inf.
    fallback = (w_norm < min_norm) | (den == 0) | (raw.isinf() & w_norm.isfinite())
    if not min_norm > 0:  # with min_norm > 0 a zero weight is already below it
        fallback = fallback | (w_norm == 0)
    ratio = torch.where(fallback, 1.0, raw)
    if trust_clip:
        ratio = ratio.clamp(max=1.0)
    return ratio


# ----------------------------------------------------------------------------------------------------------------
# What a step knows of its parameters before reading a value
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LarsLayout:
    """The structure of a list of parameters that a multi-tensor LARS step works from: its (device, dtype) buckets
    and, per bucket, which tensors take per-tensor CPU kernels. It depends only on each parameter's device, dtype
    and size, so :class:`LARS` computes it once per param group (:func:`lars_layout`) and passes it to :func:`lars`
    at every step (as :func:`torch.optim.sgd.sgd` takes the class's ``has_sparse_grad``), saving the step a few
    Python passes over the parameters.

    Attributes:
        dtypes: each parameter's dtype (what :meth:`fits` checks).
        buckets: ``(device, dtype, positions)`` per bucket, in order of first appearance.
        large: per bucket, the positions within it of the parameters of at least ``2^16`` elements when the bucket
            is on the CPU (they take their norms one by one, L2 as BLAS dots and L1 by slices, and their sweeps back
            to back; see :func:`~theorylr.optim._norms._same_dtype_norms` and :func:`_momentum_sweeps`), else
            ``()``.
        dots: per bucket, whether its dtype qualifies for the per-tensor norms (float32 or float64 on the CPU).
        float16: whether any parameter is float16.
        cpu: whether every parameter is on the CPU.
        scratch: reusable 1-D tensors and their 0-dim views for the per-tensor coefficients of the CPU sweeps
            (:func:`_views_of`), per (bucket, name); filled by the steps.

    Example:
        >>> params = [torch.zeros(3), torch.zeros(1 << 16)]
        >>> layout = lars_layout(params)
        >>> layout.cpu, layout.large, layout.fits([torch.ones(3), torch.ones(1 << 16)])
        (True, ((1,),), True)
        >>> w, g = torch.ones(3), torch.ones(3)
        >>> lars([w], [g], [None], lr=0.1, layout=lars_layout([w]))  # ratio 1: w -= 0.1 * g
        >>> w
        tensor([0.9000, 0.9000, 0.9000])
    """

    dtypes: tuple[torch.dtype, ...]
    buckets: tuple[tuple[torch.device, torch.dtype, tuple[int, ...]], ...]
    large: tuple[tuple[int, ...], ...]
    dots: tuple[bool, ...]
    float16: bool
    cpu: bool
    scratch: dict[tuple[int, str], _Views] = field(default_factory=dict, compare=False, repr=False)

    def fits(self, params: Sequence[Tensor]) -> bool:
        """Whether the layout can serve ``params``: as many, with the same dtypes (devices and sizes are not
        checked: the caller keeps a layout for one list of parameters)."""
        return len(params) == len(self.dtypes) and all(map(operator.is_, map(_DTYPE, params), self.dtypes))


_DTYPE = operator.attrgetter("dtype")


class _Views:
    """A 1-D tensor and its 0-dim views, kept from one step to the next (see :func:`_views_of`)."""

    __slots__ = ("buffer", "views")

    def __init__(self) -> None:
        self.buffer: Tensor | None = None
        self.views: list[Tensor] = []


def _views_of(values: Tensor, layout: LarsLayout | None, key: tuple[int, str]) -> list[Tensor]:
    """``list(values.unbind(0))``, the per-tensor coefficients of a multi-tensor kernel, as the same values in the
    views of a buffer kept in ``layout.scratch[key]``: one ``copy_`` instead of making ``len(values)`` views at
    every step (on 62 coefficients 2 us against 27 us). On the CPU only, eager only (a GPU step would launch a copy
    kernel; a compiled one makes no views). The views are overwritten by the next call with the same key: they are
    read by the kernels of this step only."""
    if layout is None or not values.is_cpu or torch.compiler.is_compiling():
        return list(values.unbind(0))
    slot = layout.scratch.get(key)
    if slot is None:
        slot = layout.scratch[key] = _Views()
    buffer = slot.buffer
    if buffer is None or buffer.shape != values.shape or buffer.dtype != values.dtype:
        slot.buffer = buffer = values.clone()
        slot.views = list(buffer.unbind(0))
    else:
        buffer.copy_(values)
    return slot.views


def lars_layout(params: Sequence[Tensor]) -> LarsLayout:
    """The :class:`LarsLayout` of ``params`` (read from their devices, dtypes and sizes only).

    Example:
        >>> layout = lars_layout([torch.zeros(3), torch.zeros(2, dtype=torch.float64), torch.zeros(1 << 16)])
        >>> [(str(dtype), positions) for _, dtype, positions in layout.buckets], layout.large
        ([('torch.float32', (0, 2)), ('torch.float64', (1,))], ((1,), ()))
    """
    found: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        found.setdefault((p.device, p.dtype), []).append(i)
    buckets = tuple((device, dtype, tuple(idx)) for (device, dtype), idx in found.items())
    large = tuple(
        tuple(j for j, i in enumerate(idx) if params[i].numel() >= _DOT_MIN_NUMEL) if device.type == "cpu" else ()
        for device, _, idx in buckets
    )
    dots = tuple(device.type == "cpu" and dtype in (torch.float32, torch.float64) for device, dtype, _ in buckets)
    return LarsLayout(
        dtypes=tuple(p.dtype for p in params),
        buckets=buckets,
        large=large,
        dots=dots,
        float16=any(p.dtype == torch.float16 for p in params),
        cpu=all(device.type == "cpu" for device, _, _ in buckets),
    )


# ----------------------------------------------------------------------------------------------------------------
# Functional core
# ----------------------------------------------------------------------------------------------------------------
def lars(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    trust_ratios: list[Tensor] | Tensor | None = None,
    momentum_scale_list: list[Tensor | None] | Tensor | None = None,
    *,
    lr: LR,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    trust_coefficient: float = 1.0,
    eps: float = 1e-8,
    norm: str = "l2",
    denominator: str = "decayed",
    min_norm: float = 0.01,
    trust_clip: bool = False,
    adapt: bool = True,
    maximize: bool = False,
    foreach: bool | None = None,
    norm_fn: NormFn | None = None,
    momentum_growth_list: list[float | None] | None = None,
    layout: LarsLayout | None = None,
) -> None:
    """One LARS step on lists of tensors (the functional form of :class:`LARS`; the arguments are the same).

    ``params`` are updated in place; ``grads`` are only read. ``momentum_buffer_list`` holds one entry per
    parameter: ``None`` creates the buffer (written back into the list, as :func:`torch.optim.sgd.sgd` does).
    ``trust_ratios``, if given, holds one 0-dim tensor per parameter into which the step's ratio is copied, or is
    one 1-D tensor with an element per parameter (in the order of ``params``).
    ``momentum_scale_list``, if given, holds one 0-dim scale ``k`` per parameter (``None`` creates it; a missing
    scale beside an existing buffer counts as 1), or is one 1-D tensor with an element per parameter (an element
    whose buffer is ``None`` is overwritten), and the buffers are kept in the factored form ``buf = k * v``
    (see the note on the momentum buffer of :class:`LARS`: one pass fewer over memory, one more per-tensor
    kernel). Without it the buffers hold the plain heavy-ball buffer ``buf``. ``momentum_growth_list``, if given with
    ``momentum_scale_list``, holds per parameter how much (log2) its factored buffer's ``v`` has grown in the
    accumulating form since it was made or renormalised (``None``: unknown), updated in place; it lets the step use
    that cheaper form, for all the buffers of the call at once (see :func:`_buffer_mode` and
    :func:`_momentum_scales`). Without it every step takes the renormalising form; give it at every step or at
    none (a ``v`` that has grown is renormalised accurately only where its growth is known). The 1-D forms save
    the multi-tensor path a stack, an unbind and a copy per step where every parameter has one device and dtype
    (:class:`LARS` keeps its per-parameter ``trust_ratio`` and ``momentum_scale`` as views of such tensors).
    ``layout``, if given, must be :func:`lars_layout` of ``params`` (of their current devices, dtypes and sizes);
    ``None`` computes it.
    ``norm`` and ``denominator`` are checked, and complex ``params`` or ``grads`` refused (``ValueError``: the
    trust ratio is of real norms; pass ``torch.view_as_real``); the numbers are not (:class:`LARS` checks every
    argument).
    ``foreach=None`` picks the multi-tensor path when every tensor allows it. Traced by ``torch.compile`` with every
    tensor on the CPU, the step takes the per-tensor path with the norms of
    :func:`~theorylr.optim._norms._compiled_l2_norms`: the multi-tensor path's stacked scalars would cost inductor a
    buffer and a barrier each (on 62 tensors of 4 elements the compiled step went from 2.12 to 1.70 ms; on the
    ResNet-18 set within noise of it).

    Example:
        >>> w, g = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 10.0])
        >>> lars([w], [g], [None], lr=0.1, eps=0.0)  # ratio ||w|| / ||g|| = 0.5: w -= 0.1 * 0.5 * g
        >>> w
        tensor([3.0000, 3.5000])
    """
    if not params:
        return
    # The modes pick the formula: checked here too (a wrong one ran an undocumented rule); the numbers are checked
    # by the LARS class, not per call.
    check_choice("norm", norm, NORMS)
    check_choice("denominator", denominator, DENOMINATORS)
    _check_stacked("trust_ratios", trust_ratios, len(params))
    _check_stacked("momentum_scale_list", momentum_scale_list, len(params))
    lr = scalar_lr(lr)  # a one-element tensor of any shape, e.g. (1,), as torch's optimizers take it
    if foreach is None:
        foreach = resolve_foreach(None, params)
    if momentum_scale_list is None or momentum == 0:
        momentum_growth_list = None
    if momentum_scale_list is None:
        scale_entries: Sequence[object] = []
    elif isinstance(momentum_scale_list, Tensor):  # every element is a scale
        scale_entries = [True] * len(params)
    else:
        scale_entries = momentum_scale_list
    if layout is None:
        layout = lars_layout(params)
    check_real("lars", "params", params, layout.dtypes)
    check_real("lars", "grads", grads)
    mode = _buffer_mode(layout, momentum_buffer_list, scale_entries, momentum_growth_list, momentum)
    made = [buf is None for buf in momentum_buffer_list]
    # Compiled on the CPU, the per-tensor form is the fast one (see the docstring).
    func = _multi_tensor_lars if foreach and not _compiled_on_cpu(params) else _single_tensor_lars
    func(
        params,
        grads,
        momentum_buffer_list,
        trust_ratios,
        momentum_scale_list,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
        trust_coefficient=trust_coefficient,
        eps=eps,
        norm=norm,
        denominator=denominator,
        min_norm=min_norm,
        trust_clip=trust_clip,
        adapt=adapt,
        maximize=maximize,
        norm_fn=norm_fn,
        buffer_mode=mode,
        layout=layout,
    )
    if momentum_growth_list is not None:  # v's growth since the buffer was made or renormalised
        step = -math.log2(momentum)
        for i, growth in enumerate(momentum_growth_list):
            momentum_growth_list[i] = growth + step if mode == "add" and growth is not None and not made[i] else 0.0


def _check_stacked(name: str, value: object, n: int) -> None:
    """A 1-D form of ``trust_ratios`` / ``momentum_scale_list`` must have one element per parameter."""
    if isinstance(value, Tensor) and (value.dim() != 1 or value.shape[0] != n):
        raise ValueError(
            f"{name}: a tensor must be 1-D with one element per parameter, {n}; got shape {tuple(value.shape)}"
        )


# How much (log2) the factored buffer's v may grow between two renormalising steps (see _buffer_mode): 2^16-fold.
# v has the size of the direction d = g + wd w (times the growth), so it overflows float32 or bfloat16 only where d's
# elements are within 2^16 of their largest number (5e33); a renormalising step every 106th at momentum 0.9 (after
# 105 accumulating ones) costs 1/106 of a sweep per step.
_GROWTH_LIMIT = 16.0


def _buffer_mode(
    layout: LarsLayout,
    momentum_buffer_list: list[Tensor | None],
    momentum_scale_list: Sequence[object],
    momentum_growth_list: list[float | None] | None,
    momentum: float,
) -> str:
    """How this step updates the group's factored buffers (see :func:`_momentum_scales`), one mode for all:
    ``"add"`` (accumulating: ``v`` grows by ``1 / momentum``) while every existing buffer's growth is known and one
    more step keeps it within ``2^_GROWTH_LIMIT`` (105 steps in a row at momentum 0.9, 16 at 0.5, 4 at 0.1; a
    momentum that a scheduler changes is counted as it is at each step); otherwise a renormalising step,
    ``"lerp"`` where no buffer has grown (growth 0, or no list at all: without it no step accumulates) and
    ``"rescale"`` where one has or may have (a growth above 0, or an entry ``None``: a state saved without it, whose
    ``v`` is renormalised accurately whatever its size). float16 buffers (whose range ends at 65504) always
    renormalise. One mode keeps a group's buffers in step with each other: the tensors go through the same
    multi-tensor kernels."""
    if momentum_growth_list is None:
        return "lerp"
    growths = [
        growth if scale is not None else None
        for growth, buf, scale in zip(momentum_growth_list, momentum_buffer_list, momentum_scale_list)
        if buf is not None
    ]
    known = [growth for growth in growths if growth is not None]
    if (
        known
        and len(known) == len(growths)
        and 0.0 < momentum < 1.0
        and not layout.float16
        and max(known) - math.log2(momentum) <= _GROWTH_LIMIT
    ):
        return "add"
    return "rescale" if any(known) or len(known) < len(growths) else "lerp"


def _momentum_scales(
    ratio: Tensor,
    old_scales: Tensor | None,
    *,
    momentum: float,
    dampening: float,
    sign: float,
    accumulate: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The scalar half of the factored momentum buffer ``buf = k * v`` (one formula for both paths).

    ``buf' = momentum * buf + c * u`` with ``c = sign * (1 - dampening) * ratio`` and ``u = sign * d`` (when the
    buffer is created, ``old_scales=None``: ``k = sign * ratio`` and ``v = u``). Two exact forms, equal up to
    rounding:

    - accumulating (``accumulate=True``): ``k' = momentum * k`` and ``v' = v + a u`` with ``a = c / k'``: one
      ``addcmul_`` over the buffer, cheaper per element than a ``lerp_`` (on the ResNet-18 set with 2 CPU threads
      the whole step took 0.96-0.97x its time with cold caches, about 1.0x with warm ones; ``benchmarks/RESULTS.md``,
      ninth pass). ``k`` shrinks and ``v`` grows by ``1 / momentum`` per step, which
      :func:`_buffer_mode` bounds;
    - renormalising: ``k' = momentum * k + c`` and ``v' = b v + a u`` with ``a = c / k'`` and
      ``b = momentum * k / k'`` (``a + b = 1``): ``v`` returns to the size of ``u``. Where ``v`` already has that
      size this is one ``lerp_`` (``v + a (u - v)``); after an accumulating stretch it is ``v.mul_(b)`` then
      ``addcmul_``, because a ``lerp_`` with ``a`` within ``2^-_GROWTH_LIMIT`` of 1 would cancel ``v``'s large terms in
      floating point.

    A zero scale ``k`` (a trust ratio of exactly 0: ``trust_coefficient=0``, or ``||w|| / ||g||`` below the dtype's
    range) means ``buf = 0`` whatever ``v`` holds, so the buffer keeps ``v = 0`` beside it: created with a zero
    scale, ``v = 0`` (the second output is then the mask ``k != 0`` that ``v = u`` is multiplied by); from a zero
    scale either form restarts at ``k' = c`` and ``v' = u``; and a scale that would underflow to 0 from a non-zero
    one keeps its old value (an error of less than the dtype's smallest number times ``v``).

    Returns ``(k', a, b)``; ``a = 0`` where ``k' = 0``; ``b`` is ``None`` in the accumulating form and at creation.
    """
    if old_scales is None:
        k = ratio * sign
        return k, (k != 0).to(k.dtype), None
    c = ratio * (sign * (1.0 - dampening))
    decayed = old_scales * momentum
    k = torch.where(old_scales == 0, c, decayed) if accumulate else c + decayed
    k = torch.where(k == 0, old_scales, k)  # an underflow keeps the old scale (0 stays 0)
    safe = torch.where(k == 0, 1.0, k)  # k = 0 now implies c = 0: a = 0
    return k, c / safe, None if accumulate else decayed / safe


def _coefficient_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the factored buffer's sweep coefficients: the parameters', except float32 for float16, where
    ``a`` and ``b`` may exceed 65504 (a scale that nearly cancels when ``maximize`` flips) and the sweep is
    computed in float32 (:func:`_sweep_buffer`)."""
    return torch.float32 if dtype == torch.float16 else dtype


def _sweep_buffer(v: Tensor, u: Tensor, a: Tensor, b: Tensor | None, mode: str) -> None:
    """One factored buffer's sweep (see :func:`_momentum_scales`): ``v += a u`` (``"add"``), ``v = b v + a u``
    (``"rescale"``, also every renormalising step under ``torch.compile``: inductor fuses it into one pass, and a
    compiled step does not know the buffer's growth) or ``v += a (u - v)`` (``"lerp"``; ``b`` may then be ``None``).
    A float16 buffer is computed in float32 and rounded once (its coefficients are float32)."""
    if v.dtype == torch.float16:
        wide, u32 = v.float(), u.float()
        if mode == "lerp" and not torch.compiler.is_compiling():
            wide.lerp_(u32, a)
        else:
            wide.mul_(b if b is not None else 1.0 - a).add_(u32 * a)
        v.copy_(wide)
        return
    if mode == "add":
        v.addcmul_(u, a)
    elif mode == "rescale" or torch.compiler.is_compiling():
        assert b is not None
        v.mul_(b).addcmul_(u, a)
    else:
        v.lerp_(u, a)


def _single_tensor_lars(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    trust_ratios: list[Tensor] | Tensor | None,
    momentum_scale_list: list[Tensor | None] | Tensor | None,
    *,
    lr: LR,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    trust_coefficient: float,
    eps: float,
    norm: str,
    denominator: str,
    min_norm: float,
    trust_clip: bool,
    adapt: bool,
    maximize: bool,
    norm_fn: NormFn | None,
    buffer_mode: str = "lerp",
    layout: LarsLayout | None = None,
) -> None:
    """The reference: the update rule of :class:`LARS`, line by line, one tensor at a time.

    The sign of ``maximize`` is carried by the coefficients: ``u = g + sign * wd * w = sign * d``, so that both paths
    store the same factored buffer (see :func:`_momentum_scales`). ``layout`` is not used: it is in the signature
    that :func:`lars` calls both paths with.
    """
    n = len(params)
    sign = -1.0 if maximize else 1.0
    dirs = []
    for p, g in zip(params, grads):
        dirs.append(g.add(p, alpha=sign * weight_decay) if weight_decay != 0 else g)  # u = sign * d (not in place)

    ratios: list[Tensor] = []
    if adapt:
        tensors, ord_name = _norm_inputs(params, grads, dirs, norm=norm, denominator=denominator, eps=eps)
        if norm_fn is not None:
            norms = _call_norm_fn(norm_fn, tensors, ord_name)
        elif ord_name == "l2" and _compiled_on_cpu(params):
            norms = _compiled_l2_norms(tensors[:n], tensors[n:])
        else:
            norms = local_norms(tensors, ord_name)
        for i, p in enumerate(params):
            w_norm = norms[i].to(device=p.device, dtype=scalar_dtype(p.dtype))
            second_norm = norms[n + i].to(device=p.device, dtype=scalar_dtype(p.dtype))
            if norm == "mean_ratio":  # ||q||_1 / numel: the mean element-wise ratio
                second_norm = second_norm / max(p.numel(), 1)
            ratios.append(
                _trust_ratio(
                    w_norm,
                    second_norm,
                    norm=norm,
                    denominator=denominator,
                    weight_decay=weight_decay,
                    trust_coefficient=trust_coefficient,
                    eps=eps,
                    min_norm=min_norm,
                    trust_clip=trust_clip,
                )
            )

    # The 1-D forms of the trust ratios and scales are written once, after the loop (one kernel each under
    # torch.compile, where the per-element copies would each be a write of their own).
    ratio_values: list[Tensor] | None = [] if isinstance(trust_ratios, Tensor) else None
    scale_values: list[Tensor] | None = [] if isinstance(momentum_scale_list, Tensor) else None
    for i, p in enumerate(params):
        u = dirs[i]
        ratio = ratios[i] if adapt else torch.ones((), dtype=scalar_dtype(p.dtype), device=p.device)
        step_u, step_v = _lr_products(lr, sign, momentum if nesterov else 1.0, ratio.dtype)  # -lr sign, -lr m
        if ratio_values is not None:
            ratio_values.append(ratio)
        elif trust_ratios is not None:
            inplace(trust_ratios[i]).copy_(ratio)
        # Scalars reach the parameter's dtype only multiplied by lr (-lr * ratio, -lr * k: the size of a step), so
        # that a float16 parameter does not see a ratio or scale above float16's range (65504) as inf.
        if momentum == 0:
            if adapt:
                add_scaled_(p, u, ratio * step_u)  # w -= lr * ratio * d
            else:
                add_times_(p, u, -lr * sign)  # bit for bit torch's SGD (a number lr)
            continue
        # buf = momentum * buf + (1 - dampening) * ratio * d (first step: buf = ratio * d)
        buf = momentum_buffer_list[i]
        if momentum_scale_list is None:  # the plain buffer
            if buf is None:
                buf = scaled(u, ratio * sign).detach()
                momentum_buffer_list[i] = buf
            else:
                add_scaled_(inplace(buf).mul_(momentum), u, ratio * (sign * (1.0 - dampening)))
            if nesterov:
                add_scaled_(p, u, ratio * step_u)
            add_times_(p, buf, -lr * (momentum if nesterov else 1.0))
            continue
        # the factored buffer, buf = k * v, updated as buffer_mode says (see _buffer_mode)
        old_k = momentum_scale_list[i]
        if buf is None:
            k, keep, _ = _momentum_scales(ratio, None, momentum=momentum, dampening=dampening, sign=sign)
            buf = torch.mul(u, keep.to(u.dtype)).detach()  # v = u (v = 0 beside a zero scale)
            momentum_buffer_list[i] = buf
        else:
            k, a, b = _momentum_scales(
                ratio,
                old_k if old_k is not None else torch.ones_like(ratio),
                momentum=momentum,
                dampening=dampening,
                sign=sign,
                accumulate=buffer_mode == "add",
            )
            coef = _coefficient_dtype(p.dtype)
            _sweep_buffer(inplace(buf), u, a.to(coef), None if b is None else b.to(coef), buffer_mode)
        if scale_values is not None:
            scale_values.append(k)
        elif old_k is None:
            momentum_scale_list[i] = k.clone()
        else:
            inplace(old_k).copy_(k)
        if nesterov:  # step = ratio * d + momentum * buf
            add_scaled_(p, u, ratio * step_u)
            add_scaled_(p, buf, k * step_v)
        else:
            add_scaled_(p, buf, k * step_v)
    for stack, values in ((trust_ratios, ratio_values), (momentum_scale_list, scale_values)):
        if values and isinstance(stack, Tensor):
            stack.copy_(torch.stack([v.to(stack) for v in values]))


def _lr_products(lr: LR, sign: float, factor: float, dtype: torch.dtype) -> tuple[LR, LR]:
    """``(-lr * sign, -lr * factor)``; for a tensor ``lr`` taken in its own dtype, then cast to ``dtype`` (the
    ratio's), as the multi-tensor path's 1-D stacks take them: two 0-dim tensors would promote to a float64 lr's
    dtype, and the loop would then round otherwise than the foreach path."""
    if not isinstance(lr, Tensor):
        return -lr * sign, -lr * factor
    return (-lr * sign).to(dtype), (-lr * factor).to(dtype)


def _multi_tensor_lars(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    trust_ratios: list[Tensor] | Tensor | None,
    momentum_scale_list: list[Tensor | None] | Tensor | None,
    *,
    lr: LR,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    trust_coefficient: float,
    eps: float,
    norm: str,
    denominator: str,
    min_norm: float,
    trust_clip: bool,
    adapt: bool,
    maximize: bool,
    norm_fn: NormFn | None,
    buffer_mode: str = "lerp",
    layout: LarsLayout | None = None,
) -> None:
    """The fast path: ``torch._foreach_*`` kernels, the sign of ``maximize`` folded into the per-tensor scale.

    Without ``momentum_scale_list`` the buffers are plain (:func:`_plain_momentum`, the default off the CPU).
    With it, the passes over memory for the default (momentum, no weight decay): the norms read w and g once, then
    ``v.addcmul_(g, a)`` (at a renormalising step ``v.lerp_(g, a)``, or ``v.mul_(b)`` first) and
    ``w.addcmul_(v, s)`` with ``s = -lr k`` (0-dim per-tensor ``a``, ``b`` and ``k``, see :func:`_momentum_scales`):
    two read-modify-write sweeps where torch's SGD makes three (``buf *= m``, ``buf += g``, ``w -= lr buf``). The
    ratios and scales are computed on stacked 1-D tensors, a handful of small kernels whatever the number of
    parameters. Without a ``norm_fn`` the norms are taken per (device, dtype) bucket straight into one stacked
    vector (:func:`~theorylr.optim._norms._bucket_norms`); a user's ``norm_fn`` is called once with every tensor.
    """
    n = len(params)
    sign = -1.0 if maximize else 1.0
    # dirs = sign * d, so that d = sign * dirs: no negated copy of the gradients is made for maximize.
    dirs = list(grads) if weight_decay == 0 else list(torch._foreach_add(grads, params, alpha=sign * weight_decay))

    norms: list[Tensor] = []
    if adapt and norm_fn is not None:  # a user's hook sees every tensor in one call (it may all-reduce)
        tensors, ord_name = _norm_inputs_foreach(params, grads, dirs, norm=norm, denominator=denominator, eps=eps)
        norms = _call_norm_fn(norm_fn, tensors, ord_name)

    # One bucket per (device, dtype): stacking the norms and the foreach kernels need it.
    if layout is None:
        layout = lars_layout(params)
    buckets = layout.buckets
    whole = len(buckets) == 1  # the bucket is every parameter, in order
    compiling = torch.compiler.is_compiling()

    for b_index, (device, dtype, idx) in enumerate(buckets):
        ps = params if whole else [params[i] for i in idx]
        ds = dirs if whole else [dirs[i] for i in idx]
        compute = scalar_dtype(dtype)
        large = () if compiling else layout.large[b_index]
        if adapt:
            if norm_fn is None:  # the bucket's norms: w's, then the denominator's
                tensors, ord_name = _norm_inputs_foreach(
                    ps, grads if whole else [grads[i] for i in idx], ds, norm=norm, denominator=denominator, eps=eps
                )
                if norm == "mean_ratio" and compute != dtype:  # 16-bit weights, float32 ratios: a bucket each
                    bucket = [
                        *_bucket_norms(tensors[: len(idx)], ord_name, compute),
                        *_bucket_norms(tensors[len(idx) :], ord_name, compute),
                    ]
                else:
                    bucket = _bucket_norms(
                        tensors, ord_name, compute, large if layout.dots[b_index] and not compiling else None
                    )
            else:
                bucket = [norms[i] for i in idx] + [norms[n + i] for i in idx]
            if norm == "mean_ratio":  # ||q||_1 / numel, the mean element-wise ratio: Python divisors, no copy
                bucket[len(idx) :] = torch._foreach_div(bucket[len(idx) :], [float(max(p.numel(), 1)) for p in ps])
            stacked = torch.stack(bucket).to(device=device, dtype=compute)  # stacked once
            w_norms, second = stacked[: len(idx)], stacked[len(idx) :]
            ratio = _trust_ratio(
                w_norms,
                second,
                norm=norm,
                denominator=denominator,
                weight_decay=weight_decay,
                trust_coefficient=trust_coefficient,
                eps=eps,
                min_norm=min_norm,
                trust_clip=trust_clip,
            )
        else:
            ratio = torch.ones(len(idx), dtype=compute, device=device)
        # The 1-D forms of the trust ratios and scales are written whole where the bucket is every parameter.
        if isinstance(trust_ratios, Tensor) and whole:
            trust_ratios.copy_(ratio)
        elif trust_ratios is not None:
            torch._foreach_copy_([trust_ratios[i] for i in idx], list(ratio.unbind(0)))
        # Scalars reach the parameters' dtype only multiplied by lr (see _single_tensor_lars): a float16 parameter
        # must not see a ratio or scale above float16's range as inf.
        if momentum == 0:
            if adapt:
                foreach_add_scaled_(ps, ds, scale_list(ratio * (-lr * sign), dtype))
            else:
                foreach_add_times_(ps, ds, -lr * sign)
            continue
        # -lr sign ratio, the scale of u in a Nesterov step
        u_steps = _views_of(scale_in(ratio * (-lr * sign), dtype), layout, (b_index, "u")) if nesterov else []

        old = [k for k, i in enumerate(idx) if momentum_buffer_list[i] is not None]
        new = [k for k, i in enumerate(idx) if momentum_buffer_list[i] is None]
        if momentum_scale_list is None:
            bufs = _plain_momentum(
                ps,
                ds,
                ratio,
                u_steps,
                [momentum_buffer_list[i] for i in idx],
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                sign=sign,
                nesterov=nesterov,
            )
            for k in new:  # hand back the buffers made this step
                momentum_buffer_list[idx[k]] = bufs[k]
            continue
        # buf = momentum * buf + (1 - dampening) * ratio * d, kept as buf = k * v, updated as buffer_mode says
        a_list: list[Tensor] = []
        b_list: list[Tensor] | None = None
        stack = momentum_scale_list if isinstance(momentum_scale_list, Tensor) and whole and not new else None
        if old:
            prev = [momentum_scale_list[idx[k]] for k in old] if stack is None else []
            scaled = all(q is not None for q in prev)  # False only for state written before momentum_scale existed
            if stack is not None:
                prev_scales = stack
            elif scaled:
                prev_scales = torch.stack(cast(list[Tensor], prev))
            else:
                one = torch.ones((), dtype=compute, device=device)
                prev_scales = torch.stack([one if q is None else q for q in prev])
            k_old, a, b = _momentum_scales(
                ratio if not new else torch.stack([ratio[k] for k in old]),
                prev_scales,
                momentum=momentum,
                dampening=dampening,
                sign=sign,
                accumulate=buffer_mode == "add",
            )
            coef = _coefficient_dtype(dtype)
            a_list = _views_of(a.to(coef), layout, (b_index, "a"))  # the sweeps run below, beside the update of w
            if b is not None and (buffer_mode == "rescale" or torch.compiler.is_compiling()):
                b_list = _views_of(b.to(coef), layout, (b_index, "b"))
            if stack is not None:
                stack.copy_(k_old)
            elif scaled:
                torch._foreach_copy_(cast(list[Tensor], prev), list(k_old.unbind(0)))
            else:
                k_old_list = list(k_old.unbind(0))
                for j, q in enumerate(prev):
                    if q is None:
                        momentum_scale_list[idx[old[j]]] = k_old_list[j].clone()
                    else:
                        q.copy_(k_old_list[j])
        if new:  # first step: buf = ratio * d, i.e. v = u (0 beside a zero scale) and k = sign * ratio
            k_new, keep, _ = _momentum_scales(
                ratio if not old else torch.stack([ratio[k] for k in new]),
                None,
                momentum=momentum,
                dampening=dampening,
                sign=sign,
            )
            whole_scales = isinstance(momentum_scale_list, Tensor) and whole and not old
            if whole_scales:
                cast(Tensor, momentum_scale_list).copy_(k_new)
            for k, q, m in zip(new, k_new.unbind(0), keep.to(dtype).unbind(0)):
                momentum_buffer_list[idx[k]] = torch.mul(ds[k], m).detach()
                if not whole_scales:
                    momentum_scale_list[idx[k]] = q.clone()
        if new and old:
            scales = torch.stack([cast(Tensor, momentum_scale_list[i]) for i in idx])
        else:
            scales = k_old if old else k_new
        # -lr k (Nesterov: -lr momentum k), the scale of v in the step of w
        v_steps = _views_of(scale_in(scales * (-lr * (momentum if nesterov else 1.0)), dtype), layout, (b_index, "v"))
        bufs_all = cast(list[Tensor], momentum_buffer_list if whole else [momentum_buffer_list[i] for i in idx])
        # each old buffer's coefficients (a buffer made this step already holds u: None)
        coefficients: list[tuple[Tensor, Tensor | None] | None] = [None] * len(idx)
        for j, k in enumerate(old):
            coefficients[k] = (a_list[j], None if b_list is None else b_list[j])
        _momentum_sweeps(ps, ds, bufs_all, coefficients, buffer_mode, v_steps, u_steps, large, nesterov=nesterov)


def _plain_momentum(
    ps: list[Tensor],
    us: list[Tensor],
    ratio: Tensor,
    u_steps: list[Tensor],
    bufs: list[Tensor | None],
    *,
    lr: LR,
    momentum: float,
    dampening: float,
    sign: float,
    nesterov: bool,
) -> list[Tensor]:
    """The momentum step of :func:`_multi_tensor_lars` on one bucket with plain buffers; returns the buffers (those
    that were ``None`` made here).

    ``buf *= momentum`` and ``w -= lr * buf`` take Python scalars, so torch's multi-tensor kernels run them in a
    few launches on a GPU; only ``buf += c * u`` (``c = sign (1 - dampening) ratio``, per tensor) and, for
    Nesterov, ``w -= lr sign ratio u`` go tensor by tensor there (torch has no multi-tensor kernel taking a
    device scalar per tensor). ``ratio`` is unbound as it is when ``c = ratio`` in the parameters' dtype (no
    multiply); ``u_steps`` holds ``-lr sign ratio`` per tensor in the parameters' dtype (Nesterov only). A
    float16 bucket multiplies ``c * u`` in float32 (:func:`~theorylr.optim._base.scaled`): ``c`` may exceed float16's
    range.
    """
    dtype = ps[0].dtype
    old = [k for k, b in enumerate(bufs) if b is not None]
    new = [k for k, b in enumerate(bufs) if b is None]
    out = list(bufs)
    if old:
        v_old = [cast(Tensor, bufs[k]) for k in old]
        foreach_mul_(v_old, momentum)
        coef = sign * (1.0 - dampening)
        if coef == 1.0 and not new and ratio.dtype == dtype:
            c_list = list(ratio.unbind(0))  # the default: no multiply (a GPU step is host-bound)
        else:
            c = ratio if not new else torch.stack([ratio[k] for k in old])
            c_list = scale_list(c * coef, dtype)
        foreach_add_scaled_(v_old, [us[k] for k in old], c_list)
    if new:  # first step: buf = ratio * d = sign * ratio * u
        c_new = (ratio if not old else torch.stack([ratio[k] for k in new])) * sign
        if dtype == torch.float16:
            made = [scaled(us[k], c_k) for k, c_k in zip(new, c_new.unbind(0))]
        else:
            made = list(torch._foreach_mul([us[k] for k in new], list(c_new.to(dtype).unbind(0))))
        for k, b in zip(new, made):
            out[k] = b
    full = cast(list[Tensor], out)
    if nesterov:  # step = ratio * d + momentum * buf
        foreach_add_scaled_(ps, us, u_steps)
        foreach_add_times_(ps, full, -lr * momentum)
    else:
        foreach_add_times_(ps, full, -lr)
    return full


def _momentum_sweeps(
    ps: list[Tensor],
    us: list[Tensor],
    bufs: list[Tensor],
    coefficients: list[tuple[Tensor, Tensor | None] | None],
    mode: str,
    v_steps: list[Tensor],
    u_steps: list[Tensor],
    large: Sequence[int],
    *,
    nesterov: bool,
) -> None:
    """The parameter-sized passes of a momentum step of :func:`_multi_tensor_lars`, on one bucket's tensors.

    Each buffer's sweep of :func:`_sweep_buffer` in ``mode`` with its ``(a, b)`` (``None`` for a buffer made this
    step, which already holds ``u``), then ``w.addcmul_(v, s)`` with ``s = -lr k`` in ``v_steps``, or for Nesterov
    ``w += t u + s v`` with ``t = -lr sign ratio`` (``u_steps``) and ``s = -lr momentum k``.
    The tensors at the positions ``large`` (on the CPU, those of at least ``2^16`` elements, see
    :attr:`LarsLayout.large`; none under ``torch.compile``, where inductor fuses the two sweeps into one) take their
    sweeps back to back: the ``v`` just written is read back from the cache by ``addcmul_`` (on the ResNet-18 set,
    2 threads, the step took 0.94-0.95x its time in float32 and 0.96-0.99x in bfloat16 against the all-foreach
    form). The others go through the foreach kernels, sweep after sweep: smaller tensors gain nothing from it and
    would pay one Python-level call each.
    """
    large_set = set(large)
    rest = [k for k in range(len(ps)) if k not in large_set] if large else list(range(len(ps)))
    swept = [k for k in rest if coefficients[k] is not None]
    if swept and bufs[swept[0]].dtype == torch.float16:  # one bucket, one dtype: float16 computed in float32
        for k in swept:
            if (half := coefficients[k]) is not None:
                _sweep_buffer(bufs[k], us[k], half[0], half[1], mode)
        swept = []
    if swept:
        v_rest = [bufs[k] for k in swept]
        u_rest = [us[k] for k in swept]
        pairs = [pair for k in swept if (pair := coefficients[k]) is not None]
        a_rest = [a for a, _ in pairs]
        if mode == "add":
            torch._foreach_addcmul_(v_rest, u_rest, a_rest)
        elif mode == "rescale" or torch.compiler.is_compiling():  # b v + a u: one fused kernel under inductor
            torch._foreach_mul_(v_rest, [b for _, b in pairs if b is not None])
            torch._foreach_addcmul_(v_rest, u_rest, a_rest)
        else:
            torch._foreach_lerp_(v_rest, u_rest, a_rest)
    if rest:

        def pick(xs: list[Tensor]) -> list[Tensor]:
            return xs if not large else [xs[k] for k in rest]

        if nesterov:  # two fused passes over w
            foreach_add_scaled_(pick(ps), pick(us), pick(u_steps))
        foreach_add_scaled_(pick(ps), pick(bufs), pick(v_steps))
    if not large:
        return
    if mode == "add" and not nesterov and ps[0].dtype != torch.float16:  # the default, without the helpers' checks
        for k in large:
            pair = coefficients[k]
            if pair is not None:
                bufs[k].addcmul_(us[k], pair[0])
            ps[k].addcmul_(bufs[k], v_steps[k])  # v_steps are in the parameters' dtype (scale_in)
        return
    for k in large:
        pair = coefficients[k]
        if pair is not None:
            _sweep_buffer(bufs[k], us[k], pair[0], pair[1], mode)
        if nesterov:
            add_scaled_(ps[k], us[k], u_steps[k])
        add_scaled_(ps[k], bufs[k], v_steps[k])


# ----------------------------------------------------------------------------------------------------------------
# The optimizer classes
# ----------------------------------------------------------------------------------------------------------------
def _check_norm_fn(norm_fn: NormFn | None, norm: str) -> None:
    """Refuse a sharded ``norm_fn`` (:func:`theorylr.distributed.sharded_norm_fn`) beside ``norm="mean_ratio"``: the
    mean of the element-wise ratios divides the reduced L1 norm by the local shard's size, not the tensor's."""
    if norm == "mean_ratio" and getattr(norm_fn, "sharded", False):
        raise ValueError(
            "norm='mean_ratio' cannot take sharded_norm_fn: its mean would divide by a shard's size; use 'l1', "
            "'l2' or 'linf' with sharded parameters"
        )


def _check_group(group: dict[str, Any]) -> None:
    """Validate one param group's hyperparameters (constructor defaults and every added group)."""
    check_lr(group["lr"])
    check_probability("momentum", group["momentum"])
    check_probability("dampening", group["dampening"], allow_one=True)
    check_number("weight_decay", group["weight_decay"], min_value=0.0)
    check_bool("nesterov", group["nesterov"])
    if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
        raise ValueError(
            "nesterov=True requires momentum > 0 and dampening = 0 "
            f"(got momentum={group['momentum']!r}, dampening={group['dampening']!r})"
        )
    check_number("trust_coefficient", group["trust_coefficient"], min_value=0.0, min_inclusive=False)
    check_number("eps", group["eps"], min_value=0.0)
    check_choice("norm", group["norm"], NORMS)
    check_choice("denominator", group["denominator"], DENOMINATORS)
    check_number("min_norm", group["min_norm"], min_value=0.0)
    check_bool("trust_clip", group["trust_clip"])
    check_bool("adapt", group["adapt"])
    check_bool("maximize", group["maximize"])
    if group["foreach"] is not None:
        check_bool("foreach", group["foreach"])
    if group["factored_momentum"] is not None:
        check_bool("factored_momentum", group["factored_momentum"])


class LARS(Optimizer):
    r"""Layer-wise proportional updates (LARS; PercentDelta with L1 norms), with momentum.

    Per parameter tensor :math:`w` with gradient :math:`g` (``-g`` with ``maximize``), the paper's eq. (1) with
    the implementation details of its §6.1:

    .. code-block:: text

        d      = g + weight_decay * w
        ratio  = trust_coefficient * ||w|| / (||d|| + eps)       # "decayed"; "sum": ||g|| + weight_decay * ||w||
        ratio  = 1               if ||w|| < min_norm, ||w|| = 0 or the denominator is 0
        ratio  = min(ratio, 1)   if trust_clip
        buf    = momentum * buf + (1 - dampening) * ratio * d    # buf = ratio * d on the first step
        step   = ratio * d + momentum * buf  if nesterov  else  buf
        w      = w - lr * step

    ``||.||`` is the ``norm`` of each tensor as a whole. With ``momentum=0``, ``weight_decay=0``, ``eps=0`` and
    ``min_norm=0`` this is exactly the paper's :math:`w_{k+1} = w_k - \eta \|w_k\| / \|\nabla L(w_k)\| \,
    \nabla L(w_k)`: each step moves a tensor by ``lr * ||w||`` whatever the size of its gradient.

    Args:
        params: parameters or param groups (every argument below can be overridden per group; see
            :func:`theorylr.optim.param_groups.lars_param_groups` for the usual split).
        lr: the step as a fraction of ``||w||`` (default 1e-3). A torch scheduler multiplies it as usual. A 0-dim
            tensor is taken too, as by torch's optimizers: a step compiled with ``torch.compile`` then reads it as
            an input instead of recompiling for every value a scheduler sets.
        momentum: heavy-ball coefficient in ``[0, 1)`` (default 0: the paper's rule).
        dampening: in ``[0, 1]`` (default 0), as :class:`torch.optim.SGD`.
        weight_decay: L2 penalty added to the gradient, ``d = g + wd * w`` (default 0).
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening = 0`` (default False).
        trust_coefficient: multiplies the ratio (default 1: the paper's eq. (1)). You et al.'s LARS uses 1e-3
            together with a large ``lr`` (e.g. 1e-3 with lr ~ 1-10). For adapted tensors only the product
            ``lr * trust_coefficient`` matters, except under ``trust_clip`` and for the ratio-1 steps (below
            ``min_norm``, ``adapt=False``), which use ``lr`` alone.
        eps: added to the denominator (default 1e-8; paper §6.1). For ``"mean_ratio"`` it is added to ``|w|``.
        norm: ``"l2"`` (LARS, default), ``"l1"`` (PercentDelta as the paper states it), ``"linf"``, or
            ``"mean_ratio"`` (PercentDelta as Abu-El-Haija's code computes it; see the notes).
        denominator: ``"decayed"`` (default: ``||g + wd w||``, the norm of what is applied) or ``"sum"``
            (``||g|| + wd ||w||``, as timm, apex and torchlars do).
        min_norm: below this weight norm (in the chosen norm) the ratio is 1, i.e. plain SGD, so that iterates can
            leave the origin, an attractive fixed point of eq. (1) (paper §3.2; default 0.01 as §6.1).
        trust_clip: clip the ratio at 1, so the per-tensor step never exceeds SGD's (default False).
        adapt: False makes the group plain momentum SGD (ratio 1), the usual choice for biases and norm layers
            (default True).
        foreach: multi-tensor path; ``None`` (default) chooses it when every parameter allows it. A step traced
            by ``torch.compile`` with every tensor on the CPU takes the per-tensor form whatever this says:
            inductor fuses each tensor's scalar arithmetic into its update loop there (see :func:`lars`).
        maximize: ascend instead of descend (default False).
        norm_fn: a hook computing the norms, for sharded parameters (default: :func:`local_norms`). Contract:
            ``norm_fn(tensors, norm)`` receives a list of ``2 n`` tensors for a group of ``n`` parameters with a
            gradient, the ``n`` weights first and then the ``n`` denominator tensors (``d`` for "decayed", ``g``
            for "sum", and for ``"mean_ratio"`` the element-wise ratios ``|u| / (|w| + eps)``, in float32 for
            16-bit weights), and the name ``norm`` in ``{"l1", "l2", "linf"}`` (``"mean_ratio"`` asks for
            ``"l1"``). It returns ``2 n`` 0-dim tensors (or one 1-D tensor) in the same order: the norms of the
            full logical tensors (e.g. all-reduced over shards: sum of squares then square root for "l2", sum for
            "l1", max for "linf"). It is called exactly once per step for each param group with ``adapt=True``
            and at least one gradient, must not modify its inputs, and should not read tensor values on the host.
            In ``"mean_ratio"`` mode the L1 norm of the ratios is divided by the local ``numel``. Norms of 16-bit
            tensors should be float32 (as :func:`local_norms` returns them). It is not a hyperparameter: it is kept
            on the optimizer (``self.norm_fn``), not in ``defaults`` or the state dict.
        factored_momentum: keep the momentum buffer factored, ``buf = k * v`` (see the note); ``None`` (default)
            factors it where every parameter of the group is on the CPU and none is float16, and keeps the plain
            buffer elsewhere.

    State (per parameter, created at its first gradient): ``trust_ratio``, a 0-dim float32/float64 tensor holding
    the last step's ratio, for logging without a host sync (``torch.stack([opt.state[p]["trust_ratio"] for p in
    ...])``); and, only when ``momentum != 0``, the heavy-ball buffer: ``momentum_buffer`` (one tensor of the
    parameter's shape and dtype, as torch's SGD), and where the buffer is factored also ``momentum_scale`` (a 0-dim
    float32/float64 tensor), with ``buf = momentum_scale * momentum_buffer``, and ``momentum_growth`` (a Python
    float: how much, log2, ``momentum_buffer`` has grown since its last renormalisation, see the note);
    :meth:`momentum_buffer` returns ``buf`` either way. On the multi-tensor path a group's ``trust_ratio`` and
    ``momentum_scale`` tensors are 0-dim views of one 1-D tensor each (one kernel writes all of them per step,
    :class:`~theorylr.optim._base.StackedScalars`); a state tensor replaced by ``load_state_dict`` or an
    assignment is read at the next step and stacked again.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
        >>> opt = LARS([w], lr=0.1, momentum=0.9, eps=0.0, trust_coefficient=1.0)
        >>> w.grad = torch.tensor([0.0, 100.0])  # ||g|| = 100: the ratio is 5 / 100, the step lr * 5 whatever ||g||
        >>> _ = opt.step()
        >>> round(float(opt.state[w]["trust_ratio"]), 6), w.detach()
        (0.05, tensor([3.0000, 3.5000]))
        >>> _ = opt.step()  # the same gradient; ||w|| = 4.6098 now: buf = 0.9 * 5 + 0.046098 * 100
        >>> round(float(opt.momentum_buffer(w)[1]), 4), sorted(opt.state[w])
        (9.1098, ['momentum_buffer', 'momentum_growth', 'momentum_scale', 'trust_ratio'])

    Reference: I. Gitman, D. Dilipkumar, B. Parr, *Convergence Analysis of Gradient Descent Algorithms with
    Proportional Updates* (2018), eq. (1), §3.2 and §6.1; Y. You, I. Gitman, B. Ginsburg, *Large Batch Training
    of Convolutional Networks* (2017); S. Abu-El-Haija, *Proportionate Gradient Updates with PercentDelta* (2017).

    .. note::
        **Departures from the paper.** The paper analyses eq. (1) without momentum, weight decay or eps; §6.1
        adds eps and the SGD fallback below ``||w|| = 0.01``, and its TensorFlow code keeps one momentum
        accumulator per variable. Here the ratio multiplies ``d`` *before* the momentum buffer (the buffer
        accumulates proportional updates, as in You et al.'s Algorithm 1), the first momentum step equals
        torch's SGD (buffer = first update), and a zero weight or zero gradient gives ratio 1 instead of 0/0.
        ``min_norm`` compares the chosen norm of ``w`` (the L1 norm for ``"mean_ratio"``), where §3.2 states the
        L2 norm; for ``"l2"`` the two agree. The norms are taken in the parameters' dtype (16-bit ones in float32),
        without rescaling: in float32 an L2 norm of entries above about ``1e19`` overflows (ratio 0 for a gradient:
        no step) and one of entries below about ``1e-19`` underflows to 0 (a gradient's: the SGD fallback), so "a
        step of ``lr * ||w||`` whatever the gradient's size" holds within that range. A ratio that overflows
        (a finite ``||w||`` over a denominator near the smallest float, possible with ``"l1"``, ``"linf"`` and
        ``"mean_ratio"``) takes the SGD fallback too, instead of an infinite step.

    .. note::
        **The factored momentum buffer** (an implementation choice, not in the paper). The recursion
        ``buf = momentum * buf + c * d`` with a per-tensor ``c = (1 - dampening) * ratio`` costs two sweeps over
        the buffer (a scale, then an add). Storing ``buf = k * v`` turns it into scalar work and one sweep: mostly
        ``k = momentum * k`` and ``v = v + (c / k) d`` (one ``addcmul_``), which lets ``v`` grow by ``1 /
        momentum`` per step, and, once ``v`` has grown ``2^16``-fold (at every 106th step at momentum 0.9), a
        renormalising step ``k = momentum * k + c``, ``v = (momentum * k_old / k) v + (c / k) d`` that brings ``v``
        back to the size of ``d``; the step of the weights is ``w -= lr * k * v``, one ``addcmul_``. Same arithmetic
        up to rounding (tested against the plain recursion in float64 to 1e-11 over runs that renormalise several
        times), one sweep fewer than torch's SGD: the CPU's default, where a step's time is its memory traffic.
        ``v`` has the size of ``d`` times its growth, up to ``2^16``, so it overflows float32 or bfloat16 only where
        ``d``'s elements are within ``2^16`` of their largest number (5e33; the plain buffer, ``ratio * d``, may
        still be finite there when the ratio is tiny). float16 keeps the plain buffer by default: its
        factored ``v`` has the size of ``d``, whose small values float16 holds only coarsely (subnormal below
        6e-5), where the plain buffer has the size of ``ratio * d``; with ``factored_momentum=True`` it always
        renormalises and computes its sweep in float32. On a GPU
        the traffic of the ResNet-18 set takes tens of microseconds and the step's time is its kernel launches;
        torch has no multi-tensor kernel taking a device scalar per tensor, so each per-tensor scale costs a
        launch per tensor, and the factored form has two such sweeps where the plain one has one (``buf *=
        momentum`` and ``w -= lr * buf`` take Python numbers). There the plain buffer is the default: on an
        H200 with the ResNet-18 set a step went 1.97 -> 1.18 ms in float32, 1.69 -> 0.92 ms in bf16
        (``benchmarks/RESULTS.md``, fifth pass). The forms convert into each other:
        a state without ``momentum_scale`` is read as ``k = 1``, and a factored state stepped where the buffer
        is plain (e.g. a CPU checkpoint loaded on a GPU) is folded into ``buf`` once, at that step.

    .. note::
        **PercentDelta, two readings.** The paper states PercentDelta as eq. (1) with L1 norms, ``norm="l1"``:
        ``ratio = ||w||_1 / ||g||_1``, so that ``||Δw||_1 / ||w||_1 = lr`` (the *aggregate* relative change of
        the tensor is ``lr``). Abu-El-Haija's code instead divides by the mean element-wise ratio,
        ``norm="mean_ratio"``: ``ratio = 1 / mean_i(|d_i| / (|w_i| + eps))``, so that the *mean per-element*
        relative change ``mean_i |Δw_i| / |w_i|`` is ``lr`` (up to eps). The second is dominated by the smallest
        weights; with ``eps = 0`` an exactly-zero weight beside a non-zero gradient makes the ratio 0 for that
        tensor and step (never NaN), so keep ``eps > 0`` there. With ``denominator="sum"`` the decay term
        contributes ``wd`` (the element-wise ratio of ``wd * w`` to ``w``).

    .. note::
        **Peers, and the choices made here.** timm ``Lars`` computes the ratio with the "sum" denominator (here
        ``denominator="sum"``) and applies it before momentum, as here, but adapts only when
        ``weight_decay != 0`` unless ``always_adapt=True`` -- with the default ``weight_decay=0`` it is silently
        plain SGD; here ``adapt`` is explicit and on by default. Its ``trust_clip`` (and apex ``LARC``'s
        ``clip=True``) is ``min(ratio / lr, 1)``, i.e. a per-tensor learning rate
        ``min(trust_coefficient ||w|| / ||g||, lr)``;
        here ``trust_clip`` is ``min(ratio, 1)`` with ``lr`` a pure multiplier, so apex's clipping with
        coefficient ``c`` is ``trust_clip=True, trust_coefficient=c / lr`` here. pytorch_optimizer ``LARS``
        writes the scaled gradient into ``p.grad``, has no eps, adapts only tensors with ``ndim > 1`` and starts
        its buffer at zero (first momentum step ``(1 - dampening) g`` instead of SGD's ``g``); none of that is
        copied. apex ``LARC`` and torchlars wrap another optimizer and rescale ``p.grad`` in place before its
        step (LARC reads the norms on the host every step); here nothing outside the optimizer is modified and
        no value leaves the device.

    .. note::
        **AMP loss scaling.** Call ``scaler.step(opt)`` (it unscales the gradients and skips steps with inf/NaN).
        If gradients arrive multiplied by a loss scale ``s`` anyway, the adapted update ``ratio * d`` is unchanged
        when ``weight_decay = 0`` and ``eps << s ||g||``: ``ratio`` scales by ``1/s`` and ``d`` by ``s``. What
        does change: the logged ``trust_ratio`` (divided by ``s``), the effective eps (``eps / s``), the balance
        of ``s g`` against ``wd * w`` when ``weight_decay > 0``, and every step that uses ratio 1 (groups with
        ``adapt=False``, tensors below ``min_norm``), which move ``s`` times too far.

    .. note::
        **Sharded parameters (FSDP, tensor parallel).** With a flattened or sharded tensor, local norms are norms
        of a shard, not of the layer: pass a ``norm_fn`` that reduces them across ranks in one collective,
        :func:`theorylr.distributed.sharded_norm_fn`, which squares the L2 norms before a ``SUM``, carries nan
        flags beside the ``MAX`` of ``"linf"`` (a ``MAX`` drops a nan) and checks that the ranks pass as many
        tensors. A flattened FSDP parameter that concatenates several layers gets one ratio for all of them. A
        sharded hook is called for every param group on every rank, also for one with no gradient on this rank
        (with an empty list), so that the ranks' collectives stay paired; a hook of your own that wraps it must
        keep its ``sharded`` attribute (LARS refuses it beside ``"mean_ratio"``).

    .. note::
        **Compiling the step.** ``torch.compile(opt.step, fullgraph=True)`` traces it without graph breaks. On a
        GPU compile it with CUDA graphs and inductor's combo kernels (``options={"triton.cudagraphs": True,
        "combo_kernels": True}``, after one eager step, the parameters, gradients and state marked with
        ``torch._dynamo.mark_static_address``; the README shows it). The combo kernels fuse the per-tensor norms
        and updates horizontally, so the graph replays a few kernels instead of hundreds. On an H200 with the
        ResNet-18 set this took a synchronised step from 2.7x torch's SGD foreach (eager), or 2.4x with CUDA graphs
        alone, to 1.7x; between steps with the host free, 1.06x (``benchmarks/RESULTS.md``, sixth pass).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        trust_coefficient: float = 1.0,
        eps: float = 1e-8,
        norm: str = "l2",
        denominator: str = "decayed",
        min_norm: float = 0.01,
        trust_clip: bool = False,
        adapt: bool = True,
        foreach: bool | None = None,
        maximize: bool = False,
        norm_fn: NormFn | None = None,
        factored_momentum: bool | None = None,
    ) -> None:
        if norm_fn is not None and not callable(norm_fn):
            raise ValueError(f"norm_fn must be a callable (tensors, norm) -> norms, or None (got {norm_fn!r})")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "norm": norm,
            "denominator": denominator,
            "min_norm": min_norm,
            "trust_clip": trust_clip,
            "adapt": adapt,
            "foreach": foreach,
            "maximize": maximize,
            "factored_momentum": factored_momentum,
        }
        _check_group(defaults)
        self.norm_fn: NormFn | None = norm_fn
        self._stacked: dict[int, StackedScalars] = {}  # per group index (see _stacked_scalars)
        self._layouts: dict[int, tuple[tuple[Tensor, ...], LarsLayout]] = {}  # per group index (see _layout)
        super().__init__(params, defaults)
        for group in self.param_groups:  # early too (step() checks again: a group's norm may change)
            _check_norm_fn(norm_fn, group["norm"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (torch semantics), checking its own settings as the constructor checks the defaults."""
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        _check_group(merged)
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        """torch's state (defaults, state, param groups) plus the ``norm_fn`` hook, so that ``copy.deepcopy`` and
        ``pickle`` keep it (torch's own ``__getstate__`` would drop it: the copy would then take local norms). A
        :func:`~theorylr.distributed.sharded_norm_fn` hook cannot be pickled (it holds a process group; save
        ``state_dict()`` instead), and copies share it."""
        state = super().__getstate__()
        if self.norm_fn is not None:
            state["norm_fn"] = self.norm_fn
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("norm_fn", None)
        self._stacked = {}  # rebuilt from the state at the next step
        self._layouts = {}
        for group in self.param_groups:  # state dicts saved before a key existed get its constructor default
            for key in _HYPERPARAMETERS:
                if key in self.defaults:
                    group.setdefault(key, self.defaults[key])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.load_state_dict`, except that ``momentum_scale`` and ``trust_ratio`` keep
        their float32/float64 dtype: torch casts floating state to the parameter's dtype, which for 16-bit
        parameters would round the scale of the whole buffer at every reload (and overflow float16). The saved
        groups' hyperparameters are checked first, as the constructor checks them, and a saved state with a key
        LARS does not keep (another optimizer's checkpoint, e.g. Adam's ``exp_avg``) is refused."""
        load_keeping_scalar_states(
            self, state_dict, ("momentum_scale", "trust_ratio"), _check_group, allowed=_STATE_KEYS
        )

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], _Loss]) -> _Loss: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], _Loss] | None = None) -> _Loss | None:
        """Perform one step; ``closure`` (optional) re-evaluates the loss with gradients enabled and returns it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params, grads = params_with_grad(group, type(self).__name__)
            if not params:
                norm_fn = self.norm_fn
                if norm_fn is not None and getattr(norm_fn, "sharded", False) and group["adapt"]:
                    norm_fn([], group["norm"])  # the other ranks' collective for this group: keep it paired
                continue
            _check_norm_fn(self.norm_fn, group["norm"])
            layout = self._layout(index, params)
            factored = group.get("factored_momentum")
            if factored is None:  # the CPU's default, but for float16 (see the note)
                factored = layout.cpu and not layout.float16
            states = [self.state[p] for p in params]
            if not factored or not all("trust_ratio" in state for state in states):  # first steps and conversions
                for p, state in zip(params, states):
                    if "trust_ratio" not in state:
                        state["trust_ratio"] = torch.ones((), dtype=scalar_dtype(p.dtype), device=p.device)
                    if not factored and "momentum_scale" in state:  # a factored buffer becomes plain, once
                        scale = state.pop("momentum_scale")
                        state.pop("momentum_growth", None)
                        if state.get("momentum_buffer") is not None:  # float16: the product in float32
                            state["momentum_buffer"].copy_(scaled(state["momentum_buffer"], scale))
            trust: list[Tensor] = [state["trust_ratio"] for state in states]
            bufs: list[Tensor | None] = [state.get("momentum_buffer") for state in states]
            scales: list[Tensor | None] = [state.get("momentum_scale") for state in states]
            # Each factored buffer's growth (see lars()): a Python float that torch.compile would guard on, so a
            # compiled step leaves it alone and renormalises (a growth that overstates only brings the next
            # renormalisation forward).
            growths: list[float | None] | None = None
            if factored and group["momentum"] != 0 and not torch.compiler.is_compiling():
                growths = [state.get("momentum_growth") for state in states]
            # lars() fills the None entries in place: only then is there anything to write back
            creates = any(b is None for b in bufs) or (factored and any(k is None for k in scales))
            foreach = resolve_foreach(group["foreach"], params)
            # foreach only: the reference loop (foreach=False) keeps the states' own tensors
            stacked = (
                self._stacked_scalars(index, params, states, trust, scales, factored and group["momentum"] != 0)
                if foreach
                else None
            )
            if stacked is not None:
                trust_arg: list[Tensor] | Tensor = stacked.stacks["trust_ratio"]
                scale_arg: list[Tensor | None] | Tensor = stacked.stacks.get("momentum_scale", scales)
            else:
                trust_arg, scale_arg = trust, scales
            lars(
                params,
                grads,
                bufs,
                trust_arg,
                scale_arg if factored else None,
                lr=group["lr"],
                momentum=group["momentum"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                weight_decay=group["weight_decay"],
                trust_coefficient=group["trust_coefficient"],
                eps=group["eps"],
                norm=group["norm"],
                denominator=group["denominator"],
                min_norm=group["min_norm"],
                trust_clip=group["trust_clip"],
                adapt=group["adapt"],
                maximize=group["maximize"],
                foreach=foreach,
                norm_fn=self.norm_fn,
                momentum_growth_list=growths,
                layout=layout,
            )
            if group["momentum"] != 0 and creates:
                for state, buf, scale in zip(states, bufs, scales):
                    state["momentum_buffer"] = buf
                    if factored and scale_arg is scales:  # otherwise the state holds the stack's views
                        state["momentum_scale"] = scale
            if growths is not None:
                for state, growth in zip(states, growths):
                    state["momentum_growth"] = growth
        return loss

    def _layout(self, index: int, params: list[Tensor]) -> LarsLayout:
        """The :class:`LarsLayout` of group ``index``'s parameters with a gradient, kept while they are the same
        tensors with the same dtypes (a parameter moved to another device in place, ``p.data = p.data.to(device)``,
        after the first step would need a new optimizer anyway: its state stays where it was)."""
        if torch.compiler.is_compiling():  # worked out at trace time (dynamo cannot trace the cache's checks)
            return lars_layout(params)
        cached = self._layouts.get(index)
        if cached is not None:
            known, layout = cached
            if len(known) == len(params) and all(map(operator.is_, params, known)) and layout.fits(params):
                return layout
        layout = lars_layout(params)
        self._layouts[index] = (tuple(params), layout)
        return layout

    def _stacked_scalars(
        self,
        index: int,
        params: list[Tensor],
        states: list[dict[str, Any]],
        trust: list[Tensor],
        scales: list[Tensor | None],
        factored: bool,
    ) -> StackedScalars | None:
        """The group's ``trust_ratio`` (and, for a factored buffer, ``momentum_scale``) states as views of one 1-D
        tensor each, made again when a state tensor is not the stack's view (a load, a parameter without a
        gradient this step); ``None`` before the first momentum step of a factored buffer, for a group whose
        states differ in dtype or device, and under ``torch.compile``: the compiled step reads the 0-dim tensors
        themselves (given the stacks, a compiled step on 62 small tensors took 335 us against 290-300 us, its
        guards and its kernel both slower)."""
        if torch.compiler.is_compiling():
            return None
        current: dict[str, Sequence[Tensor | None]] = {"trust_ratio": trust}
        if factored:
            current["momentum_scale"] = scales
        stacked = self._stacked.get(index)
        if stacked is not None and stacked.matches(params, current):
            return stacked
        stacked = stack_scalars(params, states, current)
        if stacked is None:
            self._stacked.pop(index, None)
        else:
            self._stacked[index] = stacked
        return stacked

    def momentum_buffer(self, p: Tensor) -> Tensor | None:
        """The heavy-ball buffer of parameter ``p``, ``momentum_scale * momentum_buffer`` (a new tensor), or None
        before its first momentum step.

        Example:
            >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
            >>> opt = LARS([w], lr=0.1, momentum=0.9, eps=0.0)
            >>> w.grad = torch.tensor([0.0, 10.0])
            >>> _ = opt.step()  # ratio ||w|| / ||g|| = 0.5: buf = 0.5 * g
            >>> opt.momentum_buffer(w)
            tensor([0., 5.])
        """
        state = self.state.get(p, {})
        buf = state.get("momentum_buffer")
        if buf is None:
            return None
        scale = state.get("momentum_scale")
        return buf.clone() if scale is None else scaled(buf, scale)


class PercentDelta(LARS):
    r"""PercentDelta: :class:`LARS` with the L1 norm by default (``norm="l1"``).

    Each tensor moves by ``lr * ||w||_1`` in L1 length per step (without momentum):

    .. code-block:: text

        w = w - lr * ||w||_1 / (||g + wd w||_1 + eps) * (g + wd w)

    Every argument, default and note of :class:`LARS` applies; only ``norm`` defaults to ``"l1"``.
    ``norm="mean_ratio"`` gives Abu-El-Haija's own form, ``w -= lr * d / mean_i(|d_i| / (|w_i| + eps))``
    (see the PercentDelta note of :class:`LARS` for the difference).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 1.0]))
        >>> opt = PercentDelta([w], lr=0.1, eps=0.0)
        >>> w.grad = torch.tensor([1.0, 0.0, 0.0])
        >>> _ = opt.step()  # ||w||_1 = 4, ||g||_1 = 1: the first entry moves by 0.1 * 4
        >>> w.detach()
        tensor([ 0.6000, -2.0000,  1.0000])

    Reference: S. Abu-El-Haija, *Proportionate Gradient Updates with PercentDelta* (2017); Gitman et al.,
    *Convergence Analysis of Gradient Descent Algorithms with Proportional Updates*, eq. (1) and footnote 1.
    """

    def __init__(  # LARS's arguments spelled out, so that a type checker sees a misspelt one
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        trust_coefficient: float = 1.0,
        eps: float = 1e-8,
        norm: str = "l1",
        denominator: str = "decayed",
        min_norm: float = 0.01,
        trust_clip: bool = False,
        adapt: bool = True,
        foreach: bool | None = None,
        maximize: bool = False,
        norm_fn: NormFn | None = None,
        factored_momentum: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
            trust_coefficient=trust_coefficient,
            eps=eps,
            norm=norm,
            denominator=denominator,
            min_norm=min_norm,
            trust_clip=trust_clip,
            adapt=adapt,
            foreach=foreach,
            maximize=maximize,
            norm_fn=norm_fn,
            factored_momentum=factored_momentum,
        )
