"""Capture of the penultimate activations with a forward hook: what LipschitzLR's closed forms need, per batch.

:class:`ActivationTracker` hooks the penultimate layer of a model and, for every training forward pass, keeps
``K_z`` (a norm of the batch's penultimate activation matrix), the batch size ``m`` and the batch's closed-form
Lipschitz constant, plus the largest of those over the current epoch. Everything stays a tensor on the model's
device: no host synchronisation per batch and no extra forward pass (Yedida & Saha, *LipschitzLR*, §8: "PyTorch
[...] provide[s] this functionality through hooks").

Consumers: :class:`theorylr.lipschitz.scheduler.LipschitzLR` (per epoch) and the adaptive optimizers of
:mod:`theorylr.optim.adaptive` (per step).
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor, nn

from theorylr._validation import check_bool, check_choice, check_int, check_module, check_number
from theorylr.lipschitz.bounds import LOSSES, gradient_norm_bound
from theorylr.lipschitz.closed_form import (
    ACTIVATION_NORMS,
    activation_norm,
    binary_cross_entropy,
    l2_term,
    least_squares_nn,
    softmax_cross_entropy,
)

__all__ = ["EPOCH_FIELDS", "ActivationTracker", "EpochStats", "find_last_linear", "stats_values", "untracked"]


def _last_linear_or_none(model: nn.Module) -> nn.Linear | None:
    try:
        return find_last_linear(model)[1]
    except ValueError:
        return None


def find_last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's last :class:`torch.nn.Linear` in registration order (``model.named_modules()``), with its name.

    Registration order is the order of the ``__init__`` assignments, not of the calls in ``forward``: a model that
    defines its head before its body needs ``penultimate=``. The ``out_proj`` of an :class:`torch.nn.MultiheadAttention`
    is skipped: the attention applies its weights functionally, never calling that module.

    Raises:
        ValueError: if the model has no ``nn.Linear``.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> find_last_linear(model)[0]
        '2'
    """
    found: tuple[str, nn.Linear] | None = None
    inside_attention = {
        id(sub) for m in model.modules() if isinstance(m, nn.MultiheadAttention) for sub in m.modules() if sub is not m
    }
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in inside_attention:
            found = (name, module)
    if found is None:
        raise ValueError(
            f"penultimate: {type(model).__name__} has no nn.Linear to auto-detect the penultimate layer from; "
            "name the module whose output is the penultimate activation (penultimate='<module name>')"
        )
    return found


@dataclass(frozen=True)
class EpochStats:
    """What an epoch of training batches gave (all tensors 0-dim, on the model's device; nothing read on the host).

    Attributes:
        lipschitz: ``L = max_b L_b + lambda K``: the largest batch constant plus the L2 term (§5.3).
        data_lipschitz: ``max_b L_b``, the largest batch constant (paper form or rigorous bound).
        k_z: ``K_z`` of the batch that attained ``max_b L_b``.
        batch_size: ``m`` of that batch (a float tensor).
        max_k_z: the largest ``K_z`` of the epoch.
        weight_bound: ``K``, read when the stats were taken (:meth:`ActivationTracker.weight_bound`).
        batches: the number of training batches recorded.
        examples: the number of examples (rows) in them.
    """

    lipschitz: Tensor
    data_lipschitz: Tensor
    k_z: Tensor
    batch_size: Tensor
    max_k_z: Tensor
    weight_bound: Tensor
    batches: int
    examples: int


def _nan_max(values: list[float]) -> float:
    """``max(values)``, nan if any is nan (as ``torch.amax``)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


EPOCH_FIELDS = ("lipschitz", "data_lipschitz", "k_z", "batch_size", "max_k_z", "weight_bound")
"""The statistics :meth:`ActivationTracker.epoch_values` returns as Python numbers (besides ``batches``)."""


def stats_values(stats: EpochStats | None) -> dict[str, Any] | None:
    """:class:`EpochStats` as Python numbers (the :data:`EPOCH_FIELDS`, ``batch_size`` an int, and ``batches``):
    one host read for all of them."""
    if stats is None:
        return None
    device = stats.lipschitz.device  # float64 (MPS has none): the batch size an exact integer past float32's 2^24
    wide = torch.float32 if device.type == "mps" else torch.float64
    values = torch.stack([getattr(stats, name).to(device, wide) for name in EPOCH_FIELDS]).tolist()
    out: dict[str, Any] = dict(zip(EPOCH_FIELDS, values))
    out["batch_size"] = int(out["batch_size"])
    out["batches"] = stats.batches
    return out


@dataclass(slots=True)
class _Batch:
    activations: Tensor | None
    k_z: Tensor
    m: int
    weight_bound: Tensor | None
    targets: Tensor | None = None
    lipschitz: Tensor | None = None
    folded: bool = False  # counted in the epoch's statistics
    lead: tuple[int, ...] | None = None  # the leading dimensions flattened into the m rows (input of a sequence)


_LOW_PRECISION = (torch.float16, torch.bfloat16)

_SUMMARY = ("data_lipschitz", "k_z", "batch_size", "max_k_z")  # the running maxima kept by _reduce

# Pending batches are reduced into the running maxima every this many batches (bounded memory per epoch).
_REDUCE_EVERY = 256


# How many untracked() contexts this thread is in (see untracked()).
class _Depth(threading.local):
    """A per-thread counter, 0 on a thread that never set it (a class default: a ``getattr`` with a default would
    raise and catch an AttributeError inside, about 0.3 us on every training batch)."""

    depth = 0


_UNTRACKED = _Depth()


@contextlib.contextmanager
def untracked() -> Iterator[None]:
    """A context in which no :class:`ActivationTracker` records, on this thread: forward passes that are not
    training batches even in training mode. The curvature estimators (:mod:`theorylr.estimate`) run theirs in it,
    so that estimating ``K_hat`` in ``mode="train"`` on a model that LipschitzLR tracks leaves its ``L`` alone.
    :meth:`ActivationTracker.paused` does the same for one tracker, on every thread.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3))
        >>> tracker = ActivationTracker(model, "softmax")
        >>> with untracked():
        ...     _ = model(torch.zeros(4, 2))
        >>> tracker.batch_size is None
        True
    """
    _UNTRACKED.depth += 1
    try:
        yield
    finally:
        _UNTRACKED.depth -= 1


# torch's own tests of "inside backward()" and "a torch.func tensor" (private functions: looked up once, and a torch
# without them is taken to have neither).
_GRAPH_TASK_ID = getattr(torch._C, "_current_graph_task_id", None)
_FUNCTORCH_WRAPPED = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


def _untracked_now() -> bool:
    """Whether this thread is inside :func:`untracked`."""
    depth: int = _UNTRACKED.depth
    return depth > 0


def _inside_backward() -> bool:
    """Whether autograd is running a backward pass on this thread (torch's graph task id is -1 outside one)."""
    return _GRAPH_TASK_ID is not None and _GRAPH_TASK_ID() != -1


def _transformed(x: Tensor) -> bool:
    """Whether ``x`` is a tensor of a ``torch.func`` transform (``vmap``, ``grad``, ``jvp``)."""
    return _FUNCTORCH_WRAPPED is not None and bool(_FUNCTORCH_WRAPPED(x))


def _norms(tensors: list[Tensor], foreach: bool) -> list[Tensor]:
    """Each tensor's Frobenius norm; 16-bit tensors accumulated and returned in float32 (a bfloat16 norm rounds to
    8 bits, up to 0.4 % below the norm of the same values)."""
    low = [t.dtype in _LOW_PRECISION for t in tensors]
    if not any(low):
        return list(torch._foreach_norm(tensors)) if foreach else [torch.linalg.vector_norm(t) for t in tensors]
    if foreach and all(low):
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    return [
        torch.linalg.vector_norm(t, dtype=torch.float32) if w else torch.linalg.vector_norm(t)
        for t, w in zip(tensors, low)
    ]


class _RecordHook:
    """The tracker's forward hook (``mode="output"``) or forward pre-hook (``mode="input"``, with kwargs).

    It records the training passes of the tracked module into the tracker, of which it holds only a weak reference.
    A pickled or deep-copied model (``torch.save(model)``, an EMA copy) gets an inert hook in its place
    (:class:`_InertHook`): the copy is not the tracked model.
    """

    __slots__ = ("mode", "ref")

    def __init__(self, tracker: ActivationTracker, mode: str) -> None:
        self.ref = weakref.ref(tracker)
        self.mode = mode

    def __call__(self, mod: nn.Module, args: tuple[Any, ...], extra: Any) -> None:
        """``extra`` is the call's keyword arguments (pre-hook) or the module's output (hook)."""
        tracker = self.ref()
        # Training passes only: the module in training mode, gradients enabled (a torch.no_grad() or
        # inference_mode() pass is an evaluation), the tracker not paused. ``mod is tracker.module``: a shallow copy
        # of the model shares this hook, and its passes are not the tracked model's.
        if (
            tracker is None
            or not mod.training
            or not torch.is_grad_enabled()
            or tracker._paused
            or mod is not tracker.module
        ):
            return
        if self.mode == "input":
            x = args[0] if args else extra.get("input")  # head(h) or head(input=h)
            if not isinstance(x, Tensor):
                return
        else:
            x = extra
            if not isinstance(x, Tensor):
                raise TypeError(
                    f"penultimate module {type(mod).__name__} returned {type(x).__name__}; the tracker needs a tensor "
                    "output"
                )
        if not torch.compiler.is_compiling() and (_inside_backward() or _transformed(x) or _untracked_now()):
            # A forward pass that autograd runs again inside backward() (activation checkpointing recomputes the
            # segment) is the same batch a second time; one inside a torch.func transform (vmap, grad: per-sample
            # gradients) is not a training batch, and its tensors do not outlive the transform; nor is one inside
            # untracked() (the estimators' passes).
            return
        if x.numel():  # one C call per batch
            tracker.record(x)
        else:  # an empty batch: no example, nothing to bound
            tracker.record_empty(x)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_InertHook, ())


class _InertHook:
    """What a tracker's hook becomes in a pickled or deep-copied model: it records nothing."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None


def _refuse_replicated(model: nn.Module) -> None:
    """Refuse a ``DistributedDataParallel`` model replicated on more than one rank: a tracker of local batches would
    give every rank its own constant, and the replicas would drift apart without an error."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return
    import torch.distributed as dist

    ranks = dist.get_world_size(model.process_group) if dist.is_initialized() else 1
    if ranks > 1:
        raise ValueError(
            f"model is a DistributedDataParallel replicated on {ranks} ranks, but this tracker reads this rank's "
            "batches only: each rank would get its own L and lr, and the replicas would drift apart. Use "
            "theorylr.distributed.distributed_lipschitz_lr, or pass tracker=DistributedActivationTracker(model, "
            "...) to an adaptive optimizer (their rigorous=False forms are those of the global batch)"
        )


class ActivationTracker:
    r"""Hooks the penultimate layer and keeps, as tensors, what the closed-form Lipschitz constant needs.

    **Which activations.** By default the input of the model's last :class:`torch.nn.Linear` (found by
    :func:`find_last_linear`), read by a forward pre-hook and reshaped to ``(-1, in_features)``: one row per
    example the loss averages over. With ``penultimate=`` (a module name from ``model.named_modules()`` or the
    module itself) the **output** of that module is used instead, flattened to ``(batch, -1)``.

    **When.** Only training forward passes are recorded: the hooked module in training mode (``model.train()``)
    and gradients enabled. Evaluation passes, under ``model.eval()``, ``torch.no_grad()`` or
    ``torch.inference_mode()``, leave the statistics untouched (so a penultimate module that a training forward
    runs under ``no_grad``, e.g. a frozen feature extractor, is not recorded either: freeze it with
    ``requires_grad_(False)`` instead). A batch with no example is skipped (and :meth:`observe_targets` ignores its
    empty targets). Nothing is recorded after :meth:`close`, nor from a copy of the model: an EMA or
    ``AveragedModel`` deep copy, or a model saved with ``torch.save(model)`` and loaded, carries an inert hook.
    Each call of the tracked module is one batch: a head applied twice in one forward records two. A forward pass
    that autograd runs again inside ``backward()`` (activation checkpointing, ``torch.utils.checkpoint`` with
    ``use_reentrant=False``, recomputes its segment) is not a second batch, and passes inside a ``torch.func``
    transform (``vmap``/``grad`` for per-sample gradients) are not recorded. With ``use_reentrant=True`` the
    forward runs under ``no_grad`` and only its recomputation sees the activations: nothing is recorded, use
    ``use_reentrant=False`` (torch's recommendation). Nor are passes inside :func:`untracked` recorded, which the
    curvature estimators of :mod:`theorylr.estimate` use for theirs.

    **torch.compile.** The hook's bookkeeping is Python: traced into a compiled model it changes at every batch,
    and the model recompiles at every batch until torch's recompile limit, then runs uncompiled. Compile the
    model without its tracked head, ``model = nn.Sequential(torch.compile(model[:-1]), model[-1])``: the head and
    its hook stay eager (one Linear), the rest compiles once. (A tracker hooked onto a module that a compiled
    graph already runs is not called: torch does not guard compiled code on module hooks by default.)

    **Checkpoints.** A tracker cannot be pickled or copied (its hook is bound to the live model): save
    :meth:`state_dict` and restore it into a new tracker with :meth:`load_state_dict`.

    **Per batch** ``b`` (in the hook; tensors only): ``K_z = activation_norm(A_b, activation_norm)``,
    ``m = rows of A_b`` and the batch constant

    - paper form (``rigorous=False``): ``softmax_cross_entropy(K_z, m, k)`` (eq. 23),
      ``binary_cross_entropy(K_z, m)`` (eq. 18) or ``least_squares_nn(K K_z, ||y_b||, K_z, m)`` (eq. 9, with the
      output bound ``K_a = K K_z`` of eq. 12 and ``K`` the weight bound at the time of the forward pass);
    - rigorous (``rigorous=True``): ``gradient_norm_bound(A_b, loss, num_classes=k, targets=y_b, weight_bound=K)``,
      a true bound on the last-layer gradient norm of the batch's mean loss. When the tracked ``nn.Linear`` has a
      bias, the bound is taken with ``bias=True`` (it covers the weight and bias gradients together), and ``K`` is
      at least ``||[W, b]||_F`` of that layer (:meth:`weight_bound`), so that the bound holds with the bias in the
      least-squares residual and in the weight-decay term ``lambda K``.

    **Targets.** Least squares needs the batch's targets in both forms; give them with :meth:`observe_targets`
    after the forward pass (before the next one). For the classification losses targets are optional and used
    only by the rigorous bound (which they tighten); the paper's forms never need them. A batch's constant is
    computed when it is first needed (:meth:`batch_lipschitz`, the next forward pass, or :meth:`epoch_stats`), so
    targets given in between are taken into account.

    **Per epoch:** ``max_b L_b`` and the ``K_z``, ``m`` of the batch attaining it (no host read), until
    :meth:`reset_epoch`. For the paper's classification forms the hook only computes ``K_z`` and appends it to a
    list; the batch constants are computed together when the epoch is read (or every 256 batches), which keeps the
    per-batch cost to one norm. Read the epoch with :meth:`epoch_stats` (tensors, no host read) or
    :meth:`epoch_values` (Python numbers, one host read: what :class:`~theorylr.lipschitz.scheduler.LipschitzLR`
    uses).

    **Weight bound** ``K``: the constant ``weight_bound`` if given, else the largest Frobenius norm among the
    model's parameter tensors (weights and biases, the paper's ``W``; §7.4 "max ||w||").

    The hook is removed by :meth:`close`, by leaving a ``with`` block, or when the tracker is garbage-collected
    (the hook holds only a weak reference to the tracker).

    Args:
        model: the model.
        loss: ``"softmax"`` (default), ``"bce"`` or ``"least_squares"``.
        num_classes: ``k`` for ``"softmax"`` (default ``None``: the ``out_features`` of the model's last
            ``nn.Linear``); must be ``None`` (or 1 for ``"bce"``) otherwise.
        penultimate: ``None`` (default, the input of the last ``nn.Linear`` in registration order, see
            :func:`find_last_linear`), a module name, or a module of ``model`` whose output is the penultimate
            activation.
        activation_norm: the norm giving ``K_z``: ``"fro"`` (default), ``"spectral"`` or ``"max_row"`` (see
            :func:`~theorylr.lipschitz.closed_form.activation_norm`; ``"spectral"`` uses an SVD, which on CUDA
            waits for the device).
        weight_bound: a constant ``K`` (default ``None``: read from the model).
        rigorous: use :func:`~theorylr.lipschitz.bounds.gradient_norm_bound` instead of the paper's form (default
            ``False``). The bound covers the bias of the layer that takes the penultimate activation (the tracked
            ``nn.Linear``; with ``penultimate=``, the model's last ``nn.Linear``) when it has one.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.randn(16, 4)
        >>> with ActivationTracker(model, "softmax") as tracker:  # k = 3, from the last Linear
        ...     out = model(x)
        >>> a = model[1](model[0](x))  # the input of the last Linear
        >>> bool(torch.isclose(tracker.batch_k_z(), a.norm()))
        True
        >>> bool(torch.isclose(tracker.batch_lipschitz(), 2 / 3 * a.norm() / 16))  # (k - 1) K_z / (k m), eq. 23
        True

    Reference: Yedida & Saha, *LipschitzLR*, §3.3 (eq. 6, 10), §4.2-§5.3, §7.4, §8.
    """

    # Whether the statistics are those of the global batch across data-parallel ranks (the distributed subclass).
    _global_batches = False

    def __init__(
        self,
        model: nn.Module,
        loss: str = "softmax",
        *,
        num_classes: int | None = None,
        penultimate: str | nn.Module | None = None,
        activation_norm: str = "fro",
        weight_bound: float | None = None,
        rigorous: bool = False,
    ) -> None:
        check_module("model", model)
        check_choice("loss", loss, LOSSES)
        check_choice("activation_norm", activation_norm, ACTIVATION_NORMS)
        check_bool("rigorous", rigorous)
        if not self._global_batches:
            _refuse_replicated(model)
        if weight_bound is not None:
            check_number("weight_bound", weight_bound, min_value=0.0)
        if loss == "softmax":
            if num_classes is None:
                if not any(isinstance(m, nn.Linear) for m in model.modules()):
                    raise ValueError("num_classes must be given for loss='softmax' when the model has no nn.Linear")
                num_classes = find_last_linear(model)[1].out_features
                if num_classes < 2:
                    raise ValueError(
                        f"num_classes must be given for loss='softmax' when the last nn.Linear has "
                        f"{num_classes} output (need k >= 2)"
                    )
            check_int("num_classes", num_classes, min_value=2)
        elif loss == "bce":
            if num_classes not in (None, 1):
                raise ValueError(f"num_classes must be None or 1 for loss='bce' (got {num_classes!r})")
            num_classes = None
        elif num_classes is not None:
            raise ValueError(f"num_classes must be None for loss='least_squares' (got {num_classes!r})")

        module, mode = self._resolve(model, penultimate)
        if (
            loss == "softmax"
            and mode == "input"
            and isinstance(module, nn.Linear)
            and num_classes != module.out_features
        ):
            raise ValueError(
                f"num_classes must equal the out_features of the tracked nn.Linear, whose input is the penultimate "
                f"activation (got {num_classes}, the layer has {module.out_features}): k sets the constant (k - 1) / k"
            )
        self.model = model
        self.module = module
        self.mode = mode
        self.loss = loss
        self.num_classes = num_classes
        self.activation_norm = activation_norm
        self.constant_weight_bound = weight_bound
        self.rigorous = rigorous
        # The rigorous bound covers the last layer's bias too (a column of ones in the activations), when it has one:
        # the tracked Linear, or with penultimate= the model's last Linear, whose input that module's output is (a
        # least-squares bound that left a head's bias out was 5.7x below the gradient).
        self._head = module if mode == "input" else _last_linear_or_none(model)
        self._bias = isinstance(self._head, nn.Linear) and self._head.bias is not None
        # The paper's classification forms are a fixed multiple of K_z / m: the hook stores K_z only and the batch
        # constants are computed together, per distinct batch size, when the epoch is read.
        self._deferred = not rigorous and loss != "least_squares"
        self._fro_only = self._deferred and activation_norm == "fro"  # the per-batch fast path of record()
        self._batch: _Batch | None = None
        self._paused = 0
        self._constant_bounds: dict[torch.device | None, Tensor] = {}
        self._pending: dict[int, tuple[list[Tensor], list[Tensor]]] = {}  # batch size -> (K_z list, L_b list)
        # The batch size of the latest batch and its _pending lists, which _fold appends to without a lookup while
        # the size stays the same (-1: none; forgotten whenever _pending is replaced).
        self._open_size = -1
        self._open_lists: tuple[list[Tensor], list[Tensor]] = ([], [])
        self._coefficients: dict[int, float] = {}  # batch size -> c_m (see _coefficient)
        self._summary: dict[str, Tensor] | None = None  # running epoch maxima
        self._batches = self._examples = self._unreduced = 0
        self.reset_epoch()

        hook = _RecordHook(self, mode)
        if mode == "input":
            handle = module.register_forward_pre_hook(hook, with_kwargs=True)
        else:
            handle = module.register_forward_hook(hook)
        self._finalizer = weakref.finalize(self, handle.remove)
        self._closed = False

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"{type(self).__name__} cannot be pickled or copied: its hook is bound to a live model, which a copy would "
            "not track. Save tracker.state_dict() (for LipschitzLR, scheduler.state_dict()) and, after loading, build "
            "a new one on the model and call load_state_dict()"
        )

    def module_label(self) -> str:
        """The tracked module for messages: its name in the model, its class, and whether its input or output."""
        names = [name for name, m in self.model.named_modules() if m is self.module]
        where = f"'{names[0]}'" if names and names[0] else "the model itself"
        return f"{where} ({type(self.module).__name__}, its {self.mode})"

    @staticmethod
    def _resolve(model: nn.Module, penultimate: str | nn.Module | None) -> tuple[nn.Module, str]:
        if penultimate is None:
            return find_last_linear(model)[1], "input"
        if isinstance(penultimate, str):
            modules = dict(model.named_modules())
            if penultimate not in modules:
                names = ", ".join(repr(n) for n in list(modules)[1:12])
                raise ValueError(f"penultimate must name a module of the model, e.g. {names} (got {penultimate!r})")
            return modules[penultimate], "output"
        if isinstance(penultimate, nn.Module):
            if not any(m is penultimate for m in model.modules()):
                raise ValueError("penultimate must be a module of the model (got a module that is not inside it)")
            return penultimate, "output"
        raise ValueError(f"penultimate must be None, a module name or an nn.Module (got {type(penultimate).__name__})")

    # ------------------------------------------------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether the hook has been removed."""
        return self._closed  # a plain flag: torch.compile reads it without guarding on weakref.finalize's registry

    def close(self) -> None:
        """Remove the hook (idempotent). The statistics gathered so far stay readable."""
        self._finalizer()
        self._closed = True

    def __enter__(self) -> ActivationTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------------
    # Recording
    # ------------------------------------------------------------------------------------------------------------
    @property
    def needs_targets(self) -> bool:
        """Whether every batch needs :meth:`observe_targets` (least squares)."""
        return self.loss == "least_squares"

    def record(self, activations: Tensor) -> None:
        """Record one batch's penultimate activations (what the hook calls; also usable by hand).

        The previous batch, if still pending, is finalised first. No value is read on the host. This is the
        per-batch cost of the tracker, so it does the least it can: for the paper's classification forms one norm
        and a list append.
        """
        if self._fro_only and activations.ndim and activations.numel():
            self._record_fro(activations)
            return
        batch = self._batch
        if batch is not None and not batch.folded:
            self._finish_batch()
        a = activations.detach()
        lead = tuple(a.shape[:-1]) if self.mode == "input" and a.ndim > 2 else None
        if a.ndim != 2:
            a = a.reshape(-1, a.shape[-1]) if self.mode == "input" else a.reshape(a.shape[0], -1)
        if a.dtype in _LOW_PRECISION:
            a = a.float()
        k_z = activation_norm(a, self.activation_norm)
        m = a.shape[0]
        if self._deferred:
            self._batch = _Batch(None, k_z, m, None, folded=True)
            self._fold(k_z, m, None)
        else:
            bound = self.weight_bound() if self.loss == "least_squares" else None
            self._batch = _Batch(a, k_z, m, bound, lead=lead)

    def _record_fro(self, activations: Tensor) -> None:
        """:meth:`record` for the paper's classification forms with ``K_z = ||A||_F`` (the default): one norm kernel
        and a few attribute writes per batch, the only Python a training batch runs here.

        Every batch of such a tracker is folded when recorded, so the latest batch's record is updated in place
        rather than made anew, and :meth:`_fold` keeps the lists of the latest batch size at hand. In the training
        loop of the 128-wide MLP benchmark the tracker's cost per batch went from 19.5-22.6 us to 18.3-21.1 us (four
        interleaved runs; about 2 us of noise): most of it is torch's, the hook's call (about 4 us there) and the
        norm kernel (6-8 us there, 1.8 us when timed alone). ``benchmarks/RESULTS.md``, eleventh pass.
        """
        a = activations.detach()
        # The Frobenius norm ignores the matrix's shape: no reshape, and 16-bit activations are accumulated in
        # float32 by the norm kernel itself (no float32 copy). (An explicit ``dtype=None`` would cost the call about
        # 2.5 us of argument parsing on a slow CPU.)
        if a.dtype in _LOW_PRECISION:
            k_z = torch.linalg.vector_norm(a, dtype=torch.float32)
        else:
            k_z = torch.linalg.vector_norm(a)
        m = a.shape[0] if self.mode == "output" else a.numel() // a.shape[-1]
        batch = self._batch
        if batch is None:
            self._batch = _Batch(None, k_z, m, None, folded=True)
        else:  # folded, without activations or targets: only its K_z, m and cached constant change
            batch.k_z, batch.m, batch.lipschitz = k_z, m, None
        self._fold(k_z, m, None)

    def _latest_pass(self) -> object:
        """An object that is new for every recorded training pass (``None`` before the first): the adaptive
        optimizers compare it between steps to warn of a constant reused from an earlier batch."""
        return getattr(self._batch, "k_z", None)

    def record_empty(self, activations: Tensor) -> None:
        """What the hook does with a batch of no example (``activations`` has no element): nothing here.

        A :class:`~theorylr.distributed.DistributedActivationTracker` records it as a row that adds nothing to the
        global batch, so that the ``i``-th batches of the ranks stay paired when one rank's share is empty.
        """

    def observe_targets(self, targets: Tensor) -> None:
        """Attach the latest batch's targets (required for least squares; optional for the rigorous bounds).

        Call it after the forward pass of the batch and before the next one. The targets need one row per example
        of the batch (``m`` rows); when the tracked ``nn.Linear`` saw a sequence ``(batch, positions..., features)``,
        targets shaped ``(batch, positions..., ...)`` are flattened the same way. The number of rows is checked here,
        the rest of the shape when the batch's constant is computed; values are never read. The paper's
        classification forms ignore targets, and so does an empty batch (which is not recorded).
        """
        if not isinstance(targets, Tensor):
            raise ValueError(f"targets must be a torch.Tensor (got {type(targets).__name__})")
        if targets.ndim > 0 and targets.shape[0] == 0:
            return  # the targets of an empty batch, which the hook did not record
        batch = self._batch
        if batch is None:
            raise RuntimeError("observe_targets: no training forward pass has been recorded yet")
        if self._deferred:
            return
        if batch.lipschitz is not None:
            raise RuntimeError(
                "observe_targets: the latest batch's constant was already used; give the targets right after the "
                "forward pass, before the optimizer step"
            )
        y = targets.detach()
        lead = batch.lead
        if lead is not None and tuple(y.shape[: len(lead)]) == lead:
            y = y.reshape(batch.m, *y.shape[len(lead) :])
        if y.ndim == 0 or y.shape[0] != batch.m:
            raise ValueError(
                f"targets must have one row per example of the latest batch, m = {batch.m} rows (activations of "
                f"shape {(*lead, -1) if lead else (batch.m, -1)}); got shape {tuple(targets.shape)}"
            )
        batch.targets = y

    def _batch_constant(self, batch: _Batch) -> Tensor:
        """``L_b`` of one batch (paper form or rigorous bound)."""
        k, loss = self.num_classes, self.loss
        if loss == "least_squares" and batch.targets is None:
            raise RuntimeError(
                "loss='least_squares' needs the targets of every batch: call observe_targets(y) after each "
                "training forward pass"
            )
        if self.rigorous:
            assert batch.activations is not None
            return gradient_norm_bound(
                batch.activations,
                loss,
                num_classes=k,
                targets=batch.targets,
                weight_bound=batch.weight_bound,
                bias=self._bias,
            )
        if loss == "softmax":
            assert k is not None
            return softmax_cross_entropy(batch.k_z, batch.m, k)
        if loss == "bce":
            return binary_cross_entropy(batch.k_z, batch.m)
        assert batch.targets is not None and batch.weight_bound is not None
        bound = batch.weight_bound.to(batch.k_z.dtype)
        y_norm = torch.linalg.vector_norm(batch.targets.to(batch.k_z.dtype))
        return least_squares_nn(bound * batch.k_z, y_norm, batch.k_z, batch.m)

    def _finish_batch(self) -> None:
        batch = self._batch
        assert batch is not None
        if batch.lipschitz is None:
            batch.lipschitz = self._batch_constant(batch)
        batch.activations = None
        if not batch.folded:
            batch.folded = True
            self._fold(batch.k_z, batch.m, batch.lipschitz)

    def _fold(self, k_z: Tensor, m: int, lipschitz: Tensor | None) -> None:
        """Add one batch to the epoch (a list append; reduced every ``_REDUCE_EVERY`` batches and when read)."""
        if m == self._open_size:  # batch sizes change at most at an epoch's last batch
            lists = self._open_lists
        else:
            lists = self._pending.setdefault(m, ([], []))
            self._open_size, self._open_lists = m, lists
        lists[0].append(k_z)
        if lipschitz is not None:
            lists[1].append(lipschitz)
        self._batches += 1
        self._examples += m
        self._unreduced += 1
        if self._unreduced >= _REDUCE_EVERY:
            self._reduce()

    @overload
    def _deferred_constant(self, k_z: float, m: int) -> float: ...
    @overload
    def _deferred_constant(self, k_z: Tensor, m: int) -> Tensor: ...
    def _deferred_constant(self, k_z: float | Tensor, m: int) -> float | Tensor:
        """``L_b`` of a batch for the paper's classification forms (eq. 18 / 23), from its ``K_z`` and ``m``."""
        if self.loss == "softmax":
            assert self.num_classes is not None
            return softmax_cross_entropy(k_z, m, self.num_classes)
        return binary_cross_entropy(k_z, m)

    def _reduce(self) -> None:
        """Bound what the pending batches hold (every ``_REDUCE_EVERY`` batches, and at a checkpoint or an epoch read).

        The paper's classification forms keep, per batch size, only the largest ``K_z`` (their ``L_b = c_m K_z`` is
        increasing in ``K_z``, so the maximum loses nothing, nan included); :meth:`epoch_values` applies ``c_m`` on
        the host, in float64, when the epoch is read. An epoch's ``L`` is then the same whether and when its
        batches were compacted: after 256 batches, or by a mid-epoch :meth:`state_dict` or :meth:`epoch_stats`. The
        other forms fold their batch constants into the running epoch maxima (tensor ops per batch size, no sync).
        """
        if self._deferred:
            for kzs, _ in self._pending.values():
                if len(kzs) > 1:
                    kzs[:] = [torch.stack(kzs).amax()]  # in place: the open size's list stays the one _fold appends to
            self._unreduced = 0
            return
        self._summary = self._folded(self._summary)
        self._clear_pending()

    def _folded(self, summary: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
        """``summary`` with the pending batches folded in (a new dict; the pending lists are left as they are)."""
        for m, (kzs, ls) in self._pending.items():
            if not kzs:
                continue
            kz = torch.stack(kzs)
            if self._deferred:
                # The paper's classification forms are c_m * K_z with c_m > 0 (monotone, also in floating point):
                # the batch with the largest K_z has the largest constant.
                max_k_z = k_z = kz.amax()
                value = self._deferred_constant(max_k_z, m)
            else:
                values = torch.stack(ls)
                best = values.argmax()
                value, k_z, max_k_z = values[best], kz[best], kz.amax()
            if summary is None:
                summary = {
                    "data_lipschitz": value,
                    "k_z": k_z,
                    "batch_size": torch.full_like(k_z, float(m)),
                    "max_k_z": max_k_z,
                }
            else:
                prev = summary
                larger = value > prev["data_lipschitz"]
                summary = {
                    "data_lipschitz": torch.maximum(prev["data_lipschitz"], value),
                    "k_z": torch.where(larger, k_z, prev["k_z"]),
                    "batch_size": torch.where(larger, float(m), prev["batch_size"]),
                    "max_k_z": torch.maximum(prev["max_k_z"], max_k_z),
                }
        return summary

    def _clear_pending(self) -> None:
        """No batch waits to be reduced: the lists by batch size, the open size that indexes them, the count."""
        self._pending = {}
        self._open_size = -1
        self._unreduced = 0

    # ------------------------------------------------------------------------------------------------------------
    # Reading
    # ------------------------------------------------------------------------------------------------------------
    def _current(self) -> _Batch:
        if self._batch is None:
            raise RuntimeError(
                "no training forward pass of the model has been recorded yet (the tracker records forward passes "
                f"made in training mode, call model.train(); and only those that call the tracked module, "
                f"{self.module_label()}: if forward never calls it, name the right one with penultimate=)"
            )
        return self._batch

    @property
    def batch_size(self) -> int | None:
        """``m`` of the latest recorded batch (``None`` before the first)."""
        return None if self._batch is None else self._batch.m

    def batch_k_z(self) -> Tensor:
        """``K_z`` of the latest recorded batch (0-dim tensor)."""
        return self._current().k_z

    def batch_lipschitz(self, *, weight_decay: float = 0.0) -> Tensor:
        """The latest batch's constant ``L_b`` plus ``l2_term(weight_decay, K)`` (0-dim tensor, no host read)."""
        check_number("weight_decay", weight_decay, min_value=0.0)
        batch = self._current()
        if batch.lipschitz is None:
            # Computed and cached, not folded into the epoch here: the next record() or epoch read folds it. A step
            # compiled with torch.compile reads this; a list append in it would make the list's length a guard,
            # and the step would recompile at every batch.
            batch.lipschitz = self._batch_constant(batch)
            batch.activations = None
        value = batch.lipschitz
        assert value is not None
        if weight_decay != 0.0:
            value = value + l2_term(weight_decay, self.weight_bound().to(value.dtype))
        return value

    def weight_bound(self, *, foreach: bool | None = None) -> Tensor:
        """``K``: the constant given, or the largest Frobenius norm of the model's parameter tensors (0-dim).

        With ``rigorous=True`` and a tracked ``nn.Linear`` that has a bias, ``K`` is also at least ``||[W, b]||_F``
        of that layer: its rigorous bound covers the weight and bias gradients together, so the ball of radius
        ``K`` must hold ``[W, b]`` (in the least-squares residual, and in the decay term ``lambda [W, b]`` of that
        joint gradient). The norms of 16-bit parameters are accumulated and returned in float32.

        Args:
            foreach: compute the norms with ``torch._foreach_norm`` (default ``None``: when available).
        """
        norms = self._weight_norms(foreach=foreach)
        return norms[0] if len(norms) == 1 else torch.stack(norms).amax()

    def _weight_norms(self, *, foreach: bool | None = None) -> list[Tensor]:
        """The tensors whose maximum is ``K``: every parameter's Frobenius norm on the first parameter's device (and
        the tracked layer's joint ``||[W, b]||_F`` for a rigorous tracker, see :meth:`weight_bound`), or the
        constant bound alone (0 for a model without parameters)."""
        params: list[Tensor] = list(self.model.parameters())
        if self.constant_weight_bound is not None or not params:
            device = params[0].device if params else None
            if device not in self._constant_bounds:
                # in the parameters' scalar dtype (float64 for a float64 model; the default dtype rounded K to float32)
                dtype = torch.float64 if params and params[0].dtype == torch.float64 else torch.float32
                self._constant_bounds[device] = torch.tensor(
                    float(self.constant_weight_bound or 0.0), dtype=dtype, device=device
                )
            return [self._constant_bounds[device]]
        if foreach is None:
            foreach = all(p.device.type in ("cpu", "cuda", "xpu", "mps") for p in params)
        device = params[0].device
        with torch.no_grad():
            norms = _norms(params, foreach)
            if self.rigorous and self._bias:
                layer = self._head
                assert isinstance(layer, nn.Linear) and layer.bias is not None
                norms += _norms([torch.cat([layer.weight.flatten(), layer.bias])], foreach=False)
        if any(n.device != device for n in norms):
            norms = [n.to(device) for n in norms]
        return norms

    def epoch_stats(self, *, weight_decay: float = 0.0) -> EpochStats | None:
        """The current epoch's statistics (``None`` when no batch was recorded since :meth:`reset_epoch`).

        The weight bound is read now, and ``lipschitz = data_lipschitz + l2_term(weight_decay, K)``. Nothing is
        read on the host.
        """
        check_number("weight_decay", weight_decay, min_value=0.0)
        if self._batch is not None and not self._batch.folded:
            self._finish_batch()
        if self._deferred:  # a read: the pending K_z stay as they are, for epoch_values' float64 constants
            summary = self._folded(self._summary)
        else:
            self._reduce()
            summary = self._summary
        if summary is None:
            return None
        data = summary["data_lipschitz"]
        bound = self.weight_bound().to(device=data.device, dtype=data.dtype)
        total = data + l2_term(weight_decay, bound) if weight_decay != 0.0 else data
        return EpochStats(
            lipschitz=total,
            data_lipschitz=data,
            k_z=summary["k_z"],
            batch_size=summary["batch_size"],
            max_k_z=summary["max_k_z"],
            weight_bound=bound,
            batches=self._batches,
            examples=self._examples,
        )

    def epoch_values(self, *, weight_decay: float = 0.0) -> dict[str, Any] | None:
        """The current epoch's statistics as Python numbers, with one host read (what ``LipschitzLR.step()`` uses).

        The keys are :data:`EPOCH_FIELDS` (floats; ``batch_size`` an int) and ``batches``, with the meanings of
        :class:`EpochStats`; ``None`` when no batch was recorded since :meth:`reset_epoch`.

        For the paper's classification forms (``rigorous=False``, loss ``"softmax"`` or ``"bce"``) the device only
        takes the parameters' norms and stacks them with the pending ``K_z`` values (at most 256: see
        :class:`ActivationTracker`) for the one read; the maxima, the batch constants ``c_m K_z`` and ``L`` are
        then taken on the host in double precision, from the same values (a nan anywhere gives a nan, as the tensor
        path does). That is three operator calls per epoch instead of about 25: on the CPU,
        ``python -m benchmarks.lipschitz_hooks`` timed ``LipschitzLR.step()`` at 343-436 us against 466-800 us
        before. The other forms read :meth:`epoch_stats`.

        Example:
            >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
            >>> with ActivationTracker(model, "softmax") as tracker:
            ...     _ = model(torch.randn(16, 4))
            >>> values = tracker.epoch_values()
            >>> values["batch_size"], values["batches"]
            (16, 1)
            >>> abs(values["lipschitz"] - 2 / 3 * values["k_z"] / 16) < 1e-12  # eq. 23, k = 3
            True
        """
        check_number("weight_decay", weight_decay, min_value=0.0)
        if not self._deferred:
            return stats_values(self.epoch_stats(weight_decay=weight_decay))
        summary = self._summary
        if not self._pending and summary is None:
            return None
        # One stacked read: the running maxima of earlier reductions, every pending K_z, the parameters' norms.
        carried = [] if summary is None else [summary[name] for name in _SUMMARY]
        pending = [(m, kzs) for m, (kzs, _) in self._pending.items()]
        parts = [*carried, *(kz for _, kzs in pending for kz in kzs), *self._weight_norms()]
        ref = parts[0]
        parts = [t if t.dtype == ref.dtype and t.device == ref.device else t.to(ref) for t in parts]
        values = torch.stack(parts).tolist()
        # (L_b, K_z, m) candidates in the order _reduce keeps ties: earlier batches (the running maxima) first.
        found: list[tuple[float, float, int]] = []
        k_zs: list[float] = []
        if summary is not None:
            data, k_z, size, max_k_z = values[:4]
            found.append((data, k_z, int(size)))
            k_zs.append(max_k_z)
        pos = len(carried)
        for m, kzs in pending:
            top = _nan_max(values[pos : pos + len(kzs)])
            pos += len(kzs)
            found.append((self._coefficient(m) * top, top, m))
            k_zs.append(top)
        data, k_z, size = max(found, key=lambda c: c[0])
        if any(math.isnan(c[0]) for c in found):  # as torch.maximum: a nan constant makes the epoch's nan
            data = math.nan
        bound = _nan_max(values[pos:])
        return {
            "lipschitz": data + l2_term(weight_decay, bound) if weight_decay != 0.0 else data,
            "data_lipschitz": data,
            "k_z": k_z,
            "batch_size": size,
            "max_k_z": _nan_max(k_zs),
            "weight_bound": bound,
            "batches": self._batches,
        }

    def _coefficient(self, m: int) -> float:
        """``c_m`` with ``L_b = c_m K_z`` for the paper's classification forms (cached: validated once per size)."""
        coefficient = self._coefficients.get(m)
        if coefficient is None:
            coefficient = self._coefficients[m] = self._deferred_constant(1.0, m)
        return coefficient

    def reset_epoch(self) -> None:
        """Start a new epoch: forget every batch recorded so far (the latest batch stays readable)."""
        if self._batch is not None:
            self._batch.folded = True
        self._clear_pending()
        self._summary = None
        self._batches = 0
        self._examples = 0

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The per-epoch accumulators (tensors and counts), for checkpoints taken mid-epoch.

        A least-squares batch still waiting for its targets is not included.
        """
        batch = self._batch
        if batch is not None and not batch.folded and (not self.needs_targets or batch.targets is not None):
            self._finish_batch()  # a least-squares batch whose targets were given is complete: it counts
        self._reduce()
        summary = None if self._summary is None else {k: v.clone() for k, v in self._summary.items()}
        state: dict[str, Any] = {
            "summary": summary,
            "batches": self._batches,
            "examples": self._examples,
            "form": self._form(),
        }
        if self._deferred:  # the largest K_z of each batch size (see _reduce): c_m is applied when the epoch is read
            state["k_z_by_size"] = {m: kzs[0].clone() for m, (kzs, _) in self._pending.items() if kzs}
        return state

    def _form(self) -> dict[str, Any]:
        """What the batch constants of a state depend on (a state of another form cannot be continued here)."""
        return {
            "loss": self.loss,
            "rigorous": self.rigorous,
            "activation_norm": self.activation_norm,
            "num_classes": self.num_classes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: for the state of a tracker of another form (loss, ``rigorous``, ``activation_norm``,
                ``num_classes``): its epoch maxima are of other constants (a state saved before the form was
                recorded is taken as it is, unless it holds the paper forms' ``k_z_by_size``), and this tracker is
                left as it was.
        """
        saved, own = state.get("form"), self._form()
        if saved is not None and dict(saved) != own:
            differ = sorted(k for k in own if saved.get(k) != own[k])
            raise ValueError(
                f"ActivationTracker.load_state_dict: the state is of a tracker with other {', '.join(differ)} "
                f"({', '.join(f'{k}={saved.get(k)!r}' for k in differ)}; this one has "
                f"{', '.join(f'{k}={own[k]!r}' for k in differ)}): its epoch maxima are of other constants"
            )
        if state.get("k_z_by_size") and not self._deferred:
            raise ValueError(
                "ActivationTracker.load_state_dict: the state holds the paper forms' K_z per batch size, and this "
                "tracker computes other constants (rigorous=True or least squares)"
            )
        self.reset_epoch()
        summary = state["summary"]
        self._summary = None if summary is None else {k: v.clone() for k, v in summary.items()}
        for m, k_z in state.get("k_z_by_size", {}).items():
            self._pending[int(m)] = ([k_z.clone()], [])
        self._batches = int(state["batches"])
        self._examples = int(state["examples"])

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """A context in which forward passes are not recorded, even in training mode (e.g. a training-mode probe).

        Example:
            >>> model = nn.Sequential(nn.Linear(2, 3))
            >>> tracker = ActivationTracker(model, "softmax")
            >>> with tracker.paused():
            ...     _ = model(torch.zeros(4, 2))
            >>> tracker.batch_size is None
            True
        """
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
