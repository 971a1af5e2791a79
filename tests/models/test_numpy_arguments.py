"""theorylr.models with argument types a user passes from NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theorylr.models import MLP, build_model


@pytest.mark.parametrize("width", [np.int64(5), np.int32(5), 5])
def test_mlp_takes_a_numpy_integer_as_one_hidden_width(width: int) -> None:
    model = MLP(3, hidden=width, out_features=2)
    assert model.hidden == (5,) and all(type(w) is int for w in model.hidden)
    assert model[1].out_features == 5 and model(torch.zeros(4, 3)).shape == (4, 2)


def test_mlp_hidden_widths_are_stored_as_python_ints() -> None:
    model = build_model("mlp", in_features=3, hidden=np.array([4, 6]), out_features=2)
    assert model.hidden == (4, 6) and all(type(w) is int for w in model.hidden)


@pytest.mark.parametrize("hidden", [True, 2.0, "8", np.float64(3.0)])
def test_mlp_still_refuses_non_integer_widths(hidden: object) -> None:
    with pytest.raises(ValueError, match="hidden"):
        MLP(3, hidden=hidden)  # type: ignore[arg-type]
