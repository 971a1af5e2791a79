"""Re-initialising a model's weights with a named scheme, reproducibly under a :class:`torch.Generator`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar, cast

import torch
from torch import Tensor, nn

from theorylr._layers import NORM_LAYERS
from theorylr._validation import check_choice, check_module

__all__ = ["INIT_SCHEMES", "init_weights"]

_M = TypeVar("_M", bound=nn.Module)  # init_weights returns the model it was given, typed as given

INIT_SCHEMES = ("default", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal")
_NONLINEARITIES = ("relu", "leaky_relu", "tanh", "sigmoid", "linear", "selu")
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def init_weights(
    model: _M,
    scheme: str = "default",
    generator: torch.Generator | None = None,
    *,
    nonlinearity: str = "relu",
) -> _M:
    """Re-draw the weights of every Linear and convolution of ``model`` in place; return ``model``.

    With ``fan_in``/``fan_out`` the weight's input/output size times the kernel size and ``gain = sqrt(2)`` for
    ReLU (:func:`torch.nn.init.calculate_gain` of ``nonlinearity``):

    * ``"default"``: torch's own initialisation (``reset_parameters()``): ``W, b ~ U(-1/sqrt(fan_in),
      1/sqrt(fan_in))``, i.e. Kaiming-uniform with ``a = sqrt(5)``, bias included.
    * ``"kaiming_uniform"``: ``W ~ U(-bound, bound)``, ``bound = gain * sqrt(3 / fan_in)``, so
      ``Var W = gain² / fan_in``; bias 0 (He et al., 2015).
    * ``"kaiming_normal"``: ``W ~ N(0, gain² / fan_in)``; bias 0.
    * ``"xavier_uniform"``: ``W ~ U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``, ``Var W = 2 / (fan_in +
      fan_out)``; bias 0 (Glorot & Bengio, 2010; Keras' default).
    * ``"xavier_normal"``: ``W ~ N(0, 2 / (fan_in + fan_out))``; bias 0.

    Normalisation layers (BatchNorm, InstanceNorm, GroupNorm, LayerNorm, RMSNorm) are reset too (weight 1, bias 0,
    running statistics cleared), so the result is a fresh initialisation of the whole network; other modules
    with parameters are left as they are. This is the sampler behind the exact-step-Adam paper's App. C.4
    (learning rate vs. initialisation scheme) and the initial points of Algorithm 2's smoothness estimate.

    Args:
        model: the network (modified in place).
        scheme: one of :data:`INIT_SCHEMES` (default ``"default"``).
        generator: the source of randomness. Values are drawn in float32 on the generator's device, then copied
            to each parameter's device and dtype, so the same generator state gives the same weights on any
            device, in any dtype (to its precision), whatever the global RNG state. ``None`` uses torch's global
            RNG (for ``"default"``: the modules' own ``reset_parameters()``).
        nonlinearity: the activation the Kaiming gain is computed for (default ``"relu"``); Xavier uses gain 1.

    Returns:
        ``model``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = init_weights(nn.Linear(400, 300), "kaiming_normal", torch.Generator().manual_seed(0))
        >>> round(m.weight.var().item() * 400, 1), m.bias.abs().max().item()
        (2.0, 0.0)
    """
    check_module("model", model)
    check_choice("scheme", scheme, INIT_SCHEMES)
    check_choice("nonlinearity", nonlinearity, _NONLINEARITIES)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None (got {type(generator).__name__})")
    lazy = [name for name, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
    if lazy:
        raise ValueError(
            f"model has lazy parameters not yet initialised ({', '.join(lazy)}): run one forward pass to give them "
            "their shapes, then call init_weights"
        )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _WEIGHTED):
                _init_layer(module, scheme, generator, nonlinearity)
            elif isinstance(module, NORM_LAYERS):
                module.reset_parameters()  # type: ignore[operator]  # every NORM_LAYERS type has it
    return model


def _fan_in(weight: Tensor) -> int:
    # As torch computes it: weight.shape[1] times the receptive field.
    return weight.shape[1] * math.prod(weight.shape[2:])


def _init_layer(module: nn.Module, scheme: str, generator: torch.Generator | None, nonlinearity: str) -> None:
    weight = cast(Tensor, module.weight)
    bias = cast("Tensor | None", module.bias)
    if scheme == "default":
        if generator is None:
            module.reset_parameters()  # type: ignore[operator]
            return
        _fill(weight, lambda t, g: nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g), generator)
        if bias is not None:
            fan_in = _fan_in(weight)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            _fill(bias, lambda t, g: nn.init.uniform_(t, -bound, bound, generator=g), generator)
        return
    draw: Callable[[Tensor, torch.Generator | None], Tensor]
    if scheme == "kaiming_uniform":

        def draw(t: Tensor, g: torch.Generator | None) -> Tensor:
            return nn.init.kaiming_uniform_(t, nonlinearity=nonlinearity, generator=g)  # type: ignore[arg-type]

    elif scheme == "kaiming_normal":

        def draw(t: Tensor, g: torch.Generator | None) -> Tensor:
            return nn.init.kaiming_normal_(t, nonlinearity=nonlinearity, generator=g)  # type: ignore[arg-type]

    elif scheme == "xavier_uniform":

        def draw(t: Tensor, g: torch.Generator | None) -> Tensor:
            return nn.init.xavier_uniform_(t, generator=g)

    else:

        def draw(t: Tensor, g: torch.Generator | None) -> Tensor:
            return nn.init.xavier_normal_(t, generator=g)

    _fill(weight, draw, generator)
    if bias is not None:
        bias.zero_()


def _fill(
    param: Tensor, draw: Callable[[Tensor, torch.Generator | None], Tensor], generator: torch.Generator | None
) -> None:
    """Fill ``param`` with ``draw``; with a generator, draw in float32 on the generator's device first, so the
    values depend neither on ``param``'s device nor on its dtype."""
    if generator is None:
        draw(param, None)
        return
    buffer = torch.empty(param.shape, dtype=torch.float32, device=generator.device)
    draw(buffer, generator)
    param.copy_(buffer)
