"""Convolutional models: :class:`LeNet5`, :class:`VGG9` and the LipschitzLR paper's MNIST CNN."""

from __future__ import annotations

from torch import nn

from theorylr._validation import check_bool, check_choice, check_int
from theorylr.models.mlp import ACTIVATIONS, make_activation
from theorylr.models.sequential import SequentialModel

__all__ = ["VGG9", "LeNet5", "LipschitzCNN"]


class LeNet5(SequentialModel):
    """LeNet-5 (LeCun et al., 1998) in its common modern form, for 1- or 3-channel images.

    ``conv5x5(6) -> act -> maxpool2 -> conv5x5(16) -> act -> maxpool2 -> flatten -> Linear(120) -> act ->
    Linear(84) -> act -> Linear(num_classes)``. Images smaller than 32x32 get a 2-pixel zero padding in the first
    convolution (so 28x28 MNIST follows exactly the 32x32 path of the original); the first Linear takes whatever
    spatial size remains (5x5 for 28 and 32). 8x8 digits are too small: upscale them
    (``load_dataset("digits", resize=28)``).

    Args:
        in_channels: image channels (default 1).
        num_classes: outputs (default 10).
        image_size: height = width of the input (default 28; at least 12).
        activation: one of ``relu`` (default), ``tanh``, ``sigmoid``, ``softplus``, ``gelu``.

    Parameters: 61,706 for ``in_channels=1``, ``num_classes=10`` and image size 28 or 32.

    .. note::
        The 1998 network has ~60,000 parameters: its C3 layer connects each of the 16 maps to only some of the 6
        inputs (1,516 weights instead of 2,416 here), subsampling layers with trainable coefficients and an RBF
        output layer; it used scaled tanh. Like most re-implementations (and the exact-step-Adam paper, which
        only cites LeCun et al.) we use full C3 connections, max pooling, ReLU and a linear output.

    Example:
        >>> import torch
        >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, *, activation: str = "relu"
    ) -> None:
        check_int("in_channels", in_channels, min_value=1)
        check_int("num_classes", num_classes, min_value=1)
        check_int("image_size", image_size, min_value=12)
        check_choice("activation", activation, tuple(ACTIVATIONS))
        padding = 2 if image_size < 32 else 0
        side = ((image_size + 2 * padding - 4) // 2 - 4) // 2
        super().__init__(
            nn.Conv2d(in_channels, 6, 5, padding=padding),
            make_activation(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            make_activation(activation),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            make_activation(activation),
            nn.Linear(120, 84),
            make_activation(activation),
            nn.Linear(84, num_classes),
        )
        self.image_size = image_size


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    return layers


class VGG9(SequentialModel):
    """VGG-9 for 32x32 images: six 3x3 convolutions and three fully connected layers.

    ``(2 x conv(w)) -> maxpool -> (2 x conv(2w)) -> maxpool -> (2 x conv(4w)) -> maxpool -> flatten ->
    Linear(8w) -> ReLU -> Linear(8w) -> ReLU -> Linear(num_classes)``, each conv ``3x3``, padding 1, followed by
    BatchNorm (optional) and ReLU. With ``width=64``: 64-64-128-128-256-256 channels and two 512-unit layers,
    3.51M parameters (with BatchNorm).

    Args:
        in_channels: image channels (default 3).
        num_classes: outputs (default 10).
        batch_norm: BatchNorm2d after each convolution (whose bias is then dropped); default True.
        width: channels of the first block ``w`` (default 64); the others scale with it.
        image_size: height = width of the input (default 32; at least 8).

    .. note::
        The exact-step-Adam paper (§5, §5.4) trains a "VGG-9" on CIFAR-10 without giving its layers. We use the
        VGG-9 of Dong et al. (2017) / Frankle & Carbin (2019): ``(2x64C3)-MP2-(2x128C3)-MP2-(2x256C3)-MP2-
        (2x512FC)-10FC``, i.e. 6 conv + 3 linear weight layers.

    Example:
        >>> import torch
        >>> VGG9(width=8)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        batch_norm: bool = True,
        width: int = 64,
        image_size: int = 32,
    ) -> None:
        check_int("in_channels", in_channels, min_value=1)
        check_int("num_classes", num_classes, min_value=1)
        check_bool("batch_norm", batch_norm)
        check_int("width", width, min_value=1)
        check_int("image_size", image_size, min_value=8)
        layers: list[nn.Module] = []
        channels = in_channels
        for multiple in (1, 2, 4):
            out = width * multiple
            layers += _conv_block(channels, out, batch_norm) + _conv_block(out, out, batch_norm)
            layers.append(nn.MaxPool2d(2))
            channels = out
        side = image_size // 8
        hidden = 8 * width
        layers += [
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        ]
        super().__init__(*layers)
        self.width = width
        self.image_size = image_size


class LipschitzCNN(SequentialModel):
    """The MNIST CNN of the LipschitzLR paper (Yedida & Saha, §7.3.1, Table 4).

    Table 4, top to bottom (3x3 convolutions; "valid" = no padding, "same" = padding 1)::

        conv 32 valid, ReLU -> conv 32 valid, ReLU -> maxpool 2x2 -> dropout 0.2
        -> conv 64 same, ReLU -> conv 64 same, ReLU -> maxpool 2x2 -> dropout 0.25
        -> conv 128 same, ReLU -> dropout 0.25 -> flatten
        -> dense 128, ReLU -> BatchNorm -> dropout 0.25 -> dense num_classes (logits; softmax is in the loss)

    Args:
        in_channels: image channels (default 1).
        num_classes: outputs (default 10).
        image_size: height = width (default 28, giving a 6x6x128 feature map; at least 8).

    Parameters: 730,346 trainable for MNIST, the paper's "730K" (Keras also counts the BatchNorm's 256 moving
    statistics, which torch keeps as buffers).

    .. note::
        The paper (in Keras) only says "all activations except the last layer are ReLU". We read "Dense (128)"
        as a Dense layer with its ReLU, so the ReLU comes before the BatchNorm that follows it, and use Keras'
        BatchNorm defaults (``eps=1e-3``, moving-average momentum 0.99, i.e. torch ``momentum=0.01``). Keras
        initialises weights Glorot-uniform with zero biases: ``init_weights(model, "xavier_uniform")`` does the
        same; by default the layers keep torch's initialisation. The paper's data augmentation is not part of the model.

    Example:
        >>> import torch
        >>> m = LipschitzCNN()
        >>> m(torch.zeros(2, 1, 28, 28)).shape, sum(p.numel() for p in m.parameters())
        (torch.Size([2, 10]), 730346)
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        check_int("in_channels", in_channels, min_value=1)
        check_int("num_classes", num_classes, min_value=1)
        check_int("image_size", image_size, min_value=8)
        side = ((image_size - 4) // 2) // 2
        super().__init__(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(128 * side * side, 128),
            nn.ReLU(),
            nn.BatchNorm1d(128, eps=1e-3, momentum=0.01),
            nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )
        self.image_size = image_size
