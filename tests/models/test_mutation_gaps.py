"""Gaps a mutation review of theorylr.models found: each test kills a mutant that survived the rest of the suite
(the docstrings name the mutation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from theorylr.models import MLP, VGG9, LipschitzCNN, make_activation
from theorylr.models.resnet import BasicBlock


def test_lipschitz_cnn_batch_norm_uses_keras_defaults() -> None:
    """C09/C10 (cnn.py:194 eps 1e-3 -> 1e-5, momentum 0.01 -> 0.1): the docstring promises Keras' BatchNorm
    defaults (eps=1e-3, moving-average momentum 0.99, i.e. torch momentum=0.01)."""
    (bn,) = [m for m in LipschitzCNN().modules() if isinstance(m, nn.BatchNorm1d)]
    assert bn.eps == 1e-3 and bn.momentum == 0.01


@pytest.mark.parametrize(("make", "too_small"), [(LipschitzCNN, 7), (VGG9, 7)])
def test_cnn_image_size_below_documented_minimum_is_refused(make: type[nn.Module], too_small: int) -> None:
    """C12 (cnn.py:173 min 8 -> 6) and C13 (cnn.py:115 min 8 -> 4): below 8 the feature map is empty and the first
    Linear has 0 inputs; the constructor must refuse, by name."""
    with pytest.raises(ValueError, match="image_size"):
        make(image_size=too_small)


def test_basic_block_matches_its_formula() -> None:
    """N07 (resnet.py:61 final ReLU dropped) and N08 (resnet.py:59 inner ReLU dropped):
    relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut x), in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    block = BasicBlock(4, 4).eval()
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 5, 5)
    inner = torch.relu(block.bn1(block.conv1(x)))
    expected = torch.relu(block.bn2(block.conv2(inner)) + x)
    torch.testing.assert_close(block(x), expected)
    assert (block(x) >= 0).all()


def test_basic_block_shortcut_a_with_odd_channel_increase() -> None:
    """N03 (resnet.py:26 `extra - front` -> `front`): 3 -> 6 channels pads 1 in front and 2 behind."""
    block = BasicBlock(3, 6, stride=2, shortcut="A")
    x = torch.randn(1, 3, 4, 4)
    padded = block.shortcut(x)
    assert tuple(padded.shape) == (1, 6, 2, 2)
    assert padded[:, 0].abs().sum() == 0 and padded[:, 4:].abs().sum() == 0
    torch.testing.assert_close(padded[:, 1:4], x[:, :, ::2, ::2])
    assert tuple(block(x).shape) == (1, 6, 2, 2)


def test_basic_block_stride_two_same_channels_uses_the_padding_shortcut() -> None:
    """N04 (resnet.py:47 `and` -> `or`) and N05 (resnet.py:50 `<` -> `<=`): stride 2 with equal channels is a shape
    change handled by option A (subsample, nothing to pad), not an identity and not an error."""
    block = BasicBlock(8, 8, stride=2, shortcut="A")
    assert tuple(block(torch.randn(1, 8, 6, 6)).shape) == (1, 8, 3, 3)


def test_basic_block_shortcut_a_refuses_stride_one_channel_change() -> None:
    """N10 (resnet.py:50 `stride != 2 or` dropped): option A cannot project channels at stride 1."""
    with pytest.raises(ValueError, match="shortcut 'A' needs stride 2"):
        BasicBlock(4, 8, stride=1, shortcut="A")


def test_mlp_batch_norm_hidden_linears_have_no_bias_and_no_dropout_by_default() -> None:
    """P01 (mlp.py:113 `bias=not batch_norm` -> True) and P02 (mlp.py:117 `dropout > 0` -> `>= 0`)."""
    m = MLP(4, hidden=(8, 8), batch_norm=True)
    linears = [mod for mod in m if isinstance(mod, nn.Linear)]
    assert [lin.bias is None for lin in linears] == [True, True, False]
    assert not any(isinstance(mod, nn.Dropout) for mod in MLP(4, hidden=(8, 8)))


@pytest.mark.parametrize(
    ("name", "cls"),
    [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("softplus", nn.Softplus), ("gelu", nn.GELU)],
)
def test_activation_names_map_to_their_modules(name: str, cls: type) -> None:
    """P04 (mlp.py:20 gelu -> SiLU) and P09 (mlp.py:19 softplus -> ReLU); P08 (mlp.py:125 the attribute)."""
    assert type(make_activation(name)) is cls
    m = MLP(3, hidden=(4,), activation=name)
    assert type(m[2]) is cls and m.activation == name
