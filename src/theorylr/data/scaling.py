"""Feature scalings fitted on the training set and applied unchanged to the test set."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from theorylr._validation import check_bool, check_choice, check_number

__all__ = ["SCALINGS", "scale_features"]

SCALINGS: tuple[str | None, ...] = (None, "standardize", "sum_to_one", "unit")

# sum_to_one treats a column as "summing to zero" when |sum| <= _ZERO_SUM_RTOL * sum(|x|) (all-zero columns
# included: 0 <= 0); dividing by such a sum would blow the column up, so it is left as it is.
_ZERO_SUM_RTOL = 1e-12
# standardize treats a feature as constant when std <= _CONSTANT_RTOL * |mean| (std == 0 included).
_CONSTANT_RTOL = 1e-10


def scale_features(
    x_train: Tensor, x_test: Tensor, scaling: str | None, *, pixel_max: float | None = None, inplace: bool = False
) -> tuple[Tensor, Tensor]:
    """Fit ``scaling`` on ``x_train`` and apply it to both sets (new tensors unless ``inplace``).

    Scalings (``x`` is one feature, statistics over the training set only):

    * ``None``: unchanged.
    * ``"standardize"``: ``(x - mean) / std`` with the population std (``ddof=0``); a constant feature is only
      centred (its std is replaced by 1; "constant" means ``std <= 1e-10 * |mean|``, so that the rounding error
      of the mean of a constant column is not blown up to +-1). Statistics are per feature for ``(N, F)``
      inputs and per channel (over ``N, H, W``) for ``(N, C, H, W)`` images, as is usual for CNNs.
    * ``"sum_to_one"``: LipschitzLR paper, §7.1 ("we scale each feature to sum to 1"): every feature (every pixel
      for images) is divided by its sum over the training set, so each training column sums to 1. A column whose
      training sum is zero (an all-zero pixel, or signed values that cancel: ``|sum| <= 1e-12 * sum(|x|)``) is left
      unchanged, since no finite factor makes it sum to 1.
    * ``"unit"``: to ``[0, 1]``: divided by ``pixel_max`` when given (255 for MNIST/CIFAR bytes, 16 for digits),
      otherwise min-max scaled per feature with the training minimum and maximum (a constant feature becomes 0;
      test values may fall slightly outside ``[0, 1]``).

    Args:
        x_train, x_test: tensors ``(N, ...)`` with the same trailing shape; integer ones (raw ``uint8`` pixels)
            are scaled as float32. ``x_train`` must have at least one row for the scalings fitted on it
            (``"standardize"``, ``"sum_to_one"``, and ``"unit"`` without ``pixel_max``).
        scaling: one of :data:`SCALINGS`.
        pixel_max: the largest possible raw value, for ``"unit"`` on pixel data: a finite number ``> 0`` (or a
            one-element tensor), checked whenever given.
        inplace: overwrite ``x_train`` and ``x_test`` (floating tensors the caller owns) instead of allocating new
            ones; saves a copy of a large image set.

    Returns:
        ``(x_train_scaled, x_test_scaled)``.

    .. note::
        The paper scales "each feature to sum to 1" on data sets whose features are nonnegative; on signed
        features (already centred data) the column sums are near zero and the factors huge, so use
        ``"standardize"`` there.

    Example:
        >>> import torch
        >>> xtr = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
        >>> a, b = scale_features(xtr, torch.tensor([[2.0, 5.0]]), "sum_to_one")
        >>> a.tolist(), b.tolist()
        ([[0.25, 0.0], [0.75, 0.0]], [[0.5, 5.0]])
    """
    check_choice("scaling", scaling, SCALINGS)
    check_bool("inplace", inplace)
    if pixel_max is not None:
        check_number("pixel_max", pixel_max, min_value=0.0, min_inclusive=False, allow_tensor=True)
        pixel_max = float(pixel_max)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (got {type(x).__name__})")
    if inplace and not (x_train.is_floating_point() and x_test.is_floating_point()):
        raise ValueError("inplace=True needs floating x_train and x_test")
    if scaling is not None and not (x_train.is_floating_point() and x_test.is_floating_point()):  # raw uint8 pixels
        x_train, x_test = x_train.float(), x_test.float()
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"x_train and x_test must have the same trailing shape "
            f"(got {tuple(x_train.shape[1:])} and {tuple(x_test.shape[1:])})"
        )
    if scaling is None:
        return (x_train, x_test) if inplace else (x_train.clone(), x_test.clone())
    if (scaling != "unit" or pixel_max is None) and (x_train.ndim == 0 or x_train.shape[0] == 0):
        raise ValueError(
            f"x_train must have at least one row to fit scaling={scaling!r} on (got shape {tuple(x_train.shape)})"
        )
    if scaling == "standardize":
        per_channel = x_train.ndim == 4
        # var_mean accumulates in float64 on the CPU even for float32 inputs (Welford), without a float64 copy; but it
        # returns the input's dtype, where a 16-bit variance overflows (float16: above 65504): those in float32.
        view = _feature_view(x_train, per_channel)
        if view.dtype in _NARROW:  # two float64 passes a block of rows at a time (no full-size copy)
            count = view.shape[0] * view.shape[2]
            mean = _chunked_sum(view, lambda c: c) / count
            centre = mean.reshape(1, -1, 1)
            var = _chunked_sum(view, lambda c: (c - centre).square()) / count
        else:
            var, mean = torch.var_mean(view, dim=(0, 2), correction=0)
            var, mean = var.double(), mean.double()
        std = var.sqrt()
        # A constant feature: exactly zero spread, or rounding noise of the mean (a column of 0.1's).
        constant = std <= _CONSTANT_RTOL * mean.abs()
        std = torch.where(constant, torch.ones_like(std), std)
        shape = _stat_shape(x_train, per_channel)
        return _affine(x_train, x_test, mean.reshape(shape), std.reshape(shape), inplace)
    if scaling == "sum_to_one":
        view = _feature_view(x_train, False)
        total = _chunked_sum(view, lambda c: c)
        zero = total.abs() <= _ZERO_SUM_RTOL * _chunked_sum(view, lambda c: c.abs())
        total = torch.where(zero, torch.ones_like(total), total).reshape(_stat_shape(x_train, False))
        return _affine(x_train, x_test, torch.zeros_like(total), total, inplace)
    # "unit"
    if pixel_max is not None:
        scale = torch.full((1,) * x_train.ndim, pixel_max, dtype=torch.float64)
        return _affine(x_train, x_test, torch.zeros_like(scale), scale, inplace)
    low = x_train.amin(dim=0, keepdim=True).double()
    span = x_train.amax(dim=0, keepdim=True).double() - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return _affine(x_train, x_test, low, span, inplace)


def _feature_view(x: Tensor, per_channel: bool) -> Tensor:
    """``x`` as ``(N, F, K)``: statistics reduce over dims 0 and 2 (``K = H * W`` per channel, else 1)."""
    if per_channel:
        return x.reshape(x.shape[0], x.shape[1], -1)
    return x.reshape(x.shape[0], -1, 1)


def _stat_shape(x: Tensor, per_channel: bool) -> tuple[int, ...]:
    """Broadcastable shape of a per-feature (or per-channel) statistic."""
    if per_channel:
        return (1, x.shape[1], 1, 1)
    return (1, *x.shape[1:])


def _chunked_sum(view: Tensor, fn: Callable[[Tensor], Tensor], rows: int = 4096) -> Tensor:
    """``sum over dims (0, 2) of fn(view)``, accumulated in float64 a block of rows at a time.

    ``fn`` receives a float64 block ``(rows, F, K)``; the block size bounds the temporary memory, so a float32
    MNIST or CIFAR array is never copied whole to float64.
    """
    total = torch.zeros(view.shape[1], dtype=torch.float64, device=view.device)
    for block in view.split(rows):
        total += fn(block.double()).sum(dim=(0, 2))
    return total


# 16-bit dtypes: statistics (a float16 column sum of 284,000, a variance of 130,000) are out of their range, or too
# coarse, so the scaling is computed in float32 and rounded once.
_NARROW = (torch.float16, torch.bfloat16)
_BLOCK_ROWS = 4096


def _affine(x_train: Tensor, x_test: Tensor, shift: Tensor, scale: Tensor, inplace: bool) -> tuple[Tensor, Tensor]:
    """``(x - shift) / scale`` for both sets, statistics cast to each set's dtype and device (16-bit sets: computed
    in float32, rounded once)."""

    def apply(x: Tensor) -> Tensor:
        if x.dtype in _NARROW:  # a block of rows at a time: float32 temporaries of one block only
            out = x if inplace else torch.empty_like(x)
            s32, c32 = shift.to(x.device, torch.float32), scale.to(x.device, torch.float32)
            for rows in range(0, x.shape[0], _BLOCK_ROWS):
                block = x[rows : rows + _BLOCK_ROWS]
                out[rows : rows + _BLOCK_ROWS] = (block.float() - s32) / c32
            return out
        out = x.sub_(shift.to(x.device, x.dtype)) if inplace else x - shift.to(x.device, x.dtype)
        return out.div_(scale.to(x.device, x.dtype))

    return apply(x_train), apply(x_test)
