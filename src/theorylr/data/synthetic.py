"""Synthetic problems: linearly separable data for the linear SVM and quadratics for the theory demos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor

from theorylr._validation import SEED_MAX, check_bool, check_int, check_number

__all__ = ["Quadratic", "make_quadratic", "make_separable"]


@overload
def make_separable(
    n: int = ...,
    dim: int = ...,
    margin: float = ...,
    seed: int = ...,
    *,
    dtype: torch.dtype = ...,
    return_hyperplane: Literal[False] = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def make_separable(
    n: int = ...,
    dim: int = ...,
    margin: float = ...,
    seed: int = ...,
    *,
    dtype: torch.dtype = ...,
    return_hyperplane: Literal[True],
) -> tuple[Tensor, Tensor, Tensor, float]: ...


@overload
def make_separable(
    n: int = ...,
    dim: int = ...,
    margin: float = ...,
    seed: int = ...,
    *,
    dtype: torch.dtype = ...,
    return_hyperplane: bool,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, float]: ...


def make_separable(
    n: int = 1000,
    dim: int = 2,
    margin: float = 0.1,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    return_hyperplane: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, float]:
    """Linearly separable two-class data with a guaranteed gap (the SVM problem of Gitman et al., §6.2.1).

    A unit normal ``w`` (uniform on the sphere) and an offset ``b ~ U(-0.5, 0.5)`` define the hyperplane
    ``w·x + b = 0``. Points are drawn ``x ~ N(0, I_dim)`` and each is pushed along ``w``, away from the
    hyperplane, by ``margin - min_i |w·x_i + b|``, so that every point keeps its side and the closest one lies at
    distance exactly ``margin``:

        ``min_i |w·x_i + b| = margin``, label ``y_i = 1[w·x_i + b > 0]`` in ``{0, 1}``.

    The data set's geometric (hard-SVM) margin is therefore at least ``margin``. Everything is drawn from
    ``torch.Generator().manual_seed(seed)`` in float64 and cast to ``dtype`` at the end.

    Args:
        n: number of points (default 1000, as in the paper's SVM experiment).
        dim: dimension (default 2).
        margin: distance of the closest point to the hyperplane, ``> 0`` (default 0.1).
        seed: the seed.
        dtype: floating dtype of ``x``.
        return_hyperplane: also return ``(w, b)`` (``w`` in float64).

    Returns:
        ``(x, y)``: ``x`` of shape ``(n, dim)``, ``y`` int64 labels; or ``(x, y, w, b)``.

    .. note::
        The paper only says "simple, linearly separable data" with 1000 training points; the distribution,
        offset and margin here are our choice.

    Example:
        >>> x, y, w, b = make_separable(200, margin=0.5, return_hyperplane=True)
        >>> x.shape, bool(((x.double() @ w + b).abs() >= 0.5 - 1e-6).all())
        (torch.Size([200, 2]), True)
    """
    check_int("n", n, min_value=2)
    check_int("dim", dim, min_value=1)
    check_number("margin", margin, min_value=0.0, min_inclusive=False)
    check_int("seed", seed, min_value=0, max_value=SEED_MAX)
    check_bool("return_hyperplane", return_hyperplane)
    _check_float_dtype(dtype)
    (x, y), _test, w, b = _separable_sets(n, 0, dim, margin, int(seed))
    if return_hyperplane:
        return x.to(dtype), y, w, b
    return x.to(dtype), y


def _separable_sets(
    n: int, n_test: int, dim: int, margin: float, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], Tensor, float]:
    """:func:`make_separable`'s training points (the same ``n`` points for any ``n_test``) and ``n_test`` further
    draws on the same hyperplane, pushed the same way among themselves (their own closest point at ``margin``):
    ``((x, y), (x_test, y_test), w, b)``, float64. Arguments are not checked (see :func:`make_separable`)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w = w / w.norm()
    b = float(torch.rand((), generator=g, dtype=torch.float64)) - 0.5

    def draw(count: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(count, dim, generator=g, dtype=torch.float64)
        if count == 0:
            return x, torch.zeros(0, dtype=torch.int64)
        dist = x @ w + b
        side = torch.where(dist >= 0, 1.0, -1.0).to(torch.float64)
        push = margin - dist.abs().min()
        return x + (side * push).unsqueeze(1) * w, (side > 0).to(torch.int64)

    train = draw(n)
    return train, draw(n_test), w, b


@dataclass(frozen=True, eq=False)
class Quadratic:
    """The quadratic ``f(w) = 1/2 (w - w*)ᵀ H (w - w*) + f*`` with symmetric positive definite ``H``.

    Attributes:
        hessian: ``H``, shape ``(d, d)``.
        minimizer: ``w*``, shape ``(d,)``.
        min_value: ``f* = f(w*)``.

    The constructor checks (a ValueError otherwise) that both are floating-point tensors of these shapes with the
    same ``d >= 1`` and finite values, that ``H`` is symmetric (to ``4 d`` units of rounding of its dtype, relative
    to its largest entry) and positive definite (``λ_min > 0``, one ``eigvalsh`` in float64), and that
    ``min_value`` is a finite number.

    Calling the object evaluates :meth:`loss`. Its smoothness constant is ``L = λ_max(H)`` and its strong
    convexity constant ``μ = λ_min(H)``.

    Example:
        >>> q = make_quadratic((1.0, 4.0), (1.0, 1.0))
        >>> float(q(torch.zeros(2, dtype=torch.float64))), q.smoothness, q.condition_number
        (2.5, 4.0, 4.0)
    """

    hessian: Tensor
    minimizer: Tensor
    min_value: float = 0.0

    def __post_init__(self) -> None:
        h, w = self.hessian, self.minimizer
        if not isinstance(h, Tensor) or h.ndim != 2 or h.shape[0] != h.shape[1] or h.shape[0] == 0:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"hessian must be a square (d, d) torch.Tensor with d >= 1 (got {got})")
        d = int(h.shape[0])
        if not isinstance(w, Tensor) or tuple(w.shape) != (d,):
            got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(
                f"minimizer must be a torch.Tensor of shape ({d},) to match the ({d}, {d}) hessian (got {got})"
            )
        for name, t in (("hessian", h), ("minimizer", w)):
            if not t.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor (got dtype {t.dtype})")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} must have finite values (got inf or nan)")
        scale = float(h.abs().max())
        asymmetry = float((h - h.mT).abs().max())
        if asymmetry > 4 * d * torch.finfo(h.dtype).eps * scale:
            raise ValueError(
                f"hessian must be symmetric (largest |H - Hᵀ| entry {asymmetry:.3g}, against a largest |H| entry of "
                f"{scale:.3g})"
            )
        smallest = float(torch.linalg.eigvalsh(0.5 * (h + h.mT).double())[0])
        if not smallest > 0:
            raise ValueError(
                f"hessian must be positive definite (its smallest eigenvalue is {smallest:.3g}); for a convex "
                "quadratic that is not strongly convex, add a small multiple of the identity"
            )
        check_number("min_value", self.min_value)
        object.__setattr__(self, "min_value", float(self.min_value))

    @property
    def dim(self) -> int:
        """The dimension ``d``."""
        return int(self.minimizer.shape[0])

    @property
    def eigenvalues(self) -> Tensor:
        """Eigenvalues of ``H`` in ascending order."""
        return torch.linalg.eigvalsh(self.hessian)

    @property
    def smoothness(self) -> float:
        """``L = λ_max(H)``, the Lipschitz constant of the gradient."""
        return float(self.eigenvalues[-1])

    @property
    def strong_convexity(self) -> float:
        """``μ = λ_min(H)``."""
        return float(self.eigenvalues[0])

    @property
    def condition_number(self) -> float:
        """``L / μ``."""
        return self.smoothness / self.strong_convexity

    def loss(self, w: Tensor) -> Tensor:
        """``f(w)`` for ``w`` of shape ``(..., d)`` (batched points give a batch of values); differentiable."""
        diff = w - self.minimizer.to(w.dtype)
        hessian = self.hessian.to(w.dtype)
        return 0.5 * torch.einsum("...i,ij,...j->...", diff, hessian, diff) + self.min_value

    def grad(self, w: Tensor) -> Tensor:
        """``∇f(w) = H (w - w*)`` for ``w`` of shape ``(..., d)``."""
        return (w - self.minimizer.to(w.dtype)) @ self.hessian.to(w.dtype)

    def __call__(self, w: Tensor) -> Tensor:
        return self.loss(w)


def _as_number_list(values: Any) -> Any:
    """A 1-D NumPy array or tensor as a list of Python numbers; anything else as given (checked by the caller)."""
    if isinstance(values, (np.ndarray, torch.Tensor)) and values.ndim == 1:
        return values.tolist()
    return values


_DEFAULT_MINIMIZER = (1.0, 1.0)


def make_quadratic(
    eigenvalues: Sequence[float] = (1.0, 10.0),
    minimizer: Sequence[float] | None = _DEFAULT_MINIMIZER,
    *,
    rotate: bool = False,
    seed: int = 0,
    min_value: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Quadratic:
    """A convex quadratic with a given spectrum and minimiser, e.g. the 2-D demo of Gitman et al. (Fig. 1).

    ``H = Q diag(eigenvalues) Qᵀ`` with ``Q = I`` (axis-aligned) or, with ``rotate=True``, a random orthogonal
    ``Q`` (QR of a Gaussian matrix with the sign convention that makes it Haar distributed) drawn from ``seed``.

    Args:
        eigenvalues: the spectrum of ``H``, all ``> 0`` (default ``(1, 10)``: condition number 10).
        minimizer: ``w*`` (default ``(1, 1)``: away from the origin, where LARS' behaviour is special);
            ``None`` places it at the origin.
        rotate: rotate the eigenbasis randomly.
        seed: seed of the rotation.
        min_value: ``f(w*)``.
        dtype: floating dtype of ``H`` and ``w*``.

    Returns:
        a :class:`Quadratic` (``hessian``, ``minimizer``, ``loss``/``grad`` callables).

    .. note::
        Gitman et al. do not state the function behind their Fig. 1 ("a simple 2-dimensional experiment with a
        quadratic function"); the defaults here are our choice. Their §3.1 1-D analysis is the case
        ``eigenvalues=(1.0,)``, ``minimizer=(a,)``.

    Example:
        >>> q = make_quadratic((2.0, 3.0), (1.0, -1.0), rotate=True, seed=1)
        >>> torch.allclose(q.eigenvalues, torch.tensor([2.0, 3.0], dtype=torch.float64))
        True
        >>> float(q.grad(q.minimizer).abs().max())
        0.0
    """
    eigenvalues = _as_number_list(eigenvalues)
    if not isinstance(eigenvalues, Sequence) or isinstance(eigenvalues, (str, bytes)) or not eigenvalues:
        raise ValueError(f"eigenvalues must be a non-empty sequence of numbers > 0 (got {eigenvalues!r})")
    for i, e in enumerate(eigenvalues):
        check_number(f"eigenvalues[{i}]", e, min_value=0.0, min_inclusive=False)  # refuses strings and bools
    eig = [float(e) for e in eigenvalues]
    d = len(eig)
    if minimizer is _DEFAULT_MINIMIZER and d != len(_DEFAULT_MINIMIZER):
        raise ValueError(f"minimizer must be given with {d} eigenvalues: its default, (1, 1), has 2 entries")
    minimizer = [0.0] * d if minimizer is None else _as_number_list(minimizer)
    if not isinstance(minimizer, Sequence) or isinstance(minimizer, (str, bytes)) or len(minimizer) != d:
        raise ValueError(f"minimizer must be a sequence of {d} numbers, one per eigenvalue (got {minimizer!r})")
    for i, m in enumerate(minimizer):
        check_number(f"minimizer[{i}]", m)
    check_bool("rotate", rotate)
    check_int("seed", seed, min_value=0, max_value=SEED_MAX)
    check_number("min_value", min_value)
    _check_float_dtype(dtype)
    spectrum = torch.tensor(eig, dtype=torch.float64)
    if rotate:
        g = torch.Generator().manual_seed(int(seed))
        q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))
        hessian = (q * spectrum) @ q.T
        hessian = 0.5 * (hessian + hessian.T)
    else:
        hessian = torch.diag(spectrum)
    w_star = torch.tensor([float(m) for m in minimizer], dtype=torch.float64)
    return Quadratic(hessian.to(dtype), w_star.to(dtype), float(min_value))


def _check_float_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as torch.float32 (got {dtype!r})")
