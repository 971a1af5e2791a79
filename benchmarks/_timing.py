"""Timing and memory helpers shared by the benchmarks (and the memory tests): medians over repeats after warm-up,
and the peak of temporaries the CPU allocator hands out during a call."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["SCHEDULES", "machine_description", "median_ms", "peak_transient_bytes", "sync", "time_rounds"]

# How the rows of a step benchmark take turns (see :func:`time_rounds`).
SCHEDULES = ("interleaved", "blocked")


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


def time_rounds(
    steps: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    repeats: int,
    schedule: str = "interleaved",
    device: Any = None,
    seed: int = 0,
    after_round: Callable[[], Any] | None = None,
) -> dict[str, list[float]]:
    """Per-round median wall times (ms) of every row's step, the rows taking turns as ``schedule`` says.

    - ``"interleaved"``: each of the ``repeats`` passes of a round steps every row once, in a new random order, so
      that a slow spell of a shared machine hits all rows alike. Every step follows another row's step, which has
      swept its own tensors through the caches: the row's tensors come from memory (cold caches).
    - ``"blocked"``: each round takes the rows in a new random order, and each row makes one untimed step and then
      its ``repeats`` timed steps back to back, as a training loop's optimizer does when nothing else touches memory
      between its steps: what fits in the caches stays there (warm caches).

    A real training step sits between the two (the forward and backward passes touch the gradients and weights,
    and their own activations, between two optimizer steps). ``after_round`` is called after each round (outside
    the timings).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)} (got {schedule!r})")
    per_round: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffle = random.Random(seed).shuffle

    def timed(step: Callable[[], Any]) -> float:
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        return (time.perf_counter() - start) * 1e3

    for _ in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in steps}
        if schedule == "interleaved":
            for _ in range(repeats):
                shuffle(order)
                for name in order:
                    times[name].append(timed(steps[name]))
        else:
            shuffle(order)
            for name in order:
                steps[name]()  # brings the row's tensors back into the caches, untimed
                times[name] = [timed(steps[name]) for _ in range(repeats)]
        for name in steps:
            per_round[name].append(statistics.median(times[name]))
        if after_round is not None:
            after_round()
    return per_round


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


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 pointed at the null device for the block: silences what C++ code prints there (Python's
    ``sys.stderr`` is flushed first, and the descriptor is restored even if the block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def peak_transient_bytes(fn: Callable[[], Any]) -> int:
    """The highest net amount the CPU allocator handed out while ``fn`` ran (0 if nothing was allocated), from the
    allocator events the profiler records."""
    prof: Any = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto writes a "USDT: ... profiler_start" line to the process's stderr
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():  # and a "profiler_stop" line
            prof.stop()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak
