"""The closed forms, bounds and trackers refuse bad input early, by name, or flag it in the value (found by a
review feeding every public function odd values)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from theorylr import LipschitzLR
from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import (
    activation_norm,
    least_squares,
    least_squares_rigorous,
    logistic_regression,
    softmax_regression,
    weight_bound_estimate,
)
from theorylr.lipschitz.tracker import ActivationTracker
from theorylr.optim.adaptive import AdaMo


def test_a_class_index_out_of_range_makes_the_bound_nan_not_an_index_error() -> None:
    """``index_add_`` raised "index 9 is out of bounds" (a device-side assert on CUDA); the bound reads nothing
    on the host, so the value says it instead."""
    a = torch.randn(8, 5)
    good = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert math.isfinite(float(gradient_norm_bound(a, "softmax", num_classes=4, targets=good)))
    for bad in (torch.tensor([0, 1, 2, 9, 0, 1, 2, 3]), torch.tensor([0, 1, 2, -1, 0, 1, 2, 3])):
        assert math.isnan(float(gradient_norm_bound(a, "softmax", num_classes=4, targets=bad)))


def test_integer_activations_are_taken_as_floats_by_every_closed_form() -> None:
    """Integer matrices failed inside ``linalg`` with messages that named no argument; ``gradient_norm_bound``
    already took them."""
    x = torch.tensor([[1, 2], [3, 4], [0, 1]])
    xf = x.to(torch.get_default_dtype())
    y = torch.tensor([1.0, 0.0, 2.0])
    assert torch.equal(activation_norm(x), activation_norm(xf))
    assert torch.equal(weight_bound_estimate(x), weight_bound_estimate(xf))
    assert torch.equal(least_squares_rigorous(x, y, 2.0), least_squares_rigorous(xf, y, 2.0))
    assert torch.equal(least_squares(x, y, 2.0), least_squares(xf, y, 2.0))
    assert torch.equal(logistic_regression(x), logistic_regression(xf))
    assert torch.equal(softmax_regression(x, 3), softmax_regression(xf, 3))
    with pytest.raises(ValueError, match="a must be a real tensor"):
        activation_norm(torch.ones(2, 2, dtype=torch.complex64))


def test_the_papers_least_squares_names_nan_input() -> None:
    """A nan in x was reported as "L = nan is <= 0 ... subtracting norms is not a valid bound"."""
    with pytest.raises(ValueError, match="x or y holds a nan or an infinity"):
        least_squares(torch.full((4, 3), math.nan), torch.ones(4), 1.0)


def test_num_classes_must_match_the_tracked_layer() -> None:
    """``num_classes=5`` on a 3-output model was accepted and changed the lr ((k - 1) / k)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for bad in (2, 5, 50):
        with pytest.raises(
            ValueError, match=rf"num_classes must equal the out_features .* \(got {bad}, the layer has 3\)"
        ):
            LipschitzLR(opt, model, "softmax", num_classes=bad)
        with pytest.raises(ValueError, match="num_classes must equal"):
            AdaMo(model.parameters(), model=model, num_classes=bad)
    ActivationTracker(model, "softmax", num_classes=3).close()  # the layer's own count
    # a tracked module other than the output layer: k cannot be read from it, so any k >= 2 is taken
    ActivationTracker(model, "softmax", num_classes=5, penultimate=model[1]).close()
