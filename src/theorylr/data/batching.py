"""Seeded train/test splits and mini-batch iteration."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from theorylr._validation import SEED_MAX, check_bool, check_int

__all__ = ["iterate_batches", "split_indices"]


def split_indices(y: Tensor, num_test: int, *, stratify: bool = True, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Deterministic split of ``range(len(y))`` into train and test indices.

    With ``stratify=True`` (classification) every class keeps its share: class ``k`` with ``c_k`` of the ``n``
    examples gives ``floor(num_test * c_k / n)`` or one more to the test set (largest-remainder rounding, so the
    per-class test counts add up to ``num_test`` exactly and each is within 1 of ``num_test * c_k / n``). Which
    examples of a class go to the test set is drawn with ``numpy.random.default_rng(seed)``; which classes get the
    extra slots is not: among classes with equal remainders the lower class index wins, whatever the seed (so the
    splits of every dataset stay as they were). A subsample smaller than the number of classes (``num_test=5`` of
    ten balanced classes) therefore holds the same classes for every seed: draw such a subsample yourself. With
    ``stratify=False`` (regression) a seeded permutation is cut at ``num_test``.

    Args:
        y: labels of shape ``(n,)`` (only read when ``stratify``).
        num_test: the size of the test set, ``0 <= num_test <= n``.
        stratify: keep the class proportions.
        seed: the seed of the draw; the same seed gives the same split.

    Returns:
        ``(train_idx, test_idx)``: sorted ``int64`` index tensors that partition ``range(n)``.

    Example:
        >>> import torch
        >>> y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> train, test = split_indices(y, 4, seed=0)
        >>> y[test].bincount().tolist()
        [2, 2]
    """
    if not isinstance(y, Tensor) or (stratify and y.ndim != 1):
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a 1-D tensor of class labels with stratify=True (got {got})")
    n = int(y.shape[0])
    check_int("num_test", num_test, min_value=0, max_value=n)
    check_bool("stratify", stratify)
    check_int("seed", seed, min_value=0, max_value=SEED_MAX)
    rng = np.random.default_rng(seed)
    if not stratify:
        perm = rng.permutation(n)
        test = np.sort(perm[:num_test])
    else:
        labels = y.detach().cpu().numpy()
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        quota = num_test * counts.astype(np.int64)  # n times each class's exact share of the test set
        take = quota // n
        remainder = num_test - int(take.sum())
        # Largest remainders first; ties go to the smaller class index (stable sort): deterministic. The
        # remainders are compared as integers (quota mod n): as floats, 16 * 10 / 100 - 1 = 0.6000000000000001
        # beat 6 * 10 / 100 = 0.6, an equal remainder, and the larger class took the tie.
        order = np.argsort(-(quota % n), kind="stable")
        take[order[:remainder]] += 1
        chosen = []
        for k in range(len(classes)):
            members = np.flatnonzero(inverse == k)
            chosen.append(rng.permutation(members)[: take[k]])
        test = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    train = np.flatnonzero(mask)
    return torch.from_numpy(train.astype(np.int64)), torch.from_numpy(test.astype(np.int64))


def iterate_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int | None,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x_batch, y_batch)`` pairs covering the data once (one epoch).

    ``batch_size=None`` yields the full batch ``(x, y)`` once (nothing is copied). Otherwise the examples are
    visited in order, or in the order ``torch.randperm(n, generator=generator)`` when ``shuffle`` is true; the
    last batch is smaller when ``batch_size`` does not divide ``n`` unless ``drop_last``. The permutation is drawn
    on the generator's device and moved to ``x``'s, so a CPU generator gives the same batches on any device; the
    same generator state gives the same batches. Without a generator, shuffling uses torch's global RNG. The
    arguments are checked when the function is called, before the first batch is asked for.

    Args:
        x, y: tensors with the same first dimension ``n`` (both required: ``y=None`` is a ValueError).
        batch_size: examples per batch (``>= 1``), or ``None`` for full batch.
        shuffle: visit the examples in a random order.
        generator: the source of that order.
        drop_last: skip a final incomplete batch.

    Example:
        >>> import torch
        >>> x, y = torch.arange(5.0).unsqueeze(1), torch.arange(5)
        >>> [yb.tolist() for _, yb in iterate_batches(x, y, 2)]
        [[0, 1], [2, 3], [4]]
        >>> g = torch.Generator().manual_seed(0)
        >>> sorted(sum((yb.tolist() for _, yb in iterate_batches(x, y, 2, shuffle=True, generator=g)), []))
        [0, 1, 2, 3, 4]
    """
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor) or t.ndim == 0:
            got = f"a 0-dim tensor {t!r}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a torch.Tensor with one row per example (got {got})")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples (got {x.shape[0]} and {y.shape[0]})")
    if batch_size is not None:
        check_int("batch_size", batch_size, min_value=1)
    check_bool("shuffle", shuffle)
    check_bool("drop_last", drop_last)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None (got {type(generator).__name__})")
    return _batches(x, y, batch_size, shuffle, generator, drop_last)


def _batches(
    x: Tensor, y: Tensor, batch_size: int | None, shuffle: bool, generator: torch.Generator | None, drop_last: bool
) -> Iterator[tuple[Tensor, Tensor]]:
    """The generator behind :func:`iterate_batches`, on checked arguments."""
    n = int(x.shape[0])
    if batch_size is None:
        yield x, y
        return
    if shuffle:
        device = generator.device if generator is not None else torch.device("cpu")
        order: Tensor | None = torch.randperm(n, generator=generator, device=device).to(x.device)
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        if order is None:
            yield x[start:end], y[start:end]
        else:
            idx = order[start:end]
            yield x[idx], y[idx.to(y.device)]
