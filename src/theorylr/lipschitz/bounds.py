r"""True upper bounds on the last-layer gradient norm: the rigorous counterpart of LipschitzLR's constants.

The paper's constants (:mod:`theorylr.lipschitz.closed_form`) are not upper bounds on the gradient norm: with
``K_z = ||X||_F`` they fall short of the largest last-layer gradient norm by an order of magnitude on the
embedded sklearn datasets (``tests/lipschitz/test_bounds.py`` measures by how much). :func:`gradient_norm_bound`
is a bound that holds for every value of the last-layer weights, computed from the batch's activations only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from theorylr._validation import check_bool, check_choice, check_int, check_number
from theorylr.lipschitz.closed_form import spectral_norm_bound

__all__ = ["LOSSES", "gradient_norm_bound"]

LOSSES = ("softmax", "bce", "least_squares")


def _matrix(activations: Tensor, bias: bool) -> Tensor:
    if not isinstance(activations, Tensor):
        raise ValueError(
            f"activations must be a torch.Tensor of shape (m, features) (got {type(activations).__name__})"
        )
    if activations.ndim < 2 or activations.shape[0] == 0:
        raise ValueError(
            "activations must have shape (m, features...) with m >= 1 examples and at least 2 dimensions "
            f"(got shape {tuple(activations.shape)})"
        )
    a = activations.detach().reshape(activations.shape[0], -1)
    if bias:
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
    return a


def _targets_matrix(targets: Tensor, m: int, dtype: torch.dtype, what: str) -> Tensor:
    if not isinstance(targets, Tensor) or targets.ndim not in (1, 2) or targets.shape[0] != m:
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must be {what} with m = {m} rows (got {shape})")
    return targets.detach().to(dtype).reshape(m, -1)


def _spread(a: Tensor) -> Tensor:
    r"""``S(A) = min(sum_i ||a_i||, sqrt(m) ||A||_2)``: the bound on ``||U^T A||_F`` for rows ``||u_i|| <= 1``."""
    per_row = torch.linalg.vector_norm(a, dim=1).sum()
    spectral = math.sqrt(a.shape[0]) * spectral_norm_bound(a)
    return torch.minimum(per_row, spectral)


# Weights alpha of the centre C = alpha (1/k - Y) tried by the softmax bound with targets (0 = no centre).
_CENTRE_WEIGHTS = tuple(i / 8 for i in range(9))


def _softmax_radius(alpha: float, k: int) -> float:
    r"""``max ||p - y - alpha (1/k - y)||`` over ``p, y`` in the ``k``-simplex (a convex function: vertices)."""
    same = alpha**2 * (1 - 1 / k)  # p = y = e_l
    other = (1 - alpha / k) ** 2 + (1 - alpha + alpha / k) ** 2 + (k - 2) * (alpha / k) ** 2  # p = e_j, y = e_l
    return math.sqrt(max(same, other))


def gradient_norm_bound(
    activations: Tensor,
    loss: str,
    *,
    num_classes: int | None = None,
    targets: Tensor | None = None,
    weight_bound: float | Tensor | None = None,
    bias: bool = False,
) -> Tensor:
    r"""An upper bound on the Frobenius norm of the last-layer gradient of the mean loss, for every weight value.

    The last layer maps the penultimate activations :math:`a_i` (rows of ``activations``, a batch of ``m``) to
    logits :math:`z_i = W a_i (+ b)`, and the loss is the mean :math:`E = \frac1m\sum_i \ell(z_i, y_i)`. Then

    .. math:: \nabla_W E = \frac1m \sum_i g_i a_i^T = \frac1m G^T A, \qquad g_i = \partial\ell/\partial z_i .

    This function returns a number ``B`` with :math:`\|\nabla_W E\|_F \le B` for **every** ``W`` (for least
    squares: every ``W`` with :math:`\|W\|_F \le K`). It is the rigorous Lipschitz constant of the batch loss as a
    function of the last-layer weights (paper §3.1: :math:`L = \sup\|\nabla_W E\|`).

    **Bias.** With ``bias=True`` a column of ones is appended to the activations (the bias is the weight of a
    constant activation 1) and ``B`` bounds the joint norm :math:`\|[\nabla_W E,\ \nabla_b E]\|_F`, hence each
    part. With ``bias=False`` (default) ``B`` bounds :math:`\|\nabla_W E\|_F` whether or not the layer has a bias for
    ``"softmax"`` and ``"bce"``; for ``"least_squares"`` only for a layer without bias (a bias shifts the residual:
    with one, pass ``bias=True`` and ``K`` at least :math:`\|[W, b]\|_F`).

    **Proof.** *Lemma.* If :math:`g_i = c_i + u_i` with :math:`\|u_i\| \le r` then
    :math:`\|G^T A\|_F \le \|C^T A\|_F + r\,S(A)` with :math:`S(A) = \min(\sum_i\|a_i\|,\ \sqrt m\,\|A\|_2)`:
    the triangle inequality gives :math:`\|U^T A\|_F \le \sum_i \|u_i\|\|a_i\| \le r\sum_i\|a_i\|`, and
    :math:`\|U^T A\|_F \le \|U\|_F\|A\|_2 \le r\sqrt m\,\|A\|_2`. (:math:`\|A\|_2` is replaced by the upper bound
    :func:`~theorylr.lipschitz.closed_form.spectral_norm_bound`, sync-free and within 0.5 %.)

    * ``"bce"`` (one sigmoid output, :math:`\ell = -y\log\sigma(z) - (1-y)\log(1-\sigma(z))`, targets in [0, 1]):
      :math:`g_i = \sigma(z_i) - y_i \in (-y_i,\ 1 - y_i)`. Without targets, :math:`c_i = 0`, :math:`r = 1`:
      :math:`B = S(A)/m`. With targets, :math:`c_i = \frac12 - y_i`, :math:`r = \frac12`:
      :math:`B = (\|A^T c\| + \frac12 S(A))/m`, never larger, since :math:`|c_i| \le \frac12`.
    * ``"softmax"`` (:math:`\ell = -\sum_j y_j\log p_j`, :math:`p = \operatorname{softmax}(z)`, one-hot or
      probability targets): :math:`g_i = p_i - y_i` with :math:`p_i, y_i` in the simplex, and
      :math:`\|p - y\|^2` is convex, so it is largest at vertices: :math:`\|e_a - e_b\|^2 \le 2`. Without
      targets, :math:`c_i = 0`, :math:`r = \sqrt2`: :math:`B = \sqrt2\,S(A)/m`. With targets, centre the simplex:
      :math:`c_i = \alpha(\frac1k\mathbf 1 - y_i)`, so :math:`\|C^TA\|_F = \alpha\,\|C_1^TA\|_F` and
      :math:`u_i = p_i - \frac{\alpha}{k}\mathbf 1 - (1-\alpha)\,y_i`, whose squared norm is convex in
      :math:`(p_i, y_i)`, hence largest at vertices: :math:`r_\alpha^2 = \max\big(\alpha^2(1-\frac1k),\
      (1-\frac{\alpha}{k})^2 + (1-\alpha+\frac{\alpha}{k})^2 + (k-2)\frac{\alpha^2}{k^2}\big)`
      (:math:`r_0 = \sqrt2`, :math:`r_1 = \sqrt{1 - 1/k}`). Every :math:`\alpha` gives a bound; we take
      :math:`B = \min_{\alpha \in \{0, \frac18, \dots, 1\}} (\alpha\|C_1^T A\|_F + r_\alpha S(A))/m`.
    * ``"least_squares"`` (:math:`\ell = \frac12\|z - y\|^2`, the paper's :math:`\frac{1}{2m}` convention;
      for ``nn.MSELoss()``, which averages over the ``p`` outputs too and has no :math:`\frac12`, multiply ``B``
      by :math:`2/p`): :math:`\nabla_W E = \frac1m(W A^T A - Y^T A)` and
      :math:`\|W A^TA\|_F \le \|W\|_F\|A\|_2^2`, so :math:`B = (K\|A\|_2^2 + \|Y^T A\|_F)/m`. At
      :math:`W = \pm K u v^T` (``v`` the top right singular vector of ``A``) the two squared gradient norms sum to
      :math:`2(K^2\|A\|_2^4 + \|Y^T A\|_F^2)/m^2`, so ``B`` is at most :math:`\sqrt2` times the supremum.
      :math:`\square`

    How tight: the per-example factors (1 for BCE, :math:`\sqrt2` for softmax) are attained (all examples
    misclassified with large margin, or all mass on one wrong class); what is lost is the alignment of the
    per-example terms. The exact supremum is a maximum over the sign/class patterns a linear layer can produce
    (for BCE :math:`\max_s\|A^T s\|` over realisable :math:`s \in \{\pm1\}^m`, NP-hard in general), which ``S(A)``
    bounds. With ``K_z = ||A||_F``: :math:`\sum_i\|a_i\| \le \sqrt m\,K_z`, so the bound is at most
    :math:`K_z/\sqrt m` (BCE) where the paper has :math:`K_z/(2m)`: a factor up to :math:`2\sqrt m` apart.

    **For LipschitzLR's** ``rigorous=True`` **mode.** Per batch ``b`` with activations :math:`A_b`,
    :math:`L_b = ` ``gradient_norm_bound(A_b, loss, ...)``; per epoch :math:`L = \max_b L_b` (plus
    ``l2_term(weight_decay, K)`` with weight decay) and ``lr = multiplier / L``: then every SGD step moves the
    last layer by at most ``multiplier`` in Frobenius norm, which is the paper's motivation (§3.1) made true.

    Args:
        activations: the last layer's inputs, shape ``(m, features...)`` (trailing dimensions flattened).
        loss: ``"softmax"``, ``"bce"`` or ``"least_squares"``.
        num_classes: ``k >= 2`` for ``"softmax"`` (needed only with class-index targets; the bound without targets
            does not depend on ``k``); ``None`` or 1 for ``"bce"``; ``None`` for ``"least_squares"``.
        targets: optional for classification, required for ``"least_squares"``. ``"bce"``: shape ``(m,)`` or
            ``(m, 1)``, values in [0, 1]. ``"softmax"``: class indices ``(m,)`` (integer dtype) or probabilities
            ``(m, k)``. ``"least_squares"``: ``(m,)`` or ``(m, outputs)``. Values are not checked (no host read),
            except that a class index outside ``[0, num_classes)`` makes the bound ``nan``.
        weight_bound: ``K``, required for ``"least_squares"``: the bound holds for :math:`\|W\|_F \le K`
            (:math:`\|[W, b]\|_F \le K` with ``bias=True``).
        bias: append a column of ones to the activations (default ``False``, see above).

    Returns:
        A 0-dim tensor with the activations' dtype (float32 for float16 or bfloat16 activations, whose rounding
        could put it below the supremum) and device, detached; nothing is read on the host. The terms are computed
        on ``A / max |a_ij|`` and scaled back, so activations far from 1 neither underflow nor overflow.

    Raises:
        ValueError: for an unknown ``loss``, a bad ``num_classes``/``weight_bound``, missing least-squares
            arguments, or shapes that disagree.

    Example:
        >>> a = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
        >>> gradient_norm_bound(a, "bce")  # (||a_1|| + ||a_2||) / m = (5 + 1) / 2
        tensor(3., dtype=torch.float64)
        >>> gradient_norm_bound(a, "bce", targets=torch.tensor([1.0, 0.0]))  # (||a_2 - a_1|| / 2 + 6 / 2) / 2
        tensor(2.5607, dtype=torch.float64)
    """
    check_choice("loss", loss, LOSSES)
    check_bool("bias", bias)
    a = _matrix(activations, bias)
    if a.dtype in (torch.float16, torch.bfloat16):  # their rounding could put B below the supremum
        a = a.float()
    m = a.shape[0]
    # Every term is computed on A / s with s = max |a_ij| and scaled back (softmax and BCE are linear in A, least
    # squares' two terms are of degree 2 and 1): norms of tiny or huge activations would otherwise underflow to 0 or
    # overflow to inf in their squares. An infinite entry gives inf; a nan, nan.
    scale = a.abs().amax() if a.numel() else a.new_zeros(())
    a = a / torch.where(scale > 0, scale, 1.0)

    if loss == "least_squares":
        if num_classes is not None:
            raise ValueError(f"num_classes must be None for loss='least_squares' (got {num_classes!r})")
        if targets is None or weight_bound is None:
            raise ValueError(
                "loss='least_squares' needs targets and weight_bound: the residual, hence the gradient, is "
                "unbounded without them"
            )
        if not isinstance(weight_bound, Tensor):
            check_number("weight_bound", weight_bound, min_value=0.0)
        y = _targets_matrix(targets, m, a.dtype, "a tensor of shape (m,) or (m, outputs)")
        value = weight_bound * scale**2 * spectral_norm_bound(a) ** 2 + scale * torch.linalg.vector_norm(a.mT @ y)
        return _finish(value / m, scale)

    if weight_bound is not None and not isinstance(weight_bound, Tensor):
        check_number("weight_bound", weight_bound, min_value=0.0)
    spread = _spread(a)

    if loss == "bce":
        if num_classes not in (None, 1):
            raise ValueError(f"num_classes must be None or 1 for loss='bce' (one sigmoid output; got {num_classes!r})")
        if targets is None:
            return _finish(scale * spread / m, scale)
        y = _targets_matrix(targets, m, a.dtype, "a tensor of shape (m,) or (m, 1) with values in [0, 1]")
        if y.shape[1] != 1:
            raise ValueError(f"targets must have shape (m,) or (m, 1) for loss='bce' (got {tuple(targets.shape)})")
        centre = torch.linalg.vector_norm(a.mT @ (0.5 - y))
        return _finish(scale * (centre + 0.5 * spread) / m, scale)

    # softmax
    if num_classes is not None:
        check_int("num_classes", num_classes, min_value=2)
    if targets is None:
        return _finish(scale * math.sqrt(2.0) * spread / m, scale)
    if not isinstance(targets, Tensor) or targets.shape[0] != m:
        raise ValueError(f"targets must be class indices (m,) or probabilities (m, k) with m = {m}")
    if targets.ndim == 1 and not targets.is_floating_point():
        if num_classes is None:
            raise ValueError("num_classes is required with class-index targets for loss='softmax'")
        k = num_classes
        index = targets.detach().long()
        # No host read to check the range (the bound is sync-free): an index outside [0, k) makes the bound nan,
        # where index_add_ would fail with an indexing error (a device-side assert on CUDA).
        outside = ((index < 0) | (index >= k)).any()
        index = index.clamp(0, k - 1)
        a = torch.where(outside, math.nan, a)
        ya = a.new_zeros(k, a.shape[1]).index_add_(0, index, a)
    elif targets.ndim == 2 and targets.is_floating_point():
        k = targets.shape[1]
        if num_classes is not None and num_classes != k:
            raise ValueError(f"num_classes ({num_classes}) must equal targets.shape[1] ({k}) for probability targets")
        if k < 2:
            raise ValueError(f"probability targets need k >= 2 columns (got {k})")
        ya = targets.detach().to(a.dtype).mT @ a
    else:
        raise ValueError(
            "targets must be integer class indices of shape (m,) or float probabilities of shape (m, k) for "
            f"loss='softmax' (got dtype {targets.dtype}, shape {tuple(targets.shape)})"
        )
    centre = torch.linalg.vector_norm(a.sum(dim=0) / k - ya)
    candidates = [alpha * centre + _softmax_radius(alpha, k) * spread for alpha in _CENTRE_WEIGHTS]
    return _finish(scale * torch.stack(candidates).amin() / m, scale)


def _finish(value: Tensor, scale: Tensor) -> Tensor:
    """``value`` of :func:`gradient_norm_bound`, inf where an activation is infinite (its scaled terms are nan)."""
    return torch.where(torch.isinf(scale), math.inf, value)
