"""theorylr.estimate at the edges.

Each test pins a behaviour that was wrong when it was written: tied parameters listed twice in ``params``, data
tensors created under ``torch.inference_mode()``, inputs that are not a single tensor (dicts), empty batches in a
list of batches, non-finite Hessians, and the default sampler's treatment of a frozen backbone's parameter-free
BatchNorm.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from theorylr.estimate import data_loss, hessian_spectral_norm, smoothness

from ._reference import dense_hessian, spectral_norm

F64 = torch.float64


class _TiedTwoLayer(nn.Module):
    """Two linear layers sharing one weight matrix (weight tying)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 3)
        self.l2 = nn.Linear(3, 3)
        self.l2.weight = self.l1.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(x)))


@pytest.mark.parametrize("backend", ["double_backward", "forward_over_reverse"])
def test_tied_parameter_listed_twice_in_params_is_counted_once(backend: str) -> None:
    """``params=list(a.parameters()) + list(b.parameters())`` with a's and b's weight tied names one tensor twice;
    the Hessian must still be that of the loss in the model's (distinct) parameters, not a doubled block."""
    torch.manual_seed(0)
    model = _TiedTwoLayer().to(F64)
    x, y = torch.randn(16, 3, dtype=F64), torch.randn(16, 3, dtype=F64)
    expected = spectral_norm(dense_hessian(model, nn.MSELoss(), [(x, y)]))
    params = list(model.l1.parameters()) + list(model.l2.parameters())  # l1.weight is l2.weight
    r = hessian_spectral_norm(model, nn.MSELoss(), (x, y), params=params, backend=backend, tol=1e-10, seed=0)
    assert r.value == pytest.approx(expected, rel=1e-6)


def test_data_created_under_inference_mode() -> None:
    """Data made inside an evaluation loop under ``torch.inference_mode()`` (inference tensors) must work as the
    estimators' inputs, as it does with backend='forward_over_reverse'."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).to(F64)
    x, y = torch.randn(20, 3, dtype=F64), torch.randint(0, 2, (20,))
    expected = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), seed=0, tol=1e-10).value
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        got = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (xi, yi), seed=0, tol=1e-10).value
    assert got == pytest.approx(expected, rel=1e-8)


class _DictInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.lin(batch["x"])


def test_dict_inputs_in_a_list_of_batches() -> None:
    """A batch ``({"x": tensor}, targets)`` is an (inputs, targets) pair; it was refused as 'batch 0 is tuple'."""
    torch.manual_seed(0)
    model = _DictInput().to(F64)
    x, y = torch.randn(8, 3, dtype=F64), torch.randint(0, 2, (8,))
    batches = [({"x": x[:4]}, y[:4]), ({"x": x[4:]}, y[4:])]
    expected = hessian_spectral_norm(model.lin, nn.CrossEntropyLoss(), (x, y), seed=0, tol=1e-10).value
    got = hessian_spectral_norm(model, nn.CrossEntropyLoss(), batches, seed=0, tol=1e-10).value
    assert got == pytest.approx(expected, rel=1e-8)


def test_empty_batch_in_a_list_does_not_make_the_loss_nan() -> None:
    """``tensor_split`` into more chunks than samples gives empty batches; with weight 0 they must not turn the
    loss into ``0 * nan = nan``."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    batches = list(zip(x.tensor_split(12), y.tensor_split(12)))  # the last two are empty
    expected = data_loss(model, nn.CrossEntropyLoss(), (x, y))
    got = data_loss(model, nn.CrossEntropyLoss(), batches)  # the empty batches are left out
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_nan_hessian_gives_nan_or_a_clear_error(method: str) -> None:
    """SmoothnessEstimate documents ``k_hat`` as NaN when a sample's norm is NaN; a NaN Hessian raised
    ``linalg.eigh: The algorithm failed to converge`` (Lanczos) or ``shift must be a finite number`` (power)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1).to(F64)
    x, y = torch.randn(8, 3, dtype=F64), torch.randn(8, 1, dtype=F64)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((out - target) ** 2).mean() + torch.sqrt(-out.mean().abs() - 1)  # nan everywhere

    try:
        r = hessian_spectral_norm(model, loss_fn, (x, y), method=method, max_matvecs=5)
    except ValueError as e:  # a clear error is acceptable: it must say the Hessian / loss is not finite
        text = str(e).lower()
        assert "finite" in text and ("hessian" in text or "loss" in text) and "shift" not in text
        return
    assert math.isnan(r.value)


def test_default_sampler_keeps_a_frozen_backbones_parameter_free_batchnorm_statistics() -> None:
    """The default sampler keeps frozen parameters and 'the buffers of modules whose parameters all keep theirs,
    such as a frozen BatchNorm's running statistics'; a BatchNorm without affine parameters inside a frozen
    backbone had its statistics reset to 0/1 for every sample."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6, affine=False), nn.Tanh())
    model = nn.Sequential(backbone, nn.Linear(6, 2))
    with torch.no_grad():
        backbone[1].running_mean.fill_(2.0)
        backbone[1].running_var.fill_(4.0)
    backbone.requires_grad_(False)
    model.eval()
    seen: list[torch.Tensor] = []
    hook = backbone[1].register_forward_pre_hook(lambda mod, inp: seen.append(mod.running_mean.clone()))
    try:
        smoothness(
            model, nn.CrossEntropyLoss(), (torch.randn(16, 3), torch.randint(0, 2, (16,))), num_samples=1, max_matvecs=2
        )
    finally:
        hook.remove()
    assert seen and all(torch.equal(s, torch.full((6,), 2.0)) for s in seen)
