"""Where an optimizer step's time goes: operator calls, device kernels and the costliest operators, per step.

On a GPU a step on the ResNet-18 parameter set is short enough (tens of microseconds of memory traffic) that its
time is set by the host: how many operators Python dispatches and how many kernels they launch. This profile
counts both for each row, on the same parameters as ``benchmarks.optim_step``, so that a ratio in that table can
be traced to its cause. Run with ``python -m benchmarks.step_profile`` (``--device``, ``--dtype``, ``--top``).
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks._timing import median_ms
from benchmarks.optim_step import _params, resnet18_shapes

__all__ = ["main", "profile_step"]


def _rows() -> dict[str, Callable[[list[torch.nn.Parameter]], Any]]:
    from theorylr.optim.adaptive import AdaMo, AutoAdam
    from theorylr.optim.lars import LARS

    return {
        "torch SGD foreach": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True),
        "theorylr LARS foreach": lambda ps: LARS(ps, lr=0.1, momentum=0.9, foreach=True),
        "theorylr LARS loop": lambda ps: LARS(ps, lr=0.1, momentum=0.9, foreach=False),
        "torch Adam foreach": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        "theorylr AdaMo foreach": lambda ps: AdaMo(ps, lipschitz="observed"),
        "theorylr AutoAdam foreach": lambda ps: AutoAdam(ps, lipschitz="observed"),
    }


def profile_step(step: Callable[[], Any], device: torch.device, top: int = 8) -> dict[str, Any]:
    """Profile one call of ``step``: operator calls (top level and all), device kernels, and the ``top`` operators
    by self CPU time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = list(prof.events())
    ops = [e for e in events if e.name.startswith("aten::")]
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    self_us: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for e in ops:
        self_us[e.name] += e.self_cpu_time_total
        calls[e.name] += 1
    return {
        "aten_calls": len(ops),
        "top_level_aten_calls": sum(
            1 for e in ops if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")
        ),
        "kernels": len(kernels),
        "top": [(name, calls[name], us) for name, us in self_us.most_common(top)],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Profile every row, print a summary per row, and return the figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--top", type=int, default=8, help="operators listed per row (default 8)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    out: dict[str, Any] = {}
    print(f"one step on {len(resnet18_shapes())} ResNet-18 tensors ({args.dtype}, {device}); self CPU time in us")
    for name, make in _rows().items():
        opt = make(_params(resnet18_shapes(), device, dtype))
        for _ in range(3):  # state, then warm
            opt.step()
        ms = median_ms(opt.step, repeats=20, warmup=2, device=device)
        figures = {"ms": ms, **profile_step(opt.step, device, args.top)}
        out[name] = figures
        print(
            f"{name}: {ms:.3f} ms/step, {figures['aten_calls']} aten calls "
            f"({figures['top_level_aten_calls']} top level), {figures['kernels']} device kernels"
        )
        for op, count, us in figures["top"]:
            print(f"    {op:<32} {count:5d} calls {us:9.0f} us")
    return out


if __name__ == "__main__":
    main()
