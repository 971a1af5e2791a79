"""The :class:`Dataset` record every loader returns: train and test tensors plus what the task is."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from theorylr._validation import check_int

__all__ = ["TASKS", "Dataset"]

TASKS = ("classification", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A supervised data set split into train and test tensors.

    Attributes:
        name: the registry name (``"digits"``, ``"mnist"``, ...).
        x_train, x_test: inputs, a floating tensor of shape ``(N, *input_shape)``: ``(N, F)`` for feature vectors,
            ``(N, C, H, W)`` for images.
        y_train, y_test: targets: ``int64`` class labels in ``[0, num_classes)`` for classification, a floating
            tensor (same dtype as ``x``) for regression.
        task: ``"classification"`` or ``"regression"``.
        num_classes: the number of classes (``None`` for regression).
        class_names: optional names of the classes, indexed by label.

    The record is immutable; :meth:`to` returns a converted copy. Two records compare by identity (tensors have
    no single truth value).

    Example:
        >>> import torch
        >>> ds = Dataset("toy", torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), torch.zeros(2, 3),
        ...              torch.tensor([1, 0]), task="classification", num_classes=2)
        >>> ds.num_train, ds.num_features, ds.input_shape
        (4, 3, (3,))
        >>> ds.to(dtype=torch.float64).x_train.dtype
        torch.float64
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str = "classification"
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))} (got {self.task!r})")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, Tensor) or not isinstance(y, Tensor):
                raise ValueError(f"x_{split} and y_{split} must be torch tensors")
            if not x.is_floating_point():
                raise ValueError(f"x_{split} must be a floating tensor (got {x.dtype})")
            if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"x_{split} must be (N, ...) and y_{split} (N,) with the same N "
                    f"(got {tuple(x.shape)} and {tuple(y.shape)})"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"x_train and x_test must have the same input shape "
                f"(got {tuple(self.x_train.shape[1:])} and {tuple(self.x_test.shape[1:])})"
            )
        if self.task == "classification":
            num_classes = self.num_classes
            if num_classes is None:
                raise ValueError("num_classes must be an integer >= 2 for classification (got None)")
            check_int("num_classes", num_classes, min_value=2)  # a NumPy integer too
            object.__setattr__(self, "num_classes", int(num_classes))
            for split in ("train", "test"):
                y = getattr(self, f"y_{split}")
                if y.dtype != torch.int64:
                    raise ValueError(f"y_{split} must hold int64 class labels (got {y.dtype})")
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= int(num_classes)):
                    raise ValueError(
                        f"y_{split} labels must lie in [0, {int(num_classes)}) "
                        f"(got labels from {int(y.min())} to {int(y.max())})"
                    )
            if self.class_names is not None and len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"class_names must have num_classes={self.num_classes} entries (got {len(self.class_names)})"
                )
        else:
            if self.num_classes is not None:
                raise ValueError(f"num_classes must be None for regression (got {self.num_classes!r})")
            for split in ("train", "test"):
                if not getattr(self, f"y_{split}").is_floating_point():
                    raise ValueError(f"y_{split} must be a floating tensor for regression")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``x_train.shape[1:]``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_features(self) -> int:
        """Number of scalar inputs per example (the product of :attr:`input_shape`)."""
        return math.prod(self.input_shape)

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """A copy on ``device`` whose inputs (and regression targets) have the floating ``dtype``.

        Class labels stay ``int64``. ``None`` keeps the current device or dtype.
        """
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype such as torch.float64 (got {dtype!r})")
        regression = self.task == "regression"
        return replace(
            self,
            x_train=self.x_train.to(device=device, dtype=dtype),
            x_test=self.x_test.to(device=device, dtype=dtype),
            y_train=self.y_train.to(device=device, dtype=dtype if regression else None),
            y_test=self.y_test.to(device=device, dtype=dtype if regression else None),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, task={self.task!r}, num_classes={self.num_classes}, "
            f"train={self.num_train}, test={self.num_test}, input_shape={self.input_shape}, "
            f"dtype={self.x_train.dtype}, device={self.x_train.device})"
        )
