"""Hessian-vector products of a model's loss over a fixed dataset.

The loss is ``L(w) = sum_b (n_b / N) * loss_fn(model(x_b), y_b)`` over a fixed list of batches (batch-size
weights, so for a mean-reduced criterion it is the mean loss over all ``N`` samples), seen as a function of the
selected parameters ``w``, flattened in the order of ``params`` (by default ``model.parameters()`` order).
:class:`HessianOperator` is the linear map ``v -> H(w) v`` on flat vectors; :func:`hvp` applies it once.

Two backends compute the same product:

* ``"double_backward"`` (reverse-over-reverse): ``g = grad(L, w, create_graph=True)`` then ``Hv = grad(g . v, w)``.
  The first backward's graphs (one per batch, summed into one ``g``) are built once per operator and reused by every
  matvec (``cache_graph``), so a matvec costs one extra backward through them. Keeping the graphs of several
  batches holds all their activations at once; when they would not fit (see :class:`HessianOperator`), each matvec
  rebuilds one batch's graph at a time instead, at the price of a forward and a backward per batch.
* ``"forward_over_reverse"``: ``Hv = jvp(grad(L), (w,), (v,))`` with :mod:`torch.func`; a matvec recomputes the
  forward and backward passes, with forward-mode tangents riding along. It needs forward-mode derivatives of every
  op's backward (torch 2.13 has none for ``HuberLoss``, for instance) and cannot run BatchNorm in training mode
  (torch.func forbids the in-place update of running statistics); double backward has neither limit.

Both differentiate the forward pass twice, which PyTorch's fused attention kernels (flash, memory-efficient,
cuDNN, and the CPU's flash kernel behind ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``) do not
support. The operator's passes therefore run ``F.scaled_dot_product_attention`` on the math kernel
(:func:`torch.nn.attention.sdpa_kernel` with ``SDPBackend.MATH``, for the duration of each matvec). It computes
the same function, so the Hessian is that of the model as it runs with a fused kernel, up to rounding (the loss
agrees to float32 rounding in ``tests/estimate/test_attention_and_low_precision.py``).

The default is chosen per device from measurement (``python -m benchmarks.curvature``: an MLP 64-128-128-10 on
the 1797 digits, one CPU thread, cost in multiples of one full-batch gradient): double backward 2.7 when it builds
its graph, 1.7 with the graph reused (1.5-1.6 for a tanh MLP); forward-over-reverse 4.0. With the data in 8
batches (a loaded machine, where the one-batch reused figure was 1.4-2.0): 1.9-2.3 with the 8 graphs kept, about
1.1 times the one-batch reused figure of the same run, and 4.1-4.5 rebuilding them (1.6-1.7 and 3.3 in gradients
over the same 8 batches). Double backward with the graphs reused is therefore the default. Only the CPU has
been measured; other devices use the same default until measured. ``torch.func.linearize`` (1.0-1.3 per matvec)
was tried too, but tracing costs about 60 gradients, more than a whole estimate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, overload

import torch
from torch import Tensor, nn

from theorylr._validation import SEED_MAX, check_bool, check_choice, check_int, check_module
from theorylr.estimate._state import (
    MODES,
    as_batches,
    batch_weights,
    check_loss_fn,
    forward,
    forward_context,
    math_attention,
    scalar_loss,
    select_params,
    tracks_running_stats,
    unflatten,
)

__all__ = ["BACKENDS", "HessianOperator", "default_backend", "default_graph_budget", "hvp"]

BACKENDS = ("double_backward", "forward_over_reverse")

# Measured defaults per device type (see the module docstring); devices not listed use double backward too.
_DEFAULT_BACKEND = {"cpu": "double_backward"}

# The graph budget where the free memory of the parameters' device cannot be read (devices other than CPU and CUDA).
_FALLBACK_GRAPH_BUDGET = 2**30

LossFn = Callable[[Any, Any], Tensor]
Reduce = Callable[[Tensor], Tensor]


def default_backend(device: torch.device | str) -> str:
    """The HVP backend used when none is named, for parameters on ``device``.

    Example:
        >>> default_backend("cpu")
        'double_backward'
    """
    return _DEFAULT_BACKEND.get(_device(device).type, "double_backward")


def _device(device: Any) -> torch.device:
    """``torch.device(device)``, with a message that names the argument."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch.device or a device string such as 'cpu' or 'cuda:0' (got {device!r})"
        ) from None


def _free_host_memory() -> int | None:
    """Bytes of host memory available to this process (Linux: ``MemAvailable``, capped by a cgroup v2 limit)."""
    free: int | None = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            free = min(free, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return free


def default_graph_budget(device: torch.device | str) -> int:
    """Bytes that kept graphs may take on ``device`` when :class:`HessianOperator` chooses (``cache_graph=None``).

    Half of the memory free now: ``torch.cuda.mem_get_info`` on CUDA; on the CPU, the host's available memory
    (Linux ``MemAvailable``, capped by a cgroup v2 limit; the free pages elsewhere). 1 GiB where neither is known.

    Example:
        >>> default_graph_budget("cpu") > 0
        True
    """
    device = _device(device)
    free: int | None = None
    if device.type == "cuda":
        free = int(torch.cuda.mem_get_info(device)[0])
    elif device.type == "cpu":
        free = _free_host_memory()
    return _FALLBACK_GRAPH_BUDGET if free is None else free // 2


def _storage_key(t: Tensor) -> tuple[int, int] | None:
    """``(address, bytes)`` of a tensor's storage; ``None`` for tensors without one (sparse, nested, wrappers)."""
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _saved_tensors(node: Any) -> Iterator[Tensor]:
    """The tensors an autograd node keeps for its backward (``_saved_*`` of built-in nodes, or a custom
    Function's ``saved_tensors``)."""
    names = [name for name in dir(node) if name.startswith("_saved_")]
    if hasattr(node, "saved_tensors"):
        names.append("saved_tensors")
    for name in names:
        try:
            value = getattr(node, name)
        except RuntimeError:  # already freed
            continue
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            yield from (t for t in value if isinstance(t, Tensor))


def _graph_bytes(roots: Iterable[Tensor], held: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages saved in the autograd graph behind ``roots``, except those of ``held``.

    A walk over the graph's nodes (each once), reading what each keeps for backward: what keeping the graph costs.
    Storages are counted once however many tensors view them.
    """
    seen: set[int] = set()
    for t in held:
        key = _storage_key(t)
        if key is not None:
            seen.add(key[0])
    total = 0
    visited: set[Any] = set()
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in visited:
            continue
        visited.add(node)
        for t in _saved_tensors(node):
            key = _storage_key(t)
            if key is None:
                total += t.numel() * t.element_size()
            elif key[0] != 0 and key[0] not in seen:
                seen.add(key[0])
                total += key[1]
        stack.extend(f for f, _ in node.next_functions if f is not None)
    return total


class HessianOperator:
    r"""The Hessian of a model's loss over fixed data, as a linear operator on flat parameter vectors.

    ``op(v)`` returns :math:`H(w)\,v` where :math:`H(w) = \nabla^2_w L(w)` and
    :math:`L(w) = \sum_b \tfrac{n_b}{N}\,\ell(f_w(x_b), y_b)` over the batches of ``data`` (see the module
    docstring). ``v`` and the result are flat vectors of length :attr:`dim` with the parameters' dtype and device,
    laid out in parameter order. Nothing is computed at construction; the first matvec builds what later ones reuse.

    The operator never changes the model: module modes are set for each forward pass and put back, train-mode
    passes run on copies of the buffers (BatchNorm statistics stay as they are), the global RNG is forked in train
    mode, and ``.grad`` is not touched. Use it as a context manager (or call :meth:`close`) to free the kept graphs
    as soon as the estimate is done. Its forward passes run attention on PyTorch's math kernel, the one with a
    double backward and forward-mode derivatives (see the module docstring): a model with ``nn.MultiheadAttention``
    or ``F.scaled_dot_product_attention`` needs no change, and its loss is the same up to rounding.

    Graphs (double backward): with ``cache_graph=True`` the first matvec runs the forward and first backward
    (``create_graph=True``) of every batch and keeps these graphs; every matvec is then one double backward through
    them (on the benchmark, about as much for eight batches as for one: see the module docstring). With
    ``cache_graph=False`` each matvec runs forward, first backward and double backward batch by batch, freeing each
    batch's graph before the next: one batch's activations in memory at a time, about twice the time per matvec.
    ``None`` (the default) chooses: one batch keeps its graph (a matvec needs that graph anyway, so keeping it adds
    no peak memory); with several, the first matvec builds the first batch's graph, adds up the bytes of the tensors
    it keeps for backward (activations and the first backward's own saved tensors, each storage once; parameters,
    buffers and data excluded), extrapolates to all batches by their sample counts (:attr:`graph_bytes`), and keeps
    the graphs if that fits ``graph_budget``, else rebuilds. The choice is then fixed for the operator's life
    (:attr:`cache_graph`, ``None`` until made); both give the same products. Memory that a custom autograd Function
    holds outside ``save_for_backward`` is not seen.

    Args:
        model: the network.
        loss_fn: a criterion ``loss_fn(outputs, targets) -> scalar tensor``, mean-reduced (e.g.
            ``nn.CrossEntropyLoss()``), so that the batch-size weighting gives the mean over all samples. A
            criterion whose ``reduction`` attribute is not ``"mean"`` is refused.
        data: an ``(inputs, targets)`` pair, or an iterable of such pairs (read once and kept, so every matvec
            sees the same batches). Tensors are moved to the parameters' device.
        params: the parameters of ``model`` to differentiate (default: all that require grad); they
            must share one dtype and device.
        backend: ``"double_backward"`` or ``"forward_over_reverse"`` (default: :func:`default_backend`).
        mode: ``"eval"`` (default: BatchNorm uses running statistics and dropout is off, so the loss is a
            deterministic function of the weights), ``"train"`` (batch statistics; dropout masks fixed by
            ``seed`` for the operator's life), or ``"current"`` (the modules' flags as they are).
        cache_graph: keep the graphs of every batch between matvecs (double backward only; see above).
            ``None`` (default): one batch keeps its graph, several keep theirs when they fit ``graph_budget``.
        graph_budget: bytes the graphs of all batches may take for ``cache_graph=None`` to keep them (default:
            :func:`default_graph_budget` of the parameters' device when the choice is made: half of the free
            memory). Ignored when ``cache_graph`` is given.
        reduce: a hook applied to every flat HVP and to the loss before they are returned, with the result used
            in their place. It is the seam for data-parallel estimates: each rank holds its own shard of the
            data, and ``reduce`` averages across ranks with one ``all_reduce`` per matvec (see below).
        seed: seeds the global RNG for train-mode forward passes (dropout): ``seed + i`` before the forward of
            batch ``i``, so that a batch's masks are the same in every matvec, with its graph kept or rebuilt, and
            differ between batches; the caller's RNG state is restored.

    Data-parallel use (each rank holding an equal-sized shard, the same ``v`` on every rank, which the solvers
    guarantee when every rank passes the same starting vector or seed)::

        def average(t):
            torch.distributed.all_reduce(t)
            return t / torch.distributed.get_world_size()

        op = HessianOperator(model, loss_fn, local_batches, reduce=average)

    With unequal shards, weight each rank's contribution by its sample count inside ``reduce``
    (:func:`theorylr.distributed.mean_reduce` does both). ``model`` may be the ``DistributedDataParallel`` wrapper:
    the passes run on its ``module``, since DDP's forward would add collectives of its own (a buffer broadcast per
    batch) that ranks with different numbers of batches would not pair.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> model = nn.Linear(3, 1).double()
        >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
        >>> with HessianOperator(model, nn.MSELoss(), (x, y)) as op:
        ...     hv = op(torch.ones(op.dim, dtype=torch.float64))
        >>> hv.shape
        torch.Size([4])
        >>> X = torch.cat([x, torch.ones(8, 1, dtype=torch.float64)], 1)  # least squares: H = 2 X^T X / n
        >>> torch.allclose(hv, 2 * X.T @ X @ torch.ones(4, dtype=torch.float64) / 8)
        True

    Reference:
        The curvature that Algorithm 2 of the "exact step size" Adam paper (Section 4.3) maximises;
        Pearlmutter (1994) for Hessian-vector products by differentiation.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        *,
        params: Iterable[Tensor] | None = None,
        backend: str | None = None,
        mode: str = "eval",
        cache_graph: bool | None = None,
        graph_budget: int | None = None,
        reduce: Reduce | None = None,
        seed: int = 0,
    ) -> None:
        check_module("model", model)
        check_loss_fn(loss_fn)
        check_choice("mode", mode, MODES)
        check_int("seed", seed, min_value=0, max_value=SEED_MAX)
        if reduce is not None and not callable(reduce):
            raise ValueError(f"reduce must be a callable Tensor -> Tensor or None (got {reduce!r})")
        self.params = select_params(model, params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        if backend is None:
            backend = default_backend(self.device)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.batches = as_batches(data, self.device)
        self.weights = batch_weights(self.batches)
        if cache_graph is not None:
            check_bool("cache_graph", cache_graph)
        if graph_budget is not None:
            check_int("graph_budget", graph_budget, min_value=0)
        if backend != "double_backward":
            cache_graph = False
        elif cache_graph is None and len(self.batches) == 1:
            cache_graph = True
        #: Whether the graphs are kept between matvecs; ``None`` until the automatic choice is made.
        self.cache_graph: bool | None = cache_graph
        self.graph_budget = graph_budget
        #: The estimated bytes of all batches' graphs, when the automatic choice measured them (else ``None``).
        self.graph_bytes: int | None = None
        self.model = model
        self.loss_fn = loss_fn
        self.mode = mode
        self.reduce = reduce
        self.seed = seed
        self.dim = sum(p.numel() for p in self.params)
        self.matvecs = 0
        self._names = self._param_names() if backend == "forward_over_reverse" else []
        if backend == "forward_over_reverse" and tracks_running_stats(model, mode):
            raise ValueError(
                "backend 'forward_over_reverse' cannot run BatchNorm in training mode (torch.func forbids the in-place "
                "update of its running statistics); use backend='double_backward' or mode='eval'"
            )
        self._grads: tuple[Tensor, ...] | None = None
        self._loss: float | None = None

    # -- public ----------------------------------------------------------------------------------------------
    def __call__(self, vector: Tensor) -> Tensor:
        """``H v`` for a flat ``vector`` of length :attr:`dim` (cast to the parameters' dtype and device)."""
        if not isinstance(vector, Tensor) or vector.numel() != self.dim:
            got = tuple(vector.shape) if isinstance(vector, Tensor) else type(vector)
            raise ValueError(f"vector must be a tensor with {self.dim} elements (got {got})")
        v = vector.reshape(-1).to(dtype=self.dtype, device=self.device)
        # Differentiable also when called under torch.no_grad() or torch.inference_mode() (e.g. from an evaluation
        # loop): the graphs are built in normal mode. Attention on the math kernel: the fused ones have no double
        # backward and no forward-mode derivatives.
        with torch.inference_mode(False), torch.enable_grad(), math_attention():
            if self.backend == "forward_over_reverse":
                out = self._forward_over_reverse(v)
            else:
                try:
                    out = self._double_backward(v) if self.cache_graph is False else self._cached_double_backward(v)
                except RuntimeError as exc:
                    if "double backward" not in str(exc):
                        raise
                    raise RuntimeError(
                        f"{exc}. A torch.compile'd model has no double backward: pass backend='forward_over_reverse' "
                        "(torch.func), or the uncompiled module (compiled_model._orig_mod)"
                    ) from exc
        self.matvecs += 1
        return self._reduce(out)

    @property
    def loss(self) -> float:
        """``L(w)`` on the data at the current weights (after ``reduce``), from the first matvec or one forward."""
        if self._loss is None:
            with torch.no_grad(), math_attention():  # the kernel of the matvecs' passes, whose loss this is too
                self._record_loss(self._total_loss())
        assert self._loss is not None
        return self._loss

    def close(self) -> None:
        """Free the kept graphs (the operator stays usable: a later matvec rebuilds them)."""
        self._grads = None

    def __enter__(self) -> HessianOperator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------------------
    def _param_names(self) -> list[str]:
        names = {id(p): name for name, p in self.model.named_parameters()}
        return [names[id(p)] for p in self.params]  # select_params checked that each is the model's

    def _reduce(self, t: Tensor) -> Tensor:
        return t if self.reduce is None else self.reduce(t)

    def _record_loss(self, loss: Tensor) -> None:
        if self._loss is None:
            self._loss = float(self._reduce(loss.detach().clone()))

    def _forward(self, x: Any, training: bool) -> Any:
        return forward(self.model, x, training)

    def _batch_loss(self, index: int, x: Any, y: Any) -> Tensor:
        # Each batch's forward in its own context: in train mode the RNG is seeded with seed + index before the
        # batch, so the dropout masks do not depend on which path (graphs kept, rebuilt, forward-over-reverse) runs
        # the batches, and batches of the same shape still draw different masks.
        with forward_context(self.model, self.mode, self.seed + index) as training:
            return scalar_loss(self.loss_fn(self._forward(x, training), y))

    def _total_loss(self) -> Tensor:
        total: Tensor | None = None
        for b, ((x, y), w) in enumerate(zip(self.batches, self.weights)):
            term = w * self._batch_loss(b, x, y)
            total = term if total is None else total + term
        assert total is not None
        return total

    def _hvp_from_grads(self, grads: Sequence[Tensor], v: Tensor, retain: bool) -> Tensor:
        vs = unflatten(v, self.params)
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        if not live:  # the loss is at most linear in every parameter
            return torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        hv = torch.autograd.grad(
            [grads[i] for i in live],
            self.params,
            grad_outputs=[vs[i] for i in live],
            retain_graph=retain,
            allow_unused=True,
            materialize_grads=True,
        )
        return torch.cat([h.reshape(-1) for h in hv])

    def _first_backward(self, loss: Tensor) -> tuple[Tensor, ...]:
        return torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True)

    def _cached_double_backward(self, v: Tensor) -> Tensor:
        if self._grads is None:
            out = self._build_graphs(v)
            if out is not None:  # the automatic choice was to rebuild; the product was computed on the way
                return out
        assert self._grads is not None
        return self._hvp_from_grads(self._grads, v, retain=True)

    def _held_tensors(self) -> list[Tensor]:
        """Tensors that live anyway (not counted in a graph's size): parameters, buffers, data."""
        held = [*self.model.parameters(), *self.model.buffers(), *self.params]
        for x, y in self.batches:
            held += [t for t in (x, y) if isinstance(t, Tensor)]
        return held

    def _build_graphs(self, v: Tensor) -> Tensor | None:
        """Build and keep ``sum_b grad(w_b L_b)`` with its graph in ``_grads`` and return ``None``; or, when the
        automatic choice (made on the first batch) is to rebuild, return ``H v`` with nothing kept."""
        grads: tuple[Tensor, ...] | None = None
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for b, ((x, y), w) in enumerate(zip(self.batches, self.weights)):
            loss = self._batch_loss(b, x, y)
            g = self._first_backward(w * loss)
            total += loss.detach() * w
            if self.cache_graph is None:  # the automatic choice, on the first batch's graph
                self.graph_bytes = math.ceil(_graph_bytes(g, self._held_tensors()) / w)
                budget = self.graph_budget if self.graph_budget is not None else default_graph_budget(self.device)
                self.cache_graph = self.graph_bytes <= budget
                if not self.cache_graph:
                    out = self._hvp_from_grads(g, v, retain=False)
                    del g, loss
                    return self._double_backward(v, start=b + 1, out=out, total=total)
            grads = g if grads is None else tuple(a + c for a, c in zip(grads, g))
        self._record_loss(total)
        self._grads = grads
        return None

    def _double_backward(
        self, v: Tensor, start: int = 0, out: Tensor | None = None, total: Tensor | None = None
    ) -> Tensor:
        """``H v`` batch by batch from ``start`` (added to ``out``), freeing each batch's graph before the next."""
        if out is None:
            out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        if total is None:
            total = torch.zeros((), dtype=self.dtype, device=self.device)
        for b in range(start, len(self.batches)):
            (x, y), w = self.batches[b], self.weights[b]
            loss = self._batch_loss(b, x, y)
            total += loss.detach() * w
            out.add_(self._hvp_from_grads(self._first_backward(loss), v, retain=False), alpha=w)
        self._record_loss(total)
        return out

    def _forward_over_reverse(self, v: Tensor) -> Tensor:
        from torch.func import functional_call, grad, jvp

        primals = {n: p.detach() for n, p in zip(self._names, self.params)}
        tangents = dict(zip(self._names, unflatten(v, self.params)))
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for b, ((x, y), w) in enumerate(zip(self.batches, self.weights)):

            def loss_of(named: dict[str, Tensor], target: Any, x: Any = x) -> tuple[Tensor, Tensor]:
                loss = scalar_loss(self.loss_fn(functional_call(self.model, named, (x,)), target))
                return loss, loss.detach()

            # A floating-point target rides along as a primal with an explicit zero tangent: left implicit, forward
            # AD gives it an immutable ZeroTensor tangent, which mse_loss's double backward writes into (torch 2.13).
            if isinstance(y, Tensor) and y.is_floating_point():
                primal_args: tuple[Any, ...] = (primals, y)
                tangent_args: tuple[Any, ...] = (tangents, torch.zeros_like(y))
                fn: Callable[..., Any] = grad(loss_of, has_aux=True)
            else:

                def fixed_target(named: dict[str, Tensor], y: Any = y) -> tuple[Tensor, Tensor]:
                    return loss_of(named, y)

                primal_args, tangent_args = (primals,), (tangents,)
                fn = grad(fixed_target, has_aux=True)
            with forward_context(self.model, self.mode, self.seed + b):
                result: tuple[Any, ...] = jvp(fn, primal_args, tangent_args, has_aux=True)
            hv, loss = result[1], result[2]
            total += loss * w
            out.add_(torch.cat([hv[n].reshape(-1) for n in self._names]), alpha=w)
        self._record_loss(total)
        return out


@overload
def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    vector: Tensor,
    *,
    params: Iterable[Tensor] | None = None,
    backend: str | None = None,
    mode: str = "eval",
    reduce: Reduce | None = None,
    seed: int = 0,
) -> Tensor: ...


@overload
def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    vector: Sequence[Tensor],
    *,
    params: Iterable[Tensor] | None = None,
    backend: str | None = None,
    mode: str = "eval",
    reduce: Reduce | None = None,
    seed: int = 0,
) -> tuple[Tensor, ...]: ...


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    vector: Tensor | Sequence[Tensor],
    *,
    params: Iterable[Tensor] | None = None,
    backend: str | None = None,
    mode: str = "eval",
    reduce: Reduce | None = None,
    seed: int = 0,
) -> Tensor | tuple[Tensor, ...]:
    r"""One Hessian-vector product :math:`\nabla^2_w L(w)\,v` of a model's loss over ``data``.

    ``L`` is the batch-size-weighted loss of :class:`HessianOperator` (whose arguments this function shares).
    For several products at the same weights, build a :class:`HessianOperator` once instead: it reuses the first
    backward's graphs. A single product keeps no graph: each batch's graph is freed once its part is taken.

    Args:
        model, loss_fn, data, params, backend, mode, reduce, seed: as for :class:`HessianOperator`.
        vector: ``v``, either flat (``dim`` elements, parameter order) or a sequence of tensors shaped like the
            parameters.

    Returns:
        ``H v`` in the form ``vector`` came in: a flat tensor, or a tuple of tensors shaped like the parameters.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> hvp(model, nn.MSELoss(), (x, y), [torch.ones(1, 2, dtype=torch.float64)])  # H = X^T X = diag(1, 9)
        (tensor([[1., 9.]], dtype=torch.float64),)
    """
    with HessianOperator(
        model, loss_fn, data, params=params, backend=backend, mode=mode, cache_graph=False, reduce=reduce, seed=seed
    ) as op:
        if isinstance(vector, Tensor):
            return op(vector)
        try:
            parts = list(vector)
        except TypeError:
            parts = []  # not a sequence: the message below
        if len(parts) != len(op.params) or any(
            not isinstance(t, Tensor) or t.shape != p.shape for t, p in zip(parts, op.params)
        ):
            raise ValueError(
                "vector must be a flat tensor or a sequence of tensors shaped like the parameters "
                f"({[tuple(p.shape) for p in op.params]})"
            )
        flat = torch.cat([t.reshape(-1).to(dtype=op.dtype, device=op.device) for t in parts])
        return tuple(t.clone() for t in unflatten(op(flat), op.params))
