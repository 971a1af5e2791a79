"""theorylr.data: scale_features, Dataset, iterate_batches and the quadratics refuse wrong inputs by name."""

from __future__ import annotations

import pytest
import torch

from theorylr.data import Dataset, Quadratic, iterate_batches, make_quadratic, scale_features


@pytest.mark.parametrize("pixel_max", ["x", float("inf"), float("nan"), True, 0.0, -1.0, torch.tensor([1.0, 2.0])])
def test_scale_features_checks_pixel_max(pixel_max: object) -> None:
    """'x' raised a raw TypeError, inf scaled every value to 0, True was taken as 1."""
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="pixel_max must be"):
        scale_features(x, x.clone(), "unit", pixel_max=pixel_max)  # type: ignore[arg-type]


def test_scale_features_takes_numeric_pixel_max() -> None:
    x = torch.tensor([[0.0, 255.0], [51.0, 102.0]], dtype=torch.float64)
    for pixel_max in (255, 255.0, torch.tensor(255.0)):
        a, _ = scale_features(x, x.clone(), "unit", pixel_max=pixel_max)  # type: ignore[arg-type]
        assert a.tolist() == [[0.0, 1.0], [0.2, 0.4]]


@pytest.mark.parametrize(("scaling", "pixel_max"), [("standardize", None), ("sum_to_one", None), ("unit", None)])
def test_scale_features_refuses_an_empty_training_set(scaling: str, pixel_max: float | None) -> None:
    with pytest.raises(ValueError, match=r"x_train must have at least one row .* \(got shape \(0, 3\)\)"):
        scale_features(torch.randn(0, 3), torch.randn(4, 3), scaling, pixel_max=pixel_max)


def test_scale_features_without_fitting_takes_an_empty_training_set() -> None:
    a, b = scale_features(torch.randn(0, 3), torch.full((2, 3), 2.0), "unit", pixel_max=2.0)
    assert a.shape == (0, 3) and b.tolist() == [[1.0] * 3] * 2
    a, _ = scale_features(torch.randn(0, 3), torch.randn(2, 3), None)
    assert a.shape == (0, 3)


def test_dataset_label_message_shows_min_and_max() -> None:
    x = torch.randn(10, 3)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 5])
    with pytest.raises(ValueError, match=r"y_train labels must lie in \[0, 2\) \(got labels from 0 to 5\)"):
        Dataset("d", x, y, x, torch.zeros(10, dtype=torch.long), num_classes=2)
    with pytest.raises(ValueError, match=r"y_test labels must lie in \[0, 2\) \(got labels from -3 to 1\)"):
        Dataset("d", x, torch.zeros(10, dtype=torch.long), x, torch.tensor([0, 1] * 4 + [-3, 0]), num_classes=2)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.zeros(5, 1), None, r"y must be a torch.Tensor with one row per example \(got NoneType\)"),
        (None, torch.zeros(5), r"x must be a torch.Tensor .*\(got NoneType\)"),
        ([[0.0]] * 5, torch.zeros(5), r"x must be a torch.Tensor .*\(got list\)"),
        (torch.zeros(5, 1), torch.tensor(1.0), "y must be a torch.Tensor with one row per example"),
    ],
)
def test_iterate_batches_checks_x_and_y(x: object, y: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        list(iterate_batches(x, y, 4))  # type: ignore[arg-type]


def test_iterate_batches_checks_arguments_when_called() -> None:
    """The checks run at the call, not at the first ``next()``."""
    with pytest.raises(ValueError, match=r"y must be a torch\.Tensor"):
        iterate_batches(torch.zeros(5, 1), None, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        iterate_batches(torch.zeros(5, 1), torch.zeros(5), 0)


@pytest.mark.parametrize("eigenvalues", [3.0, 2, None, "12"])
def test_make_quadratic_needs_a_sequence_of_eigenvalues(eigenvalues: object) -> None:
    with pytest.raises(ValueError, match="eigenvalues must be a non-empty sequence of numbers > 0"):
        make_quadratic(eigenvalues)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hessian", "minimizer", "match"),
    [
        (torch.eye(2), torch.ones(3), r"minimizer must be a torch.Tensor of shape \(2,\) .*\(got \(3,\)\)"),
        (torch.eye(2), torch.ones(2, 1), r"minimizer must be .*\(got \(2, 1\)\)"),
        (torch.eye(2), [1.0, 1.0], r"minimizer must be .*\(got list\)"),
        (torch.ones(2, 3), torch.ones(2), r"hessian must be a square \(d, d\) torch.Tensor"),
        (torch.ones(2), torch.ones(2), "hessian must be a square"),
        (torch.zeros(0, 0), torch.zeros(0), "hessian must be a square"),
        ([[1.0]], torch.ones(1), r"hessian must be .*\(got list\)"),
    ],
)
def test_quadratic_checks_shapes_at_construction(hessian: object, minimizer: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Quadratic(hessian, minimizer)  # type: ignore[arg-type]


@pytest.mark.parametrize("min_value", ["x", float("nan"), True, None])
def test_quadratic_checks_min_value(min_value: object) -> None:
    with pytest.raises(ValueError, match="min_value must be a finite number"):
        Quadratic(torch.eye(2), torch.ones(2), min_value)  # type: ignore[arg-type]


def test_quadratic_still_constructs_from_matching_tensors() -> None:
    q = Quadratic(torch.eye(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), 1)
    assert q.min_value == 1.0 and type(q.min_value) is float
    assert float(q(torch.zeros(2, dtype=torch.float64))) == 2.0


@pytest.mark.parametrize(
    ("hessian", "minimizer", "match"),
    [
        (torch.tensor([[2.0, 1.0], [0.0, 2.0]]), torch.ones(2), r"hessian must be symmetric .*\|H - Hᵀ\| entry 1"),
        (torch.diag(torch.tensor([1.0, -1.0])), torch.ones(2), r"positive definite .*eigenvalue is -1"),
        (torch.zeros(2, 2), torch.ones(2), "positive definite"),  # convex but not strongly: condition number 0/0
        (torch.eye(2, dtype=torch.int64), torch.ones(2), r"hessian must be a floating-point tensor .*torch.int64"),
        (torch.eye(2), torch.ones(2, dtype=torch.int64), "minimizer must be a floating-point tensor"),
        (torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), torch.ones(2), "hessian must have finite"),
        (torch.eye(2), torch.tensor([1.0, float("inf")]), "minimizer must have finite"),
    ],
)
def test_quadratic_checks_the_hessian_is_symmetric_positive_definite(
    hessian: torch.Tensor, minimizer: torch.Tensor, match: str
) -> None:
    """The docstring promises a symmetric positive definite ``H``: the smoothness, strong convexity and condition
    number it reports are meaningless otherwise (``condition_number`` of ``H = 0`` was ``nan``)."""
    with pytest.raises(ValueError, match=match):
        Quadratic(hessian, minimizer)


def test_quadratic_accepts_rounding_asymmetry() -> None:
    """``A Aᵀ`` in float32 is symmetric only up to rounding: that is accepted."""
    a = torch.randn(50, 50, generator=torch.Generator().manual_seed(0))
    h = a @ a.T + torch.eye(50)
    q = Quadratic(h, torch.zeros(50))
    assert q.strong_convexity > 0
