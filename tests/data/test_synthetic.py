"""make_separable against a hard-margin SVM; make_quadratic against autograd's Hessian."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from theorylr.data import Quadratic, make_quadratic, make_separable


def test_separable_margin_and_labels() -> None:
    x, y, w, b = make_separable(1000, 2, 0.1, 0, return_hyperplane=True)
    assert x.shape == (1000, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    dist = x.double() @ w + b
    assert abs(float(w.norm()) - 1) < 1e-12
    assert abs(float(dist.abs().min()) - 0.1) < 1e-6  # the closest point sits exactly at the margin
    assert y.equal((dist > 0).long())
    assert 0.2 < float(y.double().mean()) < 0.8


def test_separable_against_hard_margin_svm() -> None:
    from sklearn.svm import SVC

    x, y = make_separable(300, 3, 0.2, seed=4, dtype=torch.float64)
    svm = SVC(kernel="linear", C=1e6).fit(x.numpy(), y.numpy())
    assert svm.score(x.numpy(), y.numpy()) == 1.0
    geometric_margin = 1.0 / np.linalg.norm(svm.coef_)
    assert geometric_margin >= 0.2 - 1e-4  # the max-margin separator does at least as well as ours


def test_separable_is_seeded() -> None:
    a = make_separable(50, 4, seed=7)
    assert a[0].equal(make_separable(50, 4, seed=7)[0])
    assert not a[0].equal(make_separable(50, 4, seed=8)[0])


@pytest.mark.parametrize(("kwargs", "argument"), [({"n": 1}, "n"), ({"dim": 0}, "dim"), ({"margin": 0.0}, "margin")])
def test_separable_invalid(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make_separable(**kwargs)


@pytest.mark.parametrize("rotate", [False, True])
def test_quadratic_matches_autograd(rotate: bool) -> None:
    q = make_quadratic((0.5, 2.0, 9.0), (1.0, -2.0, 3.0), rotate=rotate, seed=3, min_value=1.5)
    assert isinstance(q, Quadratic) and q.dim == 3
    w0 = torch.tensor([0.3, 0.1, -0.7], dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(q.loss, w0)
    torch.testing.assert_close(hessian, q.hessian)
    torch.testing.assert_close(torch.linalg.eigvalsh(q.hessian), torch.tensor([0.5, 2.0, 9.0], dtype=torch.float64))
    w = w0.clone().requires_grad_()
    q(w).backward()
    torch.testing.assert_close(w.grad, q.grad(w0))
    assert float(q.loss(q.minimizer)) == 1.5 and q.grad(q.minimizer).abs().max() == 0
    assert q.smoothness == pytest.approx(9.0) and q.strong_convexity == pytest.approx(0.5)
    assert q.condition_number == pytest.approx(18.0)
    if not rotate:
        assert q.hessian.equal(torch.diag(torch.tensor([0.5, 2.0, 9.0], dtype=torch.float64)))


def test_quadratic_batched_and_defaults() -> None:
    q = make_quadratic()
    assert q.dim == 2 and q.condition_number == pytest.approx(10.0) and q.minimizer.tolist() == [1.0, 1.0]
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 2, 4), torch.linspace(-1, 2, 5), indexing="ij"), -1)
    values = q(grid.double())
    assert values.shape == (4, 5)
    manual = 0.5 * ((grid[..., 0] - 1) ** 2 + 10 * (grid[..., 1] - 1) ** 2)
    torch.testing.assert_close(values, manual.double())
    assert make_quadratic((1.0,), None).minimizer.tolist() == [0.0]
    assert make_quadratic(rotate=True, seed=1).hessian.equal(make_quadratic(rotate=True, seed=1).hessian)
    assert math.isclose(float(make_quadratic(dtype=torch.float32)(torch.zeros(2))), 5.5)


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (((1.0, 0.0),), "eigenvalues"),
        (((1.0, -1.0),), "eigenvalues"),
        (((),), "eigenvalues"),
        (((1.0, 2.0), (1.0,)), "minimizer"),
        (((1.0,), (float("nan"),)), "minimizer"),
    ],
)
def test_quadratic_invalid(args: tuple, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make_quadratic(*args)
