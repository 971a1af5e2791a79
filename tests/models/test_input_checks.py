"""theorylr.models: hinge losses and final_linear refuse wrong inputs by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from theorylr.models import binary_hinge_loss, build_model, final_linear, multiclass_hinge_loss


def test_multiclass_hinge_refuses_out_of_range_labels() -> None:
    outputs = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"targets must be class labels in \[0, 3\) .*from 0 to 7"):
        multiclass_hinge_loss(outputs, torch.tensor([0, 1, 7, 0]))
    with pytest.raises(ValueError, match=r"targets must be class labels in \[0, 3\) .*from -1 to 2"):
        multiclass_hinge_loss(outputs, torch.tensor([0, -1, 2, 0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_multiclass_hinge_refuses_non_integer_targets(dtype: torch.dtype) -> None:
    """Float targets were truncated by ``.long()``: 0.9, 1.9, 2.9 gave the loss of 0, 1, 2."""
    with pytest.raises(ValueError, match="targets must be an integer tensor"):
        multiclass_hinge_loss(torch.randn(4, 3), torch.tensor([0.9, 1.9, 2.9, 0.9]).to(dtype))


def test_multiclass_hinge_still_takes_integer_labels_of_any_width() -> None:
    f = torch.tensor([[3.0, 2.5, 0.0], [0.0, 1.0, 0.5]])
    for dtype in (torch.int64, torch.int32, torch.uint8):
        assert multiclass_hinge_loss(f, torch.tensor([0, 2], dtype=dtype), reduction="none").tolist() == [0.5, 1.5]
    assert multiclass_hinge_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), reduction="sum").item() == 0


@pytest.mark.parametrize(
    ("outputs", "targets", "match"),
    [
        ([1.0, 2.0], torch.tensor([1.0, -1.0]), r"outputs must be a torch.Tensor \(got list\)"),
        (torch.tensor([1.0, 2.0]), [1, 0], r"targets must be a torch.Tensor \(got list\)"),
        (None, torch.tensor([1.0]), "outputs must be a torch.Tensor"),
    ],
)
def test_binary_hinge_refuses_non_tensors(outputs: object, targets: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        binary_hinge_loss(outputs, targets)  # type: ignore[arg-type]


def test_multiclass_hinge_refuses_non_tensors() -> None:
    with pytest.raises(ValueError, match=r"outputs must be a torch\.Tensor"):
        multiclass_hinge_loss([[1.0, 2.0]], torch.tensor([0]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"targets must be a torch\.Tensor"):
        multiclass_hinge_loss(torch.zeros(1, 2), [0])  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["m", None, [nn.Linear(2, 2)]])
def test_final_linear_refuses_non_modules(model: object) -> None:
    with pytest.raises(ValueError, match=r"model must be a torch.nn.Module"):
        final_linear(model)  # type: ignore[arg-type]


def test_final_linear_still_finds_the_output_layer() -> None:
    assert final_linear(build_model("mlp", in_features=4, hidden=8, out_features=3)).out_features == 3
