"""Memory: optimizer state no larger than needed, and no full-size temporaries in LARS's step.

State is compared with the torch optimizer each rule extends, on the same parameters: LARS and PercentDelta keep
one momentum buffer per parameter as ``torch.optim.SGD`` does (none without momentum) plus a 0-dim ``trust_ratio``
for logging; AdaMo keeps its first moment, AutoAdam both of Adam's moments, AdaptiveRMSprop RMSprop's second
moment, each plus 0-dim scalars (step counter and Lipschitz averages). Transient memory is read from the CPU
allocator's events (``torch.profiler`` with ``profile_memory=True``) during a steady-state step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from benchmarks._timing import peak_transient_bytes
from torch import Tensor, nn
from torch.optim import Optimizer

from theorylr.optim.adaptive import AdaMo, AdaptiveRMSprop, AutoAdam
from theorylr.optim.lars import LARS, PercentDelta

SHAPES = ((64, 32), (64,), (10, 64), (10,), (3, 5, 5))


def _params(dtype: torch.dtype = torch.float32) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in SHAPES:
        p = nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype))
        p.grad = torch.randn(shape, generator=gen, dtype=dtype)
        params.append(p)
    return params


def _state(opt: Optimizer, params: list[nn.Parameter]) -> tuple[dict[str, int], int, int]:
    """Per key, the full-size tensors (shape of their parameter); the count of 0-dim tensors; total state bytes."""
    full: dict[str, int] = {}
    scalars = 0
    nbytes = 0
    for p in params:
        for key, value in opt.state[p].items():
            if not isinstance(value, Tensor):
                continue
            nbytes += value.numel() * value.element_size()
            if value.dim() == 0:
                scalars += 1
            else:
                assert value.shape == p.shape and value.dtype == p.dtype, key
                full[key] = full.get(key, 0) + 1
    return full, scalars, nbytes


def _stepped(
    make: Callable[[list[nn.Parameter]], Optimizer], dtype: torch.dtype = torch.float32
) -> tuple[Optimizer, list[nn.Parameter]]:
    params = _params(dtype)
    opt = make(params)
    opt.step()
    opt.step()
    return opt, params


@pytest.mark.parametrize("cls", [LARS, PercentDelta], ids=lambda c: c.__name__)
@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lars_state_is_sgds_plus_scalars_per_parameter(cls: type[LARS], momentum: float, dtype: torch.dtype) -> None:
    opt, params = _stepped(lambda ps: cls(ps, lr=0.1, momentum=momentum, weight_decay=1e-3), dtype)
    sgd, sgd_params = _stepped(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, weight_decay=1e-3), dtype)
    full, scalars, nbytes = _state(opt, params)
    sgd_full, _, sgd_bytes = _state(sgd, sgd_params)
    assert full == sgd_full == ({"momentum_buffer": len(params)} if momentum else {})
    # trust_ratio and, with momentum, momentum_scale: 0-dim, in float32 or wider (a float16 ratio would overflow)
    scalar_bytes = torch.empty((), dtype=torch.promote_types(dtype, torch.float32)).element_size()
    assert scalars == len(params) * (2 if momentum else 1)
    assert nbytes == sgd_bytes + len(params) * scalar_bytes * (2 if momentum else 1)


@pytest.mark.parametrize(
    ("cls", "kwargs", "reference", "moments"),
    [
        (AdaMo, {}, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), {"exp_avg"}),
        (AutoAdam, {}, lambda ps: torch.optim.Adam(ps), {"exp_avg", "exp_avg_sq"}),
        (AdaptiveRMSprop, {}, lambda ps: torch.optim.RMSprop(ps), {"exp_avg_sq"}),
    ],
    ids=["AdaMo", "AutoAdam", "AdaptiveRMSprop"],
)
def test_adaptive_state_is_their_moments_plus_scalars(
    cls: type[Optimizer],
    kwargs: dict[str, Any],
    reference: Callable[[list[nn.Parameter]], Optimizer],
    moments: set[str],
) -> None:
    opt, params = _stepped(lambda ps: cls(ps, lipschitz="observed", **kwargs))
    ref, ref_params = _stepped(reference)
    full, scalars, _ = _state(opt, params)
    ref_full, _, _ = _state(ref, ref_params)
    assert set(full) == moments
    assert all(count == len(params) for count in full.values())
    assert sum(full.values()) == sum(ref_full.values())  # as many full-size tensors as the torch counterpart
    assert scalars <= 3 * len(params)  # step, lipschitz_avg and (with a second moment) lipschitz_sq_avg


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_lars_foreach_step_allocates_no_more_than_sgd(weight_decay: float, norm: str) -> None:
    opt, _ = _stepped(lambda ps: LARS(ps, lr=0.1, momentum=0.9, weight_decay=weight_decay, norm=norm))
    sgd, _ = _stepped(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=weight_decay, foreach=True))
    param_bytes = sum(torch.Size(s).numel() * 4 for s in SHAPES)
    lars_peak, sgd_peak = peak_transient_bytes(opt.step), peak_transient_bytes(sgd.step)
    # SGD needs g + wd w with weight decay (one parameter-sized copy) and nothing without; LARS adds only small
    # tensors (norms and ratios: a few bytes per parameter tensor).
    small = 4096  # norms, ratios and allocator rounding: bytes per tensor, not per element
    assert abs(sgd_peak - (param_bytes if weight_decay else 0)) <= small
    assert lars_peak <= sgd_peak + small
    # A control on the method: a parameter-sized temporary is seen.
    grads = [p.grad for p in opt.param_groups[0]["params"]]
    assert peak_transient_bytes(lambda: [g.clone() for g in grads]) >= param_bytes
