"""Per-tensor norms for the layer-wise rules: :func:`local_norms` (LARS's default ``norm_fn``, also used by the
adaptive optimizers and :mod:`theorylr.distributed`) and the fast kernels behind it.

Each norm is a 0-dim tensor on its tensor's device, 16-bit tensors accumulated in float32. The kernels are chosen
by device, dtype, size and thread count; each choice names the measurement behind it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor

from theorylr._validation import check_choice
from theorylr.optim._base import scalar_dtype

__all__ = ["NormFn", "local_norms"]

#: A norm hook: ``norm_fn(tensors, norm) -> one 0-dim norm per tensor`` with ``norm`` in ``{"l1", "l2", "linf"}``.
NormFn = Callable[[list[Tensor], str], Sequence[Tensor]]

_ORD = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


def local_norms(tensors: Sequence[Tensor], norm: str, *, foreach: bool = False) -> list[Tensor]:
    """The default ``norm_fn``: each tensor's own norm, as a 0-dim tensor on its device.

    The norm has the tensor's dtype, except for 16-bit floating tensors, whose norms are accumulated and returned
    in float32 (an L1 or L2 norm of a large float16 tensor easily exceeds 65504).

    .. note::
        With ``foreach=True`` on the CPU three faster kernels are used where they apply (same norms up to
        rounding): for contiguous float32/float64 tensors of at least 2^16 elements, L2 norms as
        ``sqrt(dot(t, t))`` with several threads and L1 norms as ``sum(|t|)`` taken slice by slice (the smaller
        tensors in one ``torch._foreach_norm`` call); and the norms of bfloat16 tensors rounded to bfloat16 before
        they are widened to float32 (relative error at most 2^-8). Under ``torch.compile`` on the CPU the L2 norms
        are ``sqrt(sum(t * t))`` summed by rows of 4096 elements where the size allows. Measured reasons in
        ``_use_dot_norms``, ``_chunked_l1_norms``, ``_use_native_bf16_norms`` and ``_compiled_sq_norms``.

    Args:
        tensors: the tensors (any shapes; an empty tensor has norm 0).
        norm: ``"l1"``, ``"l2"`` or ``"linf"``.
        foreach: one ``torch._foreach_norm`` call instead of a loop of ``torch.linalg.vector_norm`` (for "linf"
            on CPU, one ``torch.aminmax`` per tensor and ``max(-min, max)``: the same number, several times faster
            than torch's CPU inf-norm kernel).

    Example:
        >>> [float(n) for n in local_norms([torch.tensor([3.0, -4.0]), torch.zeros(0)], "l2")]
        [5.0, 0.0]
    """
    ord_ = _ORD[check_choice("norm", norm, tuple(_ORD))]
    if not foreach:
        return [
            torch.linalg.vector_norm(t, ord_, dtype=scalar_dtype(t.dtype)) if t.numel() else _zero_norm(t)
            for t in tensors
        ]
    # The inf-norm of an empty tensor is undefined in torch: empty tensors get the norm 0.
    out: list[Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    norm_dtypes: dict[torch.dtype, torch.dtype] = {}
    for i, t in enumerate(tensors):
        if t.numel():
            if t.dtype not in norm_dtypes:
                norm_dtypes[t.dtype] = scalar_dtype(t.dtype)
            by_dtype.setdefault(norm_dtypes[t.dtype], []).append(i)
        else:
            out[i] = _zero_norm(t)
    for dtype, idx in by_dtype.items():
        for i, value in zip(idx, _same_dtype_norms([tensors[i] for i in idx], norm, dtype)):
            out[i] = value
    return cast(list[Tensor], out)


# Tensors at least this large take the L2 dot kernel when ``_use_dot_norms`` allows it; smaller ones go to one
# ``torch._foreach_norm`` call, whose per-tensor cost inside C++ is far below a Python-level ``dot`` (two views
# and a call, about 4 us each). On the ResNet-18 set this leaves 28 dots instead of 124 (14 tensors, 98 % of the
# elements).
_DOT_MIN_NUMEL = 1 << 16


def _same_dtype_norms(
    kept: list[Tensor], norm: str, dtype: torch.dtype, large_pairs: tuple[int, ...] | None = None
) -> list[Tensor]:
    """The norms of non-empty tensors of one dtype, computed in ``dtype``, in order (see :func:`local_norms`).

    ``large_pairs``, from a :class:`LarsLayout` bucket of float32/float64 CPU tensors: ``kept`` is then ``n`` weights
    followed by ``n`` tensors of the same shapes, and these are the positions ``j < n`` of at least
    ``_DOT_MIN_NUMEL`` elements (the checks of :func:`_use_dot_norms` made once for the bucket).
    """
    ord_ = _ORD[norm]
    if norm == "linf" and all(t.device.type == "cpu" for t in kept):
        # torch 2.13's CPU inf-norm kernel is ~7x slower than one aminmax sweep (62 ResNet-18 tensors, one
        # core); max(-min, max) is the same number.
        lows, highs = zip(*(torch.aminmax(t) for t in kept))
        return [torch.maximum(-lo, hi).to(dtype) for lo, hi in zip(lows, highs)]
    if norm == "l2" and _compiled_on_cpu(kept):
        return _compiled_sq_norms(kept, dtype)
    if large_pairs is not None:  # the layout checked the dtype and the device
        per_tensor = bool(large_pairs) and (
            (norm == "l1" and not _needs_autograd(kept)) or (norm == "l2" and torch.get_num_threads() >= 2)
        )
    else:
        per_tensor = (norm == "l2" and _use_dot_norms(kept, dtype)) or (norm == "l1" and _use_chunked_l1(kept, dtype))
    if per_tensor:
        if large_pairs is not None:
            half = len(kept) // 2
            large = [i for j in large_pairs for i in (j, half + j) if kept[i].is_contiguous()]
            large.sort()
        else:
            large = [i for i, t in enumerate(kept) if t.numel() >= _DOT_MIN_NUMEL and t.is_contiguous()]
        if large:
            if norm == "l2":
                found = [torch.dot(kept[i].view(-1), kept[i].view(-1)) for i in large]
                torch._foreach_sqrt_(found)
            else:
                found = _chunked_l1_norms([kept[i] for i in large])
            if len(large) == len(kept):
                return found
            values: list[Tensor | None] = [None] * len(kept)
            for i, v in zip(large, found):
                values[i] = v
            small = [i for i, v in enumerate(values) if v is None]
            for i, v in zip(small, torch._foreach_norm([kept[i] for i in small], ord_, dtype=dtype)):
                values[i] = v
            return cast(list[Tensor], values)
    if _use_native_bf16_norms(kept):
        return [v.to(dtype) for v in torch._foreach_norm(kept, ord_)]
    return list(torch._foreach_norm(kept, ord_, dtype=dtype))


def _bucket_norms(
    tensors: list[Tensor], norm: str, dtype: torch.dtype, large_pairs: tuple[int, ...] | None = None
) -> list[Tensor]:
    """:func:`local_norms` (``foreach=True``) for tensors of one device and dtype, without its per-tensor grouping:
    the kernels handle empty tensors (norm 0) for "l1" and "l2". ``large_pairs``: see :func:`_same_dtype_norms`."""
    if norm == "linf":
        return local_norms(tensors, norm, foreach=True)
    return _same_dtype_norms(tensors, norm, dtype, large_pairs)


# Under torch.compile on the CPU, a sum of squares over more than this many float32 elements makes inductor add a
# cascade-summation helper to its loop; rows of exactly this length are summed without it.
_ROW = 4096


def _compiled_on_cpu(tensors: list[Tensor]) -> bool:
    """Whether this step is being traced by ``torch.compile`` with every tensor on the CPU."""
    return torch.compiler.is_compiling() and all(t.is_cpu for t in tensors)


def _compiled_l2_norms(ps: list[Tensor], us: list[Tensor]) -> list[Tensor]:
    """``[||p_1||, ..., ||p_n||, ||u_1||, ..., ||u_n||]`` (0-dim, at least float32), for a ``torch.compile``'d step
    on the CPU.

    Written for inductor's CPU code generator, which runs the reductions of every tensor before any update:

    - both sums of one pair share one loop, which reads ``p`` and ``u`` together: the sum for ``u`` reads ``p`` as
      well, through ``where(p == p, u * u, u * u)``, whose value is ``u * u`` for every ``p`` (``nan`` included);
      inductor fuses reductions only when they share an input;
    - a contiguous tensor whose size is a multiple of ``_ROW`` is summed by rows of ``_ROW`` elements, then over
      the rows, which keeps the cascade helper out of the inner loop;
    - 16-bit tensors are widened inside the loop (no copy), as :func:`local_norms` accumulates them in float32.

    On the ResNet-18 set with 2 threads a simplified compiled LARS step went from 1.28x torch's SGD foreach with
    one loop per norm to 1.12x with shared loops and 1.06x with rows too, and LARS itself from 1.31-1.34x to
    1.18-1.20x (``benchmarks/RESULTS.md``, fourth pass).
    """
    sq_p, sq_u = [], []
    for p, u in zip(ps, us):
        dtype = scalar_dtype(p.dtype)
        if _by_rows(p) and _by_rows(u):
            p, u = _rows(p), _rows(u)
        p, u = p.to(dtype), u.to(dtype)
        uu = u * u
        sq_p.append(_total(p * p).sqrt())
        sq_u.append(_total(torch.where(p == p, uu, uu)).sqrt())
    return sq_p + sq_u


def _by_rows(t: Tensor) -> bool:
    """Whether the compiled sums take ``t`` by rows of ``_ROW`` elements (contiguous, a multiple of ``_ROW``)."""
    return t.numel() > _ROW and t.numel() % _ROW == 0 and t.is_contiguous()


def _rows(t: Tensor) -> Tensor:
    return t.view(-1, _ROW)


def _total(t: Tensor) -> Tensor:
    """The sum of every element: by rows first for a ``(rows, _ROW)`` view."""
    return t.sum(1).sum() if t.dim() == 2 and t.shape[1] == _ROW else t.sum()


def _compiled_sq_norms(tensors: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """L2 norms in ``dtype`` for a compiled step on the CPU: ``sqrt(sum(t * t))``, by rows where :func:`_by_rows`
    allows (inductor's loop then has no cascade helper; on the ResNet-18 gradients with 2 threads 4.3 ms against
    5.5 ms for compiled BLAS dots and 5.3 ms for plain sums)."""
    out = []
    for t in tensors:
        t = t.to(dtype)
        t = _rows(t) if _by_rows(t) else t
        out.append(_total(t * t).sqrt())
    return out


def _use_native_bf16_norms(tensors: list[Tensor]) -> bool:
    """Whether to take the norms of bfloat16 CPU tensors in bfloat16 (then widened) rather than into float32.

    torch 2.13's CPU norm kernel accumulates bfloat16 in float32 either way, but writing a float32 result takes a
    slow path: 21.6 ms against 5.2 ms for the 62 ResNet-18 tensors (one thread). The price is the final rounding
    to bfloat16, a relative error of at most 2^-8 per norm -- the size of the rounding the ratio gets anyway when
    it is cast to the parameters' dtype. float16 is not included: its norms overflow at 65504.
    """
    return not torch.compiler.is_compiling() and all(
        t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors
    )


def _use_dot_norms(tensors: list[Tensor], dtype: torch.dtype) -> bool:
    """Whether to take the L2 norms of the large tensors as ``sqrt(dot(t, t))`` (BLAS) instead of
    ``torch._foreach_norm`` (tensors of ``_DOT_MIN_NUMEL`` elements or more, contiguous).

    On the CPU with several threads, torch 2.13's norm kernel does not speed up past one thread while ``dot`` does:
    on the 62 ResNet-18 tensors with 2 threads ``_foreach_norm`` took 8.0 ms and the dots 4.6 ms (with 1 thread
    6.9 and 7.9 ms; ``python -m benchmarks.optim_step`` reports the step-level effect). The dots are also closer
    to the float64 value than ``vector_norm`` on large float32 tensors. Only float32/float64 CPU tensors qualify.
    Under ``torch.compile`` the CPU norms are inductor's own sums instead (:func:`_compiled_sq_norms`).
    """
    # The device is checked before the thread count: torch.compile cannot trace ``get_num_threads``, and a
    # compiled CPU step never gets here (``_compiled_on_cpu``), but a compiled CUDA step does.
    if dtype not in (torch.float32, torch.float64) or not all(t.is_cpu and t.dtype == dtype for t in tensors):
        return False
    return torch.get_num_threads() >= 2


def _use_chunked_l1(tensors: list[Tensor], dtype: torch.dtype) -> bool:
    """Whether to take the L1 norms of the large tensors with :func:`_chunked_l1_norms` instead of
    ``torch._foreach_norm`` (tensors of ``_DOT_MIN_NUMEL`` elements or more, contiguous; float32/float64 CPU tensors
    outside ``torch.compile``, whose own sums are fast, and outside autograd)."""
    return (
        not torch.compiler.is_compiling()
        and dtype in (torch.float32, torch.float64)
        and all(t.is_cpu and t.dtype == dtype for t in tensors)
        and not _needs_autograd(tensors)
    )


def _needs_autograd(tensors: list[Tensor]) -> bool:
    """Whether norms of ``tensors`` would be recorded by autograd (``abs(out=)`` refuses such tensors: the norms are
    then ``torch._foreach_norm``'s, which autograd differentiates). Never so inside a step (``torch.no_grad``)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# The slice of a tensor that _chunked_l1_norms makes absolute at a time: small enough to stay in a core's L2 cache
# between the two kernels, large enough that the two calls per slice cost little beside the memory they read.
_L1_CHUNK_BYTES = 3 << 18  # 768 KiB


def _chunked_l1_norms(tensors: list[Tensor]) -> list[Tensor]:
    """``||t||_1`` of contiguous CPU tensors of one dtype as ``sum(|t|)``, slice by slice through one reusable buffer.

    torch 2.13's CPU L1 norm kernel is not vectorised: on the 14 large ResNet-18 tensors (11.5M float32 elements)
    ``torch._foreach_norm(ts, 1)`` took 3.1 ms with 2 threads and 6.7 ms with one, where ``abs`` into a 768 KiB
    buffer then ``sum`` (both vectorised, the buffer read back from the cache) took 1.7 and 2.3 ms. It is also
    closer to the float64 value: 6e-8 relative against 9e-5 (3.5e-4 with one thread), from ``sum``'s cascade
    summation. ``abs(t).sum()`` without slices would need a buffer the size of the tensor.
    """
    chunk = max(1, _L1_CHUNK_BYTES // tensors[0].element_size())
    buffer = tensors[0].new_empty(min(chunk, max(t.numel() for t in tensors)))
    out = []
    for t in tensors:
        parts = []
        for piece in t.view(-1).split(chunk):
            room = buffer if piece.numel() == buffer.numel() else buffer[: piece.numel()]
            parts.append(torch.abs(piece, out=room).sum())
        out.append(parts[0] if len(parts) == 1 else torch.stack(parts).sum())
    return out


def _zero_norm(t: Tensor) -> Tensor:
    return torch.zeros((), dtype=scalar_dtype(t.dtype), device=t.device)
