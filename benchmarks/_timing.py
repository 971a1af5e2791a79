"""Timing and memory helpers shared by the benchmarks (and the memory tests): medians over repeats after warm-up,
and the peak of temporaries the CPU allocator hands out during a call."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["machine_description", "median_ms", "peak_transient_bytes", "sync"]


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median_ms(fn: Callable[[], Any], *, repeats: int = 20, warmup: int = 3, device: Any = None) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def machine_description() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def peak_transient_bytes(fn: Callable[[], Any]) -> int:
    """The highest net amount the CPU allocator handed out while ``fn`` ran (0 if nothing was allocated), from the
    allocator events the profiler records."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak
