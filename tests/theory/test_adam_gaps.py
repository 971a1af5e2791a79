"""constant_step refuses a non-finite final_loss itself (not by luck of the gap check)."""

from __future__ import annotations

import math

import pytest
import torch

from theorylr.theory.adam import constant_step


@pytest.mark.parametrize(
    "final_loss",
    [-math.inf, math.nan, math.inf, torch.tensor(-math.inf), torch.tensor(math.nan)],
    ids=["-inf", "nan", "inf", "tensor-inf", "tensor-nan"],
)
def test_a_non_finite_final_loss_is_refused(final_loss: float | torch.Tensor) -> None:
    # -inf would otherwise give an infinite gap, hence an infinite step; nan and +inf would only be caught as
    # "initial_loss must be > final_loss", which names the wrong problem.
    with pytest.raises(ValueError, match=r"^final_loss must be a finite number"):
        constant_step(2.0, 4.0, 100, final_loss=final_loss)


def test_a_finite_negative_final_loss_is_accepted() -> None:
    # sqrt(2 * (1.0 - (-1.0)) / (4 * 1)) = 1
    assert constant_step(1.0, 4.0, 1, final_loss=-1.0) == pytest.approx(1.0, rel=1e-15)
