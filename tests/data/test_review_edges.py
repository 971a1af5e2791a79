"""Inputs a demanding user passes that the data, model and suggest APIs must take or refuse clearly: NumPy
arrays and scalars, raw integer pixels, strings where numbers belong, lazy modules, unknown options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from theorylr.data import Dataset, iterate_batches, make_quadratic, split_indices
from theorylr.data.scaling import scale_features


def test_make_quadratic_takes_arrays_and_refuses_strings_and_bools() -> None:
    for eigenvalues in (np.array([1.0, 10.0]), torch.tensor([1.0, 10.0])):
        q = make_quadratic(eigenvalues, np.array([1.0, 2.0]), rotate=False)
        assert torch.equal(q.minimizer, torch.tensor([1.0, 2.0], dtype=q.minimizer.dtype))
    for bad in ("19", ("1", "4"), [True, 2.0]):
        with pytest.raises(ValueError, match="eigenvalues"):
            make_quadratic(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("scaling", ["unit", "standardize", "sum_to_one"])
def test_raw_integer_pixels_are_scaled_as_float32(scaling: str) -> None:
    x = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b = scale_features(x, x[:2], scaling, pixel_max=255.0 if scaling == "unit" else None)
    fa, fb = scale_features(x.float(), x[:2].float(), scaling, pixel_max=255.0 if scaling == "unit" else None)
    assert a.dtype == torch.float32 and torch.equal(a, fa) and torch.equal(b, fb)


def test_data_helpers_refuse_wrong_types_by_name() -> None:
    x, y = torch.zeros(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator"):
        list(iterate_batches(x, y, 2, shuffle=True, generator=5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y must be a 1-D tensor of class labels"):
        split_indices(torch.zeros(4, 2), 2)
    data = Dataset("t", x, y, x, y, num_classes=np.int64(3))  # type: ignore[arg-type]
    assert type(data.num_classes) is int and data.num_classes == 3
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        data.to(dtype="float64")  # type: ignore[arg-type]


def test_init_weights_on_lazy_modules_says_to_run_a_forward_pass() -> None:
    from theorylr.models import init_weights

    with pytest.raises(ValueError, match=r"lazy parameters not yet initialised.*forward pass"):
        init_weights(nn.Sequential(nn.LazyLinear(4)), "kaiming_normal")


def test_suggest_checks_its_options_and_serialises_numpy_arguments() -> None:
    from theorylr.lab.suggest import suggest

    torch.manual_seed(0)
    model, data = nn.Linear(2, 3), (torch.randn(12, 2), torch.randint(0, 3, (12,)))
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="optimizer must be one of"):
        suggest(model, loss, data, total_steps=5, optimizer=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimate_options: unknown key 'foo' \\(allowed: "):
        suggest(model, loss, data, total_steps=5, estimate_options={"foo": 1})
    with pytest.raises(ValueError, match="'seed' is suggest\\(\\)'s own argument"):
        suggest(model, loss, data, total_steps=5, estimate_options={"seed": 3})
    result = suggest(model, loss, data, total_steps=np.int64(5), num_samples=np.int64(1), seed=np.int64(0))
    parsed = json.loads(result.to_json())
    assert parsed["settings"]["total_steps"] == 5 and type(parsed["settings"]["total_steps"]) is int
