"""The Dataset record's checks and properties."""

from __future__ import annotations

import pytest
import torch

from theorylr.data import Dataset


def make(**overrides: object) -> Dataset:
    fields: dict = dict(
        name="toy",
        x_train=torch.zeros(4, 1, 2, 2),
        y_train=torch.tensor([0, 1, 2, 1]),
        x_test=torch.zeros(2, 1, 2, 2),
        y_test=torch.tensor([2, 0]),
        task="classification",
        num_classes=3,
    )
    fields.update(overrides)
    return Dataset(**fields)


def test_properties() -> None:
    ds = make()
    assert ds.input_shape == (1, 2, 2) and ds.num_features == 4 and ds.num_train == 4 and ds.num_test == 2
    assert "toy" in repr(ds)
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "ranking"}, "task"),
        ({"num_classes": None}, "num_classes"),
        ({"y_train": torch.tensor([0, 1, 3, 1])}, r"labels must lie in \[0, 3\)"),
        ({"y_train": torch.tensor([0.0, 1.0, 2.0, 1.0])}, "int64"),
        ({"x_train": torch.zeros(4, 1, 2, 2, dtype=torch.int64)}, "floating"),
        ({"x_test": torch.zeros(2, 4)}, "same input shape"),
        ({"y_test": torch.tensor([0])}, "same N"),
        ({"class_names": ("a", "b")}, "class_names"),
        ({"task": "regression"}, "num_classes must be None"),
    ],
)
def test_invalid(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**overrides)
