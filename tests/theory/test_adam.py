"""The exact constant step size of the exact-step Adam paper, by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from theorylr.theory.adam import constant_step, delta_squared


def test_simplified_form_by_hand() -> None:
    # alpha = sqrt(2 * L0 / (K * T)) = sqrt(2 * 2 / (8 * 50)) = sqrt(0.01) = 0.1
    assert constant_step(2.0, 8.0, 50) == pytest.approx(0.1, rel=1e-15)
    # L0 = ln(10) (a 10-class softmax at init), K = 3.7, T = 1000 epochs of one full batch
    assert constant_step(math.log(10), 3.7, 1000) == pytest.approx(math.sqrt(2 * 2.302585092994046 / 3700), rel=1e-15)


def test_final_loss_enters_as_a_difference() -> None:
    # sqrt(2 * (2.5 - 0.5) / (4 * 25)) = sqrt(0.04) = 0.2
    assert constant_step(2.5, 4.0, 25, final_loss=0.5) == pytest.approx(0.2, rel=1e-15)
    assert constant_step(2.5, 4.0, 25, 0.5) == constant_step(2.0, 4.0, 25)


def test_full_form_with_delta() -> None:
    # delta^2 = gamma^2 / rho^2 = (3 / 0.5)^2 = 36; alpha = sqrt(2 * 1.8 / (0.1 * 36 * 4)) = sqrt(0.25) = 0.5
    assert delta_squared(3.0, 0.5) == pytest.approx(36.0, rel=1e-15)
    assert constant_step(1.8, 0.1, 4, gamma=3.0, rho=0.5) == pytest.approx(0.5, rel=1e-15)
    # delta = 1 (gamma = rho) is the simplified form
    assert constant_step(1.8, 0.1, 4, gamma=0.7, rho=0.7) == pytest.approx(constant_step(1.8, 0.1, 4), rel=1e-15)


def test_scaling_laws() -> None:
    base = constant_step(1.0, 2.0, 100)
    assert constant_step(1.0, 2.0, 400) == pytest.approx(base / 2)  # alpha ~ T^(-1/2)
    assert constant_step(1.0, 8.0, 100) == pytest.approx(base / 2)  # alpha ~ K^(-1/2)
    assert constant_step(4.0, 2.0, 100) == pytest.approx(base * 2)  # alpha ~ L0^(1/2)


def test_accepts_one_element_tensors() -> None:
    got = constant_step(torch.tensor(2.0), torch.tensor([8.0]), 50)
    assert isinstance(got, float) and got == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((float("nan"), 1.0, 10), {}, "initial_loss"),
        ((1.0, 0.0, 10), {}, "smoothness"),
        ((1.0, -2.0, 10), {}, "smoothness"),
        ((1.0, float("inf"), 10), {}, "smoothness"),
        ((1.0, 1.0, 0), {}, "total_steps"),
        ((1.0, 1.0, 10.0), {}, "total_steps"),
        ((1.0, 1.0, True), {}, "total_steps"),
        ((1.0, 1.0, 10), {"final_loss": 1.0}, "initial_loss"),
        ((0.0, 1.0, 10), {}, "initial_loss"),
        ((1.0, 1.0, 10), {"final_loss": float("nan")}, "final_loss"),
        ((1.0, 1.0, 10), {"gamma": 1.0}, "gamma and rho"),
        ((1.0, 1.0, 10), {"rho": 1.0}, "gamma and rho"),
        ((1.0, 1.0, 10), {"gamma": 0.0, "rho": 1.0}, "gamma"),
        ((1.0, 1.0, 10), {"gamma": 1.0, "rho": -1.0}, "rho"),
    ],
)
def test_invalid_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        constant_step(*args, **kwargs)
