"""The base class of the project's models: an ``nn.Sequential`` whose slices are plain ``nn.Sequential``."""

from __future__ import annotations

from collections import OrderedDict
from typing import overload

from torch import nn

__all__ = ["SequentialModel"]


class SequentialModel(nn.Sequential):
    """An :class:`torch.nn.Sequential` whose slices are plain :class:`~torch.nn.Sequential` objects.

    ``nn.Sequential`` builds a slice with ``self.__class__(OrderedDict(...))``: a subclass whose constructor takes
    its own arguments (``MLP(in_features, hidden, ...)``) would receive the modules as its first argument and fail.
    Slicing is how one gets a model's features (``model[:-1]``: every layer but the final ``nn.Linear``, whose input
    LipschitzLR's closed forms read), so every model here derives from this class. An integer index still returns
    the module itself, and the slice shares the model's modules (no copy), as with ``nn.Sequential``.

    Example:
        >>> import torch
        >>> from theorylr.models import MLP
        >>> model = MLP(4, [8], 3)
        >>> features = model[:-1]  # the input of the final Linear
        >>> type(features).__name__, features(torch.zeros(2, 4)).shape
        ('Sequential', torch.Size([2, 8]))
        >>> features[1] is model[1]  # the same modules, under the same names
        True
    """

    @overload
    def __getitem__(self, idx: slice) -> nn.Sequential: ...
    @overload
    def __getitem__(self, idx: int) -> nn.Module: ...
    def __getitem__(self, idx: int | slice) -> nn.Module:
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)
