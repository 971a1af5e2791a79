"""The compiled steps' L2 norm kernels (``_compiled_l2_norms``, ``_compiled_sq_norms``, called eagerly) on tensors
whose layout the row path cannot view: a contiguous weight paired with a non-contiguous gradient of a size that
divides by 4096, and non-contiguous tensors alone. A gap an earlier review listed as untested."""

from __future__ import annotations

import pytest
import torch

from theorylr.optim._norms import _by_rows, _compiled_l2_norms, _compiled_sq_norms


def _transposed(rows: int, cols: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(cols, rows, dtype=dtype).t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_pair_with_a_non_contiguous_gradient(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    p = torch.randn(64, 128, dtype=dtype)  # contiguous, 8192 elements: p alone would take the row path
    u = _transposed(64, 128, dtype)  # same shape, not viewable as rows
    assert _by_rows(p) and not _by_rows(u)
    w_norm, u_norm = _compiled_l2_norms([p], [u])
    wide = torch.float64
    torch.testing.assert_close(w_norm.double(), torch.linalg.vector_norm(p.to(wide)), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(u_norm.double(), torch.linalg.vector_norm(u.to(wide)), rtol=1e-6, atol=0.0)
    # and the other way round
    u_norm2, w_norm2 = _compiled_l2_norms([u], [p])
    torch.testing.assert_close(u_norm2, u_norm, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(w_norm2, w_norm, rtol=1e-6, atol=0.0)


def test_sq_norms_of_non_contiguous_and_sliced_tensors() -> None:
    torch.manual_seed(1)
    base = torch.randn(4, 8192, dtype=torch.float64)
    tensors = [_transposed(64, 128, torch.float64), base[:, ::2], base[1:3], torch.randn(2, 4096, dtype=torch.float64)]
    assert [_by_rows(t) for t in tensors] == [False, False, True, True]
    norms = _compiled_sq_norms(tensors, torch.float64)
    for value, t in zip(norms, tensors):
        torch.testing.assert_close(value, torch.linalg.vector_norm(t), rtol=1e-13, atol=0.0)
