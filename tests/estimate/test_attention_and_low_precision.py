"""Curvature through attention (fused SDPA kernels have no double backward) and in 16-bit dtypes (the solvers'
tests and basis in float32, ``converged`` honest about what the products resolve)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from tests.estimate._reference import F64, dense_hessian, spectral_norm
from theorylr.estimate import (
    BACKENDS,
    HessianOperator,
    SpectralNormResult,
    data_loss,
    hessian_spectral_norm,
    lanczos,
    power_iteration,
)
from theorylr.lab.suggest import suggest
from theorylr.optim.exact_adam import exact_step_adam

# -- attention ---------------------------------------------------------------------------------------------------


class _Encoder(nn.Module):
    """A transformer encoder layer on real inputs (``nn.TransformerEncoderLayer``: attention by SDPA)."""

    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.enc(x).mean(1))


class _BareAttention(nn.Module):
    """``nn.MultiheadAttention`` alone, without the weights (the SDPA path)."""

    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(width, 2, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.att(x, x, x, need_weights=False)[0].mean(1))


class _Classifier(nn.Module):
    """The reviewers' token classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.enc(self.emb(x)).mean(1))


def _attention_problem(kind: type[nn.Module]) -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    torch.manual_seed(0)
    model = kind().to(F64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (6,), generator=gen)
    return model, (x, y)


def _sdpa_flags() -> tuple[bool, ...]:
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(), b.cudnn_sdp_enabled())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", [_Encoder, _BareAttention])
def test_hvp_through_attention_matches_dense_hessian(kind: type[nn.Module], backend: str) -> None:
    model, (x, y) = _attention_problem(kind)
    loss_fn = nn.CrossEntropyLoss()
    with sdpa_kernel([SDPBackend.MATH]):  # the reference needs a twice-differentiable kernel too
        h = dense_hessian(model, loss_fn, [(x, y)])
    flags = _sdpa_flags()
    with HessianOperator(model, loss_fn, (x, y), backend=backend) as op:
        for seed in (1, 2):
            v = torch.randn(op.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
            torch.testing.assert_close(op(v), h @ v, rtol=1e-4, atol=1e-10)
    assert _sdpa_flags() == flags  # the kernel choice is put back
    r = hessian_spectral_norm(model, loss_fn, (x, y), backend=backend, seed=0, tol=1e-10, max_matvecs=200)
    assert r.converged and r.value == pytest.approx(spectral_norm(h), rel=1e-4)


def test_math_kernel_changes_the_loss_by_rounding_only() -> None:
    """The operator's passes run attention on the math kernel, data_loss on the default (fused) one: the same
    function, so in float32 the losses agree to rounding."""
    model, (x, y) = _attention_problem(_Encoder)
    model, x = model.float(), x.float()
    with HessianOperator(model, nn.CrossEntropyLoss(), (x, y)) as op:
        op(torch.ones(op.dim))
        math_loss = op.loss
    assert math_loss == pytest.approx(data_loss(model, nn.CrossEntropyLoss(), (x, y)), rel=1e-5)


def test_estimators_run_on_the_reviewers_transformer() -> None:
    torch.manual_seed(0)
    model = _Classifier()
    data = (torch.randint(0, 20, (16, 6)), torch.randint(0, 4, (16,)))
    loss_fn = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unconverged sample's warning is not what this test is about
        _, step = exact_step_adam(model, loss_fn, data, total_steps=100, num_samples=1)
    assert math.isfinite(step.alpha) and step.alpha > 0
    assert math.isfinite(step.smoothness.k_hat) and step.smoothness.k_hat > 0
    s = suggest(model, loss_fn, data, total_steps=100, optimizer=["sgd", "adam"], num_samples=1)
    for name in ("gd-descent", "exact-adam"):
        lr = s.row(name).lr
        assert lr is not None and math.isfinite(lr) and lr > 0
    r = hessian_spectral_norm(model, loss_fn, data, backend="forward_over_reverse", seed=0)
    assert math.isfinite(r.value) and r.value > 0


# -- 16-bit --------------------------------------------------------------------------------------------------------

# A least-squares problem whose Hessian is diag(D): top eigenvalue 16 with 15.8 and 15.5 close below it.
D = torch.tensor([16.0, 15.5, 15.0, 14.5, 14.0, 14.2, 15.2, 15.8], dtype=F64)
LOW = [torch.bfloat16, torch.float16]


def _diag_norm(dtype: torch.dtype, **kwargs: Any) -> SpectralNormResult:
    x, y = torch.diag((4 * D).sqrt()), torch.zeros(8, 1, dtype=F64)  # MSE: H = 2 X^T X / 8 = diag(D)
    model = nn.Linear(8, 1, bias=False).to(dtype)
    return hessian_spectral_norm(model, nn.MSELoss(), (x.to(dtype), y.to(dtype)), seed=0, **kwargs)


@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize("dtype", LOW)
def test_16_bit_model_is_accurate_to_its_dtype_and_not_converged_below_it(dtype: torch.dtype, method: str) -> None:
    """A bfloat16 Lanczos used to take its own rounding (eps 2**-7, 7.8 % of the eigenvalue times 10) for an
    invariant Krylov space: one matvec, 15.0 "converged" with residual 0. The basis and tests are now float32, and
    a tol below the products' eps cannot be met: the estimate is as good as the dtype allows, not converged."""
    eps = torch.finfo(dtype).eps
    r = _diag_norm(dtype, tol=1e-4, method=method)
    assert abs(r.value - 16.0) <= eps * 16.0  # the matvec's own rounding, about eps relative
    assert not r.converged
    assert r.residual >= eps * r.value * 0.99  # no residual below what the products resolve


@pytest.mark.parametrize("dtype", LOW)
def test_16_bit_lanczos_converges_to_a_tol_its_dtype_resolves(dtype: torch.dtype) -> None:
    eps = torch.finfo(dtype).eps
    r = _diag_norm(dtype, tol=2 * eps)
    assert r.converged and abs(r.value - 16.0) <= eps * 16.0
    assert 0 < r.residual <= 2 * eps * r.value


@pytest.mark.parametrize("dtype", LOW)
def test_solvers_on_a_16_bit_matrix(dtype: torch.dtype) -> None:
    """A generic matvec in a 16-bit dtype gets its input in v0's dtype; the eigenvector comes back in it too."""
    a = torch.diag(D).to(dtype)
    seen: set[torch.dtype] = set()

    def matvec(v: Tensor) -> Tensor:
        seen.add(v.dtype)
        return a.mv(v)

    v0 = torch.randn(8, generator=torch.Generator().manual_seed(0), dtype=F64).to(dtype)
    eps = torch.finfo(dtype).eps
    for r in (lanczos(matvec, v0, tol=1e-4), power_iteration(matvec, v0, tol=1e-4, max_iters=1000)):
        assert not r.converged  # tol is below what the products resolve (power iteration used to claim it)
        assert abs(r.eigenvalue - 16.0) <= eps * 16.0 and r.vector.dtype == dtype
    for r in (lanczos(matvec, v0, tol=2 * eps), power_iteration(matvec, v0, tol=2 * eps, max_iters=1000)):
        assert r.converged and abs(r.eigenvalue - 16.0) <= eps * 16.0
    assert seen == {dtype}


def test_float32_products_under_a_float64_start_vector_do_not_certify_float64_tol() -> None:
    a = torch.diag(D).float()
    v0 = torch.ones(8, dtype=F64)
    tight = lanczos(lambda v: a.mv(v.float()), v0, tol=1e-10)
    assert not tight.converged and tight.residual > 0  # was converged, residual 0, from float32 products
    loose = lanczos(lambda v: a.mv(v.float()), v0, tol=1e-5)
    assert loose.converged and loose.eigenvalue == pytest.approx(16.0, rel=1e-6)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_a_bfloat16_estimate_is_not_stopped_at_the_floor(method: str) -> None:
    """The floor only bounds what is reported: the stopping test keeps the requested ``tol``. Stopping at the
    floor left a bfloat16 MLP's ``K`` 5-9 % low after a few matvecs, where iterating on reaches the float32 model's
    value to a fraction of a percent (seeds 0-3 here: within 1.5 %)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    ref = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), seed=0, tol=1e-6).value
    model = model.to(torch.bfloat16)
    for seed in range(4):
        result = hessian_spectral_norm(
            model, nn.CrossEntropyLoss(), (x.bfloat16(), y), method=method, seed=seed, tol=1e-4, max_matvecs=200
        )
        assert not result.converged  # tol 1e-4 is below bfloat16's 2**-7: never certified
        assert result.value == pytest.approx(ref, rel=0.015), seed
