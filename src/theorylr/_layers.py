"""Layer kinds that several parts of the library treat alike (a private module, like :mod:`theorylr._validation`).

:data:`NORM_LAYERS` are the normalisation layers: :func:`theorylr.models.init.init_weights` resets them with the
rest of the network, and :func:`theorylr.optim.lars_param_groups` never adapts their gains and shifts.

Example:
    >>> from torch import nn
    >>> [isinstance(m, NORM_LAYERS) for m in (nn.BatchNorm2d(3), nn.LayerNorm(3), nn.RMSNorm(3), nn.Linear(3, 3))]
    [True, True, True, False]
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ["NORM_LAYERS"]

#: BatchNorm, InstanceNorm and SyncBatchNorm (``_NormBase``), LayerNorm, GroupNorm and, where torch has it, RMSNorm.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    _NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
