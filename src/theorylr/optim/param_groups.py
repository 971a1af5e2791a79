"""Param groups for layer-wise optimizers: adapt the weight matrices, leave biases and norm layers to plain SGD."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from theorylr._layers import NORM_LAYERS
from theorylr._validation import check_bool

__all__ = ["lars_param_groups"]

ExcludeRule = Callable[[str, Tensor], bool] | Iterable[str] | None


def _excluder(exclude: ExcludeRule) -> Callable[[str, Tensor], bool]:
    if exclude is None:
        return lambda name, p: False
    if callable(exclude):
        return exclude
    if isinstance(exclude, str):
        exclude = (exclude,)
    if not isinstance(exclude, Iterable):
        raise ValueError(f"exclude must be a callable (name, param) -> bool or glob patterns (got {exclude!r})")
    patterns = tuple(exclude)
    if not all(isinstance(pattern, str) for pattern in patterns):
        raise ValueError(f"exclude must be a callable (name, param) -> bool or glob patterns (got {patterns!r})")
    return lambda name, p: any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def lars_param_groups(
    model_or_named_params: nn.Module | Iterable[tuple[str, Tensor]],
    *,
    exclude: ExcludeRule = None,
    exclude_1d: bool = True,
    exclude_weight_decay: bool = True,
    **group_kwargs: Any,
) -> list[dict[str, Any]]:
    """Split parameters into an adapted group and a non-adapted one (``adapt=False``: plain momentum SGD).

    A tensor goes to the non-adapted group when it has at most one dimension (biases, BatchNorm/LayerNorm gains
    and shifts; ``exclude_1d=True``), when it belongs to a norm layer (given a module: the gains and shifts of a
    ``LayerNorm((2, 3))`` or ``RMSNorm`` of several dimensions too; also with ``exclude_1d``), or when ``exclude``
    selects it. This is the split You et al. use for LARS:
    a trust ratio ``||w|| / ||g||`` means little for a bias whose norm starts at zero, and norm-layer gains make
    the network scale-invariant in the weights they follow.

    Args:
        model_or_named_params: a module (its ``named_parameters()``) or ``(name, tensor)`` pairs. A tensor that
            appears twice (tied weights) is kept once, at its first name.
        exclude: further tensors to leave out, as glob patterns on the name (``("*.bias", "embed.*")``) or a
            callable ``(name, tensor) -> bool`` (default None).
        exclude_1d: leave out every tensor with ``ndim <= 1`` (default True).
        exclude_weight_decay: give the non-adapted group ``weight_decay=0.0`` (default True), the usual choice
            for biases and norm layers.
        **group_kwargs: settings for both groups (e.g. ``momentum=0.9``); the optimizer's constructor arguments
            remain the defaults for anything not given here.

    Returns:
        A list of param-group dicts, ``[adapted, non-adapted]``, without empty groups (an empty list when there
        are no parameters). Pass it to :class:`~theorylr.optim.lars.LARS` or any torch optimizer.

    Raises:
        ValueError: on a malformed ``exclude``, a non-boolean flag, or (with ``exclude_1d``) an uninitialized
            parameter of a lazy module that ``exclude`` does not select (its shape is unknown before the first
            forward pass).

    Example:
        >>> from theorylr.optim.lars import LARS
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        >>> groups = lars_param_groups(net, momentum=0.9)
        >>> [(len(g["params"]), g.get("adapt", True)) for g in groups]
        [(2, True), (4, False)]
        >>> opt = LARS(groups, lr=0.01, weight_decay=1e-4)
        >>> [g["weight_decay"] for g in opt.param_groups]
        [0.0001, 0.0]
    """
    check_bool("exclude_1d", exclude_1d)
    check_bool("exclude_weight_decay", exclude_weight_decay)
    if "params" in group_kwargs:
        raise ValueError("params must not be passed in group_kwargs: the helper fills it")
    is_excluded = _excluder(exclude)
    named = (
        model_or_named_params.named_parameters()
        if isinstance(model_or_named_params, nn.Module)
        else model_or_named_params
    )
    norm_params: set[int] = set()
    if isinstance(model_or_named_params, nn.Module):
        # Norm layers' gains and shifts are never adapted, whatever their shape (LayerNorm((2, 3)) has 2-D ones).
        norm_params = {
            id(p) for m in model_or_named_params.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()
        }
    adapted: list[Tensor] = []
    plain: list[Tensor] = []
    seen: set[int] = set()
    for item in named:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor)):
            raise ValueError(
                "model_or_named_params must be a module or (name, tensor) pairs such as model.named_parameters() "
                f"(got an item of type {type(item).__name__})"
            )
        name, param = item
        if id(param) in seen:
            continue
        seen.add(id(param))
        if is_excluded(name, param):
            plain.append(param)
            continue
        if exclude_1d and nn.parameter.is_lazy(param):  # its ndim reads 1 until the first forward pass
            raise ValueError(
                f"parameter {name!r} is uninitialized (a lazy module such as nn.LazyLinear): its number of "
                "dimensions is unknown until the first forward pass; run one (e.g. model(example_input)) before "
                "lars_param_groups, or exclude it by name"
            )
        if exclude_1d and (param.ndim <= 1 or id(param) in norm_params):
            plain.append(param)
        else:
            adapted.append(param)
    groups: list[dict[str, Any]] = []
    if adapted:
        groups.append({**group_kwargs, "params": adapted})
    if plain:
        extra: dict[str, Any] = {"adapt": False}
        if exclude_weight_decay:
            extra["weight_decay"] = 0.0
        groups.append({**group_kwargs, **extra, "params": plain})
    return groups
