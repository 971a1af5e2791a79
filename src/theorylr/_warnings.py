"""Warnings that point at the user's line (a private module).

``warnings.warn(..., stacklevel=n)`` needs the number of frames between the warning and the user's code, and that
number depends on the path: an optimizer's ``step`` is called through torch's ``no_grad`` wrapper and its step
hooks, and once more through a learning-rate scheduler's wrapper when one is attached. :func:`warn` walks the stack
instead, to the first frame outside theorylr and torch, so that the warning names the user's file and line (and a
filter on the user's module matches it). Python 3.12's ``skip_file_prefixes`` does the same; theorylr supports 3.10.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

__all__ = ["warn"]

_INTERNAL = tuple(
    os.path.dirname(os.path.abspath(module.__file__)) + os.sep
    for module in (sys.modules[__package__], torch)
    if module.__file__ is not None
)


@torch.compiler.disable  # dynamo cannot trace sys._getframe: it would break the graph and warn of it
def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)``, attributed to the first caller outside theorylr and torch.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn("careful", RuntimeWarning)
        >>> caught[0].category.__name__, "_warnings.py" in caught[0].filename
        ('RuntimeWarning', False)
    """
    frame = sys._getframe(1)
    level = 2  # stacklevel 2 is warn()'s caller, the frame above
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
