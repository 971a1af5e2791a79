"""split_indices and iterate_batches: partitions, stratification, determinism."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theorylr.data import iterate_batches, split_indices


@settings(max_examples=40, deadline=None, derandomize=True, database=None)  # the same examples every run
@given(st.lists(st.integers(0, 4), min_size=2, max_size=60), st.floats(0.0, 1.0), st.integers(0, 2**31))
def test_split_indices_partition_and_stratification(labels: list[int], fraction: float, seed: int) -> None:
    y = torch.tensor(labels)
    n = len(labels)
    num_test = round(fraction * n)
    train, test = split_indices(y, num_test, seed=seed)
    assert len(test) == num_test
    assert torch.cat([train, test]).sort().values.equal(torch.arange(n))
    assert train.equal(train.sort().values) and test.equal(test.sort().values)
    counts = torch.bincount(y, minlength=5).double()
    test_counts = torch.bincount(y[test], minlength=5).double()
    assert ((test_counts - num_test * counts / n).abs() < 1).all()
    again = split_indices(y, num_test, seed=seed)
    assert again[0].equal(train) and again[1].equal(test)


def test_split_indices_unstratified_and_errors() -> None:
    y = torch.linspace(0, 1, 10)
    train, test = split_indices(y, 3, stratify=False, seed=1)
    assert len(test) == 3 and len(train) == 7
    assert not split_indices(y, 3, stratify=False, seed=2)[1].equal(test)
    with pytest.raises(ValueError, match="num_test"):
        split_indices(y, 11)


def test_full_batch() -> None:
    x, y = torch.randn(7, 3), torch.arange(7)
    batches = list(iterate_batches(x, y, None, shuffle=True))
    assert len(batches) == 1 and batches[0][0] is x and batches[0][1] is y


def test_ordered_batches_and_drop_last() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    assert [b.tolist() for _, b in iterate_batches(x, y, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.tolist() for _, b in iterate_batches(x, y, 4, drop_last=True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for xb, yb in iterate_batches(x, y, 3):
        assert xb.squeeze(1).long().equal(yb)


def test_shuffled_batches_follow_the_generator() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    got = [b for _, b in iterate_batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(3))]
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    assert torch.cat(got).equal(expected) and [len(b) for b in got] == [4, 4, 2]
    again = [b for _, b in iterate_batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(3))]
    assert all(a.equal(b) for a, b in zip(got, again))
    for xb, yb in iterate_batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(3)):
        assert xb.squeeze(1).long().equal(yb)  # x and y stay paired


@pytest.mark.parametrize(("batch_size", "argument"), [(0, "batch_size"), (2.5, "batch_size")])
def test_iterate_batches_invalid(batch_size: object, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        list(iterate_batches(torch.zeros(3, 1), torch.zeros(3), batch_size))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same number"):
        list(iterate_batches(torch.zeros(3, 1), torch.zeros(4), 2))
