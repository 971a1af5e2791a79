"""Compiled steps with torch's default backend (inductor), which ``test_compile.py``'s eager counting backend does
not exercise: float64 parameters, a 0-dim one among them, equal eager steps.

torch 2.13's inductor drops in-place writes to 0-dim float64 CPU inputs of a compiled graph (the scalar states,
a 0-dim parameter); the one-step paths write them through :func:`theorylr.optim._base.inplace`. Skipped where
inductor cannot build a kernel (no C++ compiler).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.optim import Optimizer

from theorylr.optim import LARS, AdaMo, AdaptiveRMSprop, AutoAdam, PercentDelta


@functools.cache
def _inductor_builds() -> bool:
    torch._dynamo.reset()
    try:
        torch.compile(lambda t: t * 2, fullgraph=True)(torch.ones(3))
    except Exception:  # no compiler, or a broken toolchain
        return False
    return True


MAKERS: dict[str, Callable[[list[nn.Parameter]], Optimizer]] = {
    "lars": lambda p: LARS(p, lr=0.1, momentum=0.9),
    "lars-plain-buffer-nesterov": lambda p: LARS(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "percent-delta": lambda p: PercentDelta(p, lr=0.1, momentum=0.9),
    "auto-adam-loop": lambda p: AutoAdam(p, lr=0.1, bias_correction=True, foreach=False),
    "adaptive-rmsprop-loop": lambda p: AdaptiveRMSprop(p, lr=0.1, bias_correction=True, foreach=False),
    "adamo-loop": lambda p: AdaMo(p, lr=0.1, foreach=False),
}


def _effective(state: dict[str, object]) -> dict[str, torch.Tensor]:
    """A step's tensor states, with LARS's factored momentum as the buffer it stands for (``k * v``): a compiled
    step renormalises ``v`` at every step and keeps no host-side growth, so its ``k`` and ``v`` differ from an
    eager step's while their product does not."""
    out = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if "momentum_scale" in out:
        out["momentum_buffer"] = out.pop("momentum_buffer") * out.pop("momentum_scale")
    return out


@pytest.mark.parametrize("name", list(MAKERS))
def test_inductor_compiled_float64_steps_equal_eager_steps(name: str) -> None:
    if not _inductor_builds():
        pytest.skip("inductor cannot build a CPU kernel here")
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(5, generator=gen, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)]
    params = [nn.Parameter(t.clone()) for t in base]
    twins = [nn.Parameter(t.clone()) for t in base]
    opt, ref = MAKERS[name](params), MAKERS[name](twins)
    step = torch.compile(opt.step, fullgraph=True)
    for _ in range(3):
        for p, q in zip(params, twins):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad, q.grad = g, g.clone()
        step()
        ref.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        assert not torch.equal(p, torch.zeros_like(p))
    for p, q in zip(params, twins):  # the scalar states kept up, not only the parameters
        got, want = _effective(opt.state[p]), _effective(ref.state[q])
        assert got.keys() == want.keys()
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-14, msg=f"state {key!r}")
    for p, t in zip(params, base):
        assert not torch.equal(p, t)  # the 0-dim parameter moved too
