"""Argument checks shared by the whole library.

Every check raises :class:`ValueError` early, naming the argument, the value it got and what is allowed, so that
a user sees ``lr must be a finite number >= 0 (got -1.0)`` instead of a NaN twenty steps later.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

#: The largest seed the library takes: torch's generators take seeds below ``2**64``, and the half of that range
#: kept here leaves room for the offsets added to a seed (trials, samples, ranks).
SEED_MAX = 2**63 - 1

__all__ = [
    "SEED_MAX",
    "check_bool",
    "check_choice",
    "check_int",
    "check_module",
    "check_number",
    "check_probability",
]


def _torch_number(value: Any, kind: type) -> bool:
    """``value`` is of the abstract number ``kind`` and of a type torch's operators take as a number: a Python
    ``int`` or ``float``, or a NumPy scalar such as ``np.float32`` (not a ``Fraction``, which torch refuses); never a
    bool."""
    return (
        isinstance(value, kind)
        and not isinstance(value, bool)
        and (isinstance(value, (int, float)) or type(value).__module__ == "numpy")
    )


def _is_real(value: Any) -> bool:
    return _torch_number(value, numbers.Real)


def check_number(
    name: str,
    value: Any,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    allow_tensor: bool = False,
) -> None:
    """Check that ``value`` is a finite real number in the given range.

    Args:
        name: the argument's name, used in the message.
        value: the value to check.
        min_value, max_value: bounds (``None`` = unbounded).
        min_inclusive, max_inclusive: whether the bounds are allowed values.
        allow_tensor: accept a one-element :class:`torch.Tensor` (checked on its value; this reads the tensor,
            so use it in constructors only, never in ``step()``).

    Raises:
        ValueError: naming ``name`` and the allowed range.

    Example:
        >>> check_number("lr", 0.1, min_value=0.0)
        >>> check_number("lr", -1.0, min_value=0.0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number >= 0.0 (got -1.0)
    """
    if allow_tensor:
        import torch

        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"{name} must be a number or a one-element tensor (got shape {tuple(value.shape)})")
            value = float(value.detach().cpu())
    parts = []
    if min_value is not None:
        parts.append(f"{'>=' if min_inclusive else '>'} {min_value}")
    if max_value is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {max_value}")
    allowed = "a finite number" + (" " + " and ".join(parts) if parts else "")
    try:
        v = float(value) if _is_real(value) else math.nan
    except OverflowError:  # an int past float's range (10**400)
        v = math.inf
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {allowed} (got {value!r})")
    if min_value is not None and (v < min_value or (not min_inclusive and v == min_value)):
        raise ValueError(f"{name} must be {allowed} (got {value!r})")
    if max_value is not None and (v > max_value or (not max_inclusive and v == max_value)):
        raise ValueError(f"{name} must be {allowed} (got {value!r})")


def check_probability(name: str, value: Any, *, allow_one: bool = False) -> None:
    """Check ``0 <= value < 1`` (or ``<= 1`` with ``allow_one``), e.g. a momentum or an EMA coefficient."""
    check_number(name, value, min_value=0.0, max_value=1.0, max_inclusive=allow_one)


def check_int(name: str, value: Any, *, min_value: int | None = None, max_value: int | None = None) -> None:
    """Check that ``value`` is an integer (a Python ``int`` or a NumPy integer such as ``np.int64``; not a bool)
    within ``[min_value, max_value]``."""
    bounds = []
    if min_value is not None:
        bounds.append(f">= {min_value}")
    if max_value is not None:
        bounds.append(f"<= {max_value}")
    allowed = "an integer" + (" " + " and ".join(bounds) if bounds else "")
    if not _torch_number(value, numbers.Integral):
        raise ValueError(f"{name} must be {allowed} (got {value!r})")
    v = int(value)
    if (min_value is not None and v < min_value) or (max_value is not None and v > max_value):
        raise ValueError(f"{name} must be {allowed} (got {value!r})")


def check_module(name: str, value: Any) -> None:
    """Check that ``value`` is a ``torch.nn.Module`` (imports torch only when called)."""
    from torch import nn

    if not isinstance(value, nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module (got {type(value).__name__})")


def check_bool(name: str, value: Any) -> None:
    """Check that ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False (got {value!r})")


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """``"; did you mean 'x'?"`` for the closest of the string ``choices`` to a mistyped string ``value`` (case,
    ``_`` for ``-`` and a few letters off), else ``""``: the tail of a ``(got ...)`` in an error message.

    Example:
        >>> did_you_mean("lasr", ["lars", "adam", "sgd"]), did_you_mean("Adam", ["adam"]), did_you_mean("x", ["adam"])
        ("; did you mean 'lars'?", "; did you mean 'adam'?", '')
    """
    if not isinstance(value, str) or not value:
        return ""
    names = [c for c in choices if isinstance(c, str)]
    folded = {c.lower().replace("_", "-"): c for c in names}
    key = value.lower().replace("_", "-")
    if key in folded:
        return f"; did you mean {folded[key]!r}?"
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.6)
    return f"; did you mean {folded[close[0]]!r}?" if close else ""


def check_choice(name: str, value: T, choices: Iterable[T]) -> T:
    """Check that ``value`` is one of ``choices`` and return it.

    Example:
        >>> check_choice("norm", "l2", ("l1", "l2"))
        'l2'
    """
    options = tuple(choices)
    if value not in options:
        allowed = ", ".join(repr(c) for c in options)
        raise ValueError(f"{name} must be one of {allowed} (got {value!r}{did_you_mean(value, options)})")
    return value
