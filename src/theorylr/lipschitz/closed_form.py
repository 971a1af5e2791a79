"""Closed-form Lipschitz constants of common losses (Yedida & Saha, *LipschitzLR*, §4-§5, §7.1).

The learning rate of LipschitzLR is ``1 / L`` where ``L`` bounds the norm of the last-layer gradient. Each function
here is one formula of the paper, with its section and equation number, written so that it can be called

* on Python numbers: the arguments are validated and a :class:`ValueError` names the argument and the allowed
  values; the result is a Python ``float``;
* on tensors (typically 0-dim): nothing is read on the host (no ``.item()``, ``float(t)`` or ``if`` on a value),
  so the functions can run inside forward hooks and ``step()``; the result is a tensor with the inputs' dtype and
  device, except that float16 / bfloat16 inputs are computed in float32 and give a float32 result. Values are not
  validated; a paper-form value that is not positive comes back as ``nan`` (never as a negative learning rate).

Definitions the paper leaves open, fixed here once for the whole library:

* ``K_z`` (eq. 6, 10) is a norm of the penultimate activation matrix ``A`` (one row per example) of the batch the
  loss is averaged over: :func:`activation_norm` with ``kind="fro"`` (default), ``"spectral"`` or ``"max_row"``.
  For a linear model the penultimate "activations" are the inputs, so ``K_z = ||X||`` (eq. 11).
* ``m`` is the size of that batch (§7.4: "m in the denominator must be set to the batch size"). Over an epoch of
  mini-batches, ``L`` is the largest batch ``L``.
* ``K`` (``weight_bound``) bounds the norm of the weights (§4.1); the scheduler reads it from the model (§7.4).

Most of the paper's constants are **not** upper bounds on the gradient norm (see the notes on each function); the
rigorous counterparts are :func:`least_squares_rigorous`, :func:`least_squares_nn_rigorous` and
:func:`theorylr.lipschitz.bounds.gradient_norm_bound`.

.. note::
    Every constant here, rigorous ones included, concerns the **last layer's** weights only. §3.3 (eq. 1) argues
    that the last layer's gradients are the largest in the network, so that a bound on them bounds the whole
    gradient; that is not true in general (on a small sigmoid network a first-layer gradient entry is tens of times
    the last layer's largest; ``tests/lipschitz/test_paper_fidelity.py``). For the earlier layers ``1/L`` is the
    paper's heuristic, not a guarantee.
"""

from __future__ import annotations

import math
from typing import TypeVar, overload

import torch
from torch import Tensor

from theorylr._validation import check_choice, check_int, check_number

__all__ = [
    "ACTIVATION_NORMS",
    "activation_norm",
    "binary_cross_entropy",
    "l2_term",
    "least_squares",
    "least_squares_nn",
    "least_squares_nn_rigorous",
    "least_squares_rigorous",
    "logistic_regression",
    "softmax_cross_entropy",
    "softmax_regression",
    "spectral_norm_bound",
    "tikhonov_term",
    "weight_bound_estimate",
]

ACTIVATION_NORMS = ("fro", "spectral", "max_row")  # the kinds of K_z accepted by activation_norm


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------
def _check_nonnegative(name: str, value: float | Tensor) -> None:
    """Validate ``value >= 0`` when it is a Python number; tensors are never read."""
    if not isinstance(value, Tensor):
        check_number(name, value, min_value=0.0)


def _check_positive(name: str, value: float | Tensor) -> None:
    """Validate ``value > 0`` when it is a Python number; tensors are never read."""
    if not isinstance(value, Tensor):
        check_number(name, value, min_value=0.0, min_inclusive=False)


def _check_classes(name: str, value: int | Tensor) -> None:
    if not isinstance(value, Tensor):
        check_int(name, value, min_value=2)


def _as_matrix(name: str, a: Tensor) -> Tensor:
    """``a`` as an ``(m, features)`` matrix: one row per example, trailing dimensions flattened; float16 and
    bfloat16 as float32 (their products and norms would round to 11 or 8 bits, and some linalg routines refuse
    them); integers and bools in the default float dtype, as :func:`~theorylr.lipschitz.bounds.gradient_norm_bound`
    takes them."""
    if not isinstance(a, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor with one row per example (got {type(a).__name__})")
    if a.is_complex():
        raise ValueError(f"{name} must be a real tensor (got {a.dtype})")
    if not a.is_floating_point():
        a = a.to(torch.get_default_dtype())
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (m, features...) with m >= 1 examples and at least 2 dimensions "
            f"(got shape {tuple(a.shape)})"
        )
    a = a.reshape(a.shape[0], -1)
    return a.float() if a.dtype in (torch.float16, torch.bfloat16) else a


_T = TypeVar("_T")


def _wide(value: _T) -> _T:
    """A float16 / bfloat16 tensor as float32, anything else as it is: the scalar closed forms multiply before
    they divide (``(k - 1) K_z``), which overflows float16 (65504) for a ``K_z`` whose ``L`` fits (and rounds
    ``L`` to 8 bits in bfloat16). Their result is then float32, as :func:`_as_matrix` makes the matrix forms'."""
    if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()  # type: ignore[return-value]  # a Tensor for a Tensor
    return value


def _paper_positive(value: float | Tensor, formula: str, rigorous: str) -> float | Tensor:
    """A paper-form value must be > 0: raise for a Python number, ``nan`` for a tensor (no host read)."""
    if isinstance(value, Tensor):
        return torch.where(value > 0, value, math.nan)
    if not value > 0:
        raise ValueError(
            f"the paper's {formula} = {value!r} is <= 0, which is no Lipschitz constant: subtracting norms is not a "
            f"valid bound (the triangle inequality adds them); use {rigorous}, which adds them"
        )
    return float(value)


# ----------------------------------------------------------------------------------------------------------------
# Norms of activation matrices
# ----------------------------------------------------------------------------------------------------------------
def activation_norm(a: Tensor, kind: str = "fro") -> Tensor:
    r"""``K_z``: a norm of the batch's penultimate activation matrix (paper §3.3 eq. 6 and 10, §4.3 eq. 11).

    ``a`` holds one row per example of the batch the loss is averaged over (trailing dimensions are flattened):
    the input of the model's last linear layer, or the data matrix ``X`` for a linear model (eq. 11). The paper's
    definition, :math:`K_z = \max_j \|a_j^{[L-1]}\|`, does not say which norm; the kinds are

    * ``"fro"`` (default): :math:`\|A\|_F = (\sum_i \|a_i\|^2)^{1/2}`, the reading that reproduces the paper's
      reported learning rates (see ``benchmarks/lipschitz_paper_targets.py``);
    * ``"spectral"``: :math:`\|A\|_2`, the largest singular value (exact, via torch's SVD; the Frobenius norm, inf
      or nan, when ``a`` holds inf or nan, which the SVD cannot take; on CUDA that routine waits for the device, so
      inside hooks prefer ``"fro"`` or ``"max_row"``);
    * ``"max_row"``: :math:`\max_i \|a_i\|_2`, the largest per-example activation norm.

    ``m`` in the paper's formulas is ``a.shape[0]``, the batch size (§7.4). Over an epoch of mini-batches the
    paper's ``L`` is the largest batch ``L``. The result is detached from autograd (a measurement, not a loss).

    Args:
        a: activations, shape ``(m, features...)``, ``m >= 1``.
        kind: ``"fro"`` (default), ``"spectral"`` or ``"max_row"``.

    Returns:
        A 0-dim tensor with ``a``'s dtype and device (float32 for float16 or bfloat16 ``a``, computed in float32).

    Example:
        >>> a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
        >>> activation_norm(a), activation_norm(a, "max_row")
        (tensor(5.), tensor(5.))
    """
    check_choice("kind", kind, ACTIVATION_NORMS)
    a = _as_matrix("a", a).detach()
    if kind == "fro":
        return torch.linalg.vector_norm(a)
    if kind == "spectral":
        # The SVD fails on inf or nan (a diverged run): then the Frobenius norm, inf or nan as the input, so that
        # the closed forms report the divergence as the other norms do. No host sync: where() picks.
        finite = torch.isfinite(a).all()
        spectral = torch.linalg.matrix_norm(torch.where(finite, a, torch.zeros_like(a)), ord=2)
        return torch.where(finite, spectral, torch.linalg.vector_norm(a))
    return torch.linalg.vector_norm(a, dim=1).amax()


def spectral_norm_bound(a: Tensor, *, squarings: int = 10) -> Tensor:
    r"""A guaranteed upper bound on the spectral norm :math:`\|A\|_2`, computed with matrix products only.

    Let :math:`G` be the Gram matrix of the smaller side of ``A`` (``n x n``, ``n = min(rows, columns)``) with
    eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_n \ge 0`, so :math:`\|A\|_2^2 = \lambda_1`. For every
    :math:`p \ge 1`,

    .. math:: \lambda_1 \le \Big(\sum_i \lambda_i^p\Big)^{1/p} = \operatorname{tr}(G^p)^{1/p}
              \le n^{1/p} \lambda_1,

    and :math:`\operatorname{tr}(G^p)` with :math:`p = 2^q` follows from ``q`` repeated squarings (each one
    renormalised to unit trace, the logarithm of the scale carried separately, so nothing overflows). The result is
    therefore an upper bound that exceeds :math:`\|A\|_2` by a factor of at most :math:`n^{1/2^{q+1}}`
    (``q = 10``: below 1.005 for ``n <= 10^4``; in practice the top eigenvalue dominates after a few squarings and
    the excess is about 1e-6). A matrix holding an infinite entry gets ``inf``, one holding a nan gets ``nan``.
    Unlike an SVD it never waits for the device, so it is safe inside hooks; unlike power iteration it does not
    under-estimate, except by rounding: in float32 we measured results down to ``(1 - 1e-6) ||A||_2`` (Gaussian
    and ReLU matrices up to 128 x 2048) and ``(1 - 2e-6) ||A||_2`` (1000 x 20, one entry 1e4 times the rest), the
    same order as the rounding of the gradients it bounds. 16-bit matrices are computed in float32. The entries
    are rescaled to [-1, 1] first, so nothing overflows. The result is detached.

    Args:
        a: a matrix ``(rows, columns...)`` (trailing dimensions flattened).
        squarings: ``q >= 0``, the number of squarings (default 10; cost ``q - 1`` products of ``n x n``).

    Returns:
        A 0-dim tensor with ``a``'s dtype and device (float32 for float16 or bfloat16 ``a``, computed in float32).

    Example:
        >>> a = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
        >>> bool(3.0 <= spectral_norm_bound(a) <= 3.0 * 2 ** (1 / 2**11))
        True
    """
    check_int("squarings", squarings, min_value=0)
    a = _as_matrix("a", a).detach()
    tiny = torch.finfo(a.dtype).tiny
    largest = a.abs().amax()  # nan if any entry is nan (amax propagates it), else inf if any is infinite
    entry_scale = largest.clamp_min(tiny)  # work with entries in [-1, 1]: the Gram matrix cannot overflow
    a = a / entry_scale
    gram = a.mT @ a if a.shape[0] >= a.shape[1] else a @ a.mT
    trace = torch.diagonal(gram).sum()
    scale = trace.clamp_min(tiny)
    log_trace = torch.log(scale)  # log tr(G^(2^j)), j = 0
    mat = gram / scale  # G^(2^j) / tr(G^(2^j)): symmetric, unit trace
    for j in range(squarings):
        # tr(M^2) = ||M||_F^2 for a symmetric M; the last product is never needed.
        ratio = (mat * mat).sum().clamp_min(tiny)
        log_trace = 2.0 * log_trace + torch.log(ratio)
        if j + 1 < squarings:
            mat = (mat @ mat) / ratio
    bound = torch.exp(log_trace / 2.0 ** (squarings + 1)) * entry_scale
    # A zero matrix has norm 0; a non-finite one gets its largest magnitude (inf or nan), never a finite bound.
    return torch.where(largest.isfinite(), torch.where(trace > 0, bound, 0.0), largest)


# ----------------------------------------------------------------------------------------------------------------
# Least squares (§4)
# ----------------------------------------------------------------------------------------------------------------
def _least_squares_parts(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]:
    x = _as_matrix("x", x)
    if not isinstance(y, Tensor) or y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor of shape (m,) or (m, outputs) with m = {x.shape[0]} (got {shape})")
    y = y.to(x.dtype).reshape(x.shape[0], -1)
    return x, y, x.shape[0]


def least_squares(x: Tensor, y: Tensor, weight_bound: float | Tensor, *, check: bool = True) -> Tensor:
    r"""The paper's Lipschitz constant of least squares for a linear model (§4.1, the bound after "Taking norm").

    For :math:`g(w) = \frac{1}{2m}\sum_i (x^{(i)} w - y^{(i)})^2` with :math:`\|w\| \le K`,

    .. math:: L = \frac{K}{m}\,\|X^T X\|_F - \frac{1}{m}\,\|X^T y\|_F .

    The paper leaves the norms unspecified; we use Frobenius norms, consistent with ``K_z = ||X||_F``.

    .. note::
        This is the paper's form, and it is not an upper bound: the difference of the two norms comes from the
        gradient :math:`\frac1m(X^TXw - X^Ty)`, whose norm the triangle inequality bounds by the **sum**. A value
        ``<= 0`` is meaningless and raises. The rigorous constant is :func:`least_squares_rigorous`.

    Args:
        x: data matrix ``(m, features)``.
        y: targets ``(m,)`` or ``(m, outputs)``.
        weight_bound: ``K >= 0``, a bound on the norm of the weights (the paper's §7.1 estimate is
            :func:`weight_bound_estimate`).
        check: read the result on the host (one synchronisation) and raise if it is ``<= 0`` (default). With
            ``check=False`` nothing is read and a non-positive value is returned as ``nan``.

    Returns:
        A 0-dim tensor ``L``.

    Raises:
        ValueError: if ``weight_bound`` is a negative number, shapes disagree, or (``check=True``) ``L <= 0``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> least_squares(x, torch.tensor([1.0, 1.0]), weight_bound=3.0)  # (3 * sqrt(17) - sqrt(5)) / 2
        tensor(5.0666)
    """
    _check_nonnegative("weight_bound", weight_bound)
    x, y, m = _least_squares_parts(x, y)
    value = (weight_bound * torch.linalg.matrix_norm(x.mT @ x) - torch.linalg.vector_norm(x.mT @ y)) / m
    if check and not value > 0:
        if torch.isnan(value):
            raise ValueError(
                "the paper's least-squares L is nan: x or y holds a nan or an infinity (the norms of finite data "
                "are finite)"
            )
        raise ValueError(
            f"the paper's least-squares L = (K/m)||X^T X|| - (1/m)||X^T y|| = {float(value)!r} is <= 0, which is no "
            "Lipschitz constant: subtracting norms is not a valid bound (the triangle inequality adds them); use "
            "least_squares_rigorous, which adds them"
        )
    return torch.where(value > 0, value, math.nan)


def least_squares_rigorous(x: Tensor, y: Tensor, weight_bound: float | Tensor) -> Tensor:
    r"""A true Lipschitz constant of linear least squares on the ball :math:`\|W\|_F \le K` (rigorous §4.1).

    The gradient of :math:`g(W) = \frac{1}{2m}\sum_i \|W x^{(i)} - y^{(i)}\|^2` is
    :math:`\frac1m (W X^TX - Y^TX)`, so by the triangle inequality and
    :math:`\|W M\|_F \le \|W\|_F \|M\|_2`,

    .. math:: \sup_{\|W\|_F \le K} \|\nabla g(W)\|_F \;\le\; L = \frac{K}{m}\,\|X\|_2^2 + \frac{1}{m}\,\|X^T Y\|_F .

    At :math:`W = \pm K u v^T` (``v`` the top right singular vector of ``X``, ``u`` any unit vector) the two
    squared gradient norms sum to :math:`2(K^2\|X\|_2^4 + \|X^T Y\|_F^2)/m^2`, so ``L`` is at most
    :math:`\sqrt2` times the true supremum. :math:`\|X\|_2` is bounded from above by :func:`spectral_norm_bound`
    (sync-free, within 0.5 %). A bias is a column of ones in ``x``; ``K`` then bounds ``||[W, b]||_F``. This equals
    ``gradient_norm_bound(x, "least_squares", targets=y, weight_bound=K)`` (float16 and bfloat16 data are computed
    in float32 by both).

    Args:
        x: data matrix ``(m, features)``.
        y: targets ``(m,)`` or ``(m, outputs)``.
        weight_bound: ``K >= 0``.

    Returns:
        A 0-dim tensor ``L`` (never read on the host).

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> least_squares_rigorous(x, torch.tensor([1.0, 1.0]), 3.0)  # (3 * 4 + sqrt(5)) / 2
        tensor(7.1180, dtype=torch.float64)
    """
    _check_nonnegative("weight_bound", weight_bound)
    x, y, m = _least_squares_parts(x, y)
    return (weight_bound * spectral_norm_bound(x) ** 2 + torch.linalg.vector_norm(x.mT @ y)) / m


@overload
def least_squares_nn(k_a: float, y_norm: float, k_z: float, m: float) -> float: ...  # type: ignore[overload-overlap]
@overload
def least_squares_nn(k_a: float | Tensor, y_norm: float | Tensor, k_z: float | Tensor, m: float | Tensor) -> Tensor: ...
def least_squares_nn(
    k_a: float | Tensor, y_norm: float | Tensor, k_z: float | Tensor, m: float | Tensor
) -> float | Tensor:
    r"""The paper's Lipschitz constant of least squares for a network with a linear output (§4.2, eq. 9).

    For :math:`E = \frac{1}{2m}\|a^{[L]} - y\|^2` (eq. 7),

    .. math:: L = \frac{1}{m}\,(K_a - \|y\|)\,K_z .

    .. note::
        The paper's eq. 8 bounds :math:`\frac{1}{2m}\|b + a - 2y\|` by :math:`\frac1m(K_a - \|y\|)`; the triangle
        inequality gives :math:`\frac1m(K_a + \|y\|)`, so this is not an upper bound, and a value ``<= 0`` is
        meaningless: it raises for Python numbers and is ``nan`` for tensors. The rigorous form is
        :func:`least_squares_nn_rigorous`.

    .. note::
        §4.3 derives :func:`least_squares` (eq. 5) from this form with ``K_z = ||X||`` and ``K_a = K ||X||``
        (eqs. 11-12), which needs :math:`\|X\|^2 = \|X^T X\|` (true for the spectral norm only) and
        :math:`\|y\|\,\|X\| = \|X^T y\|` (true for no norm in general). The two forms differ: for
        ``X = diag(1, 2)``, ``y = (1, 1)``, ``K = 3``, :func:`least_squares` gives 5.067 and this form 5.919
        (Frobenius ``K_z``) or 4.586 (spectral).

    Args:
        k_a: ``K_a``, an upper bound on the norm of the output activations :math:`\|a^{[L]}\|` of the batch (for a
            linear model :math:`K\,\|X\|`, eq. 12).
        y_norm: :math:`\|y\|`, the norm of the batch's targets.
        k_z: ``K_z``, the norm of the penultimate activations of the batch (:func:`activation_norm`).
        m: the batch size (> 0).

    Returns:
        ``L``: a ``float`` for Python numbers, a tensor if any argument is a tensor.

    Raises:
        ValueError: for a negative (or, for ``m``, non-positive) Python number, or a Python result ``<= 0``.

    Example:
        >>> least_squares_nn(5.0, 1.0, 2.0, 4)
        2.0
    """
    _check_nonnegative("k_a", k_a)
    _check_nonnegative("y_norm", y_norm)
    _check_nonnegative("k_z", k_z)
    _check_positive("m", m)
    k_a, y_norm, k_z, m = _wide(k_a), _wide(y_norm), _wide(k_z), _wide(m)
    return _paper_positive(
        (k_a - y_norm) * k_z / m, "least-squares L = (1/m)(K_a - ||y||) K_z", "least_squares_nn_rigorous"
    )


@overload
def least_squares_nn_rigorous(k_a: float, y_norm: float, k_z: float, m: float) -> float: ...  # type: ignore[overload-overlap]
@overload
def least_squares_nn_rigorous(
    k_a: float | Tensor, y_norm: float | Tensor, k_z: float | Tensor, m: float | Tensor
) -> Tensor: ...
def least_squares_nn_rigorous(
    k_a: float | Tensor, y_norm: float | Tensor, k_z: float | Tensor, m: float | Tensor
) -> float | Tensor:
    r"""A true bound on the last-layer gradient norm of least squares (rigorous §4.2, eq. 8-9).

    With outputs :math:`\hat Y`, targets :math:`Y` and activations :math:`A` of a batch of ``m``, the last-layer
    gradient of :math:`\frac{1}{2m}\|\hat Y - Y\|_F^2` is :math:`\frac1m(\hat Y - Y)^T A`, and
    :math:`\|R^T A\|_F \le \|R\|_F \|A\|_2`, so

    .. math:: \|\nabla_W E\|_F \le L = \frac{1}{m}\,(K_a + \|Y\|_F)\,K_z

    whenever :math:`K_a \ge \|\hat Y\|_F` and :math:`K_z \ge \|A\|_2`: both the Frobenius and the spectral
    :func:`activation_norm` qualify, ``"max_row"`` does not (it needs an extra factor :math:`\sqrt m`).

    Args:
        k_a: ``K_a >= ||Y_hat||_F``.
        y_norm: :math:`\|Y\|_F`.
        k_z: ``K_z >= ||A||_2``.
        m: the batch size (> 0).

    Returns:
        ``L``: a ``float`` for Python numbers, a tensor if any argument is a tensor.

    Example:
        >>> least_squares_nn_rigorous(5.0, 1.0, 2.0, 4)
        3.0
    """
    _check_nonnegative("k_a", k_a)
    _check_nonnegative("y_norm", y_norm)
    _check_nonnegative("k_z", k_z)
    _check_positive("m", m)
    k_a, y_norm, k_z, m = _wide(k_a), _wide(y_norm), _wide(k_z), _wide(m)
    return (k_a + y_norm) * k_z / m


def weight_bound_estimate(x: Tensor) -> Tensor:
    r"""The paper's estimate of the weight bound ``K`` for least squares (§7.1).

    .. math:: a = \sum_j \frac1m \sum_i x^{(i)}_j, \qquad b = \frac1n \sum_j \max_i x^{(i)}_j, \qquad
              K = \frac{a + b}{2}

    (``a`` is the sum of the column means, ``b`` the mean of the column maxima).

    .. note::
        A heuristic, not a bound: it depends only on ``X`` (not on ``y``) and does not scale like a weight norm
        (scaling ``X`` by ``c`` scales it by ``c``, while the least-squares solution scales by ``1/c``). The paper
        uses it to approximate the norm of the weights that gradient descent reaches.

    Args:
        x: data matrix ``(m, n)`` (trailing dimensions flattened).

    Returns:
        A 0-dim tensor ``K`` (detached).

    Example:
        >>> weight_bound_estimate(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # a = 2 + 4, b = (3 + 6) / 2
        tensor(5.2500)
    """
    x = _as_matrix("x", x).detach()
    return (x.mean(dim=0).sum() + x.amax(dim=0).mean()) / 2


# ----------------------------------------------------------------------------------------------------------------
# Classification (§5.1, §5.2)
# ----------------------------------------------------------------------------------------------------------------
@overload
def binary_cross_entropy(k_z: float, m: float) -> float: ...  # type: ignore[overload-overlap]
@overload
def binary_cross_entropy(k_z: float | Tensor, m: float | Tensor) -> Tensor: ...
def binary_cross_entropy(k_z: float | Tensor, m: float | Tensor) -> float | Tensor:
    r"""The paper's Lipschitz constant of binary cross-entropy with a sigmoid output (§5.1, eq. 18).

    .. math:: L = \frac{K_z}{2m}

    .. note::
        Not an upper bound, for two reasons. (1) The paper takes :math:`|y - \sigma(z)|` at its maximum at
        :math:`z = 0`, where it is :math:`1/2` (eq. 16-17); but it is monotone in :math:`z`, with no maximum at
        0: for ``y = 1`` and :math:`z \to -\infty` (or ``y = 0``, :math:`z \to +\infty`) it tends to 1, so the
        per-example factor is :math:`1/m`, not :math:`1/(2m)`. (2) The gradient is a **sum** of per-example terms
        :math:`\frac1m\sum_i (\sigma(z_i) - y_i)\,a_i`, bounded by :math:`\frac1m\sum_i\|a_i\|
        \le \|A\|_F/\sqrt m`, a factor of order :math:`\sqrt m` above :math:`\|A\|_F/(2m)`. The rigorous bound is
        :func:`theorylr.lipschitz.bounds.gradient_norm_bound` with ``loss="bce"``.

    Args:
        k_z: ``K_z >= 0`` (:func:`activation_norm` of the batch).
        m: the batch size (> 0).

    Returns:
        ``L``: a ``float`` for Python numbers, a tensor if any argument is a tensor.

    Example:
        >>> binary_cross_entropy(3.0, 10)
        0.15
    """
    _check_nonnegative("k_z", k_z)
    _check_positive("m", m)
    return _wide(k_z) / (2 * _wide(m))


def logistic_regression(x: Tensor, *, kind: str = "fro") -> Tensor:
    r"""The paper's Lipschitz constant of logistic regression (§5.1): :math:`L = \|X\| / (2m)`.

    :func:`binary_cross_entropy` with ``K_z = activation_norm(x, kind)`` and ``m = x.shape[0]``. To include an
    intercept, append a column of ones to ``x`` (scaled like the other features, if you scale them): this is how
    the paper's breast-cancer figure ``1/L = 4280.23`` is reproduced.

    Args:
        x: data matrix ``(m, features)``.
        kind: the norm of ``X``, as in :func:`activation_norm` (default ``"fro"``).

    Returns:
        A 0-dim tensor ``L``.

    Example:
        >>> logistic_regression(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        tensor(1.2500)
    """
    return binary_cross_entropy(activation_norm(x, kind), _as_matrix("x", x).shape[0])


@overload
def softmax_cross_entropy(k_z: float, m: float, k: int) -> float: ...  # type: ignore[overload-overlap]
@overload
def softmax_cross_entropy(k_z: float | Tensor, m: float | Tensor, k: int | Tensor) -> Tensor: ...
def softmax_cross_entropy(k_z: float | Tensor, m: float | Tensor, k: int | Tensor) -> float | Tensor:
    r"""The paper's Lipschitz constant of softmax cross-entropy with ``k`` classes (§5.2, eq. 23).

    .. math:: L = \frac{k - 1}{k\,m}\,K_z

    .. note::
        Not an upper bound. Eq. 22-23 take the per-class factor :math:`|a_p - [y = p]|` at uniform softmax
        outputs, :math:`(k-1)/k`; but the per-example gradient :math:`p - e_y` has norm up to :math:`\sqrt2`
        (all mass on one wrong class), and the per-example terms add up as for :func:`binary_cross_entropy`. The
        rigorous bound is :func:`theorylr.lipschitz.bounds.gradient_norm_bound` with ``loss="softmax"``. For
        ``k = 2`` this equals :func:`binary_cross_entropy`.

    Args:
        k_z: ``K_z >= 0`` (:func:`activation_norm` of the batch).
        m: the batch size (> 0).
        k: the number of classes (>= 2).

    Returns:
        ``L``: a ``float`` for Python numbers, a tensor if any argument is a tensor.

    Example:
        >>> softmax_cross_entropy(3.0, 10, k=3)
        0.2
    """
    _check_nonnegative("k_z", k_z)
    _check_positive("m", m)
    _check_classes("k", k)
    k_z, m, k = _wide(k_z), _wide(m), _wide(k)
    return (k - 1) * k_z / (k * m)


def softmax_regression(x: Tensor, k: int, *, kind: str = "fro") -> Tensor:
    r"""The paper's Lipschitz constant of softmax regression (§5.2): :math:`L = (k-1)\|X\| / (k m)`.

    :func:`softmax_cross_entropy` with ``K_z = activation_norm(x, kind)`` and ``m = x.shape[0]``.

    Args:
        x: data matrix ``(m, features)``.
        k: the number of classes (>= 2).
        kind: the norm of ``X``, as in :func:`activation_norm` (default ``"fro"``).

    Returns:
        A 0-dim tensor ``L``.

    Example:
        >>> softmax_regression(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), k=5)
        tensor(2.)
    """
    check_int("k", k, min_value=2)
    return softmax_cross_entropy(activation_norm(x, kind), _as_matrix("x", x).shape[0], k)


# ----------------------------------------------------------------------------------------------------------------
# Regularisers (§5.3)
# ----------------------------------------------------------------------------------------------------------------
@overload
def l2_term(lam: float, weight_bound: float) -> float: ...  # type: ignore[overload-overlap]
@overload
def l2_term(lam: float | Tensor, weight_bound: float | Tensor) -> Tensor: ...
def l2_term(lam: float | Tensor, weight_bound: float | Tensor) -> float | Tensor:
    r"""What an L2 penalty :math:`\frac{\lambda}{2}\|w\|^2` adds to the Lipschitz constant (§5.3): :math:`\lambda K`.

    The penalty's gradient is :math:`\lambda w`, of norm at most :math:`\lambda K` for :math:`\|w\| \le K`; this is
    a true bound. torch's ``weight_decay=lam`` adds exactly :math:`\lambda w` to the gradient.

    Args:
        lam: :math:`\lambda \ge 0`.
        weight_bound: ``K >= 0``.

    Returns:
        A ``float`` for Python numbers, a tensor if any argument is a tensor.

    Example:
        >>> l2_term(0.5, 4.0)
        2.0
    """
    _check_nonnegative("lam", lam)
    _check_nonnegative("weight_bound", weight_bound)
    value = _wide(lam) * _wide(weight_bound)
    return value if isinstance(value, Tensor) else float(value)


@overload
def tikhonov_term(gamma: float, weight_bound: float) -> float: ...  # type: ignore[overload-overlap]
@overload
def tikhonov_term(gamma: float | Tensor, weight_bound: float | Tensor) -> Tensor: ...
def tikhonov_term(gamma: float | Tensor, weight_bound: float | Tensor) -> float | Tensor:
    r"""What a Tikhonov penalty :math:`\|\Gamma w\|^2` adds to the Lipschitz constant (§5.3):
    :math:`2K\|\Gamma^T\Gamma\|_2` (the paper's :math:`2K\|\Gamma^2\|`).

    :math:`w_1^T\Gamma^T\Gamma w_1 - w_2^T\Gamma^T\Gamma w_2 = (w_1 + w_2)^T\Gamma^T\Gamma(w_1 - w_2)`, so for
    :math:`\|w_1\|, \|w_2\| \le K` the penalty is :math:`2K\|\Gamma^T\Gamma\|_2`-Lipschitz: a true bound, with the
    spectral norm of :math:`\Gamma^T\Gamma = \Gamma^2` for a symmetric :math:`\Gamma`.

    ``gamma`` may be a number or 0-dim tensor (:math:`\Gamma = \gamma I`, term :math:`2K\gamma^2`), a 1-D tensor
    (a diagonal :math:`\Gamma`, term :math:`2K\max_i\gamma_i^2`) or a matrix (term :math:`2K\|\Gamma\|_2^2`, via
    torch's SVD, which on CUDA waits for the device: :math:`\Gamma` is a constant, compute the term once).

    .. note::
        The paper's derivation carries an extra :math:`\|w_1 - w_2\|\|\Gamma^2\|` term and then drops it; the
        identity above shows the boxed result holds without it. The paper's remark that L2 is the case
        :math:`\Gamma = \frac{\lambda}{2} I` is off: :math:`\frac{\lambda}{2}\|w\|^2` is :math:`\Gamma =
        \sqrt{\lambda/2}\, I`, which gives :math:`\lambda K` (:func:`l2_term`) as the paper says. The paper
        writes :math:`(\Gamma w)^T(\Gamma w) = w^T\Gamma^2 w`, true only for a symmetric :math:`\Gamma`: this
        function follows its first expression, :math:`\Gamma^T\Gamma`. For a non-symmetric matrix the literal
        :math:`2K\|\Gamma^2\|_2` is smaller and not a bound: for :math:`\Gamma = [[1, 1], [0, 1]]` and ``K = 1``
        it is 4.83, against 5.24 here and a Lipschitz ratio of 5.24 found on the unit ball.

    Args:
        gamma: :math:`\Gamma` (see above).
        weight_bound: ``K >= 0``.

    Returns:
        A ``float`` for Python numbers, a tensor if any argument is a tensor.

    Example:
        >>> tikhonov_term(0.5, 4.0)  # 2 * 4 * 0.25
        2.0
        >>> tikhonov_term(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), 1.0)  # 2 * golden ratio ** 2
        tensor(5.2361)
    """
    _check_nonnegative("weight_bound", weight_bound)
    if not isinstance(gamma, Tensor):
        check_number("gamma", gamma)
        return 2 * weight_bound * float(gamma) ** 2
    gamma, weight_bound = _wide(gamma), _wide(weight_bound)
    if gamma.ndim == 0:
        squared_norm = gamma**2
    elif gamma.ndim == 1:
        squared_norm = (gamma**2).amax()
    elif gamma.ndim == 2:
        squared_norm = torch.linalg.matrix_norm(gamma, ord=2) ** 2
    else:
        raise ValueError(f"gamma must be a number, a 0-dim, 1-D or 2-D tensor (got shape {tuple(gamma.shape)})")
    return 2 * weight_bound * squared_norm
