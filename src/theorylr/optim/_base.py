"""Small pieces shared by theorylr's optimizers (torch.optim conventions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["params_with_grad", "resolve_foreach"]

# Devices whose _foreach_* kernels we use by default (CPU included: one C++ loop instead of a Python one).
_FOREACH_DEVICES = ("cpu", "cuda", "xpu", "mps")


def resolve_foreach(foreach: bool | None, params: Iterable[Tensor]) -> bool:
    """Decide whether to take the multi-tensor (``torch._foreach_*``) path.

    ``foreach=None`` (the default of every theorylr optimizer) chooses it whenever every parameter is a plain
    dense tensor on a device with foreach kernels; ``True``/``False`` force the choice.
    """
    if foreach is not None:
        return foreach
    if torch.jit.is_scripting():
        return False
    return all(type(p) is torch.Tensor or isinstance(p, torch.nn.Parameter) for p in params) and all(
        p.device.type in _FOREACH_DEVICES for p in params
    )


def params_with_grad(group: dict[str, Any], owner: str) -> tuple[list[Tensor], list[Tensor]]:
    """The group's parameters that have a gradient, and those gradients (never modified).

    Raises:
        RuntimeError: if a gradient is sparse (``owner`` names the optimizer in the message).
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{owner} does not support sparse gradients; use a dense optimizer for that parameter")
        params.append(p)
        grads.append(p.grad)
    return params, grads
