"""The multi-process test harness: gloo CPU ranks spawned with a file rendezvous, each saving its results to a
file, and a world of one in this process. Used by ``test_ddp.py``, ``test_distributed_edges.py`` and the tracker's
edge tests."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def join_world(rank: int, out_dir: str, world: int, timeout_s: float = 60.0) -> None:
    """Join a gloo group of ``world`` ranks (loopback only, one thread), rendezvous through a file in ``out_dir``:
    no TCP port to pick, so no race with another test process picking the same one."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=Path(out_dir, "rendezvous").resolve().as_uri(),
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def save_and_exit(result: dict[str, Any], out_dir: str, rank: int) -> None:
    """Save a worker's results, then end it: the ranks meet, then leave without tearing gloo down. The teardown
    (``destroy_process_group`` or the interpreter's exit) sometimes aborts a rank ("terminate called without an
    active exception") once the other has gone, which failed the fixtures after the results were complete."""
    torch.save(result, Path(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    os._exit(0)


def spawn_ranks(worker: Callable[[int, str], None], out_dir: Path, world: int) -> list[dict[str, Any]]:
    """Run ``worker(rank, out_dir)`` on ``world`` spawned processes and return each rank's saved results (the test
    is skipped without gloo)."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(worker, args=(str(out_dir),), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]


def checked(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``results``, after asserting that no rank recorded an ``error`` (a traceback)."""
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return results
