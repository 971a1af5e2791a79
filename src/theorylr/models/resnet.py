"""The CIFAR ResNet-20 (He et al., 2016, §4.2), v1 (post-activation) basic blocks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from theorylr._validation import check_choice, check_int
from theorylr.models.sequential import SequentialModel

__all__ = ["BasicBlock", "ResNet20"]

SHORTCUTS = ("A", "B")


class _PadShortcut(nn.Module):
    """Option A: subsample by 2 in space and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::2, ::2]
        front = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, front, self.extra - front))


class BasicBlock(nn.Module):
    """``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``, the v1 residual block.

    Args:
        in_channels, out_channels: channels in and out.
        stride: 1, or 2 to halve the spatial size (then the shortcut changes shape).
        shortcut: ``"A"`` (parameter-free: subsample and zero-pad channels) or ``"B"`` (1x1 conv + BatchNorm
            projection) for the blocks whose shape changes; identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        check_choice("shortcut", shortcut, SHORTCUTS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            if stride != 2 or out_channels < in_channels:
                raise ValueError("shortcut 'A' needs stride 2 and out_channels >= in_channels when the shape changes")
            self.shortcut = _PadShortcut(in_channels, out_channels)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(SequentialModel):
    """ResNet-20 for 32x32 images (He et al., 2016, "Deep Residual Learning", §4.2, n = 3).

    ``conv3x3(16) -> BN -> ReLU -> 3 blocks (16 ch, 32x32) -> 3 blocks (32 ch, 16x16) -> 3 blocks (64 ch, 8x8)
    -> global average pool -> flatten -> Linear(num_classes)``: 19 convolutions and one Linear, v1 blocks
    (:class:`BasicBlock`, ReLU after the addition).

    Args:
        num_classes: outputs (default 10).
        in_channels: image channels (default 3).
        shortcut: ``"A"`` (default, the paper's CIFAR choice: identity shortcuts, and on the two downsampling
            blocks a stride-2 subsampling with zero-padded extra channels, so no parameters) or ``"B"`` (1x1
            convolution + BatchNorm projections on those two blocks).

    Parameters for 10 classes: 269,722 with option A (the paper's "0.27M", Table 6), 272,474 with option B (the
    two projections add 2,752).

    .. note::
        Weights keep torch's default initialisation (He et al. used their "Kaiming normal" scheme:
        ``init_weights(model, "kaiming_normal")``). Any input size works thanks to the global pooling.

    Example:
        >>> import torch
        >>> m = ResNet20()
        >>> m(torch.zeros(2, 3, 32, 32)).shape, sum(p.numel() for p in m.parameters())
        (torch.Size([2, 10]), 269722)
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> None:
        check_int("num_classes", num_classes, min_value=1)
        check_int("in_channels", in_channels, min_value=1)
        check_choice("shortcut", shortcut, SHORTCUTS)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        channels = 16
        for stage, width in enumerate((16, 32, 64)):
            blocks = [
                BasicBlock(channels if i == 0 else width, width, 2 if (stage > 0 and i == 0) else 1, shortcut)
                for i in range(3)
            ]
            layers.append(nn.Sequential(*blocks))
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
        super().__init__(*layers)
        self.shortcut_type = shortcut
