"""Hinge losses by hand, against torch's multi_margin_loss, and their subgradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from theorylr.models import BinaryHingeLoss, MulticlassHingeLoss, binary_hinge_loss, multiclass_hinge_loss


def test_binary_by_hand() -> None:
    f = torch.tensor([2.0, 0.5, 0.5, -3.0, 1.0])
    y01 = torch.tensor([1, 1, 0, 0, 0])
    expected = [0.0, 0.5, 1.5, 0.0, 2.0]  # max(0, 1 - s f), s = 2y - 1
    assert binary_hinge_loss(f, y01, reduction="none").tolist() == expected
    assert binary_hinge_loss(f, 2 * y01 - 1, reduction="none").tolist() == expected  # {-1, +1} labels
    assert binary_hinge_loss(f.unsqueeze(1), y01.float().unsqueeze(1), reduction="none").tolist() == expected
    assert binary_hinge_loss(f, y01).item() == pytest.approx(sum(expected) / 5)
    assert binary_hinge_loss(f, y01, reduction="sum").item() == pytest.approx(4.0)
    assert binary_hinge_loss(f, y01, squared=True, reduction="none").tolist() == [e * e for e in expected]
    assert binary_hinge_loss(f, y01, margin=0.0, reduction="none").tolist() == [0.0, 0.0, 0.5, 0.0, 1.0]
    assert BinaryHingeLoss(reduction="sum")(f, y01).item() == pytest.approx(4.0)


def test_binary_subgradient() -> None:
    f = torch.tensor([2.0, 0.5, 0.5, -3.0], requires_grad=True)
    binary_hinge_loss(f, torch.tensor([1, 1, 0, 0]), reduction="sum").backward()
    assert f.grad.tolist() == [0.0, -1.0, 1.0, 0.0]  # -s where the hinge is active


def test_multiclass_by_hand() -> None:
    f = torch.tensor([[3.0, 2.5, 0.0], [0.0, 1.0, 0.5], [5.0, 1.0, 2.0]])
    y = torch.tensor([0, 2, 0])
    # row 0: gaps (j=1) 1 + 2.5 - 3 = 0.5, (j=2) 1 + 0 - 3 < 0; row 1: 1 + 0 - 0.5 = 0.5, 1 + 1 - 0.5 = 1.5; row 2: 0
    assert multiclass_hinge_loss(f, y, reduction="none").tolist() == [0.5, 1.5, 0.0]
    assert multiclass_hinge_loss(f, y, form="weston_watkins", reduction="none").tolist() == [0.5, 2.0, 0.0]
    assert MulticlassHingeLoss()(f, y).item() == pytest.approx(2.0 / 3)


def test_weston_watkins_is_torch_multi_margin_times_classes() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(50, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (50,), generator=g)
    for margin in (1.0, 0.3):
        ours = multiclass_hinge_loss(f, y, margin=margin, form="weston_watkins", reduction="none")
        torch.testing.assert_close(ours, 7 * F.multi_margin_loss(f, y, margin=margin, reduction="none"))


def test_two_classes_reduce_to_binary() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(40, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=g)
    binary = binary_hinge_loss(f[:, 1] - f[:, 0], y, reduction="none")
    for form in ("crammer_singer", "weston_watkins"):
        torch.testing.assert_close(multiclass_hinge_loss(f, y, form=form, reduction="none"), binary)


def test_multiclass_subgradient() -> None:
    f = torch.tensor([[0.0, 1.0, 0.5]], requires_grad=True)
    multiclass_hinge_loss(f, torch.tensor([2])).backward()
    assert f.grad.tolist() == [[0.0, 1.0, -1.0]]  # Crammer-Singer: +1 on the worst wrong class, -1 on the true one


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: binary_hinge_loss(torch.zeros(3), torch.zeros(3), reduction="avg"), "reduction"),
        (lambda: binary_hinge_loss(torch.zeros(3), torch.zeros(3), margin=-1.0), "margin"),
        (lambda: binary_hinge_loss(torch.zeros(3, 2), torch.zeros(3)), "outputs"),
        (lambda: binary_hinge_loss(torch.zeros(3), torch.zeros(4)), "matching shapes"),
        (lambda: multiclass_hinge_loss(torch.zeros(3, 2), torch.zeros(3).long(), form="ovr"), "form"),
        (lambda: multiclass_hinge_loss(torch.zeros(3), torch.zeros(3).long()), r"\(N, C\)"),
        (lambda: MulticlassHingeLoss(reduction="max"), "reduction"),
        (lambda: BinaryHingeLoss(squared=1), "squared"),
    ],
)
def test_invalid(call, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        call()
