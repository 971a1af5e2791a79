"""Hessian-vector products of a model's loss over a fixed dataset.

The loss is ``L(w) = sum_b (n_b / N) * loss_fn(model(x_b), y_b)`` over a fixed list of batches (batch-size
weights, so for a mean-reduced criterion it is the mean loss over all ``N`` samples), seen as a function of the
selected parameters ``w`` (flattened in ``model.parameters()`` order). :class:`HessianOperator` is the linear map
``v -> H(w) v`` on flat vectors; :func:`hvp` applies it once.

Two backends compute the same product:

* ``"double_backward"`` (reverse-over-reverse): ``g = grad(L, w, create_graph=True)`` then ``Hv = grad(g . v, w)``.
  The first backward's graph is built once per operator and reused by every matvec (``cache_graph``), so a matvec
  costs one extra backward through that graph.
* ``"forward_over_reverse"``: ``Hv = jvp(grad(L), (w,), (v,))`` with :mod:`torch.func`; a matvec recomputes the
  forward and backward passes, with forward-mode tangents riding along. It needs forward-mode derivatives of every
  op's backward (torch 2.13 has none for ``HuberLoss``, for instance) and cannot run BatchNorm in training mode
  (torch.func forbids the in-place update of running statistics); double backward has neither limit.

The default is chosen per device from measurement (``python -m benchmarks.curvature``: an MLP 64-128-128-10 on
the 1797 digits, full batch, one CPU thread, cost in multiples of one gradient): double backward 2.7 when it builds
its graph, 1.7 with the graph reused (1.5-1.6 for a tanh MLP); forward-over-reverse 4.0. Double backward with the
graph reused is therefore the default. Only the CPU has been measured; other devices use the same default until
measured. ``torch.func.linearize`` (1.0-1.3 per matvec) was tried too, but tracing costs about 60 gradients, more
than a whole estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from theorylr._validation import check_bool, check_choice, check_int
from theorylr.estimate._state import (
    MODES,
    as_batches,
    batch_weights,
    forward_context,
    select_params,
    tracks_running_stats,
    unflatten,
)

__all__ = ["BACKENDS", "HessianOperator", "default_backend", "hvp"]

BACKENDS = ("double_backward", "forward_over_reverse")

# Measured defaults per device type (see the module docstring); devices not listed use double backward too.
_DEFAULT_BACKEND = {"cpu": "double_backward"}

LossFn = Callable[[Any, Any], Tensor]
Reduce = Callable[[Tensor], Tensor]


def default_backend(device: torch.device | str) -> str:
    """The HVP backend used when none is named, for parameters on ``device``.

    Example:
        >>> default_backend("cpu")
        'double_backward'
    """
    return _DEFAULT_BACKEND.get(torch.device(device).type, "double_backward")


class HessianOperator:
    r"""The Hessian of a model's loss over fixed data, as a linear operator on flat parameter vectors.

    ``op(v)`` returns :math:`H(w)\,v` where :math:`H(w) = \nabla^2_w L(w)` and
    :math:`L(w) = \sum_b \tfrac{n_b}{N}\,\ell(f_w(x_b), y_b)` over the batches of ``data`` (see the module
    docstring). ``v`` and the result are flat vectors of length :attr:`dim` with the parameters' dtype and device,
    laid out in parameter order. Nothing is computed at construction; the first matvec builds what later ones reuse.

    The operator never changes the model: module modes are set for each forward pass and put back, train-mode
    passes run on copies of the buffers (BatchNorm statistics stay as they are), the global RNG is forked in train
    mode, and ``.grad`` is not touched. Use it as a context manager (or call :meth:`close`) to free the cached graph
    as soon as the estimate is done.

    Args:
        model: the network.
        loss_fn: a criterion ``loss_fn(outputs, targets) -> scalar tensor``, mean-reduced (e.g.
            ``nn.CrossEntropyLoss()``), so that the batch-size weighting gives the mean over all samples.
        data: an ``(inputs, targets)`` pair, or an iterable of such pairs (read once and kept, so every matvec
            sees the same batches). Tensors are moved to the parameters' device.
        params: the tensors to differentiate (default: every parameter of ``model`` that requires grad); they
            must share one dtype and device.
        backend: ``"double_backward"`` or ``"forward_over_reverse"`` (default: :func:`default_backend`).
        mode: ``"eval"`` (default: BatchNorm uses running statistics and dropout is off, so the loss is a
            deterministic function of the weights), ``"train"`` (batch statistics; dropout masks fixed by
            ``seed`` for the operator's life), or ``"current"`` (the modules' flags as they are).
        cache_graph: keep the first backward's graph between matvecs (double backward only). Default: ``True``
            for a single batch and ``False`` for several (several batches then cost one batch's memory at a
            time, at the price of a forward and backward per batch per matvec).
        reduce: a hook applied to every flat HVP and to the loss before they are returned, with the result used
            in their place. It is the seam for data-parallel estimates: each rank holds its own shard of the
            data, and ``reduce`` averages across ranks with one ``all_reduce`` per matvec (see below).
        seed: seeds the global RNG for train-mode forward passes (dropout); the caller's RNG state is restored.

    Data-parallel use (each rank holding an equal-sized shard, the same ``v`` on every rank, which the solvers
    guarantee when every rank passes the same starting vector or seed)::

        def average(t):
            torch.distributed.all_reduce(t)
            return t / torch.distributed.get_world_size()

        op = HessianOperator(model, loss_fn, local_batches, reduce=average)

    With unequal shards, weight each rank's contribution by its sample count inside ``reduce``.

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
        The curvature that Algorithm 2 of the "exact step size" Adam paper (``papers/003``, Section 4.3) maximises;
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
        reduce: Reduce | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module (got {type(model)!r})")
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable as loss_fn(outputs, targets) (got {loss_fn!r})")
        check_choice("mode", mode, MODES)
        check_int("seed", seed, min_value=0)
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
        if cache_graph is None:
            cache_graph = len(self.batches) == 1
        check_bool("cache_graph", cache_graph)
        self.cache_graph = cache_graph and backend == "double_backward"
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
        with torch.enable_grad():
            if self.backend == "forward_over_reverse":
                out = self._forward_over_reverse(v)
            elif self.cache_graph:
                out = self._cached_double_backward(v)
            else:
                out = self._double_backward(v)
        self.matvecs += 1
        return self._reduce(out)

    @property
    def loss(self) -> float:
        """``L(w)`` on the data at the current weights (after ``reduce``), from the first matvec or one forward."""
        if self._loss is None:
            with torch.no_grad():
                self._record_loss(self._total_loss())
        assert self._loss is not None
        return self._loss

    def close(self) -> None:
        """Free the cached graph (the operator stays usable: a later matvec rebuilds it)."""
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
        missing = [i for i, p in enumerate(self.params) if id(p) not in names]
        if missing:
            raise ValueError(
                f"params must be parameters of model for backend 'forward_over_reverse' (params[{missing[0]}] is not)"
            )
        return [names[id(p)] for p in self.params]

    def _reduce(self, t: Tensor) -> Tensor:
        return t if self.reduce is None else self.reduce(t)

    def _record_loss(self, loss: Tensor) -> None:
        if self._loss is None:
            self._loss = float(self._reduce(loss.detach().clone()))

    def _forward(self, x: Any, training: bool) -> Any:
        if not training:
            return self.model(x)
        # A training pass may update buffers in place (BatchNorm statistics): run it on copies, so the model's own
        # buffers stay as they are and the graph's saved tensors are never modified behind autograd's back.
        from torch.func import functional_call

        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        return functional_call(self.model, buffers, (x,)) if buffers else self.model(x)

    def _total_loss(self) -> Tensor:
        total: Tensor | None = None
        with forward_context(self.model, self.mode, self.seed) as training:
            for (x, y), w in zip(self.batches, self.weights):
                term = w * self.loss_fn(self._forward(x, training), y)
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
            loss = self._total_loss()
            self._record_loss(loss)
            self._grads = self._first_backward(loss)
        return self._hvp_from_grads(self._grads, v, retain=True)

    def _double_backward(self, v: Tensor) -> Tensor:
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for (x, y), w in zip(self.batches, self.weights):
            with forward_context(self.model, self.mode, self.seed) as training:
                loss = self.loss_fn(self._forward(x, training), y)
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
        for (x, y), w in zip(self.batches, self.weights):

            def loss_of(named: dict[str, Tensor], target: Any, x: Any = x) -> tuple[Tensor, Tensor]:
                loss = self.loss_fn(functional_call(self.model, named, (x,)), target)
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
            with forward_context(self.model, self.mode, self.seed):
                result: tuple[Any, ...] = jvp(fn, primal_args, tangent_args, has_aux=True)
            hv, loss = result[1], result[2]
            total += loss * w
            out.add_(torch.cat([hv[n].reshape(-1) for n in self._names]), alpha=w)
        self._record_loss(total)
        return out


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
    backward's graph.

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
        model, loss_fn, data, params=params, backend=backend, mode=mode, reduce=reduce, seed=seed
    ) as op:
        if isinstance(vector, Tensor):
            return op(vector)
        parts = list(vector)
        if len(parts) != len(op.params) or any(
            not isinstance(t, Tensor) or t.shape != p.shape for t, p in zip(parts, op.params)
        ):
            raise ValueError(
                "vector must be a flat tensor or a sequence of tensors shaped like the parameters "
                f"({[tuple(p.shape) for p in op.params]})"
            )
        flat = torch.cat([t.reshape(-1).to(dtype=op.dtype, device=op.device) for t in parts])
        return tuple(t.clone() for t in unflatten(op(flat), op.params))
