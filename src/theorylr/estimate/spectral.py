"""The spectral norm of a model's loss Hessian at its current weights, and the loss itself."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from theorylr._validation import SEED_MAX, check_choice, check_int, check_module, check_number
from theorylr.estimate._state import (
    MODES,
    as_batches,
    batch_weights,
    check_loss_fn,
    forward,
    forward_context,
    preserved,
    scalar_loss,
)
from theorylr.estimate.eigen import lanczos, power_iteration
from theorylr.estimate.hvp import HessianOperator, LossFn, Reduce

__all__ = ["METHODS", "SpectralNormResult", "data_loss", "hessian_spectral_norm"]

METHODS = ("lanczos", "power")


@dataclass(frozen=True)
class SpectralNormResult:
    """The spectral norm of a Hessian and what it was made of.

    Attributes:
        value: ``||H||_2 = max(|lambda_max|, |lambda_min|)``.
        lambda_max: the largest eigenvalue estimate.
        lambda_min: the smallest eigenvalue estimate.
        matvecs: Hessian-vector products spent.
        residual: ``||H v - lambda v||`` for the eigenpair that gives ``value``.
        converged: the stopping test held: for Lanczos, the end of largest magnitude has relative residual
            ``<= tol`` and the other end either does too or is resolved as the smaller magnitude (its value is
            then less accurate: see :func:`~theorylr.estimate.lanczos`, ``which="norm"``); for the power method,
            both runs converged. Never ``True`` for a ``tol`` below what the model's dtype resolves (16-bit
            models: see :func:`hessian_spectral_norm`).
        loss: the loss on the data at these weights.
        method: ``"lanczos"`` or ``"power"``.
        seed: seed of the random starting vector (pass it back as ``seed=`` to repeat the estimate exactly).

    Example:
        >>> r = SpectralNormResult(2.0, 1.5, -2.0, 12, 1e-5, True, 0.7, "lanczos", 0)
        >>> r.value == max(abs(r.lambda_max), abs(r.lambda_min)), r.to_dict()["matvecs"]
        (True, 12)
    """

    value: float
    lambda_max: float
    lambda_min: float
    matvecs: int
    residual: float
    converged: bool
    loss: float
    method: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for JSON logs)."""
        return asdict(self)


def _start_seed(seed: int | None) -> int:
    if seed is not None:
        check_int("seed", seed, min_value=0, max_value=SEED_MAX)
        return seed
    # Derive a seed from the global CPU generator without advancing it: reproducible under torch.manual_seed,
    # and the caller's RNG stream is left exactly where it was.
    gen = torch.Generator()
    gen.set_state(torch.get_rng_state())
    return int(torch.randint(0, 2**62, (1,), generator=gen))


def _start_vector(seed: int, dim: int, like: Tensor) -> Tensor:
    # Drawn on the CPU in float64, then moved: the same seed gives the same direction on every device and dtype.
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(dim, generator=gen, dtype=torch.float64).to(dtype=like.dtype, device=like.device)


def hessian_spectral_norm(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    method: str = "lanczos",
    tol: float = 1e-4,
    max_matvecs: int = 100,
    mode: str = "eval",
    seed: int | None = None,
    params: Iterable[Tensor] | None = None,
    backend: str | None = None,
    cache_graph: bool | None = None,
    reduce: Reduce | None = None,
) -> SpectralNormResult:
    r"""The Hessian's spectral norm :math:`\max(|\lambda_{\max}|, |\lambda_{\min}|)` at the current weights.

    ``L`` is the batch-size-weighted loss of ``loss_fn`` over ``data`` (see :class:`HessianOperator`). Hessians of
    neural-network losses are indefinite and their most negative eigenvalue can dominate; both ends are therefore
    found and the larger magnitude reported, never a signed Rayleigh quotient:

    * ``method="lanczos"`` (default): one Lanczos run (:func:`lanczos`) gives both ends; it stops when the end of
      largest magnitude has relative residual ``<= tol`` and the other end is converged too or known to be the
      smaller magnitude (so ``value`` is converged, ``lambda_min`` or ``lambda_max`` may be rougher), or after
      ``max_matvecs`` products.
    * ``method="power"``: power iteration (:func:`power_iteration`) finds the largest-magnitude eigenvalue
      :math:`\lambda_1` (with its sign), then a second run on :math:`H - \lambda_1 I` finds the opposite end.
      ``max_matvecs`` caps each of the two runs.

    A 16-bit model (bfloat16, float16) has its Hessian-vector products computed in its dtype, and the solvers'
    vectors and tests in float32. The products' rounding leaves no residual certifiable below about the dtype's
    eps (``2**-7 = 7.8e-3`` for bfloat16, ``2**-10 = 9.8e-4`` for float16): with a smaller ``tol`` the solver
    still iterates to ``tol`` or ``max_matvecs`` (the estimate keeps improving), reports residuals no smaller than
    that floor and ``converged=False`` (see :mod:`~theorylr.estimate.eigen`). Pass a ``tol`` above it, or estimate
    on a float32 copy of the model, for a certified result.

    The model is left exactly as it was: parameter and buffer values, each module's train/eval flag, and the
    global RNG state (CPU, and the CUDA devices of the model) are restored, also on error.

    Args:
        model: the network, at the weights to examine.
        loss_fn: a mean-reduced criterion ``loss_fn(outputs, targets)``.
        data: an ``(inputs, targets)`` pair or an iterable of such pairs (mini-batches, weighted by size).
        method: ``"lanczos"`` or ``"power"``.
        tol: relative residual tolerance (default ``1e-4``).
        max_matvecs: Hessian-vector product cap (default 100; Lanczos stores that many vectors of the
            parameters' size).
        mode: ``"eval"`` (default; deterministic BatchNorm and no dropout), ``"train"`` or ``"current"``.
        seed: seed of the random start vector; ``None`` derives one from the global RNG state without advancing
            it (so ``torch.manual_seed`` makes the call reproducible). With ``reduce`` the start vector is passed
            through it too, so that every rank starts from the same vector even when their seeds or RNG states
            differ; the same seed on every rank keeps it the seed's own vector.
        params, backend, cache_graph, reduce: as for :class:`HessianOperator`.

    Returns:
        :class:`SpectralNormResult`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> r = hessian_spectral_norm(model, nn.MSELoss(), (x, y), seed=0)  # H = X^T X = diag(1, 9)
        >>> round(r.value, 8), round(r.lambda_min, 8), r.matvecs, r.converged
        (9.0, 1.0, 2, True)

    Reference:
        The exact-step Adam paper, Algorithm 2 step 5 (spectral norm of the Hessian by the power method) and Theorem 3
        (``K = sup ||H||_2``).

    .. note::
        The paper computes step 5 with the power method, which returns the eigenvalue of largest magnitude; we
        default to Lanczos (same quantity, typically several times fewer Hessian-vector products) and, for the
        power method, add the shifted second run so that both ends are reported.
    """
    check_module("model", model)
    method = check_choice("method", method, METHODS)
    check_number("tol", tol, min_value=0.0)
    check_int("max_matvecs", max_matvecs, min_value=1)
    check_choice("mode", mode, MODES)
    check_loss_fn(loss_fn)
    start = _start_seed(seed)
    with preserved(model):
        op = HessianOperator(
            model, loss_fn, data, params=params, backend=backend, mode=mode, cache_graph=cache_graph, reduce=reduce
        )
        with op:
            v0 = _start_vector(start, op.dim, op.params[0])
            if reduce is not None:
                # Data parallel: the ranks must iterate on the same vectors, or their averaged products mix bases
                # (wrong values, and ranks that stop after different numbers of collectives). Reducing the start
                # vector makes it the same on every rank even where their seeds differ (seed=None, per-rank RNG).
                v0 = reduce(v0.clone())
            if method == "lanczos":
                r = lanczos(op, v0, k=max_matvecs, tol=tol)
                hi, lo, converged = r.lambda_max, r.lambda_min, r.converged
                matvecs, residual = r.matvecs, r.residual
            else:
                first = power_iteration(op, v0, max_iters=max_matvecs, tol=tol)
                if math.isfinite(first.eigenvalue):
                    other = power_iteration(op, v0, max_iters=max_matvecs, tol=tol, shift=first.eigenvalue)
                else:  # a non-finite operator (a nan loss): nan, as Lanczos reports it
                    other = first
                hi, lo = max(first.eigenvalue, other.eigenvalue), min(first.eigenvalue, other.eigenvalue)
                top = first if abs(first.eigenvalue) >= abs(other.eigenvalue) else other
                converged = first.converged and other.converged
                matvecs, residual = first.matvecs + other.matvecs, top.residual
            loss = op.loss
    return SpectralNormResult(
        value=max(abs(hi), abs(lo)),
        lambda_max=hi,
        lambda_min=lo,
        matvecs=matvecs,
        residual=residual,
        converged=converged,
        loss=loss,
        method=method,
        seed=start,
    )


def data_loss(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    mode: str = "eval",
    reduce: Reduce | None = None,
    seed: int = 0,
) -> float:
    r"""The loss :math:`L(w) = \sum_b \tfrac{n_b}{N}\,\ell(f_w(x_b), y_b)` at the current weights, without side effects.

    The same loss whose Hessian :func:`hessian_spectral_norm` examines (batch-size weights, ``mode`` as there, and
    in train mode the same dropout masks: the RNG is seeded with ``seed + b`` before batch ``b``, as
    :class:`HessianOperator` does), computed under ``torch.no_grad()``; the model's flags, buffers and the RNG state
    are restored.

    Args:
        model, loss_fn, data, mode: as for :func:`hessian_spectral_norm`.
        reduce: applied to the loss tensor before it is read (e.g. an average across ranks).
        seed: the train-mode forward passes' seed, as :class:`HessianOperator`'s (default ``0``, its default).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)
        >>> _ = nn.init.zeros_(model.weight)
        >>> data = [(torch.ones(1, 1), torch.full((1, 1), 2.0)), (torch.ones(3, 1), torch.zeros(3, 1))]
        >>> data_loss(model, nn.MSELoss(), data)  # (1 * 4 + 3 * 0) / 4
        1.0
    """
    check_module("model", model)
    check_choice("mode", mode, MODES)
    check_int("seed", seed, min_value=0, max_value=SEED_MAX)
    check_loss_fn(loss_fn)
    first = next(iter(model.parameters()), None)
    batches = as_batches(data, first.device if first is not None else None)
    weights = batch_weights(batches)
    with preserved(model), torch.no_grad():
        total: Tensor | None = None
        for b, ((x, y), w) in enumerate(zip(batches, weights)):
            with forward_context(model, mode, seed + b) as training:
                term = w * scalar_loss(loss_fn(forward(model, x, training), y)).detach().to(torch.float64)
            total = term if total is None else total + term
        assert total is not None
        if reduce is not None:
            total = reduce(total)
        return float(total)
