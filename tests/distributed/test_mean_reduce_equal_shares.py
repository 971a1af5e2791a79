"""mean_reduce() without num_samples: the plain mean over two gloo CPU ranks (weights 1 / world_size)."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.distributed._ranks import checked, join_world, save_and_exit, spawn_ranks
from theorylr.distributed import mean_reduce

pytestmark = pytest.mark.distributed

WORLD = 2


def _local(rank: int) -> torch.Tensor:
    return torch.tensor([[2.0, -4.0], [1.0, 8.0]], dtype=torch.float64) * (rank + 1) + rank


def _worker(rank: int, out_dir: str) -> None:
    join_world(rank, out_dir, WORLD)
    try:
        t = _local(rank)
        kept = t.clone()
        result: dict[str, Any] = {"mean": mean_reduce()(t), "input_unchanged": torch.equal(t, kept)}
    except Exception:
        result = {"error": traceback.format_exc()}
    save_and_exit(result, out_dir, rank)


def test_mean_reduce_without_num_samples_is_the_mean_over_ranks(tmp_path: Path) -> None:
    ranks = checked(spawn_ranks(_worker, tmp_path, WORLD))
    expected = (_local(0) + _local(1)) / 2  # [[3.5, -5.5], [2.0, 12.5]]
    for res in ranks:
        torch.testing.assert_close(res["mean"], expected, rtol=0, atol=0)
        assert res["input_unchanged"]
