"""The model registry: names -> constructors, and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from theorylr._validation import check_module
from theorylr.models.cnn import VGG9, LeNet5, LipschitzCNN
from theorylr.models.mlp import MLP, LinearModel
from theorylr.models.resnet import ResNet20
from theorylr.models.sequential import SequentialModel

__all__ = ["MODELS", "build_model", "final_linear"]

MODELS: dict[str, Callable[..., SequentialModel]] = {
    "linear": LinearModel,
    "mlp": MLP,
    "lenet5": LeNet5,
    "vgg9": VGG9,
    "resnet20": ResNet20,
    "lipschitz_cnn": LipschitzCNN,
}


def build_model(name: str, **kwargs: Any) -> SequentialModel:
    """Construct the registered model ``name`` with ``kwargs``.

    Names: ``"linear"`` (:class:`LinearModel`), ``"mlp"`` (:class:`MLP`), ``"lenet5"`` (:class:`LeNet5`),
    ``"vgg9"`` (:class:`VGG9`), ``"resnet20"`` (:class:`ResNet20`), ``"lipschitz_cnn"`` (:class:`LipschitzCNN`).
    Every model is an :class:`~torch.nn.Sequential` whose last module is an :class:`~torch.nn.Linear` producing
    the outputs (logits): the LipschitzLR closed forms need the input of that layer (see :func:`final_linear`).

    Example:
        >>> build_model("mlp", in_features=64, hidden=(32,))[-1]
        Linear(in_features=32, out_features=10, bias=True)
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"name must be one of {', '.join(map(repr, MODELS))} (got {name!r})")
    return MODELS[name](**kwargs)


def final_linear(model: nn.Module) -> nn.Linear:
    """The model's output layer: the last :class:`~torch.nn.Linear` in ``model.modules()`` order.

    For theorylr's models this is ``model[-1]``, the layer whose input (the penultimate activations) and weights
    the LipschitzLR formulas use.

    Raises:
        ValueError: ``model`` is not a :class:`torch.nn.Module`, or it has no Linear layer.

    Example:
        >>> final_linear(build_model("resnet20")).in_features
        64
    """
    check_module("model", model)
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError(f"{type(model).__name__} has no torch.nn.Linear layer")
    return last
