"""The multi-tensor path rounds as the reference loop does, in the corners a differential fuzz of random
configurations found (each case failed before its fix; bitwise equal now):

- 16-bit CPU tensors: torch's ``_foreach_mul_(tensors, 0.9)`` rounds 0.9 to the tensors' dtype, ``mul_`` does not
  (``_base.foreach_mul_``): AdaptiveRMSprop's second moment, LARS's plain momentum buffer;
- a float64 tensor lr with float32 parameters: the loop's 0-dim coefficients promoted to float64;
- a 0-dim bfloat16 parameter with a tensor lr and bias correction: the loop cast lr to float32, the foreach path to
  bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from theorylr.optim.adaptive import AdaMo, AdaptiveRMSprop, AutoAdam
from theorylr.optim.lars import LARS


def _run(
    make: Callable[[list[nn.Parameter], bool], Any],
    shapes: list[tuple[int, ...]],
    dtype: torch.dtype,
    foreach: bool,
    steps: int,
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    gen = torch.Generator().manual_seed(0)
    ws = [nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]
    opt = make(ws, foreach)
    for _ in range(steps):
        for w in ws:
            w.grad = torch.randn(w.shape, generator=gen).to(dtype)
        opt.step()
    return [w.detach().clone() for w in ws], [
        {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[w].items()} for w in ws
    ]


def _assert_same(
    make: Callable[[list[nn.Parameter], bool], Any],
    shapes: list[tuple[int, ...]],
    dtype: torch.dtype,
    steps: int,
    keys: tuple[str, ...] | None = None,
) -> None:
    (wa, sa), (wb, sb) = (_run(make, shapes, dtype, foreach, steps) for foreach in (True, False))
    for a, b in zip(sa, sb):
        for key in keys or tuple(a):
            same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
            assert same, key
    if keys is None:
        assert all(torch.equal(x, y) for x, y in zip(wa, wb))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_momentum_and_second_moment_decay_as_the_loop(dtype: torch.dtype) -> None:
    shapes = [(4, 4), (3,)]
    # bfloat16 norms are rounded to bfloat16 on the foreach path (documented in local_norms): there only the
    # states that do not go through a norm are compared
    keys = None if dtype == torch.float16 else ("exp_avg_sq",)
    _assert_same(lambda ps, fe: AdaptiveRMSprop(ps, lr=0.05, beta=0.9, foreach=fe), shapes, dtype, 5, keys)
    if dtype == torch.float16:
        _assert_same(
            lambda ps, fe: LARS(ps, lr=0.05, momentum=0.9, factored_momentum=False, foreach=fe), shapes, dtype, 5
        )


@pytest.mark.parametrize(
    ("param_dtype", "lr_dtype"),
    [(torch.float32, torch.float64), (torch.float32, torch.float16), (torch.float64, torch.float32)],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda ps, fe, lr: AdaMo(ps, lr=lr, beta=0.9, foreach=fe),
        lambda ps, fe, lr: LARS(ps, lr=lr, momentum=0.9, foreach=fe),
        lambda ps, fe, lr: LARS(ps, lr=lr, momentum=0.9, nesterov=True, foreach=fe),
        lambda ps, fe, lr: LARS(ps, lr=lr, foreach=fe),
    ],
    ids=["adamo", "lars-momentum", "lars-nesterov", "lars"],
)
def test_a_tensor_lr_of_another_dtype(
    make: Callable[..., Any], param_dtype: torch.dtype, lr_dtype: torch.dtype
) -> None:
    """The loop's 0-dim products of a float64 lr promoted to float64; a first fix of that took Nesterov's
    ``-lr * momentum`` after the cast where the foreach path takes it before (a float16 or float32 lr)."""
    _assert_same(lambda ps, fe: make(ps, fe, torch.tensor(0.05, dtype=lr_dtype)), [(5, 3), (4,)], param_dtype, 30)


@pytest.mark.parametrize(
    ("cls", "w0", "g0"), [(AdaptiveRMSprop, -0.0208740234375, -0.71875), (AutoAdam, 0.056640625, 0.1044921875)]
)
def test_a_0_dim_bfloat16_parameter_with_a_tensor_lr_and_bias_correction(cls: type, w0: float, g0: float) -> None:
    """Values where the two roundings of lr (0.05 in float32, 0.05005 in bfloat16) give different steps."""
    out = []
    for foreach in (True, False):
        w = nn.Parameter(torch.tensor(w0, dtype=torch.bfloat16))
        opt = cls([w], lr=torch.tensor(0.05), bias_correction=True, eps=0.0, foreach=foreach)
        w.grad = torch.tensor(g0, dtype=torch.bfloat16)
        opt.step()
        out.append(w.detach().clone())
    assert torch.equal(out[0], out[1])
