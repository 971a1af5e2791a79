"""The reduce hook as a data-parallel seam: two gloo ranks, each with half the data, give the full-data estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from tests.estimate._reference import classification_data, mlp
from theorylr.estimate import hessian_spectral_norm, smoothness

WORLD = 2


def _average(t: Tensor) -> Tensor:
    dist.all_reduce(t)
    return t / dist.get_world_size()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        calls = [0]

        def counted(t: Tensor) -> Tensor:
            calls[0] += 1
            return _average(t)

        model, (x, y) = mlp(nn.Tanh), classification_data(n=24)
        shard = (x[rank::WORLD], y[rank::WORLD])  # equal shards of 12
        r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), shard, seed=0, tol=1e-8, reduce=counted)
        est = smoothness(model, nn.CrossEntropyLoss(), shard, num_samples=2, tol=1e-6, reduce=_average)
        # No seed, and ranks whose RNG differs (per-rank augmentation): the start vector goes through reduce, so
        # the ranks still iterate on the same vectors (they made different numbers of collectives, then aborted).
        torch.manual_seed(100 + rank)
        unseeded = [hessian_spectral_norm(model, nn.CrossEntropyLoss(), shard, tol=1e-8, reduce=_average) for _ in "ab"]
        out = {
            "value": r.value,
            "loss": r.loss,
            "matvecs": r.matvecs,
            "calls": calls[0],
            "k_hat": est.k_hat,
            "unseeded": [u.value for u in unseeded],
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_match_the_full_data_estimate(tmp_path: Path) -> None:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    model, data = mlp(nn.Tanh), classification_data(n=24)
    full = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0, tol=1e-8)
    est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2, tol=1e-6)
    assert ranks[0] == ranks[1]  # every rank holds the same answer
    assert ranks[0]["value"] == pytest.approx(full.value, rel=1e-8)
    assert ranks[0]["loss"] == pytest.approx(full.loss, rel=1e-12)
    assert ranks[0]["calls"] == ranks[0]["matvecs"] + 2  # one all_reduce per matvec, the loss, the start vector
    assert ranks[0]["unseeded"] == pytest.approx([full.value] * 2, rel=1e-7)
    assert ranks[0]["k_hat"] == pytest.approx(est.k_hat, rel=1e-6)
