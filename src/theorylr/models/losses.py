"""Hinge losses for linear SVMs (torch has none in this form)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from theorylr._validation import check_bool, check_choice, check_number

__all__ = [
    "HINGE_FORMS",
    "REDUCTIONS",
    "BinaryHingeLoss",
    "MulticlassHingeLoss",
    "binary_hinge_loss",
    "multiclass_hinge_loss",
]

REDUCTIONS = ("mean", "sum", "none")
HINGE_FORMS = ("crammer_singer", "weston_watkins")


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def binary_hinge_loss(
    outputs: Tensor, targets: Tensor, *, margin: float = 1.0, squared: bool = False, reduction: str = "mean"
) -> Tensor:
    """The two-class SVM hinge loss ``ℓ_i = max(0, margin - s_i f_i)`` (squared: ``ℓ_i²``, the L2-SVM).

    ``f_i`` is the model's score (shape ``(N,)`` or ``(N, 1)``) and ``s_i = +1`` for a positive target, ``-1``
    otherwise, so targets may be given as ``{0, 1}`` (the labels theorylr's data sets use) or ``{-1, +1}``
    (``s_i = 1`` exactly when ``target > 0``). The loss is zero once every point is on its side with a
    functional margin of at least ``margin``. No regularisation term: add weight decay for the soft-margin SVM.

    Args:
        outputs: scores ``f``, ``(N,)`` or ``(N, 1)``.
        targets: labels, ``(N,)`` or ``(N, 1)``, integer or floating.
        margin: the margin (default 1).
        squared: square each term (default False).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> binary_hinge_loss(torch.tensor([2.0, 0.5, 0.5]), torch.tensor([1, 1, 0]), reduction="none").tolist()
        [0.0, 0.5, 1.5]
    """
    check_number("margin", margin, min_value=0.0)
    check_bool("squared", squared)
    check_choice("reduction", reduction, REDUCTIONS)
    _check_tensor("outputs", outputs)
    _check_tensor("targets", targets)
    scores = _squeeze_column(outputs, "outputs")
    labels = _squeeze_column(targets, "targets")
    if scores.shape != labels.shape:
        raise ValueError(
            f"outputs and targets must have matching shapes (got {tuple(outputs.shape)}, {tuple(targets.shape)})"
        )
    sign = torch.where(labels > 0, 1.0, -1.0).to(scores.dtype)
    losses = (margin - sign * scores).clamp_min(0.0)
    if squared:
        losses = losses.square()
    return _reduce(losses, reduction)


def multiclass_hinge_loss(
    outputs: Tensor,
    targets: Tensor,
    *,
    margin: float = 1.0,
    form: str = "crammer_singer",
    reduction: str = "mean",
) -> Tensor:
    """The multi-class SVM hinge loss on scores ``f_i ∈ R^C`` and labels ``y_i ∈ {0, ..., C-1}``.

    * ``"crammer_singer"`` (default; Crammer & Singer, 2001): ``ℓ_i = max(0, margin + max_{j≠y_i} f_ij - f_iy_i)``,
      the distance to the most competitive wrong class.
    * ``"weston_watkins"`` (Weston & Watkins, 1999): ``ℓ_i = Σ_{j≠y_i} max(0, margin + f_ij - f_iy_i)``. This is
      :func:`torch.nn.functional.multi_margin_loss` times ``C`` (torch divides the sum by the number of classes).

    Both are convex in ``f``, zero when the true class beats every other by ``margin``, and reduce to the binary
    hinge (:func:`binary_hinge_loss` on ``f_1 - f_0`` with ``margin``) for ``C = 2`` (Crammer-Singer and
    Weston-Watkins coincide there).

    Args:
        outputs: scores ``(N, C)``.
        targets: integer labels ``(N,)`` in ``[0, C)`` (a floating or bool tensor is a ValueError; so is a label
            outside that range on the CPU, while on an accelerator it fails in ``gather``: no host read there).
        margin: the margin (default 1).
        form: ``"crammer_singer"`` or ``"weston_watkins"``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> f = torch.tensor([[3.0, 2.5, 0.0], [0.0, 1.0, 0.5]])
        >>> multiclass_hinge_loss(f, torch.tensor([0, 2]), reduction="none").tolist()
        [0.5, 1.5]
        >>> multiclass_hinge_loss(f, torch.tensor([0, 2]), form="weston_watkins", reduction="none").tolist()
        [0.5, 2.0]
    """
    check_number("margin", margin, min_value=0.0)
    check_choice("form", form, HINGE_FORMS)
    check_choice("reduction", reduction, REDUCTIONS)
    _check_tensor("outputs", outputs)
    _check_tensor("targets", targets)
    if outputs.ndim != 2 or targets.ndim != 1 or outputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"outputs must be (N, C) and targets (N,) (got {tuple(outputs.shape)} and {tuple(targets.shape)})"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor of class labels (got dtype {targets.dtype})")
    num_classes = outputs.shape[1]
    # Checked where a read costs nothing (the CPU); on an accelerator it would be a sync per training step, so
    # there a label out of range fails in the gather below, as it does in torch's own losses.
    if targets.device.type == "cpu" and targets.numel() and bool(((targets < 0) | (targets >= num_classes)).any()):
        raise ValueError(
            f"targets must be class labels in [0, {num_classes}) for outputs with {num_classes} columns "
            f"(got labels from {int(targets.min())} to {int(targets.max())})"
        )
    index = targets.long().unsqueeze(1)
    true_score = outputs.gather(1, index)
    gaps = (outputs - true_score + margin).scatter(1, index, 0.0).clamp_min(0.0)
    losses = gaps.amax(dim=1) if form == "crammer_singer" else gaps.sum(dim=1)
    return _reduce(losses, reduction)


def _check_tensor(name: str, value: object) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (got {type(value).__name__})")


def _squeeze_column(t: Tensor, name: str) -> Tensor:
    if t.ndim == 2 and t.shape[1] == 1:
        return t.squeeze(1)
    if t.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1) (got {tuple(t.shape)})")
    return t


class BinaryHingeLoss(nn.Module):
    """:func:`binary_hinge_loss` as a criterion: ``BinaryHingeLoss(margin=1.0, squared=False, reduction="mean")``.

    Example:
        >>> import torch
        >>> BinaryHingeLoss()(torch.tensor([[0.0]]), torch.tensor([1])).item()
        1.0
    """

    def __init__(self, margin: float = 1.0, squared: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        check_number("margin", margin, min_value=0.0)
        check_bool("squared", squared)
        check_choice("reduction", reduction, REDUCTIONS)
        self.margin, self.squared, self.reduction = margin, squared, reduction

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return binary_hinge_loss(outputs, targets, margin=self.margin, squared=self.squared, reduction=self.reduction)


class MulticlassHingeLoss(nn.Module):
    """:func:`multiclass_hinge_loss` as a criterion: ``MulticlassHingeLoss(margin=1.0, form="crammer_singer",
    reduction="mean")``.

    Example:
        >>> import torch
        >>> MulticlassHingeLoss(form="weston_watkins")(torch.zeros(1, 3), torch.tensor([0])).item()
        2.0
    """

    def __init__(self, margin: float = 1.0, form: str = "crammer_singer", reduction: str = "mean") -> None:
        super().__init__()
        check_number("margin", margin, min_value=0.0)
        check_choice("form", form, HINGE_FORMS)
        check_choice("reduction", reduction, REDUCTIONS)
        self.margin, self.form, self.reduction = margin, form, reduction

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return multiclass_hinge_loss(outputs, targets, margin=self.margin, form=self.form, reduction=self.reduction)
