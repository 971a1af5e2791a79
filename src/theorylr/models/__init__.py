"""Models for the lab, defined here (no torchvision needed): linear models, MLPs, LeNet-5, VGG-9, ResNet-20 and the
LipschitzLR paper's MNIST CNN; weight initialisation schemes; hinge losses for linear SVMs.

Every model is a :class:`torch.nn.Sequential` (a :class:`SequentialModel`, whose slices such as ``model[:-1]`` are
plain ``nn.Sequential``) ending in a :class:`torch.nn.Linear` that outputs logits (no softmax or sigmoid: the
losses include it). LipschitzLR's closed forms read the input of that final layer, which
:func:`final_linear` returns.

Example:
    >>> import torch
    >>> from theorylr.models import build_model, init_weights
    >>> model = init_weights(build_model("lenet5"), "kaiming_uniform", torch.Generator().manual_seed(0))
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from theorylr.models.cnn import VGG9, LeNet5, LipschitzCNN
from theorylr.models.init import INIT_SCHEMES, init_weights
from theorylr.models.losses import (
    HINGE_FORMS,
    BinaryHingeLoss,
    MulticlassHingeLoss,
    binary_hinge_loss,
    multiclass_hinge_loss,
)
from theorylr.models.mlp import ACTIVATIONS, MLP, LinearModel, make_activation
from theorylr.models.registry import MODELS, build_model, final_linear
from theorylr.models.resnet import BasicBlock, ResNet20
from theorylr.models.sequential import SequentialModel

__all__ = [
    "ACTIVATIONS",
    "HINGE_FORMS",
    "INIT_SCHEMES",
    "MLP",
    "MODELS",
    "VGG9",
    "BasicBlock",
    "BinaryHingeLoss",
    "LeNet5",
    "LinearModel",
    "LipschitzCNN",
    "MulticlassHingeLoss",
    "ResNet20",
    "SequentialModel",
    "binary_hinge_loss",
    "build_model",
    "final_linear",
    "init_weights",
    "make_activation",
    "multiclass_hinge_loss",
]
