"""Plumbing shared by the estimators: data as a fixed list of batches, model state that must come back unchanged.

Nothing here is public; :mod:`theorylr.estimate` documents the behaviour these helpers give.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from theorylr._validation import check_choice

__all__ = [
    "MODES",
    "Batch",
    "as_batches",
    "batch_size",
    "batch_weights",
    "check_loss_fn",
    "cuda_devices",
    "forward",
    "forward_context",
    "is_batch",
    "math_attention",
    "preserved",
    "same_values",
    "scalar_loss",
    "seed_global",
    "select_params",
    "set_mode",
    "to_device",
    "tracks_running_stats",
    "unflatten",
]

MODES = ("eval", "train", "current")

Batch = tuple[Any, Any]


def is_batch(data: Any) -> bool:
    """Whether ``data`` is one ``(inputs, targets)`` pair: a 2-tuple or 2-list with a tensor in it (the inputs may be
    another object, e.g. a dict of tensors, when the targets are a tensor); a list of two batches holds none."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and any(isinstance(v, Tensor) for v in data)


def _map_tensors(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``fn`` applied to ``value`` if it is a tensor, or to the tensors inside a dict, list or tuple (a model's
    structured inputs; a named tuple is left as it is); anything else unchanged."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def _ordinary_tensor(t: Tensor) -> Tensor:
    if t.is_inference():
        with torch.inference_mode(False):
            return t.clone()
    return t


def _ordinary(value: Any) -> Any:
    """``value`` with every inference tensor in it (one made under ``torch.inference_mode()``, e.g. in an evaluation
    loop) replaced by an ordinary copy: autograd cannot save inference tensors for the double backward."""
    return _map_tensors(value, _ordinary_tensor)


def as_batches(data: Any, device: torch.device | None = None) -> list[Batch]:
    """``data`` as a list of ``(inputs, targets)`` pairs, tensors moved to ``device``.

    ``data`` is one ``(inputs, targets)`` pair (a 2-tuple or 2-list holding a tensor: see :func:`is_batch`) or an
    iterable of such pairs (a list, a DataLoader, a generator). The iterable is read once, so every later pass (every
    matvec, every weight sample) sees the same batches in the same order. Batches without a sample are left out (a
    mean over none is nan, even at weight 0), and inference tensors are copied (:func:`_ordinary`).

    Raises:
        ValueError: if ``data`` is empty, every batch is, or a batch is not an ``(inputs, targets)`` pair.
    """
    if isinstance(data, dict) or (
        isinstance(data, (tuple, list)) and len(data) != 2 and any(isinstance(v, Tensor) for v in data)
    ):  # one batch in another shape: (x, y, extra), or a dict of tensors
        raise ValueError(f"data must be an (inputs, targets) pair or an iterable of such pairs; {_describe(data, 0)}")
    batches = [data] if is_batch(data) else list(_iter_batches(data))
    if not batches:
        raise ValueError("data must be an (inputs, targets) pair or a non-empty iterable of such pairs (got none)")
    out: list[Batch] = []
    for i, batch in enumerate(batches):
        if not is_batch(batch):
            raise ValueError(
                f"data must be an (inputs, targets) pair or an iterable of such pairs; {_describe(batch, i)}"
            )
        inputs, targets = batch
        if batch_size(inputs, targets) == 0:
            continue
        out.append((_ordinary(to_device(inputs, device)), _ordinary(to_device(targets, device))))
    if not out:
        raise ValueError("data holds no samples (every batch is empty)")
    return out


def _describe(batch: Any, index: int) -> str:
    """What a batch that is no ``(inputs, targets)`` pair is, and how to make one."""
    if isinstance(batch, (tuple, list)) and len(batch) > 2 and any(isinstance(v, Tensor) for v in batch):
        return (
            f"batch {index} is a {type(batch).__name__} of {len(batch)} items (e.g. (x, y, extra)): pass the pairs, "
            "e.g. ((x, y) for x, y, *_ in loader)"
        )
    if isinstance(batch, dict):
        return (
            f"batch {index} is a dict with keys {sorted(map(str, batch))}: pass (inputs, targets) pairs, e.g. "
            "((b['x'], b['y']) for b in loader)"
        )
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        kinds = ", ".join(type(v).__name__ for v in batch)
        return f"batch {index} is a pair of ({kinds}): at least one of inputs and targets must be a torch.Tensor"
    return f"batch {index} is a {type(batch).__name__}"


def _iter_batches(data: Any) -> Iterator[Any]:
    if isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise ValueError(f"data must be an (inputs, targets) pair or an iterable of such pairs (got {type(data)!r})")
    yield from data


def to_device(value: Any, device: torch.device | None) -> Any:
    """``value`` on ``device``: a tensor, or the tensors inside a dict, list or tuple (a model's dict inputs)."""
    if device is None:
        return value
    return _map_tensors(value, lambda t: t.to(device) if t.device != device else t)


def batch_size(inputs: Any, targets: Any) -> int:
    for value in (targets, inputs):
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError(
        "cannot tell a batch's size: neither its targets nor its inputs is a tensor with a batch dimension"
    )


def batch_weights(batches: Sequence[Batch]) -> list[float]:
    """Batch-size weights ``n_b / sum(n)``: the weighted sum of mean-reduced batch losses is the data's mean loss."""
    sizes = [batch_size(x, y) for x, y in batches]
    total = sum(sizes)
    if total == 0:
        raise ValueError("data holds no samples (every batch is empty)")
    return [n / total for n in sizes]


def check_loss_fn(loss_fn: Any) -> None:
    """Refuse a ``loss_fn`` that is not callable or declares a reduction other than the batch mean.

    The estimators weight each batch's loss by ``n_b / N``: that is the data's mean loss only when ``loss_fn``
    returns its batch's mean. A summed loss would make the estimate depend on how the data is batched, and
    ``reduction="none"`` returns no scalar. A ``functools.partial`` is judged by its ``reduction`` keyword
    (``partial(F.cross_entropy, reduction="sum")``); other criteria without a ``reduction`` attribute (plain
    functions) are taken as mean-reduced.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable as loss_fn(outputs, targets) (got {loss_fn!r})")
    if isinstance(loss_fn, functools.partial):
        reduction = loss_fn.keywords.get("reduction", getattr(loss_fn.func, "reduction", "mean"))
    else:
        reduction = getattr(loss_fn, "reduction", "mean")
    if reduction not in ("mean", "batchmean"):
        raise ValueError(
            f"loss_fn must return the batch's mean loss: reduction must be 'mean' (got reduction={reduction!r}). "
            "Batches are weighted by their share of the samples, so a summed loss would make the estimate depend "
            "on the batching; for the curvature of the summed loss, multiply the mean loss's by the sample count"
        )


def scalar_loss(loss: Any) -> Tensor:
    """``loss`` if it is a 0-dim tensor (the batch's mean loss); a clear error for anything else (no host read)."""
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn must return a scalar tensor, the batch's mean loss (got {got}); a per-sample loss "
            "(reduction='none') needs a .mean()"
        )
    return loss


def select_params(model: nn.Module, params: Iterable[Tensor] | None) -> tuple[Tensor, ...]:
    """The parameters to differentiate: ``params`` if given (a tensor listed twice, e.g. a weight tied between two
    modules, counts once), else the model's parameters that require grad.

    Raises:
        ValueError: if none is left, or a given tensor does not require grad or is not a parameter of ``model``
            (another module's parameters would take no part in the loss: a Hessian of zeros, silently).
    """
    if params is None:
        chosen: tuple[Tensor, ...] = tuple(p for p in model.parameters() if p.requires_grad)
    else:
        chosen = tuple(params)
        own = {id(p) for p in model.parameters()}
        for i, p in enumerate(chosen):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise ValueError(f"params must be tensors that require grad (params[{i}] does not)")
            if id(p) not in own:
                raise ValueError(f"params must be parameters of model (params[{i}] is not)")
    if not chosen:
        raise ValueError(
            "params is empty: give at least one parameter of model, or None for all of them"
            if params is not None
            else "params must hold at least one tensor that requires grad (the model has none)"
        )
    unique: dict[int, Tensor] = {}
    for p in chosen:  # a tensor named twice (a weight tied between two modules) is one variable
        unique.setdefault(id(p), p)
    chosen = tuple(unique.values())
    dtypes = {p.dtype for p in chosen}
    devices = {p.device for p in chosen}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            f"params must share one dtype and one device (got dtypes {sorted(map(str, dtypes))}, "
            f"devices {sorted(map(str, devices))})"
        )
    return chosen


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Views of the flat vector ``flat`` shaped like the tensors in ``like``."""
    sizes = [p.numel() for p in like]
    return [chunk.view_as(p) for chunk, p in zip(flat.split(sizes), like)]


def cuda_devices(model: nn.Module) -> list[int]:
    devices = {t.device for t in model.parameters()} | {t.device for t in model.buffers()}
    return sorted(
        {d.index if d.index is not None else torch.cuda.current_device() for d in devices if d.type == "cuda"}
    )


def seed_global(seed: int, model: nn.Module) -> None:
    """Seed the global CPU generator and the CUDA generators of the model's devices (nothing else)."""
    seed = int(seed)  # a NumPy integer too (torch's generators take Python ints only)
    torch.random.default_generator.manual_seed(seed)
    for index in cuda_devices(model):
        torch.cuda.default_generators[index].manual_seed(seed)


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore, on exit (exceptions included), everything an estimate may touch.

    That is: the values of every parameter and buffer (copied back in place, so tensors keep their identity and
    optimizers holding them are unaffected), each module's ``training`` flag, and the global RNG state (CPU and the
    CUDA devices the model lives on). Gradients (``.grad``) are never touched by the estimators, so are not saved.

    Only a tensor whose value changed is written back: an in-place write bumps the tensor's autograd version
    counter, and a graph the caller built before the estimate (a forward pass awaiting its ``backward()``) could no
    longer be differentiated. A parameter or buffer that was replaced by another object (a sampler assigning a new
    ``nn.Parameter``) is put back first.
    """
    tensors = [*model.parameters(), *model.buffers()]
    saved = [t.detach().clone() for t in tensors]
    flags = [(m, m.training) for m in model.modules()]
    slots: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (a module's table, its entries now)
    for m in model.modules():
        slots += [(m._parameters, dict(m._parameters)), (m._buffers, dict(m._buffers))]
    try:
        with torch.random.fork_rng(devices=cuda_devices(model), device_type="cuda"):
            yield
    finally:
        for table, before in slots:
            for name, t in before.items():
                if table.get(name) is not t:
                    table[name] = t
        with torch.no_grad():
            for t, value in zip(tensors, saved):
                if not same_values(t, value):
                    t.copy_(value)
        for m, flag in flags:
            m.training = flag


def same_values(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors of one shape hold the same values, nan equal to nan (the test :func:`preserved` uses)."""
    if a.is_floating_point() or a.is_complex():
        return bool(torch.isclose(a, b, rtol=0.0, atol=0.0, equal_nan=True).all())
    return torch.equal(a, b)


def set_mode(model: nn.Module, mode: str) -> None:
    if mode == "eval":
        model.eval()
    elif mode == "train":
        model.train()


@contextlib.contextmanager
def forward_context(model: nn.Module, mode: str, seed: int) -> Iterator[bool]:
    """Run forward passes in ``mode``; yields whether any module is in training mode during them.

    The module flags are set to ``mode`` (``"current"`` leaves them as they are) and put back afterwards. When a
    module trains, the global RNG is forked and seeded with ``seed`` so that dropout draws the same masks at every
    pass: the loss stays one fixed function of the parameters across the matvecs of an estimate. Buffers are the
    caller's business (the Hessian operator runs training passes on copies of them). An
    :class:`~theorylr.lipschitz.tracker.ActivationTracker` on the model does not record these passes
    (:func:`~theorylr.lipschitz.tracker.untracked`).
    """
    from theorylr.lipschitz.tracker import untracked  # an ActivationTracker on the model: not training batches

    check_choice("mode", mode, MODES)
    flags = [(m, m.training) for m in model.modules()]
    set_mode(model, mode)
    training = any(m.training for m in model.modules())
    try:
        with untracked():
            if training:
                with torch.random.fork_rng(devices=cuda_devices(model), device_type="cuda"):
                    seed_global(seed, model)
                    yield True
            else:
                yield False
    finally:
        for m, flag in flags:
            m.training = flag


def forward(model: nn.Module, x: Any, training: bool) -> Any:
    """``model(x)``; a training pass (``training``) runs on copies of the buffers.

    A training pass may update buffers in place (BatchNorm statistics): on copies, the model's own buffers stay as
    they are, and neither a graph's saved tensors nor the caller's autograd versions are touched.

    A ``DistributedDataParallel`` wrapper is looked through: the pass runs on its ``module``. DDP's own forward
    broadcasts the buffers and readies its gradient reducer at every call, collectives that ranks holding different
    numbers of batches would not pair (a deadlock). Across ranks, an estimate is combined by its ``reduce``.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if not training:
        return model(x)
    from torch.func import functional_call

    buffers = {name: b.clone() for name, b in model.named_buffers()}
    return functional_call(model, buffers, (x,)) if buffers else model(x)


def math_attention() -> contextlib.AbstractContextManager[Any]:
    """A context in which ``F.scaled_dot_product_attention`` (``nn.MultiheadAttention``,
    ``nn.TransformerEncoderLayer``, ...) runs on PyTorch's math kernel, the one attention kernel that has a double
    backward and forward-mode derivatives.

    The fused kernels (flash, memory-efficient, cuDNN; the CPU flash kernel too) have a backward but no derivative of
    it, so a Hessian-vector product through them fails ("derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"). The math kernel computes the
    same function with plain matmuls and a softmax: results differ from a fused kernel's only by rounding. It holds
    the full attention matrix, as the double backward through any kernel would. The backend flags it sets are
    process-wide (torch's :func:`torch.nn.attention.sdpa_kernel`) and put back on exit.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def tracks_running_stats(model: nn.Module, mode: str) -> bool:
    """Whether a forward pass in ``mode`` updates BatchNorm running statistics (buffers mutated in place)."""
    for m in model.modules():
        is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        if is_bn and (mode == "train" or (mode == "current" and m.training)):
            return True
    return False
