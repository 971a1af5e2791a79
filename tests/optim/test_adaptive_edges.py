"""AdaMo, AutoAdam and AdaptiveRMSprop (theorylr.optim.adaptive) at the edges: steps the documented formula (or
the other code path) takes finitely, which once gave inf or NaN (float16 step sizes on the shared-scalar path, a
zero first gradient with bias correction or a large lr, an overflowing Lipschitz estimate)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from theorylr.optim import adaptive
from theorylr.optim.adaptive import AdaMo


def _force_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the shared-scalar path (the default off the CPU) run on the CPU, as tests/optim/test_adaptive_foreach.py
    does."""
    monkeypatch.setattr(adaptive, "_shared_scalars_pay", lambda ps: all(p.dtype == ps[0].dtype for p in ps))


def _adamo_tiny_float16(foreach: bool) -> list[torch.Tensor]:
    w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float16))
    v = nn.Parameter(torch.tensor([3.0], dtype=torch.float16))
    opt = AdaMo([w, v], lr=1.0, beta=0.9, foreach=foreach)
    # Gradient norms about 1.4e-6: -lr / K1 is about -7e6, beyond float16's range; the step (about 0.7) is not.
    w.grad = torch.tensor([1e-6, -1e-6], dtype=torch.float16)
    v.grad = torch.tensor([1e-6], dtype=torch.float16)
    opt.step()
    return [w.detach().clone(), v.detach().clone()]


def test_shared_scalar_path_keeps_adamos_float16_step_size_out_of_float16(monkeypatch: pytest.MonkeyPatch) -> None:
    """_shared_scales casts the scale (-lr / K1_hat) to the parameters' dtype before the float16 branch of
    _multi_tensor_update, which exists to keep that scale in float32: for float16 and small gradients the shared
    path (the GPU default) writes inf where the loop and the per-tensor foreach path take a finite step."""
    expected = _adamo_tiny_float16(foreach=False)
    assert all(torch.isfinite(t).all() for t in expected)
    _force_shared(monkeypatch)
    got = _adamo_tiny_float16(foreach=True)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [{"bias_correction": True}, {"lr": 4.0}], ids=str)
def test_adamo_zero_first_gradient_gives_a_zero_update(foreach: bool, dtype: torch.dtype, kwargs: dict) -> None:
    """The docstring: "K1 is clamped below by the smallest normal number ... so a step with a zero estimate and a
    zero gradient gives a zero update instead of 0/0". The clamped 1/K1 (2^126 in float32) is then divided by
    1 - beta (bias correction) or multiplied by lr >= 4, overflows to inf, and inf * V = inf * 0 = NaN: the weights
    are NaN for good. (With bias correction this is AdaMo at its default lr whenever the first gradient is zero.)"""
    w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=dtype))
    opt = AdaMo([w], foreach=foreach, **kwargs)
    w.grad = torch.zeros(2, dtype=dtype)
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0], dtype=dtype))
    w.grad = torch.ones(2, dtype=dtype)
    opt.step()
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("foreach", [False, True])
def test_an_overflowing_lipschitz_estimate_gives_the_same_result_in_the_loop_and_the_shared_path(
    foreach: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float32 gradient with entries of 1e20 has a finite norm, but torch's norm kernel overflows (1e40): L_t =
    inf. The shared path updates K1 as beta K1 + (1 - beta) L (the docstring's formula), the loop and the per-tensor
    foreach path with lerp_, whose K + w (L - K) is inf - inf = NaN at the next finite L: the paths part (the loop's
    K1 and weights NaN). By the formula K1 stays inf and the weights do not move (W -= V / inf).
    (AutoAdam and AdaptiveRMSprop part the same way; AdaptiveRMSprop already at the first step, as
    torch.lerp(0, inf, 1) is NaN.)"""

    def run(foreach: bool) -> tuple[torch.Tensor, torch.Tensor]:
        w = nn.Parameter(torch.tensor([1.0, 2.0]))
        b = nn.Parameter(torch.tensor([0.5]))
        opt = AdaMo([w, b], foreach=foreach)
        w.grad, b.grad = torch.tensor([1e20, 1e20]), torch.tensor([1.0])
        opt.step()
        w.grad, b.grad = torch.tensor([1.0, 1.0]), torch.tensor([1.0])
        opt.step()
        return opt.state[w]["lipschitz_avg"].clone(), w.detach().clone()

    k1, weights = run(foreach)  # the loop, or the per-tensor foreach path (the CPU default)
    _force_shared(monkeypatch)
    shared_k1, shared_weights = run(True)
    assert torch.isinf(shared_k1) and torch.equal(shared_weights, torch.tensor([1.0, 2.0]))  # the formula's result
    torch.testing.assert_close(k1, shared_k1)
    torch.testing.assert_close(weights, shared_weights)
