"""LARS's factored momentum buffer (``buf = momentum_scale * momentum_buffer``) at the edges: float16 (plain by
default, factored on request), a state saved without its growth, a sign flip that nearly cancels the scale,
gradients near float32's range. Each compares the factored buffer with the plain heavy-ball recursion."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from theorylr.optim.lars import LARS


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def _float16_run(gscale: float, momentum: float, steps: int) -> tuple[nn.Parameter, LARS, nn.Parameter, LARS]:
    """A float16 parameter with a factored buffer (on request: float16's default is plain) and a float32 twin
    (plain) fed the same float16 gradients."""
    gen = torch.Generator().manual_seed(0)
    half = nn.Parameter(torch.randn(64, generator=gen).half())
    single = nn.Parameter(half.detach().float().clone())
    opt = LARS([half], lr=1e-2, momentum=momentum, factored_momentum=True)
    ref = LARS([single], lr=1e-2, momentum=momentum, factored_momentum=False)
    for _ in range(steps):
        g = (torch.randn(64, generator=gen) * gscale).half()
        half.grad, single.grad = g, g.float()
        opt.step()
        ref.step()
    return half, opt, single, ref


@pytest.mark.parametrize(("gscale", "momentum", "steps"), [(1e-4, 0.9, 30), (1e-3, 0.99, 200)])
def test_float16_momentum_buffer_is_finite_when_the_scale_exceeds_float16s_range(
    gscale: float, momentum: float, steps: int
) -> None:
    """Gradients of 1e-4 (momentum 0.9) or 1e-3 (momentum 0.99) give a scale k ~ ratio / (1 - momentum) > 65504;
    the buffer k * v itself is of order ||w||. momentum_buffer() casts k to float16 first: inf."""
    half, opt, single, ref = _float16_run(gscale, momentum, steps)
    assert float(opt.state[half]["momentum_scale"]) > 65504
    buf = opt.momentum_buffer(half)
    assert buf is not None and torch.isfinite(buf).all()
    assert _rel(buf, ref.momentum_buffer(single)) < 1e-2


def test_float16_factored_state_folded_into_a_plain_buffer_stays_finite() -> None:
    """A factored float16 state stepped where the buffer is plain (factored_momentum=False, or a GPU) is folded
    with ``buf.mul_(scale.to(float16))``: inf for a scale above 65504, and the weights become inf."""
    half, opt, single, ref = _float16_run(1e-3, 0.99, 200)
    assert float(opt.state[half]["momentum_scale"]) > 65504
    opt.param_groups[0]["factored_momentum"] = False
    g = (torch.randn(64, generator=torch.Generator().manual_seed(1)) * 1e-3).half()
    half.grad, single.grad = g, g.float()
    opt.step()
    ref.step()
    assert torch.isfinite(half).all()
    assert _rel(opt.state[half]["momentum_buffer"], ref.momentum_buffer(single)) < 1e-2


@pytest.mark.parametrize("foreach", [False, True])
def test_float16_defaults_to_the_plain_buffer_which_keeps_small_gradients_precise(foreach: bool) -> None:
    """A factored v holds the buffer at the size of the gradient; float16 gradients of 1e-5 lie in float16's
    subnormal range (below 6.1e-5), where v rounds to a spacing of 6e-8. The plain float16 buffer (ratio * d, the
    size of ||w||) stays within ~7e-4 of the float64 recursion: it is float16's default."""

    def error(factored: bool | None) -> float:
        gen = torch.Generator().manual_seed(0)
        w = nn.Parameter(torch.randn(64, 33, generator=gen).half())
        opt = LARS([w], lr=0.0, momentum=0.9, factored_momentum=factored, foreach=foreach)
        buf = None
        for _ in range(300):
            g = ((torch.randn(64, 33, generator=gen) + 0.3) * 1e-5).half()
            w.grad = g
            opt.step()
            r = opt.state[w]["trust_ratio"].double()
            buf = r * g.double() if buf is None else 0.9 * buf + r * g.double()
        state = opt.state[w]
        got = state["momentum_buffer"].double() * state.get("momentum_scale", torch.tensor(1.0)).double()
        assert buf is not None
        return _rel(got, buf)

    plain = error(False)
    assert plain < 2e-3
    assert error(None) == plain  # the default is the plain buffer
    assert error(True) > 3 * plain  # what a factored float16 buffer would give (v at the gradient's size)


@pytest.mark.parametrize("foreach", [False, True])
def test_a_grown_buffer_without_momentum_growth_is_renormalised_without_cancellation(foreach: bool) -> None:
    """A float32 state whose ``momentum_growth`` was removed after 15 accumulating steps at momentum 0.5 (v grown
    2^15-fold): a ``lerp_`` would take a weight within 2^-15 of 1 and cancel v's large terms (a per-cent error in
    the buffer); an unknown growth renormalises with ``v = b v + a u`` instead. The plain float32 run is within
    1e-7."""
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(50, 40, generator=gen)
    grads = [torch.randn(50, 40, generator=gen) for _ in range(25)]
    ref_p = nn.Parameter(w0.double())
    ref = LARS([ref_p], lr=1e-2, momentum=0.5, factored_momentum=False)
    p = nn.Parameter(w0.clone())
    opt = LARS([p], lr=1e-2, momentum=0.5, foreach=foreach)
    for t, g in enumerate(grads):
        if t == 16:
            sd = copy.deepcopy(opt.state_dict())
            assert sd["state"][0]["momentum_growth"] == pytest.approx(15.0)
            del sd["state"][0]["momentum_growth"]
            p = nn.Parameter(p.detach().clone())
            opt = LARS([p], lr=1e-2, momentum=0.5, foreach=foreach)
            opt.load_state_dict(sd)
        p.grad, ref_p.grad = g.clone(), g.double()
        opt.step()
        ref.step()
        if t == 16:
            buf = opt.momentum_buffer(p)
            assert buf is not None
            assert _rel(buf, ref.momentum_buffer(ref_p)) < 1e-5
    assert _rel(p, ref_p) < 1e-5


@pytest.mark.parametrize("foreach", [False, True])
def test_float16_maximize_toggle_with_a_near_cancelling_scale_gives_no_nan(foreach: bool) -> None:
    """maximize flips the sign of c: k' = momentum * k + c nearly cancels (1.2e-7), so a = c / k' and
    b = momentum * k / k' are ~4e6, beyond float16's range once cast to the parameter's dtype: v = inf - inf.
    The plain float16 buffer is 0.5000001 * 1 - 0.5 * 1 ~ 0, finite."""
    w = nn.Parameter(torch.tensor([1.0], dtype=torch.float16))
    opt = LARS([w], lr=0.0, momentum=0.5 + 1e-7, foreach=foreach, factored_momentum=True)
    w.grad = torch.tensor([1.0], dtype=torch.float16)
    opt.step()  # ratio 1: buf = 1
    with torch.no_grad():
        w.fill_(0.5)
    opt.param_groups[0]["maximize"] = True
    w.grad = torch.tensor([1.0], dtype=torch.float16)
    opt.step()  # ratio 0.5, d = -1: buf = (0.5 + 1e-7) - 0.5
    buf = opt.momentum_buffer(w)
    assert buf is not None and torch.isfinite(buf).all()
    assert float(buf.abs().max()) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_huge_gradients_overflow_neither_buffer(dtype: torch.dtype) -> None:
    """Gradients of 1e33 (float32's range ends at 3.4e38) with adapt=False and momentum 0.5: the plain buffer
    stays ~2e33, and the factored v, which may grow 2^16-fold before it is renormalised, stays finite too."""
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(10, generator=gen).to(dtype))
    opt = LARS([w], lr=1e-40, momentum=0.5, adapt=False)
    for _ in range(25):
        w.grad = (torch.randn(10, generator=gen) * 1e33).to(dtype)
        opt.step()
    buf = opt.momentum_buffer(w)
    assert buf is not None and torch.isfinite(buf).all()
    assert torch.isfinite(w).all()
