"""The losses a workload can name, with what the runner needs around each one.

A :class:`LossSpec` knows how many model outputs it expects, how to turn a dataset's targets into the tensor the
loss takes, how to count correct predictions (classification) and which closed form :class:`theorylr.LipschitzLR`
uses for it. All losses are means over the batch, as the papers' formulas assume.

======================  ================================================  =========  ===================
name                    loss (mean over the batch)                        outputs    LipschitzLR loss
======================  ================================================  =========  ===================
``cross_entropy``       softmax cross-entropy ``-log softmax(z)_y``       classes    ``"softmax"``
``bce``                 binary cross-entropy on one logit                 1          ``"bce"``
``least_squares``       ``(1/2m) sum_i (f(x_i) - y_i)^2`` (LipschitzLR §4) 1          ``"least_squares"``
``multiclass_hinge``    Crammer-Singer hinge (``theorylr.models``)        classes    --
``binary_hinge``        ``max(0, 1 - y f(x))``, ``y`` in {-1, +1}         1          --
======================  ================================================  =========  ===================

Example:
    >>> import torch
    >>> spec = get_loss("bce")
    >>> spec.outputs(num_classes=2)
    1
    >>> logits = torch.tensor([[2.0], [-1.0]]); y = spec.prepare_targets(torch.tensor([1, 0]), torch.float32)
    >>> int(spec.correct(logits, y))
    2
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "LossSpec", "get_loss"]


def _cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets)


def _bce(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(outputs.reshape(targets.shape), targets)


def _least_squares(outputs: Tensor, targets: Tensor) -> Tensor:
    return 0.5 * (outputs.reshape(targets.shape) - targets).square().mean()


def _multiclass_hinge(outputs: Tensor, targets: Tensor) -> Tensor:
    from theorylr.models import multiclass_hinge_loss

    return multiclass_hinge_loss(outputs, targets)


def _binary_hinge(outputs: Tensor, targets: Tensor) -> Tensor:
    # y in {-1, +1}; written here (not taken from theorylr.models) so that the sign convention is the lab's own.
    return torch.clamp(1.0 - targets * outputs.reshape(targets.shape), min=0.0).mean()


def _argmax_correct(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.argmax(dim=-1) == targets).sum()


def _logit_correct(outputs: Tensor, targets: Tensor) -> Tensor:
    return ((outputs.reshape(targets.shape) > 0) == (targets > 0.5)).sum()


def _sign_correct(outputs: Tensor, targets: Tensor) -> Tensor:
    return ((outputs.reshape(targets.shape) > 0) == (targets > 0)).sum()


@dataclass(frozen=True)
class LossSpec:
    """One loss and what the runner needs around it.

    Attributes:
        name: registry name.
        fn: ``fn(outputs, targets) -> scalar`` (mean over the batch).
        target_kind: ``"class"`` (targets are class indices, int64), ``"binary"`` (0/1 as floats),
            ``"sign"`` (-1/+1 as floats) or ``"real"`` (regression values as floats).
        classification: whether accuracy is defined.
        lipschitz: the ``loss`` name :class:`theorylr.LipschitzLR` takes for it, ``None`` when it has no closed form.
        correct_fn: counts correct predictions in a batch (classification only).
    """

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    target_kind: str
    classification: bool
    lipschitz: str | None
    correct_fn: Callable[[Tensor, Tensor], Tensor] | None = None

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The mean loss of ``outputs`` against prepared ``targets``."""
        return self.fn(outputs, targets)

    def outputs(self, num_classes: int | None) -> int:
        """How many outputs the model needs (``num_classes`` for multi-class losses, otherwise 1).

        Raises:
            ValueError: a multi-class loss on data without classes, or a binary loss (one logit: ``bce``,
                ``binary_hinge``) on data with other than two classes, whose labels it would misread.
        """
        if self.target_kind == "class":
            if num_classes is None or num_classes < 2:
                raise ValueError(f"loss {self.name!r} needs a classification dataset (got num_classes={num_classes})")
            return int(num_classes)
        if self.target_kind in ("binary", "sign") and num_classes is not None and num_classes != 2:
            raise ValueError(
                f"loss {self.name!r} is binary (one logit, two classes) but the dataset has {num_classes} classes; "
                "use a multi-class loss ('cross_entropy', 'multiclass_hinge')"
            )
        return 1

    def prepare_targets(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """Targets in the form :meth:`__call__` takes (class indices, 0/1 floats, -1/+1 floats or real values)."""
        if self.target_kind == "class":
            return y.long()
        if self.target_kind == "binary":
            return (y > 0).to(dtype) if y.dtype == torch.bool else y.to(dtype)
        if self.target_kind == "sign":
            # accept {0, 1} or {-1, +1} labels
            return torch.where(y > 0, 1.0, -1.0).to(dtype)
        return y.to(dtype)

    def correct(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Number of correct predictions in the batch, a 0-dim tensor (no host sync)."""
        if self.correct_fn is None:
            raise ValueError(f"loss {self.name!r} is a regression loss: accuracy is not defined")
        return self.correct_fn(outputs, targets)


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("cross_entropy", _cross_entropy, "class", True, "softmax", _argmax_correct),
        LossSpec("bce", _bce, "binary", True, "bce", _logit_correct),
        LossSpec("least_squares", _least_squares, "real", False, "least_squares"),
        LossSpec("multiclass_hinge", _multiclass_hinge, "class", True, None, _argmax_correct),
        LossSpec("binary_hinge", _binary_hinge, "sign", True, None, _sign_correct),
    )
}


def get_loss(name: str) -> LossSpec:
    """The :class:`LossSpec` called ``name`` (``ValueError`` naming the choices otherwise)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss must be one of {', '.join(sorted(LOSSES))} (got {name!r})") from None
