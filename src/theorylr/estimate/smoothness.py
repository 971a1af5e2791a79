"""The smoothness estimate K_hat of Algorithm 2: the largest Hessian spectral norm over initialisation samples."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from theorylr._validation import SEED_MAX, check_bool, check_int, check_module
from theorylr._warnings import warn
from theorylr.estimate._state import as_batches, check_loss_fn, preserved, seed_global, select_params
from theorylr.estimate.hvp import LossFn, Reduce
from theorylr.estimate.spectral import SpectralNormResult, hessian_spectral_norm

__all__ = ["Sampler", "SmoothnessEstimate", "SmoothnessSample", "reset_parameters_sampler", "smoothness"]

#: ``sampler(model, generator)`` re-draws the model's weights in place; what it returns is ignored (``init_weights``
#: returns the model).
Sampler = Callable[[nn.Module, torch.Generator], object]


@dataclass(frozen=True)
class SmoothnessSample:
    """One weight sample of Algorithm 2.

    Attributes:
        seed: the seed its weights were drawn with (the sampler got ``torch.Generator().manual_seed(seed)``, and
            the global RNG was seeded with it too).
        result: the Hessian's spectral norm at those weights (``result.seed`` seeds its start vector).

    Repeating one sample on its own::

        sampler(model, torch.Generator().manual_seed(sample.seed))  # after seeding the global RNG with it too
        hessian_spectral_norm(model, loss_fn, data, seed=sample.result.seed)  # == sample.result
    """

    seed: int
    result: SpectralNormResult

    @property
    def value(self) -> float:
        """``||H(w_j)||_2`` of this sample."""
        return self.result.value

    def to_dict(self) -> dict[str, Any]:
        """The sample as a flat dict: ``seed`` (weights), ``vector_seed`` and the result's fields."""
        out = self.result.to_dict()
        out["vector_seed"] = out.pop("seed")
        return {"seed": self.seed, **out}


@dataclass(frozen=True)
class SmoothnessEstimate:
    r"""The outcome of :func:`smoothness`.

    Attributes:
        k_hat: :math:`\hat K = \max_j \|\nabla^2 L(w_j)\|_2` over the samples (NaN if a sample's is NaN).
        samples: one :class:`SmoothnessSample` per weight draw, in draw order.
        argmax: index into ``samples`` of the sample that gave ``k_hat``.
        current: the spectral norm at the model's own weights when asked for (``at_current=True``), else
            ``None``; it does not enter ``k_hat``.

    Example:
        >>> from theorylr.estimate import SpectralNormResult
        >>> samples = tuple(
        ...     SmoothnessSample(seed, SpectralNormResult(v, v, -v / 2, 20, 0.0, True, 2.3, "lanczos", 0))
        ...     for seed, v in [(11, 1.5), (12, 4.0), (13, 2.5)]
        ... )
        >>> est = SmoothnessEstimate(k_hat=4.0, samples=samples, argmax=1)
        >>> est.samples[est.argmax].seed, est.matvecs, est.converged
        (12, 60, True)
    """

    k_hat: float
    samples: tuple[SmoothnessSample, ...]
    argmax: int
    current: SpectralNormResult | None = None

    @property
    def matvecs(self) -> int:
        """Hessian-vector products spent over all samples (and the current weights)."""
        extra = self.current.matvecs if self.current is not None else 0
        return sum(s.result.matvecs for s in self.samples) + extra

    @property
    def converged(self) -> bool:
        """Every sample's eigensolver converged."""
        return all(s.result.converged for s in self.samples)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs: ``k_hat``, ``argmax``, totals, every sample, and ``current``."""
        return {
            "k_hat": self.k_hat,
            "argmax": self.argmax,
            "num_samples": len(self.samples),
            "matvecs": self.matvecs,
            "converged": self.converged,
            "samples": [s.to_dict() for s in self.samples],
            "current": self.current.to_dict() if self.current is not None else None,
        }


def reset_parameters_sampler(model: nn.Module, generator: torch.Generator) -> None:
    """The default sampler: re-draw the weights with every module's own ``reset_parameters()``.

    Modules are reset children first, each before its parent (post-order of ``model.modules()``), as a model's
    construction runs them: a parent whose ``reset_parameters()`` re-initialises a child (a zero-initialised head
    or residual branch) has the last word, as it had when the model was built. An ``nn.MultiheadAttention`` is
    reset with its own ``_reset_parameters()`` (Xavier ``in_proj``, zero biases), which it has in place of the
    public method.

    ``reset_parameters`` draws from the global RNG, so the caller (:func:`smoothness`) seeds it with
    ``generator.initial_seed()`` first and restores it afterwards; this function does that seeding too, so it can
    be called on its own. Parameters that no module's ``reset_parameters`` re-draws (e.g. a bare ``nn.Parameter``
    on a custom module) keep their values, with a warning: pass your own sampler for those.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 2)
        >>> reset_parameters_sampler(model, torch.Generator().manual_seed(1))
        >>> w = model.weight.clone()
        >>> reset_parameters_sampler(model, torch.Generator().manual_seed(1))
        >>> torch.equal(w, model.weight)
        True
    """
    check_module("model", model)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (got {type(generator).__name__})")
    _reset_parameters(model, generator, keep=())


def _kept_tensors(model: nn.Module, chosen: set[int]) -> list[Tensor]:
    """What the default sampler leaves alone: the parameters not in ``chosen`` (by ``id``), and the buffers of every
    module whose parameters all are such (a frozen BatchNorm's running statistics). A module without parameters of
    its own (a BatchNorm with ``affine=False``) follows its nearest enclosing module that has parameters: inside a
    frozen backbone its statistics are kept, in a trained part they are reset with the rest."""
    keep: list[Tensor] = [p for p in model.parameters() if id(p) not in chosen]
    modules = dict(model.named_modules())
    for name, module in modules.items():
        buffers = list(module.buffers(recurse=False))
        if not buffers:
            continue
        owner, own = name, list(module.parameters(recurse=False))
        while not own and owner:  # up to the nearest enclosing module with parameters
            owner = owner.rpartition(".")[0]
            own = list(modules[owner].parameters())
        if own and all(id(p) not in chosen for p in own):
            keep += buffers
    return keep


def _check_in_place(model: nn.Module, selected: Sequence[Tensor]) -> None:
    """A sampler must write the parameters in place: one that replaced a selected parameter would leave the
    Hessian taken over tensors the model no longer uses."""
    live = {id(p) for p in model.parameters()}
    gone = [i for i, p in enumerate(selected) if id(p) not in live]
    if gone:
        raise ValueError(
            f"sampler must write the model's parameters in place (e.g. p.copy_(...) or nn.init.*_ on p); it "
            f"replaced {len(gone)} of the {len(selected)} selected parameter tensors with new objects. The model's "
            "own parameters are put back with their values"
        )


def _children_first(module: nn.Module, seen: set[int] | None = None) -> Iterator[nn.Module]:
    """``module.modules()`` in post-order: each module after all of its submodules (a shared one once, first met)."""
    seen = set() if seen is None else seen
    seen.add(id(module))
    for child in module.children():
        if id(child) not in seen:
            yield from _children_first(child, seen)
    yield module


def _reset_parameters(model: nn.Module, generator: torch.Generator, keep: Sequence[Tensor]) -> None:
    """:func:`reset_parameters_sampler`, except that the tensors in ``keep`` get their values back afterwards."""
    saved = [t.detach().clone() for t in keep]
    seed_global(generator.initial_seed(), model)
    covered: set[int] = {id(t) for t in keep}
    for module in _children_first(model):
        reset = getattr(module, "reset_parameters", None)
        if isinstance(module, nn.MultiheadAttention) and not callable(reset):
            reset = getattr(module, "_reset_parameters", None)  # torch's attention keeps its initialiser private
        if callable(reset):
            reset()
            covered.update(id(p) for p in module.parameters(recurse=False))
    with torch.no_grad():
        for t, value in zip(keep, saved):
            t.copy_(value)
    left = [name for name, p in model.named_parameters() if id(p) not in covered]
    if left:
        warn(
            f"reset_parameters_sampler (the default sampler): no reset_parameters() re-draws {left}; they keep their "
            "current values. Pass a sampler that draws them from your initialisation: smoothness(sampler=...), or "
            "estimate_kwargs={'sampler': ...} for exact_step_adam and suggest.",
            UserWarning,
        )


class _NoBar:
    """What :func:`_progress` returns without a bar: the estimators then need torch alone (tqdm is imported only
    for a bar that is shown)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **kwargs: Any) -> None:
        return None


def _progress(enabled: bool | None, total: int) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="smoothness", unit="sample", file=sys.stderr, leave=False)


def smoothness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    num_samples: int = 10,
    sampler: Sampler | None = None,
    seed: int = 0,
    at_current: bool = False,
    progress: bool | None = None,
    method: str = "lanczos",
    tol: float = 1e-4,
    max_matvecs: int = 100,
    mode: str = "eval",
    params: Iterable[Tensor] | None = None,
    backend: str | None = None,
    cache_graph: bool | None = None,
    reduce: Reduce | None = None,
) -> SmoothnessEstimate:
    r"""Algorithm 2: estimate the loss's smoothness as the largest Hessian spectral norm over initial weights.

    .. math::
        \hat K = \max_{1 \le j \le N} \|\nabla^2_w L(w_j)\|_2, \qquad w_j \sim \mathcal{W} \text{ i.i.d.}

    where :math:`\mathcal{W}` is the initialisation distribution and each spectral norm is
    :math:`\max(|\lambda_{\max}|, |\lambda_{\min}|)` from :func:`hessian_spectral_norm`. The same data (read once)
    is used for every sample. Sample ``j`` draws its weights with ``sampler(model, generator)``, ``generator``
    being a CPU :class:`torch.Generator` seeded with ``samples[j].seed`` (the global RNG is seeded with the same
    value, for samplers such as ``reset_parameters`` that use it); the per-sample seeds come from ``seed``, so the
    whole estimate is reproducible, and one sample can be repeated alone from its two recorded seeds.

    The model comes back exactly as it was: weights and buffers, each module's train/eval flag, and the global
    RNG state (CPU and the model's CUDA devices) are restored, also on error. The sampled weights are written into
    the parameters in place, so their autograd versions move: a graph built before the call can no longer be
    differentiated (unlike :func:`hessian_spectral_norm`, which writes nothing back that it did not change).

    Args:
        model: the network (its current weights are only used with ``at_current=True``).
        loss_fn: a mean-reduced criterion ``loss_fn(outputs, targets)``.
        data: an ``(inputs, targets)`` pair or an iterable of such pairs (the paper's mini-batch variant: the
            loss is the batch-size-weighted average over the fixed list of batches).
        num_samples: ``N`` (default 10).
        sampler: ``sampler(model, generator)`` re-draws the model's parameters in place (default:
            :func:`reset_parameters_sampler`, each module's own ``reset_parameters()``, restricted to the
            parameters the Hessian is taken over: ``params``, or those that require grad. The others, e.g. a frozen
            pretrained backbone, keep their values in every sample, and so do the buffers of modules whose
            parameters all keep theirs, such as a frozen BatchNorm's running statistics; a module without parameters
            of its own follows the nearest enclosing module that has some).
        seed: master seed for the samples (default 0).
        at_current: also estimate at the model's current weights (``current``; not part of ``k_hat``).
        progress: show a tqdm bar on stderr; ``None`` (default) shows it only when stderr is a terminal.
        method, tol, max_matvecs, mode, params, backend, cache_graph, reduce: as for
            :func:`hessian_spectral_norm` (``mode="eval"`` by default: BatchNorm uses running statistics and
            dropout is off, so each sample's loss is a deterministic function of its weights).

    Returns:
        :class:`SmoothnessEstimate`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> data = (torch.randn(32, 4), torch.randint(0, 3, (32,)))
        >>> est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=3)
        >>> est.k_hat == max(s.value for s in est.samples) == est.samples[est.argmax].value
        True

    Reference:
        The exact-step Adam paper, Algorithm 2 and Theorem 4 (``K_hat`` converges in distribution to ``K`` as ``N``
        grows, provided ``W`` has full support).

    .. note::
        Departures from the paper: the spectral norm is computed by Lanczos by default instead of the power
        method (see :func:`hessian_spectral_norm`), and with the power method both ends of the spectrum are
        found, so a dominant negative eigenvalue is counted by its magnitude. Theorem 4 needs a full-support
        ``W``; the usual initialisations (uniform on a bounded box) are not, so ``K_hat`` estimates the smoothness
        over the region where training starts, which is what the step size uses. The paper defers its mini-batch
        algorithm to an appendix that our copy lacks; we read it as the same Algorithm 2 on the batch-size-weighted
        loss over one fixed list of batches.
    """
    check_module("model", model)
    check_int("num_samples", num_samples, min_value=1)
    check_int("seed", seed, min_value=0, max_value=SEED_MAX)
    check_bool("at_current", at_current)
    if progress is not None:
        check_bool("progress", progress)
    if sampler is not None and not callable(sampler):
        raise ValueError(f"sampler must be a callable sampler(model, generator) or None (got {sampler!r})")
    check_loss_fn(loss_fn)
    selected = select_params(model, params)  # validated before any sample
    draw: Sampler
    if sampler is None:
        # The default draws only the parameters the Hessian is taken over: the others (frozen, e.g. a pretrained
        # backbone, or left out of ``params``) and the buffers of modules all of whose parameters are such (their
        # BatchNorm statistics) keep their values, as in training.
        keep = _kept_tensors(model, {id(p) for p in selected})

        def draw(model: nn.Module, generator: torch.Generator) -> None:
            _reset_parameters(model, generator, keep)

    else:
        draw = sampler
    first = next(iter(model.parameters()), None)
    batches = as_batches(data, first.device if first is not None else None)
    master = torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, 2**62, (num_samples + 1, 2), generator=master).tolist()
    options: dict[str, Any] = {
        "method": method,
        "tol": tol,
        "max_matvecs": max_matvecs,
        "mode": mode,
        "params": list(selected) if params is not None else None,
        "backend": backend,
        "cache_graph": cache_graph,
        "reduce": reduce,
    }
    current = None
    samples: list[SmoothnessSample] = []
    with preserved(model), _progress(progress, num_samples + int(at_current)) as bar:
        if at_current:
            current = hessian_spectral_norm(model, loss_fn, batches, seed=seeds[-1][1], **options)
            bar.update(1)
        for weight_seed, vector_seed in seeds[:num_samples]:
            seed_global(weight_seed, model)
            with torch.no_grad():
                draw(model, torch.Generator().manual_seed(weight_seed))
            _check_in_place(model, selected)
            result = hessian_spectral_norm(model, loss_fn, batches, seed=vector_seed, **options)
            samples.append(SmoothnessSample(seed=weight_seed, result=result))
            bar.update(1)
            bar.set_postfix(k_hat=f"{max(s.value for s in samples):.4g}")
    values = torch.tensor([s.value for s in samples], dtype=torch.float64)
    argmax = int(torch.argmax(values))
    return SmoothnessEstimate(k_hat=samples[argmax].value, samples=tuple(samples), argmax=argmax, current=current)
