"""scale_features on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from theorylr.data import scale_features


def t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_none_copies() -> None:
    x = t([[1.0, 2.0]])
    a, b = scale_features(x, x, None)
    assert a.equal(x) and b.equal(x) and a.data_ptr() != x.data_ptr()


def test_standardize_flat() -> None:
    xtr, xte = t([[1.0, 5.0], [3.0, 5.0]]), t([[2.0, 6.0]])
    a, b = scale_features(xtr, xte, "standardize")
    assert a.tolist() == [[-1.0, 0.0], [1.0, 0.0]]  # mean 2, std 1; constant column only centred
    assert b.tolist() == [[0.0, 1.0]]
    assert xtr.tolist() == [[1.0, 5.0], [3.0, 5.0]]  # inputs untouched


def test_standardize_constant_column_with_rounding_noise() -> None:
    xtr = torch.full((7, 1), 0.1, dtype=torch.float64)
    a, _ = scale_features(xtr, xtr[:1], "standardize")
    assert a.abs().max() < 1e-12


def test_standardize_images_per_channel() -> None:
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    a, _ = scale_features(x, x, "standardize")
    for c in range(3):
        ch = x[:, c]
        torch.testing.assert_close(a[:, c], (ch - ch.mean()) / ch.std(correction=0))


def test_sum_to_one_zero_and_cancelling_columns() -> None:
    xtr = t([[1.0, 0.0, 1.0, -2.0], [3.0, 0.0, -1.0, -2.0]])
    xte = t([[2.0, 7.0, 5.0, 1.0]])
    a, b = scale_features(xtr, xte, "sum_to_one")
    assert a.tolist() == [[0.25, 0.0, 1.0, 0.5], [0.75, 0.0, -1.0, 0.5]]
    assert b.tolist() == [[0.5, 7.0, 5.0, -0.25]]


def test_sum_to_one_images_per_pixel() -> None:
    x = torch.rand(5, 2, 3, 3, dtype=torch.float64) + 0.1
    a, _ = scale_features(x, x, "sum_to_one")
    torch.testing.assert_close(a.sum(0), torch.ones(2, 3, 3, dtype=torch.float64))


def test_unit() -> None:
    xtr, xte = t([[0.0, 2.0], [255.0, 4.0]]), t([[51.0, 3.0]])
    a, b = scale_features(xtr, xte, "unit", pixel_max=255.0)
    assert b.tolist() == [[0.2, 3.0 / 255]]
    a, b = scale_features(xtr, xte, "unit")
    assert a.tolist() == [[0.0, 0.0], [1.0, 1.0]] and b.tolist() == [[0.2, 0.5]]


def test_float32_inputs_keep_dtype() -> None:
    x = torch.rand(10, 3)
    a, b = scale_features(x, x, "standardize")
    assert a.dtype == b.dtype == torch.float32


def test_invalid() -> None:
    with pytest.raises(ValueError, match="scaling must be one of None, 'standardize', 'sum_to_one', 'unit'"):
        scale_features(torch.zeros(2, 2), torch.zeros(2, 2), "l2")
    with pytest.raises(ValueError, match="trailing shape"):
        scale_features(torch.zeros(2, 2), torch.zeros(2, 3), "unit")


def test_inplace_matches_out_of_place() -> None:
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.rand(20, 2, 3, 3, generator=g), torch.rand(5, 2, 3, 3, generator=g)
    for scaling in ("standardize", "sum_to_one", "unit", None):
        a, b = scale_features(xtr, xte, scaling, pixel_max=2.0)
        ca, cb = xtr.clone(), xte.clone()
        ia, ib = scale_features(ca, cb, scaling, pixel_max=2.0, inplace=True)
        assert ia is ca and ib is cb and ia.equal(a) and ib.equal(b)
    with pytest.raises(ValueError, match="inplace"):
        scale_features(torch.zeros(2, 2, dtype=torch.uint8), torch.zeros(2, 2, dtype=torch.uint8), None, inplace=True)
