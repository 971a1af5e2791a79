"""theorylr.data at the edges: float16 scaling, NumPy seeds, the separable set's split, a gzip IDX bomb."""

from __future__ import annotations

import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from theorylr.data import load_dataset, make_quadratic, make_separable, read_idx, scale_features


def test_standardize_float16_variance_does_not_overflow() -> None:
    # mean 500 and std 500 are representable in float16; only the variance (250000) is not.
    x = torch.tensor([[0.0], [1000.0]], dtype=torch.float16)
    a, b = scale_features(x, x.clone(), "standardize")
    assert a.flatten().tolist() == [-1.0, 1.0]
    assert b.flatten().tolist() == [-1.0, 1.0]


def test_sum_to_one_float16_large_column_sum() -> None:
    # The column sum (99500) exceeds float16's range, its reciprocal does not: each training column must sum to 1.
    x = torch.full((100, 1), 1000.0, dtype=torch.float16)
    x[0] = 500.0
    a, _ = scale_features(x, x[:2].clone(), "sum_to_one")
    assert a.double().sum().item() == pytest.approx(1.0, rel=1e-2)
    assert a[0].item() == pytest.approx(500.0 / 99500.0, rel=1e-2)


def test_load_dataset_float16_standardize_keeps_large_variance_features() -> None:
    ref = load_dataset("breast_cancer", dtype=torch.float64)
    half = load_dataset("breast_cancer", dtype=torch.float16)
    # column 3 (mean area) has a raw variance of ~130000 > 65504
    assert half.x_train[:, 3].abs().max() > 1.0
    assert torch.allclose(half.x_train.double(), ref.x_train, atol=0.05)


def test_numpy_integer_seed_accepted_everywhere() -> None:
    # check_int accepts NumPy integers (as documented), so the seeds must work too, not raise TypeError.
    a = load_dataset("iris", seed=np.int64(3))
    b = load_dataset("iris", seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert torch.equal(make_separable(20, seed=np.int64(1))[0], make_separable(20, seed=1)[0])
    rotated = make_quadratic(rotate=True, seed=np.int64(2)).hessian
    assert torch.equal(rotated, make_quadratic(rotate=True, seed=2).hessian)


def test_separable_training_set_independent_of_test_fraction() -> None:
    # The test points are documented as "further i.i.d. draws": the n training points should not move when only
    # test_fraction changes.
    a = load_dataset("separable", n=50, test_fraction=0.25, scaling=None, dtype=torch.float64, seed=0)
    b = load_dataset("separable", n=50, test_fraction=0.75, scaling=None, dtype=torch.float64, seed=0)
    assert torch.equal(a.x_train, b.x_train)


def test_separable_training_margin_is_margin() -> None:
    ds = load_dataset("separable", n=50, test_fraction=0.25, scaling=None, dtype=torch.float64, seed=0)
    _, _, w, b = make_separable(50, 2, 0.1, 0, dtype=torch.float64, return_hyperplane=True)
    assert (ds.x_train @ w + b).abs().min().item() == pytest.approx(0.1, abs=1e-9)


def test_read_idx_gzip_with_huge_payload_is_bounded(tmp_path: Path) -> None:
    # A 64 KiB gzip whose header declares 3 bytes but which inflates to 64 MiB must be rejected without inflating
    # (and copying) the whole payload.
    path = tmp_path / "labels-idx1-ubyte.gz"
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(co.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])))
        for _ in range(64):
            f.write(co.compress(chunk))
        f.write(co.flush())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
