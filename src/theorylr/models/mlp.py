"""Fully connected models: :class:`LinearModel` and :class:`MLP`."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence

from torch import nn

from theorylr._validation import check_bool, check_choice, check_int, check_probability
from theorylr.models.sequential import SequentialModel

__all__ = ["ACTIVATIONS", "MLP", "LinearModel", "make_activation"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name: one of :data:`ACTIVATIONS` (``relu``, ``tanh``, ``sigmoid``,
    ``softplus``, ``gelu``)."""
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]()


class LinearModel(SequentialModel):
    """``f(x) = W flatten(x) + b``: one :class:`torch.nn.Linear` after flattening the input.

    With the matching loss this is least squares (``MSELoss``, ``out_features=1``), logistic regression
    (``BCEWithLogitsLoss``, ``out_features=1``), softmax regression (``CrossEntropyLoss``,
    ``out_features=num_classes``) or a linear SVM (:func:`~theorylr.models.binary_hinge_loss` or
    :func:`~theorylr.models.multiclass_hinge_loss`), the convex problems of the papers.

    Args:
        in_features: number of inputs per example (``prod(input_shape)``).
        out_features: number of outputs (default 1).
        bias: learn ``b`` (default True).

    The last module (``model[-1]``) is the :class:`~torch.nn.Linear`, as for every theorylr model: the LipschitzLR
    hooks read the input of that layer.

    Example:
        >>> import torch
        >>> LinearModel(4, 3)(torch.zeros(5, 2, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(self, in_features: int, out_features: int = 1, *, bias: bool = True) -> None:
        check_int("in_features", in_features, min_value=1)
        check_int("out_features", out_features, min_value=1)
        check_bool("bias", bias)
        super().__init__(nn.Flatten(), nn.Linear(in_features, out_features, bias=bias))
        self.in_features = in_features
        self.out_features = out_features


class MLP(SequentialModel):
    """A multilayer perceptron: ``flatten -> [Linear -> (BatchNorm1d) -> activation -> (Dropout)] x depth -> Linear``.

    Args:
        in_features: number of inputs per example (the input is flattened first).
        hidden: widths of the hidden layers (default ``(128,)``; an int, Python or NumPy, means one hidden layer;
            ``()`` gives a linear model). The exact-step-Adam paper's networks are ``hidden=(h,) * depth`` with
            ReLU (§5).
        out_features: number of outputs (default 10).
        activation: ``"relu"`` (default), ``"tanh"``, ``"sigmoid"``, ``"softplus"`` or ``"gelu"``.
        dropout: dropout probability after each hidden activation, in ``[0, 1)`` (default 0: no Dropout module).
        batch_norm: insert :class:`~torch.nn.BatchNorm1d` between each hidden Linear and its activation (those
            Linears then have no bias, which the normalisation would cancel).

    The last module is the output :class:`~torch.nn.Linear` (no activation after it: losses take logits).

    Example:
        >>> import torch
        >>> m = MLP(64, hidden=(32, 32), out_features=10, activation="tanh")
        >>> m(torch.zeros(3, 64)).shape, type(m[-1]).__name__
        (torch.Size([3, 10]), 'Linear')
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] | int = (128,),
        out_features: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        check_int("in_features", in_features, min_value=1)
        widths: tuple[int, ...]
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):  # NumPy integers too
            check_int("hidden", hidden, min_value=1)
            widths = (int(hidden),)
        elif isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
            raise ValueError(f"hidden must be an int or a sequence of ints, the hidden widths (got {hidden!r})")
        else:
            widths = tuple(hidden)
        for i, width in enumerate(widths):
            check_int(f"hidden[{i}]", width, min_value=1)
        widths = tuple(int(width) for width in widths)
        check_int("out_features", out_features, min_value=1)
        check_choice("activation", activation, tuple(ACTIVATIONS))
        check_probability("dropout", dropout)
        check_bool("batch_norm", batch_norm)
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in widths:
            layers.append(nn.Linear(previous, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            previous = width
        layers.append(nn.Linear(previous, out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.hidden = widths
        self.out_features = out_features
        self.activation = activation
